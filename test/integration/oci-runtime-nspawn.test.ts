import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { REPO } from '../helpers/rkt.js';
import { buildStage1 } from './nspawn-common.js';
import { needPython, ociRuntimeTests } from './oci-runtime-common.js';

// bin/rkt-oci-nspawn as containerd's runc v2 shim drives it (the tests are
// in oci-runtime-common.ts), on the nspawn stage1 built from the sources.

let stage1: { aci: string; dir: string } | undefined;
test.before(async () => {
  await needPython();
  stage1 = await buildStage1();
});
test.after.always(() => stage1 && fs.rmSync(stage1.dir, { recursive: true, force: true }));

ociRuntimeTests(path.join(REPO, 'bin/rkt-oci-nspawn'), () => [`--stage1-path=${stage1!.aci}`], { terminal: true });
