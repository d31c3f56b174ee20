import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { RktEnv } from '../helpers/rkt.js';
import { busyboxLayer, buildImage, sha256, OCI_INDEX, type BuiltImage } from '../helpers/oci.js';
import { endless, FakeRegistry, type FakeRegistryOptions } from '../helpers/fake-registry.js';
import type { Entry } from '../helpers/tar.js';

// Registries that lie, started here on loopback: every bad answer is a
// one-line error, exit status 254, and nothing in the store.

const FETCH = ['--insecure-options=image,http', 'fetch'];

async function world(t: ExecutionContext, opts: FakeRegistryOptions = {}): Promise<{ env: RktEnv; reg: FakeRegistry }> {
  const env = new RktEnv('rkt-docker-hostile-');
  const reg = await FakeRegistry.start(opts);
  t.teardown(async () => {
    await reg.stop();
    env.cleanup();
  });
  return { env, reg };
}

const small = (): Promise<BuiltImage> => buildImage({ layers: [[{ name: 'hello.txt', data: 'hello' }]], config: { Cmd: ['/hello'] } });

async function refused(t: ExecutionContext, env: RktEnv, image: string, why: RegExp): Promise<void> {
  const r = await env.run([...FETCH, image]);
  t.is(r.exitCode, 254, String(r.stdout));
  const lines = String(r.stderr).trim().split('\n').filter((l) => !l.startsWith('rkt: warning:'));
  t.is(lines.length, 1, String(r.stderr));
  t.regex(lines[0] ?? '', why);
  t.is(String((await env.run(['image', 'list', '--no-legend'])).stdout).trim(), '', 'nothing may be listed in the store');
  const tmp = path.join(env.dir, 'cas/tmp');
  t.deepEqual(fs.existsSync(tmp) ? fs.readdirSync(tmp) : [], [], 'nothing may be left half-written');
}

test('bearer tokens: the token endpoint named by the challenge is asked with the pull scope, and its token is used', async (t) => {
  const { env, reg } = await world(t, { token: 'ok' });
  reg.add('auth/img', 'v1', await small());
  const r = await env.run([...FETCH, `docker://${reg.host}/auth/img:v1`]);
  t.is(r.exitCode, 0, String(r.stderr));
  t.true(reg.requests.includes('/token'));
});

for (const mode of ['garbage', 'error', 'endless', 'no-token'] as const) {
  test(`a token endpoint that answers ${mode} is a one-line error`, async (t) => {
    const { env, reg } = await world(t, { token: mode });
    reg.add('auth/img', 'v1', await small());
    await refused(t, env, `docker://${reg.host}/auth/img:v1`, /token endpoint/);
  });
}

test('404: the image is not in the registry', async (t) => {
  const { env, reg } = await world(t);
  await refused(t, env, `docker://${reg.host}/no/such:tag`, /is not in 127\.0\.0\.1:\d+ \(404\)/);
});

test('a manifest fetched by digest must have that digest', async (t) => {
  const { env, reg } = await world(t);
  const img = await small();
  reg.add('d/img', 'v1', img);
  const other = await buildImage({ layers: [[{ name: 'evil', data: 'x' }]] });
  reg.manifests.set(`d/img:${img.manifestDigest}`, { body: other.manifest, type: 'application/vnd.oci.image.manifest.v1+json' });
  await refused(t, env, `docker://${reg.host}/d/img@${img.manifestDigest}`, /does not match its digest/);
});

test('a manifest must match the Docker-Content-Digest its registry claims', async (t) => {
  const img = await small();
  const { env, reg } = await world(t, {
    override: (req, res) => {
      if (!req.url?.endsWith('/manifests/v1')) return false;
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': sha256('something else') });
      res.end(img.manifest);
      return true;
    },
  });
  reg.add('d/img', 'v1', img);
  await refused(t, env, `docker://${reg.host}/d/img:v1`, /Docker-Content-Digest/);
});

test('a huge manifest is refused at the cap, endless or declared', async (t) => {
  const { env, reg } = await world(t, {
    override: (req, res) => {
      if (req.url?.endsWith('/manifests/endless')) {
        endless(res, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' });
        return true;
      }
      if (req.url?.endsWith('/manifests/declared')) {
        res.writeHead(200, { 'content-length': 64 * 1024 * 1024 });
        res.end();
        return true;
      }
      return false;
    },
  });
  await refused(t, env, `docker://${reg.host}/big/img:endless`, /larger than the limit of \d+ bytes/);
  await refused(t, env, `docker://${reg.host}/big/img:declared`, /the limit is \d+/);
});

test('an endless blob stops at the size its descriptor states', async (t) => {
  const img = await small();
  const { env, reg } = await world(t, {
    override: (req, res) => {
      if (!req.url?.endsWith(img.layers[0]!.digest)) return false;
      endless(res);
      return true;
    },
  });
  reg.add('e/img', 'v1', img);
  await refused(t, env, `docker://${reg.host}/e/img:v1`, /longer than the \d+ bytes its descriptor states/);
});

test('a download cut off half-way is a one-line error', async (t) => {
  const img = await small();
  const blob = img.layers[0]!.blob;
  const { env, reg } = await world(t, {
    override: (req, res) => {
      if (!req.url?.endsWith(img.layers[0]!.digest)) return false;
      res.writeHead(200, { 'content-length': blob.length });
      res.write(blob.subarray(0, blob.length >> 1), () => res.destroy());
      return true;
    },
  });
  reg.add('e/img', 'v1', img);
  await refused(t, env, `docker://${reg.host}/e/img:v1`, /interrupted|cut short/);
});

test('a redirect loop ends after a few hops', async (t) => {
  const { env, reg } = await world(t, {
    override: (req, res) => {
      if (!req.url?.includes('/blobs/')) return false;
      res.writeHead(307, { location: req.url });
      res.end();
      return true;
    },
  });
  reg.add('r/img', 'v1', await small());
  await refused(t, env, `docker://${reg.host}/r/img:v1`, /more than 5 redirects|redirect loop/);
});

test('a blob with other bytes than its digest is refused', async (t) => {
  const { env, reg } = await world(t);
  const img = await small();
  reg.add('e/img', 'v1', img);
  const blob = Buffer.from(img.layers[0]!.blob);
  blob[blob.length - 9] = blob[blob.length - 9]! ^ 0xff;
  reg.blobs.set(img.layers[0]!.digest, blob);
  await refused(t, env, `docker://${reg.host}/e/img:v1`, /does not match its digest/);
});

test('a layer whose uncompressed bytes are not the config\'s diff_id is refused', async (t) => {
  const { env, reg } = await world(t);
  const img = await small();
  const config = JSON.parse(img.config.toString());
  config.rootfs.diff_ids = [sha256('another layer')];
  const cfg = Buffer.from(JSON.stringify(config));
  const manifest = JSON.parse(img.manifest.toString());
  manifest.config = { ...manifest.config, digest: sha256(cfg), size: cfg.length };
  const body = Buffer.from(JSON.stringify(manifest));
  reg.add('e/img', 'v1', { ...img, config: cfg, configDigest: sha256(cfg), manifest: body, manifestDigest: sha256(body) });
  await refused(t, env, `docker://${reg.host}/e/img:v1`, /uncompressed\) does not match its digest/);
});

const HOSTILE_LAYERS: [string, Entry[], RegExp][] = [
  ['a ".." path', [{ name: 'a/', type: 'directory' }, { name: 'a/../../escape', data: 'x' }], /"\.\." component/],
  ['an absolute path', [{ name: '/etc/evil', data: 'x' }], /absolute path/],
  ['a write through a symlink', [{ name: 'link', type: 'symlink', linkname: '/' }, { name: 'link/etc/evil', data: 'x' }], /is not a valid ACI: .*symlink/],
  ['a hard link out of the layer', [{ name: 'h', type: 'link', linkname: '../../etc/shadow' }], /"\.\." component/],
  ['a device node', [{ name: 'dev/', type: 'directory' }, { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 }], /is not a valid ACI/],
];

for (const [what, entries, why] of HOSTILE_LAYERS) {
  test(`a layer with ${what} is refused by the converter or the ACI checker`, async (t) => {
    const { env, reg } = await world(t);
    reg.add('h/img', 'v1', await buildImage({ layers: [busyboxLayer(), entries] }));
    const r = await env.run([...FETCH, `docker://${reg.host}/h/img:v1`]);
    t.is(r.exitCode, 254);
    t.regex(String(r.stderr), why);
    // the first layer is complete and may stay; the image itself must not be there
    const names = String((await env.run(['image', 'list', '--no-legend', '--fields=name'])).stdout);
    t.notRegex(names, /h\/img/);
    t.deepEqual(fs.readdirSync(path.join(env.dir, 'cas/tmp')), []);
  });
}

test('an index without linux/amd64 says which platforms it has', async (t) => {
  const { env, reg } = await world(t);
  const img = await buildImage({ layers: [[{ name: 'x', data: 'x' }]], architecture: 'arm64' });
  reg.add('p/img', 'arm', img);
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: img.manifestDigest, size: img.manifest.length, platform: { os: 'linux', architecture: 'arm64' } }],
  }));
  reg.manifests.set('p/img:multi', { body: index, type: OCI_INDEX });
  await refused(t, env, `docker://${reg.host}/p/img:multi`, /no image for linux\/amd64 \(it has: linux\/arm64\)/);
});
