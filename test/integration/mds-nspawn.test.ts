import test from 'ava';
import { killedAndPrepared, noService, twoPods } from './mds-common.js';

// The metadata service with the nspawn stage1 on the default network: apps
// reach the service at the host's end of the pod's veth (ptp's gateway).

test('nspawn: apps read their own pod through AC_METADATA_URL, sign and verify, and never another pod\'s data', async (t) => {
  await twoPods(t, 'nspawn', () => /^172\.16\.28\.1:\d+$/, 180_000);
});

test('nspawn: --mds-register with no service is one line and no pod', async (t) => {
  await noService(t, 'nspawn');
});

test('nspawn: gc unregisters a pod whose rkt run was killed; run-prepared --mds-register; --net=none refused', async (t) => {
  await killedAndPrepared(t, 'nspawn', 180_000);
});
