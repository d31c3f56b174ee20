import { conformanceTests } from './appc-pod-common.js';

// appc conformance on the nspawn flavor: event handlers, volumes as mounts, the insecure options (appc-pod-common.ts).
conformanceTests({ flavor: 'nspawn', timeout: 180_000 });
