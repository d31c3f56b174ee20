import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import pty from 'node-pty';
import { RKT, RktEnv } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { Gpg } from '../helpers/gpg.js';
import { httpsWorld, TestServer, type TestCa } from '../helpers/https-server.js';

// rkt fetch of http(s) ACI URLs against a server the test starts on
// 127.0.0.1, with a throw-away CA that rkt trusts through
// NODE_EXTRA_CA_CERTS (as users can do for a private CA).

const UID = 'Web <web@example.com>';

interface World {
  env: RktEnv;
  server: TestServer;
  ca: TestCa;
  gpg: Gpg;
  /** The environment that makes rkt trust the test CA. */
  caEnv: Record<string, string>;
  aci: string;
  sig: Buffer;
}

async function world(t: ExecutionContext, opts: { trust?: boolean } = {}): Promise<World> {
  const { env, gpg, ca, server } = await httpsWorld(t, 'rkt-https-', ['localhost'], ['127.0.0.1']);
  await server.listen('127.0.0.1');
  const key = await gpg.newKey(UID, env.file('web.key'));
  if (opts.trust ?? true) t.is((await env.run(['trust', '--prefix=example.com/web', '--skip-fingerprint-review', key])).exitCode, 0);
  const aci = await buildAci(env.root, { name: 'example.com/web/app', busybox: false, files: { hello: 'world' } });
  const sig = fs.readFileSync(await gpg.sign(UID, aci));
  return { env, server, ca, gpg, caEnv: { NODE_EXTRA_CA_CERTS: ca.caFile }, aci, sig };
}

function serveSigned(w: World, at: string, headers: Record<string, string> = {}): void {
  w.server.file(at, fs.readFileSync(w.aci), headers);
  w.server.file(`${at}.asc`, w.sig);
}

async function storedIds(env: RktEnv): Promise<string[]> {
  const list = await env.run(['image', 'list', '--format=json']);
  return (JSON.parse(String(list.stdout)) as { id: string }[]).map((i) => i.id);
}

/** Nothing half-written: no image listed, and nothing left in the store's temp dir. */
async function assertStoreEmpty(t: ExecutionContext, env: RktEnv, what = ''): Promise<void> {
  t.deepEqual(await storedIds(env), [], what);
  const tmp = path.join(env.dir, 'cas', 'tmp');
  t.deepEqual(fs.existsSync(tmp) ? fs.readdirSync(tmp) : [], [], what);
}

function oneLine(t: ExecutionContext, stderr: unknown, pattern: RegExp): void {
  const lines = String(stderr).trim().split('\n').filter((l) => !/^rkt: (fetching image from|warning:)/.test(l));
  t.is(lines.length, 1, String(stderr));
  t.regex(lines[0] ?? '', pattern);
}

test('an https ACI is verified against the trusted key; TLS is refused without the CA, and --insecure-options=tls gets through loudly', async (t) => {
  const w = await world(t);
  serveSigned(w, '/app.aci');
  const url = w.server.url('/app.aci');

  const refused = await w.env.run(['fetch', url]);
  t.is(refused.exitCode, 254);
  oneLine(t, refused.stderr, /TLS certificate of 127\.0\.0\.1:\d+ cannot be verified.*NODE_EXTRA_CA_CERTS.*--insecure-options=tls/);
  await assertStoreEmpty(t, w.env);

  const insecure = await w.env.run(['--insecure-options=tls', 'fetch', url]);
  t.is(insecure.exitCode, 0, String(insecure.stderr));
  t.regex(String(insecure.stderr), /warning: TLS verification has been disabled/);
  t.regex(String(insecure.stderr), /signature verified/);

  const env2 = new RktEnv('rkt-https-');
  t.teardown(() => env2.cleanup());
  t.is((await env2.run(['trust', '--prefix=example.com/web', '--skip-fingerprint-review', w.env.file('web.key')])).exitCode, 0);
  const ok = await env2.run(['fetch', url], { env: w.caEnv });
  t.is(ok.exitCode, 0, String(ok.stderr));
  t.regex(String(ok.stdout), /^sha512-[0-9a-f]{128}$/m);
  t.regex(String(ok.stderr), /signature verified:\n\s+Web <web@example\.com>/);
  t.notRegex(String(ok.stderr), /Downloading/, 'no progress bar on a non-terminal stderr');
  t.deepEqual(await storedIds(env2), [String(ok.stdout).trim()]);

  // --signature=URL, a redirect to the image, and --debug showing the steps
  w.server.route('/moved.aci', (_req, res) => res.writeHead(302, { location: '/app.aci' }).end());
  w.server.file('/elsewhere.sig', w.sig);
  const env3 = new RktEnv('rkt-https-');
  t.teardown(() => env3.cleanup());
  t.is((await env3.run(['trust', '--prefix=example.com/web', '--skip-fingerprint-review', w.env.file('web.key')])).exitCode, 0);
  const moved = await env3.run(['--debug', 'fetch', w.server.url('/moved.aci'), `--signature=${w.server.url('/elsewhere.sig')}`], { env: w.caEnv });
  t.is(moved.exitCode, 0, String(moved.stderr));
  t.regex(String(moved.stderr), /image: redirected/);
  t.regex(String(moved.stderr), /download finished/);
});

test('plain http needs --insecure-options=http, and a redirect from https down to http is refused', async (t) => {
  const w = await world(t);
  const plain = new TestServer(undefined);
  t.teardown(() => plain.close());
  await plain.listen('127.0.0.1');
  plain.file('/app.aci', fs.readFileSync(w.aci));
  plain.file('/app.aci.asc', w.sig);

  const refused = await w.env.run(['fetch', plain.url('/app.aci')]);
  t.is(refused.exitCode, 254);
  oneLine(t, refused.stderr, /refusing to fetch image over plain http.*--insecure-options=http/);

  w.server.route('/down.aci', (_req, res) => res.writeHead(301, { location: plain.url('/app.aci') }).end());
  const down = await w.env.run(['fetch', w.server.url('/down.aci')], { env: w.caEnv });
  t.is(down.exitCode, 254);
  oneLine(t, down.stderr, /a redirect leads to plain http/);
  await assertStoreEmpty(t, w.env);

  const allowed = await w.env.run(['--insecure-options=http', 'fetch', plain.url('/app.aci')]);
  t.is(allowed.exitCode, 0, String(allowed.stderr));
  t.is((await storedIds(w.env)).length, 1);
});

test('the remote cache: max-age spares the request, an ETag gets 304, and the pull policies and deprecated flags behave as in rkt', async (t) => {
  const w = await world(t);
  serveSigned(w, '/fresh.aci', { etag: '"f1"', 'cache-control': 'max-age=3600' });
  const body = fs.readFileSync(w.aci);
  w.server.route('/etag.aci', (req, res) => {
    if (req.headers['if-none-match'] === '"e1"') return void res.writeHead(304, { etag: '"e1"' }).end();
    res.writeHead(200, { etag: '"e1"', 'cache-control': 'no-cache', 'content-length': String(body.length) }).end(body);
  });
  w.server.file('/etag.aci.asc', w.sig);
  const run = (args: string[]) => w.env.run(args, { env: w.caEnv });
  const gets = (p: string) => w.server.log.filter((r) => r.path === p).length;

  const first = await run(['fetch', w.server.url('/fresh.aci')]);
  t.is(first.exitCode, 0, String(first.stderr));
  const id = String(first.stdout).trim();
  t.is(gets('/fresh.aci'), 1);

  // fetch's default is "update": within max-age the store's copy is used without asking
  const again = await run(['fetch', w.server.url('/fresh.aci')]);
  t.is(String(again.stdout).trim(), id);
  t.is(gets('/fresh.aci'), 1);
  for (const policy of ['--pull-policy=never', '--pull-policy=new', '--store-only', '--no-store']) {
    const r = await run(['fetch', policy, w.server.url('/fresh.aci')]);
    t.is(r.exitCode, 0, `${policy}: ${String(r.stderr)}`);
    t.is(String(r.stdout).trim(), id);
    if (policy.startsWith('--store') || policy.startsWith('--no-store')) t.regex(String(r.stderr), /deprecated; use --pull-policy=(never|update)/);
  }
  t.is(gets('/fresh.aci'), 1);

  // no-cache with an ETag: every update asks, and 304 keeps the stored image
  const e1 = await run(['fetch', w.server.url('/etag.aci')]);
  t.is(e1.exitCode, 0, String(e1.stderr));
  const e2 = await run(['fetch', w.server.url('/etag.aci')]);
  t.is(e2.exitCode, 0, String(e2.stderr));
  t.is(String(e2.stdout).trim(), String(e1.stdout).trim());
  const asked = w.server.log.filter((r) => r.path === '/etag.aci');
  t.is(asked.length, 2);
  t.is(asked[1]!.headers['if-none-match'], '"e1"');
  t.is(w.server.log.filter((r) => r.path === '/etag.aci.asc').length, 1, 'a 304 needs no signature');

  // never, for a URL the store does not know
  const never = await run(['fetch', '--store-only', w.server.url('/unknown.aci')]);
  t.is(never.exitCode, 254);
  t.regex(String(never.stderr), /not in the store and --pull-policy=never forbids fetching it/);
  const both = await run(['fetch', '--store-only', '--no-store', w.server.url('/fresh.aci')]);
  t.is(both.exitCode, 254);
  t.regex(String(both.stderr), /both --store-only and --no-store/);
  t.is(w.server.requests('unknown').length, 0);
});

test('hostile servers: each failure is one line and leaves nothing in the store', async (t) => {
  const w = await world(t);
  const aci = fs.readFileSync(w.aci);
  const other = fs.readFileSync(await buildAci(w.env.root, { name: 'example.com/web/app', busybox: false, files: { hello: 'other' } }));
  w.server.route('/loop-a.aci', (_req, res) => res.writeHead(302, { location: '/loop-b.aci' }).end());
  w.server.route('/loop-b.aci', (_req, res) => res.writeHead(302, { location: '/loop-a.aci' }).end());
  let hop = 0;
  w.server.route('/far.aci', (_req, res) => res.writeHead(302, { location: `/far.aci?${++hop}` }).end());
  for (let i = 1; i < 40; i++) w.server.route(`/far.aci?${i}`, (_req, res) => res.writeHead(302, { location: `/far.aci?${++hop}` }).end());
  // a signature that never ends
  w.server.file('/endless-sig.aci', aci);
  w.server.route('/endless-sig.aci.asc', (_req, res) => endless(res, 0x41));
  // an image that goes on past its archive, forever
  w.server.route('/endless.aci', (_req, res) => {
    res.writeHead(200);
    res.write(aci);
    endless(res);
  });
  w.server.file('/endless.aci.asc', w.sig);
  // a compressed image whose gzip stream ends, followed by bytes without end
  const gz = await buildAci(w.env.root, { name: 'example.com/web/app', busybox: false, compression: 'gzip' });
  const gzSig = fs.readFileSync(await w.gpg.sign(UID, gz));
  for (const [fill, at] of [[0x41, '/endless-gz.aci'], [0, '/endless-gz0.aci']] as const) {
    w.server.route(at, (_req, res) => {
      res.writeHead(200);
      res.write(fs.readFileSync(gz));
      endless(res, fill);
    });
    w.server.file(`${at}.asc`, gzSig);
  }
  // an image cut short
  w.server.route('/short.aci', (req, res) => {
    res.writeHead(200, { 'content-length': String(aci.length) });
    res.write(aci.subarray(0, aci.length >> 1), () => req.socket.destroy());
  });
  w.server.file('/short.aci.asc', w.sig);
  // a server that stops sending
  w.server.route('/stall.aci', (_req, res) => {
    res.writeHead(200, { 'content-length': String(aci.length) });
    res.write(aci.subarray(0, aci.length >> 1));
  });
  w.server.file('/stall.aci.asc', w.sig);
  // the signature of other bytes
  w.server.file('/tampered.aci', other);
  w.server.file('/tampered.aci.asc', w.sig);
  // no signature
  w.server.file('/unsigned.aci', aci);

  const cases: [string, RegExp][] = [
    ['/loop-a.aci', /redirect loop/],
    ['/far.aci', /more than 10 redirects/],
    ['/endless-sig.aci', /signature .*more than 1048576 bytes/],
    ['/endless.aci', /more than 64 MiB of zeros after the last entry/],
    ['/endless-gz.aci', /more than 1048576 bytes past the end of its archive|corrupt or truncated/],
    ['/endless-gz0.aci', /more than 1048576 bytes past the end of its archive|corrupt or truncated/],
    ['/short.aci', /cut short after/],
    ['/stall.aci', /stopped sending for 2 s/],
    ['/tampered.aci', /bad signature/],
    ['/unsigned.aci', /no signature at .*404.*--insecure-options=image/],
    ['/missing.aci', /HTTP status 404/],
  ];
  for (const [p, pattern] of cases) {
    const r = await w.env.run([...(process.env.DBG ? ['--debug'] : []), 'fetch', w.server.url(p)], { env: { ...w.caEnv, RKT_HTTP_TIMEOUT: '2' } });
    if (process.env.DBG) t.log(String(r.stderr));
    t.is(r.exitCode, 254, `${p}: ${String(r.stderr)}`);
    if (!process.env.DBG) oneLine(t, r.stderr, pattern);
    await assertStoreEmpty(t, w.env, p);
  }
});

/** Send `fill` bytes until the client goes away. Zeros look like tar padding, the hardest case for the image. */
function endless(res: import('node:http').ServerResponse, fill = 0): void {
  const chunk = Buffer.alloc(64 * 1024, fill);
  const pump = (): void => {
    while (!res.destroyed && res.write(chunk));
    if (!res.destroyed) res.once('drain', pump);
  };
  res.on('error', () => undefined);
  pump();
}

test('run and prepare take https images too (fly stage1)', async (t) => {
  const w = await world(t);
  const fly = path.resolve('build/stage1-fly.aci');
  if (!fs.existsSync(fly)) throw new Error(`${fly} is missing: node dist/stage1-fly/build.js build/stage1-fly.aci`);
  const app = await buildAci(w.env.root, { name: 'example.com/web/sh', app: { exec: ['/bin/sh', '-c', 'echo hello from the web'], user: '0', group: '0' } });
  w.server.file('/sh.aci', fs.readFileSync(app));
  w.server.file('/sh.aci.asc', fs.readFileSync(await w.gpg.sign(UID, app)));
  // the stage1 is verified like any image: sign it with a root key for the test
  const stage1 = w.env.file('stage1-fly.aci');
  fs.copyFileSync(fly, stage1);
  await w.gpg.sign(UID, stage1);
  t.is((await w.env.run(['trust', '--root', '--skip-fingerprint-review', w.env.file('web.key')])).exitCode, 0);

  const r = await w.env.run(['run', `--stage1-path=${stage1}`, w.server.url('/sh.aci')], { env: w.caEnv });
  t.is(r.exitCode, 0, String(r.stderr));
  t.regex(String(r.stdout), /hello from the web/);
  const p = await w.env.run(['prepare', '--pull-policy=never', `--stage1-path=${stage1}`, w.server.url('/sh.aci')], { env: w.caEnv });
  t.is(p.exitCode, 0, String(p.stderr));
  t.is(w.server.log.filter((x) => x.path === '/sh.aci').length, 1, 'prepare used the stored image');
  await w.env.run(['gc', '--grace-period=0s']);
  await w.env.run(['rm', String(p.stdout).trim()]);
});

test('a download draws a progress bar on a terminal stderr (and none on a pipe, see above)', async (t) => {
  const w = await world(t);
  // a few MB, sent in slices, so that the bar is drawn while the bytes arrive
  const big = await buildAci(w.env.root, { name: 'example.com/web/big', busybox: false, files: { blob: crypto.randomBytes(4 << 20).toString('base64') } });
  const data = fs.readFileSync(big);
  w.server.route('/big.aci', (_req, res) => {
    res.writeHead(200, { 'content-length': String(data.length) });
    let at = 0;
    const step = (): void => {
      if (res.destroyed) return;
      const next = Math.min(data.length, at + (512 << 10));
      res.write(data.subarray(at, next));
      at = next;
      if (at < data.length) setTimeout(step, 60);
      else res.end();
    };
    step();
  });
  w.server.file('/big.aci.asc', fs.readFileSync(await w.gpg.sign(UID, big)));
  const p = pty.spawn(RKT, [...w.env.globals(), 'fetch', w.server.url('/big.aci')], {
    name: 'xterm',
    cols: 120,
    rows: 30,
    env: { ...(process.env as Record<string, string>), ...w.caEnv },
  });
  let out = '';
  p.onData((d) => (out += d));
  const code = await new Promise<number>((resolve) => p.onExit(({ exitCode }) => resolve(exitCode)));
  t.is(code, 0, out);
  t.regex(out, /Downloading ACI: \[=*>? *\] [\d.]+ [KM]B\/[\d.]+ MB [\d.]+ [KM]?B\/s \d+:\d\d left/);
  t.regex(out, /Downloading ACI: \[=+>\] [\d.]+ MB\/[\d.]+ MB/, 'the last line shows the whole download');
  t.regex(out, /sha512-[0-9a-f]{128}/);
});
