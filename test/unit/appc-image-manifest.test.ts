import test, { type ExecutionContext } from 'ava';
import { isSemVer, parseImageManifest, serializeImageManifest, validateImageManifest } from '../../src/appc/image-manifest.js';
import { annotationValue, isRFC3339, labelValue, VALID_OS_ARCH } from '../../src/appc/metadata.js';
import { memoryLimit } from '../../src/appc/isolators.js';
import { ManifestError } from '../../src/errors.js';

const HASH = `sha512-${'ab12'.repeat(32)}`;

// The manifest of spec/aci.md, with a real hash where the spec writes "sha512-...".
const SPEC_EXAMPLE = {
  acKind: 'ImageManifest',
  acVersion: '0.8.11',
  name: 'example.com/reduce-worker',
  labels: [
    { name: 'version', value: '1.0.0' },
    { name: 'arch', value: 'amd64' },
    { name: 'os', value: 'linux' },
  ],
  app: {
    exec: ['/usr/bin/reduce-worker', '--quiet'],
    user: '100',
    group: '300',
    eventHandlers: [
      { exec: ['/usr/bin/data-downloader'], name: 'pre-start' },
      { exec: ['/usr/bin/deregister-worker', '--verbose'], name: 'post-stop' },
    ],
    workingDirectory: '/opt/work',
    environment: [{ name: 'REDUCE_WORKER_DEBUG', value: 'true' }],
    isolators: [
      { name: 'resource/cpu', value: { request: '250', limit: '500' } },
      { name: 'resource/memory', value: { request: '1G', limit: '2G' } },
      { name: 'os/linux/capabilities-retain-set', value: { set: ['CAP_NET_BIND_SERVICE'] } },
    ],
    mountPoints: [{ name: 'work', path: '/var/lib/work', readOnly: false }],
    ports: [
      { name: 'health', port: 4000, protocol: 'tcp', socketActivated: true },
      { name: 'ftp-data', port: 20000, count: 1000, protocol: 'tcp' },
    ],
  },
  dependencies: [
    {
      imageName: 'example.com/reduce-worker-base',
      imageID: HASH,
      labels: [
        { name: 'os', value: 'linux' },
        { name: 'env', value: 'canary' },
      ],
      size: 22017258,
    },
  ],
  pathWhitelist: ['/etc/ca/example.com/crt', '/usr/bin/map-reduce-worker', '/opt/libs/reduce-toolkit.so', '/etc/reduce-worker.conf', '/etc/systemd/system/'],
  annotations: [
    { name: 'authors', value: 'Carly Container <carly@example.com>, Nat Network <[nat@example.com](mailto:nat@example.com)>' },
    { name: 'created', value: '2014-10-27T19:32:27.67021798Z' },
    { name: 'documentation', value: 'https://example.com/docs' },
    { name: 'homepage', value: 'https://example.com' },
    { name: 'appc.io/executor/supports-systemd-notify', value: 'false' },
  ],
};

type Obj = Record<string, unknown>;

/** A copy of the spec example changed by `edit`. */
function variant(edit: (m: Obj & { app: Obj }) => void): Obj {
  const m = structuredClone(SPEC_EXAMPLE) as unknown as Obj & { app: Obj };
  edit(m);
  return m;
}

function accepts(t: ExecutionContext, edit: (m: Obj & { app: Obj }) => void): void {
  t.notThrows(() => validateImageManifest(variant(edit)));
}

function rejects(t: ExecutionContext, edit: (m: Obj & { app: Obj }) => void, field: string, rule?: RegExp): void {
  const err = t.throws(() => validateImageManifest(variant(edit)), { instanceOf: ManifestError });
  t.is(err?.field, field);
  if (rule !== undefined) t.regex(err?.rule ?? '', rule);
}

test('the spec example parses and keeps every field', (t) => {
  const m = parseImageManifest(JSON.stringify(SPEC_EXAMPLE));
  t.deepEqual(m, SPEC_EXAMPLE as unknown);
  t.is(labelValue(m.labels, 'version'), '1.0.0');
  t.is(annotationValue(m.annotations, 'homepage'), 'https://example.com');
  t.is(memoryLimit(m.app?.isolators), 2e9);
});

test('a minimal manifest and a Buffer input', (t) => {
  const m = parseImageManifest(Buffer.from('{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/tiny"}'));
  t.deepEqual(m, { acKind: 'ImageManifest', acVersion: '0.8.11', name: 'example.com/tiny' });
});

test('not JSON, not an object', (t) => {
  t.is(t.throws(() => parseImageManifest('{'), { instanceOf: ManifestError })?.field, 'manifest');
  t.regex(t.throws(() => parseImageManifest('[]'), { instanceOf: ManifestError })?.rule ?? '', /object/);
});

test('unknown fields are accepted and dropped; null means absent', (t) => {
  const m = validateImageManifest(variant((m) => Object.assign(m, { futureField: { x: 1 }, annotations: null })));
  t.false('futureField' in m);
  t.is(m.annotations, undefined);
});

test('acKind, acVersion and name', (t) => {
  rejects(t, (m) => (m.acKind = 'PodManifest'), 'acKind', /ImageManifest/);
  rejects(t, (m) => delete m.acKind, 'acKind', /required/);
  rejects(t, (m) => (m.acVersion = '1.0'), 'acVersion', /semantic version/);
  rejects(t, (m) => (m.acVersion = 5), 'acVersion', /string/);
  accepts(t, (m) => (m.acVersion = '1.0.0-rc.1+build.5'));
  rejects(t, (m) => delete m.name, 'name', /required/);
  rejects(t, (m) => (m.name = 'Example.com/App'), 'name', /AC identifier/);
  t.true(isSemVer('0.8.11'));
  t.false(isSemVer('01.2.3'));
  t.false(isSemVer('v1.2.3'));
});

test('labels: AC identifier names, unique, not "name", non-empty version', (t) => {
  accepts(t, (m) => (m.labels = [{ name: 'example.com/channel', value: '' }]));
  rejects(t, (m) => (m.labels = [{ name: 'Version', value: '1' }]), 'labels[0].name', /AC identifier/);
  rejects(t, (m) => (m.labels = [{ name: 'a', value: '1' }, { name: 'a', value: '2' }]), 'labels[1].name', /duplicate/);
  rejects(t, (m) => (m.labels = [{ name: 'name', value: 'x' }]), 'labels[0].name', /"name"/);
  rejects(t, (m) => (m.labels = [{ name: 'version', value: '' }]), 'labels[0].value', /version/);
  rejects(t, (m) => (m.labels = [{ name: 'version', value: 1 }]), 'labels[0].value', /string/);
  rejects(t, (m) => (m.labels = { version: '1' }), 'labels', /array/);
});

test('labels: os and arch combinations', (t) => {
  for (const [os, arches] of Object.entries(VALID_OS_ARCH)) {
    for (const arch of arches) accepts(t, (m) => (m.labels = [{ name: 'os', value: os }, { name: 'arch', value: arch }]));
  }
  accepts(t, (m) => (m.labels = [{ name: 'os', value: 'linux' }]));
  // arch alone says nothing without os
  accepts(t, (m) => (m.labels = [{ name: 'arch', value: 'whatever' }]));
  rejects(t, (m) => (m.labels = [{ name: 'os', value: 'plan9' }]), 'labels[0].value', /unsupported os/);
  rejects(t, (m) => (m.labels = [{ name: 'arch', value: 'x86_64' }, { name: 'os', value: 'linux' }]), 'labels[0].value', /unsupported arch/);
  rejects(t, (m) => (m.labels = [{ name: 'os', value: 'darwin' }, { name: 'arch', value: 'amd64' }]), 'labels[1].value', /darwin/);
});

test('app is optional; user and group are required and non-empty', (t) => {
  accepts(t, (m) => delete (m as Obj).app);
  rejects(t, (m) => delete m.app.user, 'app.user', /required/);
  rejects(t, (m) => (m.app.group = ''), 'app.group', /empty/);
  rejects(t, (m) => (m.app.user = 0), 'app.user', /string/);
  accepts(t, (m) => Object.assign(m.app, { user: '/usr/bin/ping', group: 'root' }));
});

test('exec: strings, first one an absolute path; may be left out', (t) => {
  rejects(t, (m) => (m.app.exec = ['reduce-worker']), 'app.exec[0]', /absolute path/);
  rejects(t, (m) => (m.app.exec = ['/bin/sh', 3]), 'app.exec[1]', /string/);
  rejects(t, (m) => (m.app.exec = '/bin/sh -c true'), 'app.exec', /array/);
  accepts(t, (m) => delete m.app.exec);
  accepts(t, (m) => (m.app.exec = []));
});

test('supplementaryGIDs are non-negative integers', (t) => {
  accepts(t, (m) => (m.app.supplementaryGIDs = [0, 10, 1000]));
  rejects(t, (m) => (m.app.supplementaryGIDs = [10, -1]), 'app.supplementaryGIDs[1]', /between/);
  rejects(t, (m) => (m.app.supplementaryGIDs = ['10']), 'app.supplementaryGIDs[0]', /integer/);
});

test('event handlers: pre-start/post-stop once each, with a command', (t) => {
  rejects(t, (m) => (m.app.eventHandlers = [{ name: 'post-start', exec: ['/x'] }]), 'app.eventHandlers[0].name', /pre-start/);
  rejects(
    t,
    (m) => (m.app.eventHandlers = [{ name: 'pre-start', exec: ['/x'] }, { name: 'pre-start', exec: ['/y'] }]),
    'app.eventHandlers[1].name',
    /duplicate/,
  );
  rejects(t, (m) => (m.app.eventHandlers = [{ name: 'pre-start', exec: [] }]), 'app.eventHandlers[0].exec', /command/);
  rejects(t, (m) => (m.app.eventHandlers = [{ name: 'pre-start' }]), 'app.eventHandlers[0].exec', /required/);
  rejects(t, (m) => (m.app.eventHandlers = [{ name: 'post-stop', exec: ['cleanup'] }]), 'app.eventHandlers[0].exec[0]', /absolute/);
});

test('workingDirectory must be absolute', (t) => {
  rejects(t, (m) => (m.app.workingDirectory = 'opt/work'), 'app.workingDirectory', /absolute path/);
  accepts(t, (m) => (m.app.workingDirectory = '/'));
});

test('environment: valid, unique names and string values', (t) => {
  accepts(t, (m) => (m.app.environment = [{ name: '_X1', value: '' }, { name: 'lower_case', value: 'v' }]));
  rejects(t, (m) => (m.app.environment = [{ name: '1X', value: '' }]), 'app.environment[0].name', /environment variable name/);
  rejects(t, (m) => (m.app.environment = [{ name: 'A-B', value: '' }]), 'app.environment[0].name');
  rejects(t, (m) => (m.app.environment = [{ name: 'A', value: '1' }, { name: 'A', value: '2' }]), 'app.environment[1].name', /duplicate/);
  rejects(t, (m) => (m.app.environment = [{ name: 'A', value: 1 }]), 'app.environment[0].value', /string/);
});

test('isolators are checked through the registry', (t) => {
  rejects(t, (m) => ((m.app.isolators as Obj[])[1] = { name: 'resource/memory', value: { limit: 'much' } }), 'app.isolators[1].value.limit', /quantity/);
  accepts(t, (m) => (m.app.isolators = [{ name: 'vendor.example/unknown', value: 'anything' }]));
});

test('mount points: AC names, unique, absolute paths', (t) => {
  rejects(t, (m) => (m.app.mountPoints = [{ name: 'Work', path: '/w' }]), 'app.mountPoints[0].name', /AC name/);
  rejects(t, (m) => (m.app.mountPoints = [{ name: 'work', path: 'w' }]), 'app.mountPoints[0].path', /absolute/);
  rejects(t, (m) => (m.app.mountPoints = [{ name: 'w', path: '/a' }, { name: 'w', path: '/b' }]), 'app.mountPoints[1].name', /duplicate/);
  rejects(t, (m) => (m.app.mountPoints = [{ name: 'w', path: '/a', readOnly: 'yes' }]), 'app.mountPoints[0].readOnly', /true or false/);
});

test('ports: names, protocol, range and count', (t) => {
  const port = (p: Obj) => (m: Obj & { app: Obj }) => (m.app.ports = [{ name: 'http', protocol: 'tcp', port: 80, ...p }]);
  accepts(t, port({ protocol: 'udp', port: 65535 }));
  accepts(t, port({ port: 65000, count: 536 }));
  rejects(t, port({ name: 'HTTP' }), 'app.ports[0].name', /AC name/);
  rejects(t, port({ protocol: '' }), 'app.ports[0].protocol', /empty/);
  rejects(t, port({ port: 0 }), 'app.ports[0].port', /between 1 and 65535/);
  rejects(t, port({ port: 65536 }), 'app.ports[0].port');
  rejects(t, port({ port: '80' }), 'app.ports[0].port', /integer/);
  rejects(t, port({ count: 0 }), 'app.ports[0].count', /at least 1/);
  rejects(t, port({ port: 65000, count: 537 }), 'app.ports[0].count', /65535/);
  rejects(t, port({ socketActivated: 1 }), 'app.ports[0].socketActivated');
  rejects(t, (m) => (m.app.ports = [{ name: 'a', protocol: 'tcp', port: 1 }, { name: 'a', protocol: 'udp', port: 1 }]), 'app.ports[1].name', /duplicate/);
});

test('dependencies: image name, image ID, labels, size', (t) => {
  const dep = (d: Obj) => (m: Obj) => (m.dependencies = [{ imageName: 'example.com/base', ...d }]);
  accepts(t, dep({}));
  accepts(t, dep({ imageID: 'sha512-0123456789abcdef' }));
  rejects(t, dep({ imageName: 'Base' }), 'dependencies[0].imageName', /AC identifier/);
  rejects(t, (m) => (m.dependencies = [{ imageID: HASH }]), 'dependencies[0].imageName', /required/);
  rejects(t, dep({ imageID: 'sha512-...' }), 'dependencies[0].imageID', /image ID/);
  rejects(t, dep({ imageID: 'sha256-abcd' }), 'dependencies[0].imageID', /image ID/);
  rejects(t, dep({ imageID: `sha512-${'A'.repeat(128)}` }), 'dependencies[0].imageID');
  rejects(t, dep({ imageID: `${HASH}0` }), 'dependencies[0].imageID');
  rejects(t, dep({ labels: [{ name: 'os', value: 'beos' }] }), 'dependencies[0].labels[0].value', /os/);
  rejects(t, dep({ size: -1 }), 'dependencies[0].size', /negative/);
  rejects(t, dep({ size: 1.5 }), 'dependencies[0].size', /integer/);
});

test('pathWhitelist: absolute and unique', (t) => {
  accepts(t, (m) => (m.pathWhitelist = []));
  rejects(t, (m) => (m.pathWhitelist = ['/a', 'b']), 'pathWhitelist[1]', /absolute/);
  rejects(t, (m) => (m.pathWhitelist = ['/a', '/a']), 'pathWhitelist[1]', /duplicate/);
});

test('annotations: unique AC identifiers; created, homepage, documentation are checked', (t) => {
  const anno = (name: string, value: unknown) => (m: Obj) => (m.annotations = [{ name, value }]);
  accepts(t, anno('coreos.com/rkt/stage1/run', '/init'));
  accepts(t, anno('created', '2015-05-18T13:49:28.351729952-04:00'));
  rejects(t, anno('created', '2015-05-18 13:49:28Z'), 'annotations[0].value', /RFC 3339/);
  rejects(t, anno('created', '2015-02-30T00:00:00Z'), 'annotations[0].value');
  rejects(t, anno('homepage', 'ftp://example.com'), 'annotations[0].value', /http/);
  rejects(t, anno('documentation', 'example.com/docs'), 'annotations[0].value', /http/);
  rejects(t, anno('Created', 'x'), 'annotations[0].name', /AC identifier/);
  rejects(t, anno('authors', ['x']), 'annotations[0].value', /string/);
  rejects(t, (m) => (m.annotations = [{ name: 'a', value: '' }, { name: 'a', value: '' }]), 'annotations[1].name', /duplicate/);
});

test('RFC 3339 timestamps', (t) => {
  t.true(isRFC3339('2014-10-27T19:32:27.67021798Z'));
  t.true(isRFC3339('2016-12-31T23:59:60Z'));
  t.true(isRFC3339('2000-02-29T00:00:00+05:30'));
  t.false(isRFC3339('1900-02-29T00:00:00Z'));
  t.false(isRFC3339('2014-10-27t19:32:27Z'));
  t.false(isRFC3339('2014-10-27T24:00:00Z'));
  t.false(isRFC3339('2014-10-27T19:32:27'));
});

test('serialize round-trips and refuses an invalid manifest', (t) => {
  const m = parseImageManifest(JSON.stringify(SPEC_EXAMPLE));
  t.deepEqual(parseImageManifest(serializeImageManifest(m)), m);
  const bad = { ...m, name: 'Not Valid' };
  t.is(t.throws(() => serializeImageManifest(bad), { instanceOf: ManifestError })?.field, 'name');
});
