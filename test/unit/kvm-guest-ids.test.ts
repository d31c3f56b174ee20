import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { claimPodIds, firstSlot, FIRST_ID, GUEST_IDS, hostId, PodIdsError, SLOT_IDS, SLOTS } from '../../src/stage1-common/pod-ids.js';
import { guestView, hostVolumeMaps, mapArgs } from '../../stage1-kvm/guest-ids.js';
import { virtiofsdArgv } from '../../stage1-kvm/virtiofsd.js';

const UUID = '0c7d4f36-9a52-4a53-b1c5-2b8a3f1e0d11';
const BASE = FIRST_ID + 3 * SLOT_IDS;

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-ids-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('the blocks: inside the range systemd leaves unused, room for the guest and a helper id', (t) => {
  t.true(FIRST_ID >= 0x70000000);
  t.true(FIRST_ID + SLOTS * SLOT_IDS <= 0x7ffe0000);
  t.true(SLOT_IDS > GUEST_IDS);
  t.is(GUEST_IDS, 65536);
  t.is(hostId({ base: BASE }, 0), BASE);
  t.is(hostId({ base: BASE }, 65535), BASE + 65535);
  for (const bad of [-1, 65536, 1.5, NaN]) t.throws(() => hostId({ base: BASE }, bad), { instanceOf: PodIdsError });
  const s = firstSlot(UUID);
  t.true(Number.isInteger(s) && s >= 0 && s < SLOTS);
  t.is(firstSlot(UUID), s);
});

test('a claimed slot is held until released; another pod gets another one', (t) => {
  const dir = tmp(t);
  const a = claimPodIds(UUID, dir);
  const b = claimPodIds(UUID, dir);
  t.is(a.slot, firstSlot(UUID));
  t.not(b.slot, a.slot);
  t.is(a.base, FIRST_ID + a.slot * SLOT_IDS);
  a.lock.release();
  const c = claimPodIds(UUID, dir);
  t.is(c.slot, a.slot, 'free again once released');
  b.lock.release();
  c.lock.release();
});

test("the guest's view maps host 0..65535 onto the block; a volume owned by root maps nothing", (t) => {
  t.deepEqual(guestView(BASE), { uid: [{ ns: 0, host: BASE, count: 65536 }], gid: [{ ns: 0, host: BASE, count: 65536 }] });
  t.deepEqual(mapArgs(guestView(BASE)), ['--uid', `0:${BASE}:65536`, '--gid', `0:${BASE}:65536`]);
  t.is(hostVolumeMaps(BASE, { uid: 0, gid: 0 }, { uid: 0, gid: 0 }), undefined);
  t.is(hostVolumeMaps(BASE, { uid: 0, gid: 1000 }, { uid: 1000, gid: 1000 }), undefined);
});

test("a user's volume: its owner shown as the app's uid, its group as the app's gid, root's group never", (t) => {
  t.deepEqual(hostVolumeMaps(BASE, { uid: 4242, gid: 4343 }, { uid: 0, gid: 0 }), {
    uid: [{ ns: 4242, host: BASE, count: 1 }],
    gid: [{ ns: 4343, host: BASE, count: 1 }],
  });
  // group 0 on the volume: the app's files get its own gid from the block
  t.deepEqual(hostVolumeMaps(BASE, { uid: 4242, gid: 0 }, { uid: 1000, gid: 50 }), {
    uid: [{ ns: 4242, host: BASE + 1000, count: 1 }],
    gid: [{ ns: BASE + 50, host: BASE + 50, count: 1 }],
  });
  // a write through an id-mapped mount lands as the mapped-back id: no writable map takes host id 0
  for (const owner of [{ uid: 4242, gid: 0 }, { uid: 1, gid: 1 }]) {
    const m = hostVolumeMaps(BASE, owner, { uid: 0, gid: 0 })!;
    t.false([...m.uid, ...m.gid].some((r) => r.ns === 0), JSON.stringify(m));
  }
  t.throws(() => hostVolumeMaps(BASE, { uid: 4242, gid: 4242 }, { uid: 70000, gid: 0 }), { instanceOf: PodIdsError });
});

test('virtiofsd runs through rkt-idmap in the pod namespace, on a socket it is handed, without mknod, fsetid, setfcap, xattrs', (t) => {
  const podDir = `/var/lib/rkt/pods/run/${UUID}`;
  const argv = virtiofsdArgv('/usr/lib/qemu/virtiofsd', { podDir, root: '/run/rkt/guest/root', base: BASE, helper: '/s1/kvm/bin/rkt-idmap', coherent: true, cgroup: '/sys/fs/cgroup/rkt/x' });
  const sep = argv.indexOf('--');
  t.deepEqual(argv.slice(0, sep), ['/s1/kvm/bin/rkt-idmap', 'exec', '--uid', `0:${BASE}:65536`, '--gid', `0:${BASE}:65536`, '--listen', `${podDir}/virtiofs.sock`, '--cgroup', '/sys/fs/cgroup/rkt/x']);
  const vfs = argv.slice(sep + 1);
  t.is(vfs[0], '/usr/lib/qemu/virtiofsd');
  t.true(vfs.includes('--fd=3'));
  t.false(vfs.some((a) => a.startsWith('--socket-path')));
  const opts = vfs.filter((_, i) => vfs[i - 1] === '-o');
  t.true(opts.includes('source=/run/rkt/guest/root'));
  t.true(opts.includes('modcaps=-mknod:-fsetid:-setfcap'));
  t.true(opts.includes('no_xattr'));
  t.true(opts.includes('cache=auto'));
  t.false(opts.some((o) => /^(xattr|posix_acl|sandbox=chroot)/.test(o)));
  const noCgroup = virtiofsdArgv('/v', { podDir, root: '/r', base: BASE, helper: '/h', coherent: false });
  t.false(noCgroup.includes('--cgroup'));
  t.true(noCgroup.includes('cache=always'));
});
