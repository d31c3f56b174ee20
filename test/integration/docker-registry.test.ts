import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { RktEnv, REPO } from '../helpers/rkt.js';
import { needFile, needRoot } from '../helpers/prereqs.js';
import { busyboxLayer, buildImage, writeOciLayout, type BuiltImage } from '../helpers/oci.js';
import { makeTestCA, skopeoPush, TestRegistry, type TestCA } from '../helpers/registry.js';
import { reapPods } from '../helpers/pods.js';
import { threeLayers } from './docker-common.js';

// rkt against Debian's docker-registry started here: TLS from a throw-away
// CA (trusted by rkt through NODE_EXTRA_CA_CERTS, as a user would), htpasswd
// auth from a dockerAuth entry in auth.d, and once plain http. Images are
// built by hand and pushed with skopeo; converted images run with the fly
// stage1 to show what the conversion did.

const FLY_ACI = path.join(REPO, 'build/stage1-fly.aci');
const USER = 'tester';
const PASSWORD = 'sekrit-pw';

const REPORT = [
  'echo "user=$(id -u):$(id -g) pwd=$(pwd) greeting=$GREETING"',
  'echo "opt=$(ls /opt/dir | sort | tr \'\\n\' \' \')"',
  'test -e /etc/removed.conf && echo removed-present',
  'test -e /var/old && echo old-present',
  'cat /etc/kept.conf /app/data.txt',
].join('; ');

export async function threeLayerImage(): Promise<BuiltImage> {
  return buildImage({
    layers: threeLayers(),
    config: { Entrypoint: ['/bin/sh', '-c'], Cmd: [REPORT], Env: ['GREETING=hello world', 'PATH=/bin'], WorkingDir: '/app', User: '1000:50', ExposedPorts: { '8080/tcp': {} }, Volumes: { '/data': {} } },
  });
}

interface World {
  env: RktEnv;
  ca: TestCA;
  registry: TestRegistry;
  layout: string;
  image: BuiltImage;
}

function writeDockerAuth(env: RktEnv, registry: string, user: string, password: string): void {
  const dir = path.join(env.localConfig, 'auth.d');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'registry.json'), JSON.stringify({ rktKind: 'dockerAuth', rktVersion: 'v1', registries: [registry], credentials: { user, password } }));
}

async function tlsWorld(t: ExecutionContext): Promise<World> {
  needRoot('docker registry tests');
  const env = new RktEnv('rkt-docker-');
  let registry: TestRegistry | undefined;
  t.teardown(async () => {
    registry?.stop();
    await reapPods(env);
    env.cleanup();
  });
  const ca = await makeTestCA(env.file('ca'));
  registry = await TestRegistry.start(env.file('registry'), { tls: ca, users: { [USER]: PASSWORD } });
  const image = await threeLayerImage();
  const layout = env.file('layout');
  writeOciLayout(layout, { v1: image });
  await skopeoPush(layout, 'v1', `${registry.host}/test/three:v1`, { tls: ca, creds: `${USER}:${PASSWORD}` });
  return { env, ca, registry, layout, image };
}

const oneLine = (s: unknown): string => String(s).trim();
/** stderr without rkt's warnings: what is left must be the one error line. */
export const errorLines = (s: unknown): string[] => String(s).trim().split('\n').filter((l) => l !== '' && !l.startsWith('rkt: warning:'));

test('a TLS registry with htpasswd: signature, auth and CA errors are one line each; with all three the image fetches', async (t) => {
  const { env, ca, registry } = await tlsWorld(t);
  const img = `docker://${registry.host}/test/three:v1`;
  const trusted = { NODE_EXTRA_CA_CERTS: ca.caCert };

  const unsigned = await env.run(['fetch', img], { env: trusted });
  t.is(unsigned.exitCode, 254);
  t.regex(oneLine(unsigned.stderr), /--insecure-options=image/);

  const untrustedCa = await env.run(['--insecure-options=image', 'fetch', img]);
  t.is(untrustedCa.exitCode, 254);
  t.regex(oneLine(untrustedCa.stderr), /certificate .* cannot be verified.*NODE_EXTRA_CA_CERTS.*--insecure-options=tls/);

  const noAuth = await env.run(['--insecure-options=image', 'fetch', img], { env: trusted });
  t.is(noAuth.exitCode, 254);
  t.regex(oneLine(noAuth.stderr), new RegExp(`dockerAuth entry for "${registry.host.replace(/\./g, '\\.')}" in auth\\.d`));
  t.is(errorLines(noAuth.stderr).length, 1, String(noAuth.stderr));

  writeDockerAuth(env, registry.host, USER, 'wrong');
  const badAuth = await env.run(['--insecure-options=image', 'fetch', img], { env: trusted });
  t.is(badAuth.exitCode, 254);
  t.regex(oneLine(badAuth.stderr), /refused .*check the dockerAuth entry/);
  t.deepEqual(String((await env.run(['image', 'list', '--no-legend'])).stdout).trim(), '');

  writeDockerAuth(env, registry.host, USER, PASSWORD);
  const ok = await env.run(['--insecure-options=image', 'fetch', img], { env: trusted });
  t.is(ok.exitCode, 0, String(ok.stderr));
  t.regex(oneLine(ok.stdout), /^sha512-[0-9a-f]{128}$/);

  // skipping verification works too, and says so
  const skip = await env.run(['--insecure-options=image,tls', 'fetch', img]);
  t.is(skip.exitCode, 0, String(skip.stderr));
  t.regex(String(skip.stderr), /TLS certificate verification .* disabled/);

  const list = await env.run(['image', 'list', '--no-legend', '--fields=name']);
  const names = String(list.stdout).trim().split('\n').map((s) => s.trim()).sort();
  t.is(names.filter((n) => n.startsWith('docker-layer/sha256-')).length, 3);
  t.true(names.includes(`127.0.0.1_${registry.host.split(':')[1]}/test/three:v1`), names.join(', '));
});

test('the converted image runs with the fly stage1: files, whiteouts, opaque dirs, entrypoint, cmd, env, workdir and user', async (t) => {
  needFile(FLY_ACI, 'build it with "node dist/stage1-fly/build.js build/stage1-fly.aci"');
  const { env, ca, registry } = await tlsWorld(t);
  writeDockerAuth(env, registry.host, USER, PASSWORD);
  const img = `docker://${registry.host}/test/three:v1`;
  const r = await env.run(['--insecure-options=image', 'run', `--stage1-path=${FLY_ACI}`, img], { env: { NODE_EXTRA_CA_CERTS: ca.caCert }, timeout: 180_000 });
  t.is(r.exitCode, 0, String(r.stderr));
  const out = String(r.stdout);
  t.regex(out, /^user=1000:50 pwd=\/app greeting=hello world$/m);
  t.regex(out, /^opt=c $/m);
  t.notRegex(out, /removed-present/);
  t.notRegex(out, /old-present/);
  t.regex(out, /^kept$/m);
  t.regex(out, /^layer three data$/m);

  const manifest = JSON.parse(String((await env.run(['image', 'cat-manifest', `${registry.host.replace(':', '_')}/test/three:v1`])).stdout));
  t.deepEqual(manifest.app.ports, [{ name: '8080-tcp', protocol: 'tcp', port: 8080, count: 1, socketActivated: false }]);
  t.deepEqual(manifest.app.mountPoints, [{ name: 'volume-data', path: '/data', readOnly: false }]);
  t.deepEqual(manifest.labels.map((l: { name: string }) => l.name), ['version', 'os', 'arch']);
  t.is(manifest.dependencies.length, 3);
});

test('plain http needs --insecure-options=http', async (t) => {
  needRoot('docker registry tests');
  const env = new RktEnv('rkt-docker-http-');
  let registry: TestRegistry | undefined;
  t.teardown(async () => {
    registry?.stop();
    env.cleanup();
  });
  registry = await TestRegistry.start(env.file('registry'));
  const layout = env.file('layout');
  writeOciLayout(layout, { v1: await buildImage({ layers: [busyboxLayer()], config: { Cmd: ['/bin/true'] } }) });
  await skopeoPush(layout, 'v1', `${registry.host}/plain/img:v1`);
  const img = `docker://${registry.host}/plain/img:v1`;
  const refused = await env.run(['--insecure-options=image', 'fetch', img]);
  t.is(refused.exitCode, 254);
  t.regex(oneLine(refused.stderr), /--insecure-options=http/);
  const ok = await env.run(['--insecure-options=image,http', 'fetch', img]);
  t.is(ok.exitCode, 0, String(ok.stderr));
});

test('layers in the store are not fetched again; concurrent fetches of images sharing layers both succeed, each layer fetched once', async (t) => {
  needRoot('docker registry tests');
  const env = new RktEnv('rkt-docker-share-');
  let registry: TestRegistry | undefined;
  t.teardown(async () => {
    registry?.stop();
    await reapPods(env);
    env.cleanup();
  });
  registry = await TestRegistry.start(env.file('registry'));
  const base = busyboxLayer();
  const a = await buildImage({ layers: [base, [{ name: 'a.txt', data: 'a' }]], config: { Cmd: ['/bin/true'] } });
  const b = await buildImage({ layers: [base, [{ name: 'b.txt', data: 'b' }]], config: { Cmd: ['/bin/true'] } });
  const layout = env.file('layout');
  writeOciLayout(layout, { a, b });
  await skopeoPush(layout, 'a', `${registry.host}/share/a:1`);
  await skopeoPush(layout, 'b', `${registry.host}/share/b:1`);
  const flags = ['--insecure-options=image,http', 'fetch'];
  const [ra, rb] = await Promise.all([env.run([...flags, `docker://${registry.host}/share/a:1`]), env.run([...flags, `docker://${registry.host}/share/b:1`])]);
  t.is(ra.exitCode, 0, String(ra.stderr));
  t.is(rb.exitCode, 0, String(rb.stderr));
  const baseDigest = a.layers[0]!.digest;
  t.is(b.layers[0]!.digest, baseDigest);
  t.is(registry.blobGets(baseDigest), 1);
  // again: nothing but the manifests and configs is asked for
  const again = await env.run([...flags, `docker://${registry.host}/share/a:1`]);
  t.is(again.exitCode, 0, String(again.stderr));
  t.is(oneLine(again.stdout), oneLine(ra.stdout));
  t.is(registry.blobGets(baseDigest), 1);
  t.is(registry.blobGets(a.layers[1]!.digest), 1);

  // with the registry gone, --pull-policy=never still finds the stored image, and prepare takes it
  registry.stop();
  const never = await env.run([...flags, '--pull-policy=never', `docker://${registry.host}/share/a:1`]);
  t.is(never.exitCode, 0, String(never.stderr));
  t.is(oneLine(never.stdout), oneLine(ra.stdout));
  const missing = await env.run([...flags, '--pull-policy=never', `docker://${registry.host}/share/a:2`]);
  t.is(missing.exitCode, 254);
  t.regex(oneLine(missing.stderr), /not in the store and --pull-policy=never forbids fetching it/);
  needFile(FLY_ACI, 'build it with "node dist/stage1-fly/build.js build/stage1-fly.aci"');
  const prep = await env.run(['--insecure-options=image', 'prepare', `--stage1-path=${FLY_ACI}`, '--pull-policy=never', `docker://${registry.host}/share/b:1`]);
  t.is(prep.exitCode, 0, String(prep.stderr));
  t.regex(oneLine(prep.stdout), /^[0-9a-f-]{36}$/);
});
