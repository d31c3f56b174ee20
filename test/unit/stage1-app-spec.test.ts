import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { validateImageManifest } from '../../src/appc/image-manifest.js';
import { validatePodManifest } from '../../src/appc/pod-manifest.js';
import type { ImageManifest, PodManifest } from '../../src/appc/types.js';
import { DEFAULT_CAPABILITIES } from '../../src/appc/capabilities.js';
import { PodPaths } from '../../src/stage1/contract.js';
import { AppSpecError, DEFAULT_PATH, loadAppSpecs, resolveAppSpec, type AppSpec } from '../../src/stage1-common/app-spec.js';

const ID = 'sha512-' + '0'.repeat(64);

interface Fixture {
  dir: string;
  rootfs: string;
  paths: PodPaths;
}

function fixture(t: { teardown(fn: () => void): void }): Fixture {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stage1-spec-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const rootfs = path.join(dir, 'tree');
  fs.mkdirSync(path.join(rootfs, 'etc'), { recursive: true });
  fs.writeFileSync(
    path.join(rootfs, 'etc/passwd'),
    '# comment\nroot:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n4242:x:77:77:numeric name:/n:/bin/sh\n',
  );
  fs.writeFileSync(path.join(rootfs, 'etc/group'), 'root:x:0:\nuser:x:1000:\nstaff:x:50:user\n');
  fs.mkdirSync(path.join(rootfs, 'usr/bin'), { recursive: true });
  fs.writeFileSync(path.join(rootfs, 'usr/bin/ping'), '');
  fs.chownSync(path.join(rootfs, 'usr/bin/ping'), 321, 654);
  return { dir, rootfs, paths: new PodPaths(path.join(dir, 'pod')) };
}

function image(app: Record<string, unknown> | undefined, extra: Record<string, unknown> = {}): ImageManifest {
  return validateImageManifest({ acKind: 'ImageManifest', acVersion: '0.8.11', name: 'example.com/app', ...(app && { app }), ...extra });
}

function pod(apps: Record<string, unknown>[], extra: Record<string, unknown> = {}): PodManifest {
  return validatePodManifest({
    acKind: 'PodManifest',
    acVersion: '0.8.11',
    apps: apps.map((a) => ({ image: { id: ID }, ...a })),
    ...extra,
  });
}

function resolve(f: Fixture, pm: PodManifest, im: ImageManifest, container?: string): AppSpec {
  return resolveAppSpec(pm, pm.apps[0]!, im, { paths: f.paths, treeRootfs: f.rootfs, ...(container !== undefined && { container }) });
}

const BASE = { exec: ['/bin/app', '--flag'], user: '0', group: '0' };

test('numeric user and group are used as they are, with no passwd entry needed', (t) => {
  const f = fixture(t);
  fs.rmSync(path.join(f.rootfs, 'etc'), { recursive: true });
  const s = resolve(f, pod([{ name: 'a' }]), image({ ...BASE, user: '1234', group: '5678' }));
  t.is(s.uid, 1234);
  t.is(s.gid, 5678);
});

test('names are looked up in the image, not on the host', (t) => {
  const f = fixture(t);
  const s = resolve(f, pod([{ name: 'a' }]), image({ ...BASE, user: 'user', group: 'staff' }));
  t.is(s.uid, 1000);
  t.is(s.gid, 50);
  t.is(s.user, 'user');
  t.is(s.group, 'staff');
});

test('an all-digit name the image defines resolves through /etc/passwd first (spec/aci.md)', (t) => {
  const f = fixture(t);
  t.is(resolve(f, pod([{ name: 'a' }]), image({ ...BASE, user: '4242' })).uid, 77);
});

test('a path means the owner and group of that file in the rootfs', (t) => {
  const f = fixture(t);
  const s = resolve(f, pod([{ name: 'a' }]), image({ ...BASE, user: '/usr/bin/ping', group: '/usr/bin/ping' }));
  t.is(s.uid, 321);
  t.is(s.gid, 654);
});

test('an unknown user or group is an error naming it and the app', (t) => {
  const f = fixture(t);
  const e = t.throws(() => resolve(f, pod([{ name: 'web' }]), image({ ...BASE, user: 'nobody-here' })), { instanceOf: AppSpecError });
  t.is(e?.message, 'user "nobody-here" not found in image of app "web"');
  t.throws(() => resolve(f, pod([{ name: 'web' }]), image({ ...BASE, group: 'wheel' })), { message: 'group "wheel" not found in image of app "web"' });
  t.throws(() => resolve(f, pod([{ name: 'web' }]), image({ ...BASE, user: '/no/such/file' })), { message: /\/no\/such\/file.*app "web"/ });
});

test('/etc/passwd is read through symlinks resolved inside the rootfs, never the host file', (t) => {
  const f = fixture(t);
  // an absolute link must mean <rootfs>/data/passwd, not the host's /data/passwd
  fs.mkdirSync(path.join(f.rootfs, 'data'));
  fs.renameSync(path.join(f.rootfs, 'etc/passwd'), path.join(f.rootfs, 'data/passwd'));
  fs.symlinkSync('/data/passwd', path.join(f.rootfs, 'etc/passwd'));
  t.is(resolve(f, pod([{ name: 'a' }]), image({ ...BASE, user: 'user' })).uid, 1000);
  // a link climbing out with ../.. stays at the rootfs root: the file beside the rootfs is not read
  fs.writeFileSync(path.join(f.dir, 'outside'), 'intruder:x:0:0::/:/bin/sh\n');
  fs.rmSync(path.join(f.rootfs, 'etc/passwd'));
  fs.symlinkSync('../../outside', path.join(f.rootfs, 'etc/passwd'));
  t.throws(() => resolve(f, pod([{ name: 'a' }]), image({ ...BASE, user: 'intruder' })), { instanceOf: AppSpecError });
});

test('the pod manifest app section overrides the image app; exec falls back to the image', (t) => {
  const f = fixture(t);
  const im = image({ ...BASE, workingDirectory: '/srv', supplementaryGIDs: [7] });
  const s = resolve(f, pod([{ name: 'a', app: { user: 'user', group: 'user', supplementaryGIDs: [50, 60], workingDirectory: '/opt' } }]), im);
  t.deepEqual(s.exec, ['/bin/app', '--flag']);
  t.is(s.uid, 1000);
  t.deepEqual(s.supplementaryGids, [50, 60]);
  t.is(s.workingDirectory, '/opt');
  const o = resolve(f, pod([{ name: 'a', app: { ...BASE, exec: ['/bin/other', 'x'] } }]), im);
  t.deepEqual(o.exec, ['/bin/other', 'x']);
  t.is(o.workingDirectory, '/', 'the pod app replaces the image app: its missing workingDirectory means /');
});

test('a missing exec is an error naming the app', (t) => {
  const f = fixture(t);
  t.throws(() => resolve(f, pod([{ name: 'noexec' }]), image({ user: '0', group: '0' })), { instanceOf: AppSpecError, message: /app "noexec" has no exec/ });
  t.throws(() => resolve(f, pod([{ name: 'noapp' }]), image(undefined)), { instanceOf: AppSpecError, message: /app "noapp"/ });
});

test('environment: image first, pod overriding, AC_APP_NAME always, PATH and HOME by default', (t) => {
  const f = fixture(t);
  const im = image({
    ...BASE,
    user: 'user',
    environment: [
      { name: 'A', value: 'image' },
      { name: 'B', value: 'image' },
      { name: 'AC_APP_NAME', value: 'spoofed' },
    ],
  });
  const s = resolve(f, pod([{ name: 'web', app: { ...BASE, user: 'user', environment: [{ name: 'B', value: 'pod' }, { name: 'C', value: 'pod' }] } }]), im);
  t.deepEqual(s.env, [
    { name: 'A', value: 'image' },
    { name: 'B', value: 'pod' },
    { name: 'AC_APP_NAME', value: 'web' },
    { name: 'C', value: 'pod' },
    { name: 'PATH', value: DEFAULT_PATH },
    { name: 'HOME', value: '/home/user' },
  ]);
  const withPath = resolve(f, pod([{ name: 'a' }]), image({ ...BASE, environment: [{ name: 'PATH', value: '/bin' }] }), 'rkt');
  t.deepEqual(
    withPath.env.filter((e) => ['PATH', 'container', 'HOME'].includes(e.name)),
    [
      { name: 'PATH', value: '/bin' },
      { name: 'HOME', value: '/' },
      { name: 'container', value: 'rkt' },
    ],
  );
});

test('mounts: host and empty volumes, read-only from the volume or else the mount point', (t) => {
  const f = fixture(t);
  const im = image({
    ...BASE,
    mountPoints: [
      { name: 'data', path: '/data', readOnly: true },
      { name: 'cache', path: '/var/cache' },
      { name: 'logs', path: '/logs', readOnly: true },
    ],
  });
  const pm = pod(
    [
      {
        name: 'a',
        mounts: [
          { volume: 'data', path: '/data' },
          { volume: 'cache', path: '/var/cache' },
          { volume: 'logs', path: '/logs' },
          { volume: 'private', path: '/priv', appVolume: { name: 'private', kind: 'empty', mode: '0700', uid: 5, gid: 6 } },
        ],
      },
    ],
    {
      volumes: [
        { name: 'data', kind: 'host', source: '/srv/data' },
        { name: 'cache', kind: 'empty', mode: '1777', uid: 1, gid: 2 },
        { name: 'logs', kind: 'host', source: '/var/log', readOnly: false, recursive: true },
      ],
    },
  );
  const s = resolve(f, pm, im);
  t.deepEqual(s.mounts, [
    { volume: 'data', kind: 'host', source: '/srv/data', target: '/data', readOnly: true, recursive: false },
    { volume: 'cache', kind: 'empty', source: f.paths.emptyVolume('cache'), target: '/var/cache', readOnly: false, recursive: false, empty: { mode: 0o1777, uid: 1, gid: 2 } },
    { volume: 'logs', kind: 'host', source: '/var/log', target: '/logs', readOnly: false, recursive: true },
    { volume: 'private', kind: 'empty', source: f.paths.emptyVolume('a.private'), target: '/priv', readOnly: false, recursive: false, empty: { mode: 0o700, uid: 5, gid: 6 } },
  ]);
});

test('a mount point no mount serves gets the pod volume of its name, or an implicit empty one', (t) => {
  const f = fixture(t);
  const im = image({ ...BASE, mountPoints: [{ name: 'conf', path: '/etc/app' }, { name: 'scratch', path: '/scratch', readOnly: true }] });
  const pm = pod([{ name: 'a' }], { volumes: [{ name: 'conf', kind: 'host', source: '/etc/host-app', readOnly: true }] });
  const s = resolve(f, pm, im);
  t.deepEqual(
    s.mounts.map((m) => [m.volume, m.kind, m.source, m.target, m.readOnly]),
    [
      ['conf', 'host', '/etc/host-app', '/etc/app', true],
      ['scratch', 'empty', f.paths.emptyVolume('scratch'), '/scratch', true],
    ],
  );
});

test('readOnlyRootFS, rootfs and tree paths come from the pod layout', (t) => {
  const f = fixture(t);
  const s = resolve(f, pod([{ name: 'a', readOnlyRootFS: true }]), image(BASE));
  t.true(s.readOnlyRootFS);
  t.is(s.rootfs, f.paths.appRootfs('a'));
  t.is(s.treeRootfs, f.rootfs);
  t.false(resolve(f, pod([{ name: 'a' }]), image(BASE)).readOnlyRootFS);
});

test('isolators are exposed as typed values, the pod bounding the app', (t) => {
  const f = fixture(t);
  const im = image({
    ...BASE,
    isolators: [
      { name: 'resource/memory', value: { limit: '1G' } },
      { name: 'resource/cpu', value: { limit: '500m' } },
      { name: 'os/linux/capabilities-remove-set', value: { set: ['CAP_NET_RAW', 'mknod'] } },
      { name: 'os/linux/no-new-privileges', value: true },
    ],
  });
  const s = resolve(f, pod([{ name: 'a' }], { isolators: [{ name: 'resource/memory', value: { limit: '512Mi' } }] }), im);
  t.is(s.isolators.memoryLimit, 512 * 1024 * 1024);
  t.is(s.isolators.cpuLimitMillis, 500);
  t.true(s.isolators.noNewPrivileges);
  t.deepEqual(s.isolators.capabilitiesRemove, ['CAP_NET_RAW', 'CAP_MKNOD']);
  t.deepEqual(s.isolators.capabilities, DEFAULT_CAPABILITIES.filter((c) => c !== 'CAP_NET_RAW' && c !== 'CAP_MKNOD'));
  const r = resolve(f, pod([{ name: 'a' }]), image({ ...BASE, isolators: [{ name: 'os/linux/capabilities-retain-set', value: { set: ['CAP_NET_ADMIN'] } }] }));
  t.deepEqual(r.isolators.capabilities, ['CAP_NET_ADMIN']);
  t.false(r.isolators.noNewPrivileges);
  t.is(r.isolators.memoryLimit, undefined);
});

test('loadAppSpecs reads what stage0 leaves in the pod directory', (t) => {
  const f = fixture(t);
  const pm = pod([{ name: 'one' }, { name: 'two', app: { ...BASE, exec: ['/bin/two'] } }]);
  fs.mkdirSync(f.paths.dir, { recursive: true });
  fs.writeFileSync(f.paths.manifest, JSON.stringify(pm));
  for (const a of ['one', 'two']) {
    fs.mkdirSync(f.paths.appInfo(a), { recursive: true });
    fs.writeFileSync(f.paths.appImageManifest(a), JSON.stringify(image(BASE)));
    fs.writeFileSync(f.paths.appTreeRootfs(a), f.rootfs + '\n');
  }
  const specs = loadAppSpecs(f.paths);
  t.deepEqual(
    specs.map((s) => [s.name, s.exec[0], s.treeRootfs]),
    [
      ['one', '/bin/app', f.rootfs],
      ['two', '/bin/two', f.rootfs],
    ],
  );
  fs.rmSync(f.paths.appTreeRootfs('two'));
  t.throws(() => loadAppSpecs(f.paths), { instanceOf: AppSpecError, message: /app "two"/ });
});

test('event handlers come from the app section in effect; socket activation is refused, naming the port', (t) => {
  const f = fixture(t);
  const handlers = [
    { name: 'pre-start', exec: ['/bin/prep', 'x'] },
    { name: 'post-stop', exec: ['/bin/clean'] },
  ];
  const s = resolve(f, pod([{ name: 'a' }]), image({ ...BASE, eventHandlers: handlers }));
  t.deepEqual(s.eventHandlers, { preStart: ['/bin/prep', 'x'], postStop: ['/bin/clean'] });
  t.deepEqual(resolve(f, pod([{ name: 'a' }]), image(BASE)).eventHandlers, {});
  const ports = [{ name: 'http', protocol: 'tcp', port: 80, socketActivated: true }];
  t.throws(() => resolve(f, pod([{ name: 'a' }]), image({ ...BASE, ports })), { instanceOf: AppSpecError, message: /app "a": port "http" asks for socket activation/ });
});
