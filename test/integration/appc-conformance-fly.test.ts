import { conformanceTests } from './appc-pod-common.js';

// appc conformance on the fly flavor: event handlers, volumes as mounts, the insecure options (appc-pod-common.ts).
conformanceTests({ flavor: 'fly', timeout: 180_000 });
