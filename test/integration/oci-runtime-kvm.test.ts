import test from 'ava';
import path from 'node:path';
import { REPO } from '../helpers/rkt.js';
import { needFile } from '../helpers/prereqs.js';
import { KVM_ACI } from './kvm-common.js';
import { needPython, ociRuntimeTests } from './oci-runtime-common.js';

// bin/rkt-oci-kvm as containerd's runc v2 shim drives it (the tests are in
// oci-runtime-common.ts): each pod a VM (tcg here: slow, so no timings).

test.before(async () => {
  await needPython();
  needFile(KVM_ACI, 'run scripts/setup.sh, which builds the stage1 images');
});

ociRuntimeTests(path.join(REPO, 'bin/rkt-oci-kvm'), () => [`--stage1-path=${KVM_ACI}`], { terminal: true });
