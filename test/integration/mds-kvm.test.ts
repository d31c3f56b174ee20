import test from 'ava';
import { noService, twoPods } from './mds-common.js';

// The metadata service with the kvm stage1: the guest reaches it over its
// own NIC, at the host's end of the pod network (ptp's gateway), as any
// traffic to the host; nothing of the host's file system is given to it.

test('kvm: apps read their own pod through AC_METADATA_URL, sign and verify, and never another pod\'s data', async (t) => {
  t.timeout(900_000);
  await twoPods(t, 'kvm', () => /^172\.16\.28\.1:\d+$/, 400_000);
});

test('kvm: --mds-register with no service is one line and no pod', async (t) => {
  await noService(t, 'kvm');
});
