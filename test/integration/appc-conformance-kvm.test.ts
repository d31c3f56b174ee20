import { conformanceTests } from './appc-pod-common.js';

// appc conformance on the kvm flavor: event handlers, volumes as mounts, the insecure options (appc-pod-common.ts).
conformanceTests({ flavor: 'kvm', timeout: 600_000 });
