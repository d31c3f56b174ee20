import test, { type ExecutionContext } from 'ava';
import { parsePodManifest, podApp, serializePodManifest, validatePodManifest } from '../../src/appc/pod-manifest.js';
import { memoryLimit, sysctls } from '../../src/appc/isolators.js';
import { ManifestError } from '../../src/errors.js';

const id = (c: string) => `sha512-${c.repeat(128)}`;

// examples/pod_runtime.json of appc/spec (0.8.10), with full-length IDs.
const SPEC_EXAMPLE = {
  acKind: 'PodManifest',
  acVersion: '0.8.10',
  apps: [
    {
      name: 'reduce-worker',
      image: { name: 'example.com/reduce-worker', id: id('8') },
      app: {
        exec: ['/usr/bin/reduce-worker', '--debug=true', '--data-dir=/mnt/foo'],
        group: '0',
        user: '0',
        mountPoints: [{ name: 'database', path: '/var/lib/db' }],
        isolators: [{ name: 'resource/memory', value: { limit: '1G' } }],
      },
      mounts: [{ volume: 'dbvolume', path: '/var/lib/db' }],
    },
    {
      name: 'backup',
      image: { name: 'example.com/worker-backup', id: id('d'), labels: [{ name: 'version', value: 'latest' }] },
      mounts: [
        { volume: 'dbvolume', path: '/mnt/db' },
        { volume: 'buildoutput', path: '/mnt/out' },
      ],
      annotations: [{ name: 'foo', value: 'baz' }],
    },
    {
      name: 'register',
      image: { name: 'example.com/reduce-worker-register', id: id('5'), labels: [{ name: 'version', value: '3.0.0' }] },
    },
  ],
  volumes: [
    { name: 'dbvolume', kind: 'host', source: '/opt/tenant1/database', readOnly: true },
    { name: 'buildoutput', kind: 'empty', mode: '0777', uid: 0, gid: 0 },
  ],
  isolators: [
    { name: 'resource/memory', value: { limit: '4G' } },
    { name: 'os/unix/sysctl', value: { 'net.ipv4.tcp_fin_timeout': '6' } },
  ],
  annotations: [{ name: 'ip-address', value: '10.1.2.3' }],
};

type Obj = Record<string, unknown>;
type Pod = Obj & { apps: (Obj & { app?: Obj; mounts?: Obj[] })[]; volumes: Obj[] };

function variant(edit: (m: Pod) => void): Obj {
  const m = structuredClone(SPEC_EXAMPLE) as unknown as Pod;
  edit(m);
  return m;
}

function accepts(t: ExecutionContext, edit: (m: Pod) => void): void {
  t.notThrows(() => validatePodManifest(variant(edit)));
}

function rejects(t: ExecutionContext, edit: (m: Pod) => void, field: string, rule?: RegExp): void {
  const err = t.throws(() => validatePodManifest(variant(edit)), { instanceOf: ManifestError });
  t.is(err?.field, field);
  if (rule !== undefined) t.regex(err?.rule ?? '', rule);
}

test('the spec example parses', (t) => {
  const pm = parsePodManifest(JSON.stringify(SPEC_EXAMPLE));
  t.deepEqual(pm, SPEC_EXAMPLE as unknown);
  t.is(memoryLimit(pm.isolators), 4e9);
  t.deepEqual(sysctls(pm.isolators), { 'net.ipv4.tcp_fin_timeout': '6' });
  t.is(podApp(pm, 'backup')?.image.labels?.[0]?.value, 'latest');
  t.is(podApp(pm, 'nope'), undefined);
});

test('what rkt writes: null lists, short image IDs, its own version as acVersion', (t) => {
  const pm = parsePodManifest(
    JSON.stringify({
      acVersion: '1.30.0',
      acKind: 'PodManifest',
      apps: [{ name: 'busybox', image: { name: 'registry-1.docker.io/library/busybox', id: `sha512-${'f'.repeat(64)}` }, app: { exec: ['/bin/sh'], user: '0', group: '0' } }],
      volumes: null,
      isolators: null,
      annotations: [{ name: 'coreos.com/rkt/stage1/mutable', value: 'false' }],
      ports: null,
    }),
  );
  t.is(pm.volumes, undefined);
  t.is(pm.apps[0]?.name, 'busybox');
});

test('acKind, acVersion and apps are required', (t) => {
  rejects(t, (m) => (m.acKind = 'ImageManifest'), 'acKind', /PodManifest/);
  rejects(t, (m) => delete m.acVersion, 'acVersion', /required/);
  rejects(t, (m) => delete (m as Obj).apps, 'apps', /required/);
  accepts(t, (m) => (m.apps = []));
});

test('apps: AC names, unique, image with an ID', (t) => {
  rejects(t, (m) => (m.apps[0]!.name = 'reduce_worker'), 'apps[0].name', /AC name/);
  rejects(t, (m) => (m.apps[1]!.name = 'reduce-worker'), 'apps[1].name', /duplicate app name/);
  rejects(t, (m) => delete m.apps[2]!.image, 'apps[2].image', /required/);
  rejects(t, (m) => delete (m.apps[2]!.image as Obj).id, 'apps[2].image.id', /required/);
  rejects(t, (m) => ((m.apps[2]!.image as Obj).id = 'sha512-...'), 'apps[2].image.id', /image ID/);
  rejects(t, (m) => ((m.apps[2]!.image as Obj).name = 'Register'), 'apps[2].image.name', /AC identifier/);
  accepts(t, (m) => delete (m.apps[2]!.image as Obj).name);
  rejects(t, (m) => ((m.apps[2]!.image as Obj).labels = [{ name: 'os', value: 'linux' }, { name: 'arch', value: 'x86_64' }]), 'apps[2].image.labels[1].value', /arch/);
});

test('app overrides follow the image manifest rules', (t) => {
  rejects(t, (m) => (m.apps[0]!.app!.exec = ['reduce-worker']), 'apps[0].app.exec[0]', /absolute/);
  rejects(t, (m) => delete m.apps[0]!.app!.user, 'apps[0].app.user', /required/);
  rejects(t, (m) => (m.apps[0]!.app!.isolators = [{ name: 'os/linux/oom-score-adj', value: 5000 }]), 'apps[0].app.isolators[0].value');
  accepts(t, (m) => Object.assign(m.apps[0]!.app!, { userAnnotations: { team: 'db' }, userLabels: { tier: 'backend' } }));
  rejects(t, (m) => (m.apps[0]!.app!.userLabels = { tier: 3 }), 'apps[0].app.userLabels.tier', /string/);
});

test('readOnlyRootFS is a boolean', (t) => {
  accepts(t, (m) => (m.apps[0]!.readOnlyRootFS = true));
  rejects(t, (m) => (m.apps[0]!.readOnlyRootFS = 'true'), 'apps[0].readOnlyRootFS', /true or false/);
});

test('every mount names a declared volume', (t) => {
  rejects(t, (m) => (m.apps[1]!.mounts![1]!.volume = 'scratch'), 'apps[1].mounts[1].volume', /no volume named "scratch"/);
  rejects(t, (m) => (m.volumes = []), 'apps[0].mounts[0].volume', /no volume/);
  // an appVolume stands in for a pod-level volume
  accepts(t, (m) => (m.apps[1]!.mounts![1] = { volume: 'scratch', path: '/mnt/out', appVolume: { name: 'scratch', kind: 'empty' } }));
  rejects(t, (m) => (m.apps[1]!.mounts![1] = { volume: 'scratch', path: '/mnt/out', appVolume: { name: 'scratch', kind: 'host' } }), 'apps[1].mounts[1].appVolume.source', /required/);
});

test('mounts: volume and absolute path, no path twice in one app', (t) => {
  rejects(t, (m) => (m.apps[0]!.mounts![0]!.path = 'var/lib/db'), 'apps[0].mounts[0].path', /absolute/);
  rejects(t, (m) => delete m.apps[0]!.mounts![0]!.volume, 'apps[0].mounts[0].volume', /required/);
  rejects(t, (m) => (m.apps[1]!.mounts![1]!.path = '/mnt/db/'), 'apps[1].mounts[1].path', /duplicate mount path/);
});

test('volumes: unique AC names, host needs an absolute source', (t) => {
  rejects(t, (m) => (m.volumes[1]!.name = 'dbvolume'), 'volumes[1].name', /duplicate volume/);
  rejects(t, (m) => (m.volumes[0]!.name = 'db_volume'), 'volumes[0].name', /AC name/);
  rejects(t, (m) => (m.volumes[0]!.kind = 'nfs'), 'volumes[0].kind', /"host" or "empty"/);
  rejects(t, (m) => delete m.volumes[0]!.source, 'volumes[0].source', /required/);
  rejects(t, (m) => (m.volumes[0]!.source = 'opt/data'), 'volumes[0].source', /absolute/);
  rejects(t, (m) => (m.volumes[0]!.mode = '0755'), 'volumes[0].mode', /empty/);
  rejects(t, (m) => (m.volumes[0]!.readOnly = 'no'), 'volumes[0].readOnly');
  accepts(t, (m) => (m.volumes[0]!.recursive = true));
  rejects(t, (m) => (m.volumes[0]!.recursive = 1), 'volumes[0].recursive');
});

test('empty volumes get default mode and owner; bad ones are refused', (t) => {
  const pm = validatePodManifest(variant((m) => (m.volumes[1] = { name: 'buildoutput', kind: 'empty' })));
  t.deepEqual(pm.volumes?.[1], { name: 'buildoutput', kind: 'empty', mode: '0755', uid: 0, gid: 0 });
  rejects(t, (m) => (m.volumes[1]!.source = '/x'), 'volumes[1].source', /host/);
  rejects(t, (m) => (m.volumes[1]!.mode = '0999'), 'volumes[1].mode', /octal/);
  rejects(t, (m) => (m.volumes[1]!.mode = 755), 'volumes[1].mode', /string/);
  accepts(t, (m) => (m.volumes[1]!.mode = '1777'));
  rejects(t, (m) => (m.volumes[1]!.uid = -1), 'volumes[1].uid');
  rejects(t, (m) => (m.volumes[1]!.gid = '0'), 'volumes[1].gid', /integer/);
});

test('pod ports: name, host port, optional host IP and pod port', (t) => {
  accepts(t, (m) => (m.ports = [{ name: 'ftp', hostPort: 2121 }]));
  accepts(t, (m) => (m.ports = [{ name: 'http', hostPort: 8080, hostIP: '127.0.0.1' }, { name: 'dns', hostPort: 53, hostIP: '::1' }]));
  accepts(t, (m) => (m.ports = [{ name: 'http', hostPort: 8080, podPort: { name: 'http', protocol: 'tcp', port: 80 } }]));
  rejects(t, (m) => (m.ports = [{ name: 'http', hostPort: 0 }]), 'ports[0].hostPort', /between 1 and 65535/);
  rejects(t, (m) => (m.ports = [{ name: 'http' }]), 'ports[0].hostPort', /required/);
  rejects(t, (m) => (m.ports = [{ name: 'Http', hostPort: 80 }]), 'ports[0].name', /AC name/);
  rejects(t, (m) => (m.ports = [{ name: 'http', hostPort: 80, hostIP: 'localhost' }]), 'ports[0].hostIP', /IP/);
  rejects(t, (m) => (m.ports = [{ name: 'http', hostPort: 80, podPort: { name: 'http', protocol: 'tcp', port: 0 } }]), 'ports[0].podPort.port');
});

test('two apps may declare the same port name (rkt): only forwarding it is ambiguous', (t) => {
  const pm = validatePodManifest(
    variant((m) => {
      m.apps[1]!.app = { exec: ['/b'], user: '0', group: '0', ports: [{ name: 'http', protocol: 'tcp', port: 81 }] };
      m.apps[0]!.app!.ports = [{ name: 'http', protocol: 'tcp', port: 80 }];
    }),
  );
  t.deepEqual(
    pm.apps.slice(0, 2).map((a) => a.app?.ports?.[0]?.port),
    [80, 81],
  );
});

test('pod isolators, annotations, user annotations and labels', (t) => {
  rejects(t, (m) => (m.isolators = [{ name: 'os/unix/sysctl', value: {} }, { name: 'os/unix/sysctl', value: {} }]), 'isolators[1].name', /only one/);
  rejects(t, (m) => (m.annotations = [{ name: 'ip-address', value: 'a' }, { name: 'ip-address', value: 'b' }]), 'annotations[1].name', /duplicate/);
  const pm = validatePodManifest(variant((m) => Object.assign(m, { userAnnotations: { owner: 'ops' }, userLabels: { env: 'prod' } })));
  t.deepEqual(pm.userAnnotations, { owner: 'ops' });
  t.deepEqual(pm.userLabels, { env: 'prod' });
  rejects(t, (m) => (m.userAnnotations = ['x']), 'userAnnotations', /object/);
});

test('serialize validates and round-trips', (t) => {
  const pm = parsePodManifest(JSON.stringify(SPEC_EXAMPLE));
  const text = serializePodManifest(pm);
  t.deepEqual(parsePodManifest(text), pm);
  t.true(text.startsWith('{"acVersion":"0.8.10","acKind":"PodManifest","apps":'));
  const broken = { ...pm, apps: [...pm.apps, pm.apps[0]!] };
  t.regex(t.throws(() => serializePodManifest(broken), { instanceOf: ManifestError })?.rule ?? '', /duplicate app name/);
});
