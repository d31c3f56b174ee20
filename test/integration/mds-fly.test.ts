import test from 'ava';
import { killedAndPrepared, noService, twoPods } from './mds-common.js';

// The metadata service with the fly stage1: apps share the host network and
// reach the service on 127.0.0.1.

test('fly: apps read their own pod through AC_METADATA_URL, sign and verify, and never another pod\'s data', async (t) => {
  await twoPods(t, 'fly', () => /^127\.0\.0\.1:\d+$/, 120_000);
});

test('fly: --mds-register with no service is one line and no pod', async (t) => {
  await noService(t, 'fly');
});

test('fly: gc unregisters a pod whose rkt run was killed; run-prepared --mds-register; --net=none refused', async (t) => {
  await killedAndPrepared(t, 'fly', 120_000);
});
