import test from 'ava';
import { parseRunArgs } from '../../src/pod/run-args.js';
import { generatePodManifest, parseVolumeFlag } from '../../src/pod/manifest-gen.js';
import type { ImageManifest } from '../../src/appc/types.js';

const ID = 'sha512-' + 'a'.repeat(128);
const image = (name: string, app: Partial<NonNullable<ImageManifest['app']>> = {}): ImageManifest => ({
  acKind: 'ImageManifest',
  acVersion: '0.8.11',
  name,
  labels: [{ name: 'version', value: '1' }],
  app: { exec: ['/bin/sh'], user: '0', group: '0', ...app },
});

test('flags after an image apply to that image; --- and -- split apps and arguments', (t) => {
  const r = parseRunArgs(['--net=host', '--volume', 'data,kind=empty', 'a.aci', '--exec', '/bin/echo', '--', 'hi', '--not-a-flag', '---', 'b.aci', '--user=1000', '--insecure-options=image']);
  t.deepEqual(r.pod.net, ['host']);
  t.deepEqual(r.pod.volumes, ['data,kind=empty']);
  t.is(r.apps.length, 2);
  t.is(r.apps[0]!.exec, '/bin/echo');
  t.deepEqual(r.apps[0]!.args, ['hi', '--not-a-flag']);
  t.is(r.apps[1]!.user, '1000');
  t.is(r.globals.insecureOptions, 'image');
});

test('two images without --- are two apps', (t) => {
  const r = parseRunArgs(['a.aci', 'b.aci']);
  t.deepEqual(r.apps.map((a) => a.image), ['a.aci', 'b.aci']);
});

test('an app flag before any image and an unknown flag are usage errors', (t) => {
  t.throws(() => parseRunArgs(['--exec=/bin/true', 'a.aci']), { message: /put it after the image/ });
  t.throws(() => parseRunArgs(['a.aci', '--frobnicate']), { message: /unknown flag --frobnicate/ });
  t.throws(() => parseRunArgs(['--', 'x']), { message: /must follow an image/ });
});

test('the pod manifest carries overrides, environment precedence and isolators', (t) => {
  const args = parseRunArgs(['--set-env=A=pod', 'x.aci', '--exec=/bin/echo', '--environment=B=app', '--memory=64M', '--cpu=500m', '--caps-retain=net_admin,CAP_CHOWN', '--name=one', '--', 'x']);
  const m = generatePodManifest([{ args: args.apps[0]!, imageId: ID, manifest: image('example.com/x', { environment: [{ name: 'A', value: 'image' }, { name: 'C', value: 'image' }] }) }], args.pod, {});
  const app = m.apps[0]!;
  t.is(app.name, 'one');
  t.deepEqual(app.app!.exec, ['/bin/echo', 'x']);
  const env = Object.fromEntries(app.app!.environment!.map((e) => [e.name, e.value]));
  t.deepEqual(env, { A: 'pod', B: 'app', C: 'image' });
  const iso = Object.fromEntries(app.app!.isolators!.map((i) => [i.name, i.value]));
  t.deepEqual(iso['resource/memory'], { limit: '64M' });
  t.deepEqual(iso['os/linux/capabilities-retain-set'], { set: ['CAP_NET_ADMIN', 'CAP_CHOWN'] });
});

test('volumes need mounts, mounts need volumes, app names must differ, interactive needs one app', (t) => {
  const img = { imageId: ID, manifest: image('example.com/x') };
  const a1 = parseRunArgs(['--volume=v,kind=host,source=/tmp', 'x.aci']);
  t.throws(() => generatePodManifest([{ ...img, args: a1.apps[0]! }], a1.pod, {}), { message: /not mounted by any app/ });
  const a2 = parseRunArgs(['x.aci', '--mount=volume=nope,target=/x']);
  t.throws(() => generatePodManifest([{ ...img, args: a2.apps[0]! }], a2.pod, {}), { message: /no --volume declares/ });
  const a3 = parseRunArgs(['x.aci', 'y.aci']);
  t.throws(() => generatePodManifest(a3.apps.map((a) => ({ ...img, args: a })), a3.pod, {}), { message: /two apps are named "x"/ });
  const a4 = parseRunArgs(['--interactive', 'x.aci', 'y.aci', '--name=y']);
  t.throws(() => generatePodManifest(a4.apps.map((a) => ({ ...img, args: a })), a4.pod, {}), { message: /--interactive/ });
});

test('an image mount point is served by the volume of its name', (t) => {
  const args = parseRunArgs(['--volume=data,kind=host,source=/srv,readOnly=true', 'x.aci']);
  const m = generatePodManifest([{ args: args.apps[0]!, imageId: ID, manifest: image('example.com/x', { mountPoints: [{ name: 'data', path: '/data' }] }) }], args.pod, {});
  t.deepEqual(m.apps[0]!.mounts, [{ volume: 'data', path: '/data' }]);
  t.deepEqual(parseVolumeFlag('data,kind=host,source=/srv,readOnly=true'), { name: 'data', kind: 'host', source: '/srv', readOnly: true });
});

test('--port must name a port the image declares and needs a contained network', (t) => {
  const img = { imageId: ID, manifest: image('example.com/x', { ports: [{ name: 'http', protocol: 'tcp', port: 80 }] }) };
  const ok = parseRunArgs(['--port=http:8080', 'x.aci']);
  const m = generatePodManifest([{ ...img, args: ok.apps[0]! }], ok.pod, {});
  t.is(m.ports?.[0]?.name, 'http');
  t.is(m.ports?.[0]?.hostPort, 8080);
  const unknown = parseRunArgs(['--port=ftp:2121', 'x.aci']);
  t.throws(() => generatePodManifest([{ ...img, args: unknown.apps[0]! }], unknown.pod, {}), { message: /ftp/ });
  const host = parseRunArgs(['--net=host', '--port=http:8080', 'x.aci']);
  t.throws(() => generatePodManifest([{ ...img, args: host.apps[0]! }], host.pod, {}), { message: /contained network/ });
});

test('--seccomp and --oom-score-adjust become the app isolators; --private-users and --ipc are pod flags', (t) => {
  const args = parseRunArgs(['--private-users', '--ipc=private', 'x.aci', '--seccomp=mode=remove,errno=EPERM,chmod,chown', '--oom-score-adjust=-100']);
  t.is(args.pod.privateUsers, '');
  t.is(args.pod.ipc, 'private');
  const m = generatePodManifest([{ args: args.apps[0]!, imageId: ID, manifest: image('example.com/x') }], args.pod, {});
  const iso = Object.fromEntries(m.apps[0]!.app!.isolators!.map((i) => [i.name, i.value]));
  t.deepEqual(iso['os/linux/seccomp-remove-set'], { set: ['chmod', 'chown'], errno: 'EPERM' });
  t.is(iso['os/linux/oom-score-adj'], -100);
  const bad = parseRunArgs(['x.aci', '--seccomp=chmod']);
  t.throws(() => generatePodManifest([{ args: bad.apps[0]!, imageId: ID, manifest: image('example.com/x') }], bad.pod, {}), { message: /mode=retain or mode=remove/ });
});
