import test from 'ava';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { checkServiceReachable, registerPod, unregisterPod } from '../../src/mds/client.js';
import { MetadataService, PUBLIC_LIMITS } from '../../src/mds/service.js';
import { PodPaths } from '../../src/stage1/contract.js';

// The metadata service over real sockets (loopback and a Unix socket in a
// temporary directory): registration by stage0's own client, the limits of
// the apps' side under hostile traffic, and two services side by side.

const ID = `sha512-${'c3'.repeat(64)}`;

interface World {
  dir: string;
  service: MetadataService;
  socket: string;
}

async function start(t: import('ava').ExecutionContext): Promise<World> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mds-unit-'));
  const socket = path.join(dir, 'run', 'mds.sock');
  const service = new MetadataService();
  await service.start({ socketPath: socket, port: 0, host: '127.0.0.1' });
  t.teardown(async () => {
    await service.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { dir, service, socket };
}

/** A pod directory as stage0 leaves it: the pod manifest and each app's image manifest. */
function fakePod(dir: string, uuid: string, app: string): PodPaths {
  const paths = new PodPaths(path.join(dir, uuid));
  fs.mkdirSync(paths.appInfo(app), { recursive: true });
  fs.writeFileSync(paths.manifest, JSON.stringify({ acVersion: '0.8.11', acKind: 'PodManifest', apps: [{ name: app, image: { name: `example.com/${app}`, id: ID } }], annotations: [{ name: 'who', value: app }] }));
  fs.writeFileSync(paths.appImageManifest(app), JSON.stringify({ acKind: 'ImageManifest', acVersion: '0.8.11', name: `example.com/${app}` }));
  return paths;
}

function get(port: number, target: string, opts: { method?: string; body?: Buffer; headers?: Record<string, string | number> } = {}): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: target, method: opts.method ?? 'GET', agent: false, headers: { 'Metadata-Flavor': 'AppContainer', ...opts.headers } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

test('stage0 registers a pod and its apps, the apps read them, unregistering forgets them', async (t) => {
  const w = await start(t);
  t.is(fs.statSync(w.socket).mode & 0o777, 0o600);
  await checkServiceReachable(w.socket);
  const uuid = '11111111-2222-4333-8444-555555555555';
  const paths = fakePod(w.dir, uuid, 'web');
  const access = await registerPod(paths, uuid, w.socket);
  t.is(access.port, w.service.port);
  t.regex(access.token, /^[0-9a-f]{64}$/);
  t.true(fs.existsSync(path.join(paths.dir, 'mds-registered')));
  const r = await get(w.service.port, `/${access.token}/acMetadata/v1/apps/web/image/id`);
  t.is(r.status, 200);
  t.is(r.body, ID);
  t.is(r.headers['metadata-flavor'], 'AppContainer');
  t.is((await get(w.service.port, `/${access.token}/acMetadata/v1/pod/annotations/who`)).body, 'web');
  await unregisterPod(paths.dir, uuid);
  t.false(fs.existsSync(path.join(paths.dir, 'mds-registered')));
  t.is((await get(w.service.port, `/${access.token}/acMetadata/v1/pod/uuid`)).status, 401);
  t.is(w.service.registry.size, 0);
});

test('a refused registration leaves nothing registered; no service is one clear error', async (t) => {
  const w = await start(t);
  const uuid = '11111111-2222-4333-8444-666666666666';
  const paths = fakePod(w.dir, uuid, 'web');
  // an image manifest the service refuses: the pod's registration is undone
  fs.writeFileSync(paths.appImageManifest('web'), '{"acKind":"ImageManifest"}');
  await t.throwsAsync(registerPod(paths, uuid, w.socket), { message: /refused app web/ });
  t.is(w.service.registry.size, 0);
  t.false(fs.existsSync(path.join(paths.dir, 'mds-registered')));
  await t.throwsAsync(checkServiceReachable(path.join(w.dir, 'none.sock')), { message: /^--mds-register: no metadata service answers on .*none\.sock \(no such socket\)/ });
});

test('oversized bodies are refused before they are read whole', async (t) => {
  const w = await start(t);
  const big = Buffer.alloc(PUBLIC_LIMITS.bodyBytes + 1, 'a');
  const declared = await get(w.service.port, `/${'t'.repeat(40)}/acMetadata/v1/pod/hmac/sign`, { method: 'POST', body: big });
  t.is(declared.status, 413);
  // the same without a length: chunked, cut off at the limit
  const chunked = await new Promise<number>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: w.service.port, path: `/${'t'.repeat(40)}/acMetadata/v1/pod/hmac/sign`, method: 'POST', agent: false, headers: { 'Metadata-Flavor': 'AppContainer', 'Transfer-Encoding': 'chunked' } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    for (let i = 0; i < 20; i++) req.write(Buffer.alloc(8192, 'b'));
    req.end();
  });
  t.is(chunked, 413);
  // headers beyond the limit: the connection is dropped or refused
  const hugeHeader = await get(w.service.port, '/x/acMetadata/v1/pod/uuid', { headers: { 'X-Pad': 'p'.repeat(PUBLIC_LIMITS.headerBytes * 2) } }).then(
    (r) => r.status,
    () => 0,
  );
  t.true(hugeHeader === 431 || hugeHeader === 0, String(hugeHeader));
});

test('a flood from one address is capped; the service still answers afterwards', async (t) => {
  const w = await start(t);
  const uuid = '11111111-2222-4333-8444-777777777777';
  const access = await registerPod(fakePod(w.dir, uuid, 'web'), uuid, w.socket);
  // many idle connections: those over the cap are closed at once
  const sockets: net.Socket[] = [];
  const closedEarly: boolean[] = [];
  for (let i = 0; i < PUBLIC_LIMITS.connectionsPerAddress + 20; i++) {
    const s = net.connect(w.service.port, '127.0.0.1');
    sockets.push(s);
    closedEarly.push(false);
    s.on('close', () => (closedEarly[i] = true));
    s.on('error', () => undefined);
  }
  await new Promise((r) => setTimeout(r, 500));
  const dropped = closedEarly.filter(Boolean).length;
  t.true(dropped >= 20, `${dropped} of ${sockets.length} connections were closed`);
  for (const s of sockets) s.destroy();
  await new Promise((r) => setTimeout(r, 200));
  // then a burst of requests, bad tokens and good
  const burst = await Promise.all(
    Array.from({ length: 400 }, (_, i) => get(w.service.port, i % 2 === 0 ? `/${'x'.repeat(40)}/acMetadata/v1/pod/uuid` : `/${access.token}/acMetadata/v1/pod/uuid`).then(
      (r) => r.status,
      () => 0,
    )),
  );
  t.true(burst.every((s) => s === 0 || s === 200 || s === 401));
  t.true(burst.some((s) => s === 401));
  const after = await get(w.service.port, `/${access.token}/acMetadata/v1/pod/uuid`);
  t.deepEqual([after.status, after.body], [200, uuid]);
});

test('two services run side by side on their own sockets and ports; a second on a live socket is refused', async (t) => {
  const a = await start(t);
  const b = await start(t);
  t.not(a.service.port, b.service.port);
  const uuid = '11111111-2222-4333-8444-888888888888';
  const access = await registerPod(fakePod(a.dir, uuid, 'web'), uuid, a.socket);
  t.is((await get(a.service.port, `/${access.token}/acMetadata/v1/pod/uuid`)).status, 200);
  t.is((await get(b.service.port, `/${access.token}/acMetadata/v1/pod/uuid`)).status, 401);
  const c = new MetadataService();
  await t.throwsAsync(c.start({ socketPath: a.socket, port: 0, host: '127.0.0.1' }), { message: /already listens on/ });
  // the refused one leaves a's socket alone
  await checkServiceReachable(a.socket);
  // the socket of a service that was killed is replaced
  const stale = path.join(a.dir, 'stale.sock');
  await execa('node', ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`], { reject: false });
  t.true(fs.lstatSync(stale).isSocket());
  const d = new MetadataService();
  await d.start({ socketPath: stale, port: 0, host: '127.0.0.1' });
  await checkServiceReachable(stale);
  await d.close();
  t.false(fs.existsSync(stale));
  fs.writeFileSync(path.join(a.dir, 'not-a-socket'), 'x');
  await t.throwsAsync(new MetadataService().start({ socketPath: path.join(a.dir, 'not-a-socket'), port: 0, host: '127.0.0.1' }), { message: /is not a socket/ });
});
