import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import type { AppSpec, VolumeMount } from '../../src/stage1-common/app-spec.js';
import { guestBinds, volumesScript, writeGuestVolumes, GUEST_VOLUMES } from '../../stage1-kvm/guest-volumes.js';
import { writeGuestNetwork } from '../../stage1-kvm/guest-net.js';

// kvm volumes are mounts of their own in the guest: the host writes a
// script the guest runs before any app, naming guest paths only, resolved
// without symlinks in the app's rootfs.

function tmp(t: { teardown(fn: () => void): void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'guest-vol-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

function mount(target: string, readOnly: boolean): VolumeMount {
  return { volume: 'v', kind: 'empty', source: '/pod/volumes/v', target, readOnly, recursive: false };
}

function spec(name: string, rootfs: string, mounts: VolumeMount[], eventHandlers: AppSpec['eventHandlers'] = {}): AppSpec {
  return { name, rootfs, mounts, eventHandlers } as unknown as AppSpec;
}

test('binds: guest paths under the app root, symlinks resolved inside the rootfs, parents first, read-only kept', (t) => {
  const root = tmp(t);
  const rootfs = path.join(root, 'opt/stage2/web/rootfs');
  fs.mkdirSync(path.join(rootfs, 'var/data/sub'), { recursive: true });
  // an image's absolute symlink points inside its own rootfs, never at the guest's or the host's
  fs.symlinkSync('/var/data', path.join(rootfs, 'data'));
  const s = spec('web', rootfs, [mount('/data/sub', true), mount('/data', false)]);
  t.deepEqual(guestBinds([s], () => '/opt/stage2/web/rootfs'), [
    { path: '/opt/stage2/web/rootfs/var/data', readOnly: false },
    { path: '/opt/stage2/web/rootfs/var/data/sub', readOnly: true },
  ]);
});

test('the script binds each volume on itself, remounts read-only ones, quotes every path', async (t) => {
  const text = volumesScript([
    { path: "/opt/stage2/web/rootfs/it's here", readOnly: true },
    { path: '/opt/stage2/web/rootfs/$(reboot)', readOnly: false },
  ]);
  t.true(text.includes(`$bb mount --bind '/opt/stage2/web/rootfs/it'\\''s here' '/opt/stage2/web/rootfs/it'\\''s here' || fail`));
  t.true(text.includes(`$bb mount -o remount,bind,ro '/opt/stage2/web/rootfs/it'\\''s here'`));
  t.true(text.includes(`$bb mount --bind '/opt/stage2/web/rootfs/$(reboot)' '/opt/stage2/web/rootfs/$(reboot)'`));
  t.false(text.includes('remount,bind,ro \'/opt/stage2/web/rootfs/$(reboot)\''));
  // sh parses it as written: nothing in a path is expanded
  const r = await execa('sh', ['-n', '-c', text], { reject: false });
  t.is(r.exitCode, 0, String(r.stderr));
});

test('the step: a unit, the script, and a drop-in for every unit of every app, handlers included; nothing without volumes', (t) => {
  const root = tmp(t);
  const rootfs = path.join(root, 'opt/stage2/web/rootfs');
  fs.mkdirSync(path.join(rootfs, 'data'), { recursive: true });
  const units = path.join(root, 'etc/systemd/system');
  const s = spec('web', rootfs, [mount('/data', true)], { preStart: ['/bin/true'], postStop: ['/bin/true'] });
  writeGuestVolumes(root, [s]);
  t.regex(fs.readFileSync(path.join(units, GUEST_VOLUMES.unit), 'utf8'), /^ExecStart=\/rkt\/bin\/busybox sh \/rkt\/bin\/rkt-volumes$/m);
  t.regex(fs.readFileSync(path.join(root, GUEST_VOLUMES.script), 'utf8'), /mount --bind '\/opt\/stage2\/web\/rootfs\/data'/);
  for (const u of ['web.service', 'web.pre-start.service', 'web.post-stop.service']) {
    t.regex(fs.readFileSync(path.join(units, `${u}.d`, GUEST_VOLUMES.dropIn), 'utf8'), /^Requires=rkt-volumes\.service\nAfter=rkt-volumes\.service$/m, u);
  }
  writeGuestVolumes(root, [spec('web', rootfs, [], s.eventHandlers)]);
  t.false(fs.existsSync(path.join(units, GUEST_VOLUMES.unit)));
  t.false(fs.existsSync(path.join(units, 'web.pre-start.service.d', GUEST_VOLUMES.dropIn)));
  // the network step reaches the handlers too: a pre-start may need the network
  writeGuestNetwork(root, [s], [{ network: 'default', tapName: 'tap0', mac: '02:00:00:00:00:01', ifName: 'eth0', mtu: 1500, addresses: [], routes: [] } as never]);
  t.true(fs.existsSync(path.join(units, 'web.pre-start.service.d', 'rkt-network.conf')));
});
