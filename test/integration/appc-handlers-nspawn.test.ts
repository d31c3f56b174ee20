import test from 'ava';
import { checkFailingPreStart, checkSharedVolumePod, type FlavorCase } from './appc-pod-common.js';

// appc conformance on the nspawn flavor: event handlers and volumes as mounts (appc-pod-common.ts).

const C: FlavorCase = { flavor: 'nspawn', timeout: 180_000 };

test('two apps share an empty volume: pre-start before the exec, post-stop after it, both as the app; the volume a mount, read-only where asked', async (t) => {
  t.timeout(C.timeout + 60_000);
  await checkSharedVolumePod(t, C);
});

test('a failing pre-start fails its app with the handler status and a reason; neither the app nor its post-stop runs', async (t) => {
  t.timeout(C.timeout + 60_000);
  await checkFailingPreStart(t, C);
});
