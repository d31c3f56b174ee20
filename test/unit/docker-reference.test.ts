import test from 'ava';
import crypto from 'node:crypto';
import fc from 'fast-check';
import { UsageError } from '../../src/errors.js';
import { DOCKER_HUB, formatDockerRef, isDockerTransport, parseDockerImageString } from '../../src/docker/reference.js';
import { parseChallenge } from '../../src/docker/registry.js';
import { ImageDocumentError, parseImageConfig, parseManifestOrIndex, selectPlatform } from '../../src/docker/manifest.js';
import { chainIds } from '../../src/docker/fetch.js';
import { assertTypedError, fuzz } from '../helpers/fuzz.js';

const D = `sha256:${'a'.repeat(64)}`;

test('docker:// names: Docker Hub defaults, registries with ports, tags and digests', (t) => {
  t.like(parseDockerImageString('docker://busybox'), { registry: DOCKER_HUB, repository: 'library/busybox', tag: 'latest' });
  t.like(parseDockerImageString('docker:///redis:7'), { registry: DOCKER_HUB, repository: 'library/redis', tag: '7' });
  t.like(parseDockerImageString('docker://docker.io/me/app'), { registry: DOCKER_HUB, repository: 'me/app', tag: 'latest' });
  t.like(parseDockerImageString('docker://quay.io/coreos/etcd:v3.5'), { registry: 'quay.io', repository: 'coreos/etcd', tag: 'v3.5' });
  t.like(parseDockerImageString('docker://127.0.0.1:5000/a/b/c:1.0'), { registry: '127.0.0.1:5000', repository: 'a/b/c', tag: '1.0' });
  t.like(parseDockerImageString('docker://localhost/x'), { registry: 'localhost', repository: 'x' });
  const byDigest = parseDockerImageString(`docker://127.0.0.1:5000/img@${D}`);
  t.like(byDigest, { repository: 'img', digest: D, tag: undefined });
  t.is(formatDockerRef(byDigest), `docker://127.0.0.1:5000/img@${D}`);
  t.is(formatDockerRef(parseDockerImageString('docker://busybox')), 'docker://registry-1.docker.io/library/busybox:latest');
});

test('oci: and docker-archive: take a path and an optional reference after the first colon', (t) => {
  t.deepEqual(parseDockerImageString('oci:/srv/layout'), { transport: 'oci', path: '/srv/layout', ref: undefined });
  t.deepEqual(parseDockerImageString('oci:./layout:v1'), { transport: 'oci', path: './layout', ref: 'v1' });
  t.deepEqual(parseDockerImageString('docker-archive:/tmp/a.tar:repo/app:2'), { transport: 'docker-archive', path: '/tmp/a.tar', ref: 'repo/app:2' });
  t.true(isDockerTransport('docker://x'));
  t.true(isDockerTransport('oci:x'));
  t.false(isDockerTransport('example.com/app:1.0'));
  t.false(isDockerTransport('https://example.com/a.aci'));
});

test('bad docker image strings are usage errors that say what is wrong', (t) => {
  for (const [s, re] of [
    ['docker://', /no repository/],
    ['docker://UPPER/case', /lowercase/],
    ['docker://busybox:bad tag', /not a valid tag/],
    ['docker://busybox@sha256:1234', /not a sha256/],
    ['docker://a..b', /lowercase letters/],
    ['oci:', /no path/],
    ['oci:/x:', /empty reference/],
  ] as const) {
    const err = t.throws(() => parseDockerImageString(s), { instanceOf: UsageError }, s);
    t.regex(err!.message, re, s);
  }
});

test('WWW-Authenticate challenges: scheme and quoted parameters', (t) => {
  t.deepEqual(parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"'), {
    scheme: 'bearer',
    params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull' },
  });
  t.deepEqual(parseChallenge('Basic realm="rkt test"'), { scheme: 'basic', params: { realm: 'rkt test' } });
  t.deepEqual(parseChallenge('Bearer realm="a\\"b", service=plain'), { scheme: 'bearer', params: { realm: 'a"b', service: 'plain' } });
  t.is(parseChallenge(''), undefined);
});

test('manifests: schema 1 and foreign layers are refused with a reason; an index selects linux/amd64', (t) => {
  t.throws(() => parseManifestOrIndex(Buffer.from('{"schemaVersion":1,"fsLayers":[]}'), 'm'), { instanceOf: ImageDocumentError, message: /schema 1 is not supported/ });
  const layer = { mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', digest: D, size: 1 };
  const foreign = { schemaVersion: 2, config: { digest: D, size: 2 }, layers: [layer] };
  t.throws(() => parseManifestOrIndex(Buffer.from(JSON.stringify(foreign)), 'm'), { message: /foreign layer/ });
  const tooMany = { schemaVersion: 2, config: { digest: D, size: 2 }, layers: Array.from({ length: 200 }, () => ({ digest: D, size: 1 })) };
  t.throws(() => parseManifestOrIndex(Buffer.from(JSON.stringify(tooMany)), 'm'), { message: /at most 127/ });
  t.throws(() => parseManifestOrIndex(Buffer.from('{"schemaVersion":2,"config":{"digest":"sha512:00","size":1},"layers":[]}'), 'm'), { message: /not sha256/ });
  const index = parseManifestOrIndex(
    Buffer.from(JSON.stringify({
      schemaVersion: 2,
      manifests: [
        { digest: `sha256:${'1'.repeat(64)}`, size: 1, platform: { os: 'linux', architecture: 'arm64' } },
        { digest: `sha256:${'2'.repeat(64)}`, size: 1, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    })),
    'i',
  );
  if (index.kind !== 'index') return t.fail('not an index');
  t.is(selectPlatform(index, { os: 'linux', architecture: 'amd64' }, 'i').digest, `sha256:${'2'.repeat(64)}`);
  t.throws(() => selectPlatform(index, { os: 'linux', architecture: 's390x' }, 'i'), { message: /has: linux\/arm64, linux\/amd64/ });
});

test('OCI chain IDs: the first is the diff ID, each next one hashes "<parent> <diff ID>"', (t) => {
  const a = `sha256:${'a'.repeat(64)}`;
  const b = `sha256:${'b'.repeat(64)}`;
  const [c1, c2] = chainIds([a, b]);
  t.is(c1, a);
  t.is(c2, `sha256:${crypto.createHash('sha256').update(`${a} ${b}`).digest('hex')}`);
  t.not(chainIds([b, a])[1], c2);
});

test('fuzz: manifest and config parsers refuse arbitrary JSON only with ImageDocumentError', (t) => {
  fuzz(
    t,
    fc.property(fc.jsonValue(), (v) => {
      for (const parse of [(b: Buffer) => parseManifestOrIndex(b, 'm'), (b: Buffer) => parseImageConfig(b, 'c')]) {
        try {
          parse(Buffer.from(JSON.stringify(v)));
        } catch (err) {
          assertTypedError(err, ImageDocumentError, v);
        }
      }
    }),
  );
});
