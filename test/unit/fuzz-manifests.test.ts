import { isDeepStrictEqual } from 'node:util';
import test from 'ava';
import fc from 'fast-check';
import { parseImageManifest, serializeImageManifest } from '../../src/appc/image-manifest.js';
import { parsePodManifest, serializePodManifest } from '../../src/appc/pod-manifest.js';
import { ManifestError } from '../../src/errors.js';
import { assertTypedError, fuzz, mutationOf, mutate, withinMs } from '../helpers/fuzz.js';

// Property tests of the image and pod manifest parsers: an image's manifest
// is the image author's JSON, and a pod manifest is read back from disk.

const id = (c: string): string => `sha512-${c.repeat(128)}`;

// Valid manifests that use every part of the schema: mutations of them reach
// each rule, where random JSON rarely gets past the first field.
const IMAGE = {
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
    supplementaryGIDs: [7, 8],
    eventHandlers: [{ exec: ['/usr/bin/data-downloader'], name: 'pre-start' }],
    workingDirectory: '/opt/work',
    environment: [{ name: 'DEBUG', value: 'true' }],
    isolators: [
      { name: 'resource/cpu', value: { request: '250m', limit: '500m' } },
      { name: 'resource/memory', value: { request: '1G', limit: '2Gi' } },
      { name: 'resource/block-iops', value: { default: true, limit: 1000 } },
      { name: 'os/linux/capabilities-retain-set', value: { set: ['CAP_NET_BIND_SERVICE'] } },
      { name: 'os/linux/seccomp-remove-set', value: { set: ['@docker/default-blacklist', 'reboot'], errno: 'EPERM' } },
      { name: 'os/linux/no-new-privileges', value: true },
      { name: 'os/linux/oom-score-adj', value: 100 },
      { name: 'os/linux/cpu-shares', value: 512 },
      { name: 'os/linux/selinux-context', value: { user: 'u', role: 'r', type: 't', level: 's0' } },
      { name: 'os/unix/sysctl', value: { 'net.ipv4.ip_forward': '1' } },
    ],
    mountPoints: [{ name: 'work', path: '/var/lib/work', readOnly: false }],
    ports: [{ name: 'ftp-data', port: 20000, count: 1000, protocol: 'tcp', socketActivated: true }],
  },
  dependencies: [{ imageName: 'example.com/base', imageID: id('a'), labels: [{ name: 'os', value: 'linux' }], size: 22017258 }],
  pathWhitelist: ['/etc/ca/example.com/crt', '/usr/bin/map-reduce-worker'],
  annotations: [{ name: 'created', value: '2014-10-27T19:32:27.67021798Z' }],
};

const POD = {
  acKind: 'PodManifest',
  acVersion: '1.30.0',
  apps: [
    {
      name: 'reduce-worker',
      image: { name: 'example.com/reduce-worker', id: id('8'), labels: [{ name: 'version', value: 'latest' }] },
      app: IMAGE.app,
      readOnlyRootFS: true,
      mounts: [
        { volume: 'dbvolume', path: '/var/lib/db' },
        { volume: 'private', path: '/tmp/x', appVolume: { name: 'private', kind: 'empty', mode: '0700', uid: 1, gid: 2 } },
      ],
      annotations: [{ name: 'foo', value: 'baz' }],
    },
  ],
  volumes: [
    { name: 'dbvolume', kind: 'host', source: '/opt/db', readOnly: true, recursive: false },
    { name: 'out', kind: 'empty', mode: '0777', uid: 0, gid: 0 },
  ],
  isolators: [{ name: 'resource/memory', value: { limit: '4G' } }],
  annotations: [{ name: 'ip-address', value: '10.1.2.3' }],
  ports: [{ name: 'ftp-data', hostPort: 8080, hostIP: '127.0.0.1', podPort: { name: 'ftp-data', port: 21, protocol: 'tcp' } }],
  userAnnotations: { a: 'b' },
  userLabels: { c: 'd' },
};

type Json = unknown;

/** Strings that mean something to one rule or another. */
const tricky = fc.constantFrom(
  '', '/', '..', '/a/../b', 'a\u0000b', 'sha512-', id('f'), id('F'), '0755', '07777', '99999', '1G', '-1', '1e400', '0.001m', 'linux', 'amd64',
  'CAP_SYS_ADMIN', 'cap_chown', '@docker/default-whitelist', '@x/y', 'tcp', 'udp', 'pre-start', 'host', 'empty', '::1', '1.2.3.4.5',
  'example.com/x', 'Example.com', 'a'.repeat(300), '\u001b[31mred', '\u202eevil', '__proto__', 'constructor',
);
const value: fc.Arbitrary<Json> = fc.oneof(fc.jsonValue({ maxDepth: 2 }), tricky, fc.integer(), fc.constantFrom(-1, 0, 65536, 2 ** 53, 1.5, null, true, [], {}));

const mutation = mutationOf(fc.constantFrom('name', 'value', 'set', 'limit', 'request', 'errno', 'id', 'labels', 'app', 'kind', '__proto__', 'count'), value);

const kinds = [
  { base: IMAGE, parse: parseImageManifest, serialize: serializeImageManifest },
  { base: POD, parse: parsePodManifest, serialize: serializePodManifest },
] as const;

/** Parse `text` as each kind: a ManifestError, or a manifest that survives serialize -> parse unchanged. */
function check(text: string | Buffer): void {
  for (const k of kinds) {
    let m: ReturnType<typeof k.parse>;
    try {
      m = withinMs(1000, 'parsing a manifest', () => k.parse(text));
    } catch (err) {
      assertTypedError(err, ManifestError, String(text).slice(0, 300));
      continue;
    }
    const out = (k.serialize as (x: typeof m) => string)(m);
    const again = k.parse(out);
    if (!isDeepStrictEqual(again, m)) throw new Error(`serialize then parse changed the manifest: ${out.slice(0, 300)}`);
    if ((k.serialize as (x: typeof m) => string)(again) !== out) throw new Error('serializing is not stable');
  }
}

test('the bases are valid manifests', (t) => {
  t.notThrows(() => parseImageManifest(JSON.stringify(IMAGE)));
  t.notThrows(() => parsePodManifest(JSON.stringify(POD)));
});

test('manifests: any mutation of a valid manifest is refused with a ManifestError or round-trips', (t) => {
  fuzz(
    t,
    fc.property(fc.constantFrom(IMAGE, POD), fc.array(mutation, { minLength: 1, maxLength: 4 }), (base, mutations) => {
      check(JSON.stringify(mutate(base, mutations)));
    }),
  );
});

test('manifests: any text or bytes are refused with a ManifestError or round-trip', (t) => {
  fuzz(
    t,
    fc.property(
      fc.oneof(
        fc.string({ unit: 'binary', maxLength: 200 }),
        fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
        fc.json({ maxDepth: 4 }),
        fc.integer({ min: 1, max: 100_000 }).map((n) => `${'{"acKind":'.repeat(n)}1${'}'.repeat(n)}`),
      ),
      (text) => check(text),
    ),
  );
});
