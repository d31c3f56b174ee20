import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import type { Result } from 'execa';
import { RktEnv } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { Gpg } from '../helpers/gpg.js';
import { needRoot } from '../helpers/prereqs.js';
import { httpsWorld, listenOnOwn443, runWithHosts, TestServer, type Handler, type TestCa } from '../helpers/https-server.js';

// appc discovery, key discovery and auth.d against an https server the test
// starts on port 443 of its own loopback address; rkt runs in a private
// mount namespace whose /etc/hosts maps the test's names there (see
// test/helpers/https-server.ts). Nothing leaves loopback.

const NAMES = ['example.test', 'other.test'];
const UID = 'Publisher <pub@example.test>';

interface World {
  env: RktEnv;
  server: TestServer;
  ca: TestCa;
  gpg: Gpg;
  key: string;
  rkt(args: string[], opts?: { input?: string; env?: Record<string, string> }): Promise<Result>;
}

async function world(t: ExecutionContext): Promise<World> {
  needRoot('discovery tests (a private mount namespace for /etc/hosts)');
  const { env, gpg, ca, server } = await httpsWorld(t, 'rkt-disc-', NAMES, []);
  await listenOnOwn443(server);
  const key = await gpg.newKey(UID, env.file('pub.key'));
  server.file('example.test /pubkeys.gpg', fs.readFileSync(key));
  const rkt = (args: string[], opts: { input?: string; env?: Record<string, string> } = {}) =>
    runWithHosts(env, NAMES, server.address, args, { input: opts.input, env: { NODE_EXTRA_CA_CERTS: ca.caFile, ...opts.env } });
  return { env, server, ca, gpg, key, rkt };
}

function page(...metas: [string, string][]): Handler {
  const html = `<!doctype html><html><head>${metas.map(([n, c]) => `<meta name="${n}" content="${c}">`).join('\n')}</head><body>rkt images</body></html>`;
  return (_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(html);
}

/** The publisher's site: one page at the domain's root for every name under it, and a signed image. */
async function publish(w: World, name = 'example.test/app', version = '1.0.0', manifestName = name, manifest: Record<string, unknown> = {}): Promise<string> {
  w.server.route(
    'example.test /?ac-discovery=1',
    page(['ac-discovery', 'example.test https://example.test/images/{name}-{version}-{os}-{arch}.{ext}'], ['ac-discovery-pubkeys', 'example.test https://example.test/pubkeys.gpg']),
  );
  const aci = await buildAci(w.env.root, { name: manifestName, labels: [{ name: 'version', value: version }, { name: 'os', value: 'linux' }, { name: 'arch', value: 'amd64' }], busybox: false, manifest });
  const at = `/images/${name}-${version}-linux-amd64.aci`;
  w.server.file(`example.test ${at}`, fs.readFileSync(aci));
  w.server.file(`example.test ${at}.asc`, fs.readFileSync(await w.gpg.sign(UID, aci)));
  return at;
}

async function trustFile(w: World, prefix = 'example.test/app'): Promise<void> {
  t_is0(await w.env.run(['trust', `--prefix=${prefix}`, '--skip-fingerprint-review', w.key]));
}

function t_is0(r: Result): void {
  if (r.exitCode !== 0) throw new Error(`rkt failed: ${String(r.stderr)}`);
}

async function storedNames(env: RktEnv): Promise<string[]> {
  const list = await env.run(['image', 'list', '--format=json']);
  return (JSON.parse(String(list.stdout)) as { name: string }[]).map((i) => i.name);
}

function lastLine(r: Result): string {
  return String(r.stderr).trim().split('\n').pop() ?? '';
}

test('discovery walks up to the domain page, renders the template from name:version and labels, and checks the manifest', async (t) => {
  const w = await world(t);
  const at = await publish(w);
  await trustFile(w);

  const r = await w.rkt(['fetch', 'example.test/app:1.0.0']);
  t.is(r.exitCode, 0, String(r.stderr));
  t.regex(String(r.stderr), /searching for app image example\.test\/app:1\.0\.0/);
  t.regex(String(r.stderr), /signature verified/);
  t.deepEqual(
    w.server.log.filter((x) => x.path.includes('ac-discovery')).map((x) => `${x.host} ${x.path}`),
    ['example.test /app?ac-discovery=1', 'example.test /?ac-discovery=1'],
  );
  t.is(w.server.requests(at).length, 2, 'the image and its signature');

  // the ",label=value" syntax names the same image; run's default "new" policy takes it from the store
  const labels = await w.rkt(['fetch', '--pull-policy=new', 'example.test/app,version=1.0.0,os=linux']);
  t.is(labels.exitCode, 0, String(labels.stderr));
  t.is(String(labels.stdout), String(r.stdout));

  // a label the image does not carry: the discovered image is refused before it is stored
  const channel = await w.rkt(['fetch', 'example.test/app:1.0.0,channel=alpha']);
  t.is(channel.exitCode, 254);
  t.regex(lastLine(channel), /has channel=\(none\), not alpha as asked; refusing it/);

  // an image that claims another name at the discovered URL
  await publish(w, 'example.test/impostor', '1.0.0', 'example.test/app');
  await trustFile(w, 'example.test/impostor');
  const impostor = await w.rkt(['fetch', 'example.test/impostor:1.0.0']);
  t.is(impostor.exitCode, 254);
  t.regex(lastLine(impostor), /is named example\.test\/app, not example\.test\/impostor as discovered; refusing it/);
  t.deepEqual(await storedNames(w.env), ['example.test/app:1.0.0']);

  // a version nobody published: the template renders, the server answers 404
  const missing = await w.rkt(['fetch', 'example.test/app:9.9']);
  t.is(missing.exitCode, 254);
  t.regex(lastLine(missing), /HTTP status 404/);

  // --pull-policy=never does no discovery
  const before = w.server.log.length;
  const never = await w.rkt(['fetch', '--pull-policy=never', 'example.test/app:2.0']);
  t.is(never.exitCode, 254);
  t.regex(lastLine(never), /not in the store and --pull-policy=never/);
  t.is(w.server.log.length, before);
});

test('discovery pages that are missing, malformed, huge or without a matching template fail with one line', async (t) => {
  const w = await world(t);
  w.server.route('other.test /malformed?ac-discovery=1', (_req, res) => res.end('<meta name="ac-discovery" content="other.test"><meta <<<< name= "ac-discovery" content=">>>'));
  w.server.route('other.test /huge?ac-discovery=1', (_req, res) => {
    res.writeHead(200);
    const chunk = Buffer.from('<meta name="x" content="y">'.repeat(1000));
    const pump = (): void => {
      while (!res.destroyed && res.write(chunk));
      if (!res.destroyed) res.once('drain', pump);
    };
    res.on('error', () => undefined);
    pump();
  });
  w.server.route('other.test /wrong?ac-discovery=1', page(['ac-discovery', 'other.test https://other.test/{name}-{flavour}.{ext}'], ['ac-discovery', 'elsewhere.test https://other.test/{name}.{ext}']));
  w.server.route('other.test /ftp?ac-discovery=1', page(['ac-discovery', 'other.test ftp://other.test/{name}.{ext}']));

  const cases: [string, RegExp][] = [
    ['other.test/nothing', /found no template for other\.test\/nothing .*check the name and labels/],
    ['other.test/malformed', /found no template/],
    ['other.test/huge', /discovery page .*more than 1048576 bytes/],
    ['other.test/wrong', /found no template/],
    ['other.test/ftp', /found no template/],
  ];
  for (const [name, pattern] of cases) {
    const r = await w.rkt(['fetch', name]);
    t.is(r.exitCode, 254, `${name}: ${String(r.stderr)}`);
    const lines = String(r.stderr).trim().split('\n').filter((l) => !l.startsWith('rkt: searching'));
    t.is(lines.length, 1, String(r.stderr));
    t.regex(lines[0]!, pattern);
  }
  t.deepEqual(await storedNames(w.env), []);
});

test('rkt trust --prefix without a key file discovers the key, shows its fingerprint and trusts it only when told yes', async (t) => {
  const w = await world(t);
  await publish(w);
  const fpr = (await w.gpg.run(['--with-colons', '--fingerprint', UID])).split('\n').find((l) => l.startsWith('fpr:'))!.split(':')[9]!.toLowerCase();
  const keyFile = path.join(w.env.localConfig, 'trustedkeys', 'prefix.d', 'example.test', 'app', fpr);

  const no = await w.rkt(['trust', '--prefix=example.test/app'], { input: 'no\n' });
  t.is(no.exitCode, 254);
  t.regex(String(no.stderr), /Found public key location: https:\/\/example\.test\/pubkeys\.gpg/);
  t.regex(String(no.stderr), /GPG key fingerprint is: [0-9A-F]{4}( [0-9A-F]{4})+/);
  t.regex(String(no.stderr), /Publisher <pub@example\.test>/);
  t.regex(String(no.stderr), /not trusted/);
  t.false(fs.existsSync(keyFile));

  const yes = await w.rkt(['trust', '--prefix=example.test/app'], { input: 'yes\n' });
  t.is(yes.exitCode, 0, String(yes.stderr));
  t.true(fs.existsSync(keyFile));
  const fetched = await w.rkt(['fetch', 'example.test/app:1.0.0']);
  t.is(fetched.exitCode, 0, String(fetched.stderr));

  const env2 = new RktEnv('rkt-disc-');
  t.teardown(() => env2.cleanup());
  const skip = await runWithHosts(env2, NAMES, w.server.address, ['trust', '--prefix=example.test/app', '--skip-fingerprint-review'], { env: { NODE_EXTRA_CA_CERTS: w.ca.caFile } });
  t.is(skip.exitCode, 0, String(skip.stderr));
  t.notRegex(String(skip.stderr), /Are you sure/);

  const none = await w.rkt(['trust', '--prefix=other.test/app']);
  t.is(none.exitCode, 254);
  t.regex(lastLine(none), /found no public keys .*rkt trust --prefix=other\.test\/app KEYFILE/);
  const root = await w.rkt(['trust', '--root']);
  t.is(root.exitCode, 254);
  t.regex(lastLine(root), /--root needs a key file/);
});

test('--trust-keys-from-https trusts the discovered key of an unknown signer, loudly, and only over checked https', async (t) => {
  const w = await world(t);
  await publish(w);

  const refused = await w.rkt(['fetch', 'example.test/app:1.0.0']);
  t.is(refused.exitCode, 254);
  t.regex(lastLine(refused), /no keys are trusted for image "example\.test\/app"/);

  // without a checked certificate, https vouches for nothing
  const unchecked = await w.rkt(['--insecure-options=tls', '--trust-keys-from-https', 'fetch', 'example.test/app:1.0.0'], { env: { NODE_EXTRA_CA_CERTS: '' } });
  t.is(unchecked.exitCode, 254);
  t.regex(lastLine(unchecked), /no keys are trusted/);

  const trusted = await w.rkt(['--trust-keys-from-https', 'fetch', 'example.test/app:1.0.0']);
  t.is(trusted.exitCode, 0, String(trusted.stderr));
  t.regex(String(trusted.stderr), /warning: trusting key [0-9A-F ]+ \(Publisher <pub@example\.test>\) for prefix "example\.test\/app" without review, because it was fetched over https/);
  t.regex(String(trusted.stderr), /signature verified/);
  t.true(fs.existsSync(path.join(w.env.localConfig, 'trustedkeys', 'prefix.d', 'example.test', 'app')));
});

test('auth.d credentials (basic and oauth) go to the domains they name and nowhere else', async (t) => {
  const w = await world(t);
  await trustFile(w, 'example.test/private');
  const aci = await buildAci(w.env.root, { name: 'example.test/private', busybox: false });
  const sig = fs.readFileSync(await w.gpg.sign(UID, aci));
  const guarded = (accept: (auth: string | undefined) => boolean, then: Handler): Handler => (req, res) =>
    accept(req.headers.authorization) ? then(req, res) : void res.writeHead(401, { 'www-authenticate': 'Basic realm="rkt"' }).end();
  const basic = `Basic ${Buffer.from('alice:sesame').toString('base64')}`;
  const ok = (a: string | undefined): boolean => a === basic || a === 'Bearer t0ken';
  w.server.route('example.test /private?ac-discovery=1', guarded(ok, page(['ac-discovery', 'example.test/private https://example.test/files/{name}-{version}.{ext}'])));
  w.server.route('example.test /files/example.test/private-latest.aci', guarded(ok, (_req, res) => res.writeHead(200).end(fs.readFileSync(aci))));
  // the signature lives on another host: the credentials must not follow the redirect there
  w.server.route('example.test /files/example.test/private-latest.aci.asc', guarded(ok, (_req, res) => res.writeHead(302, { location: 'https://other.test/sig.asc' }).end()));
  w.server.file('other.test /sig.asc', sig);

  const denied = await w.rkt(['fetch', 'example.test/private']);
  t.is(denied.exitCode, 254);
  t.regex(lastLine(denied), /HTTP status 401; add credentials for example\.test in auth\.d/);

  const authDir = path.join(w.env.localConfig, 'auth.d');
  fs.mkdirSync(authDir, { recursive: true });
  fs.writeFileSync(path.join(authDir, 'test.json'), JSON.stringify({ rktKind: 'auth', rktVersion: 'v1', domains: ['example.test'], type: 'basic', credentials: { user: 'alice', password: 'sesame' } }));
  const r = await w.rkt(['fetch', 'example.test/private']);
  t.is(r.exitCode, 0, String(r.stderr));
  t.true(w.server.log.filter((x) => x.host === 'example.test' && x.path.startsWith('/files/')).every((x) => x.headers.authorization === basic));
  t.deepEqual(
    w.server.log.filter((x) => x.host === 'other.test').map((x) => x.headers.authorization),
    [undefined],
  );

  fs.writeFileSync(path.join(authDir, 'test.json'), JSON.stringify({ rktKind: 'auth', rktVersion: 'v1', domains: ['example.test'], type: 'oauth', credentials: { token: 't0ken' } }));
  const oauth = await w.rkt(['fetch', 'example.test/private']);
  t.is(oauth.exitCode, 0, String(oauth.stderr));
  t.is(w.server.log.filter((x) => x.headers.authorization === 'Bearer t0ken').length > 0, true);
  t.true(w.server.log.filter((x) => x.host === 'other.test').every((x) => x.headers.authorization === undefined));
});

test('an image found on the network brings its dependencies, each discovered and verified', async (t) => {
  const w = await world(t);
  await publish(w, 'example.test/app/base', '2.0');
  await publish(w, 'example.test/app/top', '1.0', 'example.test/app/top', { dependencies: [{ imageName: 'example.test/app/base', labels: [{ name: 'version', value: '2.0' }] }] });
  await trustFile(w);
  const r = await w.rkt(['fetch', 'example.test/app/top:1.0']);
  t.is(r.exitCode, 0, String(r.stderr));
  t.deepEqual((await storedNames(w.env)).sort(), ['example.test/app/base:2.0', 'example.test/app/top:1.0']);
  t.is((String(r.stderr).match(/signature verified/g) ?? []).length, 2);
  const render = await w.env.run(['image', 'render', '--rootfs-only', String(r.stdout).trim(), w.env.file('out')]);
  t.is(render.exitCode, 0, String(render.stderr));

  // a dependency that names an image ID the publisher does not serve
  await publish(w, 'example.test/app/pinned', '1.0', 'example.test/app/pinned', {
    dependencies: [{ imageName: 'example.test/app/base', imageID: `sha512-${'0'.repeat(128)}`, labels: [{ name: 'version', value: '2.0' }] }],
  });
  const pinned = await w.rkt(['fetch', 'example.test/app/pinned:1.0']);
  t.is(pinned.exitCode, 254);
  t.regex(lastLine(pinned), /is sha512-[0-9a-f]+, but sha512-0+ was asked for; refusing it|not sha512-0+ as the manifest asks/);
});

test('plain http discovery only with --insecure-options=http, after https', async (t) => {
  const w = await world(t);
  await trustFile(w, 'other.test/plain');
  const plain = new TestServer(undefined);
  t.teardown(() => plain.close());
  await plain.listen(w.server.address, 80);
  plain.route('other.test /?ac-discovery=1', page(['ac-discovery', 'other.test http://other.test/{name}-{version}.{ext}']));
  const aci = await buildAci(w.env.root, { name: 'other.test/plain', labels: [{ name: 'version', value: '1.0' }], busybox: false });
  plain.file('other.test /other.test/plain-1.0.aci', fs.readFileSync(aci));
  plain.file('other.test /other.test/plain-1.0.aci.asc', fs.readFileSync(await w.gpg.sign(UID, aci)));

  const refused = await w.rkt(['fetch', 'other.test/plain:1.0']);
  t.is(refused.exitCode, 254);
  t.regex(lastLine(refused), /found no template/);
  t.is(plain.log.length, 0, 'nothing was asked over plain http');

  const allowed = await w.rkt(['--insecure-options=http', 'fetch', 'other.test/plain:1.0']);
  t.is(allowed.exitCode, 0, String(allowed.stderr));
  t.deepEqual(
    w.server.log.filter((x) => x.host === 'other.test').map((x) => x.path),
    ['/plain?ac-discovery=1', '/?ac-discovery=1', '/plain?ac-discovery=1', '/?ac-discovery=1'],
    'https first, each time',
  );
  t.deepEqual(await storedNames(w.env), ['other.test/plain:1.0']);
});
