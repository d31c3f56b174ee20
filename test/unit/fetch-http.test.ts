import test, { type ExecutionContext } from 'ava';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { HttpError, httpGet, httpGetBytes } from '../../src/fetch/http.js';

// The shared HTTP GET client against a plain-http server on 127.0.0.1
// started here (https is covered by the integration tests).

async function serve(t: ExecutionContext, handler: http.RequestListener): Promise<{ url: (p: string) => string; seen: http.IncomingMessage[] }> {
  const seen: http.IncomingMessage[] = [];
  const server = http.createServer((req, res) => {
    seen.push(req);
    res.on('error', () => undefined);
    handler(req, res);
  });
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (s) => sockets.add(s));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  return { url: (p) => `http://127.0.0.1:${port}${p}`, seen };
}

const base = { what: 'thing', allowHttp: true, timeoutMs: 2000 };

test('redirects are followed, loops and long chains are errors', async (t) => {
  const s = await serve(t, (req, res) => {
    const m = /^\/hop(\d+)$/.exec(req.url ?? '');
    if (req.url === '/a') return void res.writeHead(302, { location: '/b' }).end();
    if (req.url === '/b') return void res.writeHead(307, { location: '/a' }).end();
    if (req.url === '/start') return void res.writeHead(301, { location: '/hop1' }).end();
    if (m) return void res.writeHead(302, { location: Number(m[1]) < 3 ? `/hop${Number(m[1]) + 1}` : '/done' }).end();
    if (req.url === '/done') return void res.end('here');
    if (req.url?.startsWith('/far')) return void res.writeHead(302, { location: `${req.url}x` }).end();
    res.writeHead(404).end();
  });
  const { data, url } = await httpGetBytes(s.url('/start'), { ...base, maxBytes: 100 });
  t.is(data.toString(), 'here');
  t.is(url.pathname, '/done');
  await t.throwsAsync(httpGet(s.url('/a'), base), { instanceOf: HttpError, message: /redirect loop/ });
  await t.throwsAsync(httpGet(s.url('/far'), base), { instanceOf: HttpError, message: /more than 10 redirects/ });
  await t.throwsAsync(httpGet(s.url('/nothing'), base), { instanceOf: HttpError, message: /HTTP status 404; check the name or URL/ });
});

test('plain http only when allowed; credentials never over http', async (t) => {
  const s = await serve(t, (_req, res) => res.end('ok'));
  await t.throwsAsync(httpGet(s.url('/x'), { what: 'thing' }), { instanceOf: HttpError, message: /refusing to fetch thing over plain http/ });
  const asked: string[] = [];
  await httpGetBytes(s.url('/x'), { ...base, maxBytes: 10, credentials: (u) => (asked.push(u.href), { authorization: 'Basic c2VjcmV0' }) });
  t.is(s.seen.at(-1)?.headers.authorization, undefined);
  t.deepEqual(asked, []);
  await t.throwsAsync(httpGet('ftp://127.0.0.1/x', base), { instanceOf: HttpError, message: /only https/ });
});

test('caps, announced lengths, short bodies and stalls are errors; cancellation works', async (t) => {
  const s = await serve(t, (req, res) => {
    if (req.url === '/big') {
      res.write(Buffer.alloc(2500));
      return void res.end(Buffer.alloc(2500));
    }
    if (req.url === '/announced') return void res.writeHead(200, { 'content-length': '5000' }).end(Buffer.alloc(5000));
    if (req.url === '/short') {
      res.writeHead(200, { 'content-length': '5000' });
      return void res.write(Buffer.alloc(1000), () => req.socket.destroy());
    }
    if (req.url === '/stall') {
      res.writeHead(200, { 'content-length': '5000' });
      return void res.write(Buffer.alloc(1000));
    }
    if (req.url === '/silent') return;
    res.writeHead(404).end();
  });
  await t.throwsAsync(httpGetBytes(s.url('/big'), { ...base, maxBytes: 1000 }), { instanceOf: HttpError, message: /more than 1000 bytes, too big for a thing/ });
  await t.throwsAsync(httpGetBytes(s.url('/announced'), { ...base, maxBytes: 1000 }), { instanceOf: HttpError, message: /5000 bytes is more than the 1000 bytes/ });
  await t.throwsAsync(httpGetBytes(s.url('/short'), { ...base, maxBytes: 1e6 }), { instanceOf: HttpError, message: /cut short after 1000 (bytes|of 5000)/ });
  await t.throwsAsync(httpGetBytes(s.url('/stall'), { ...base, maxBytes: 1e6, timeoutMs: 300 }), { instanceOf: HttpError, message: /stopped sending for 0.3 s/ });
  await t.throwsAsync(httpGet(s.url('/silent'), { ...base, timeoutMs: 300 }), { instanceOf: HttpError, message: /no answer in 0.3 s/ });
  const abort = new AbortController();
  setTimeout(() => abort.abort(), 100);
  await t.throwsAsync(httpGet(s.url('/silent'), { ...base, signal: abort.signal }), { instanceOf: HttpError, message: /cancelled/ });
});

test('a 304 is returned only when the caller accepts it', async (t) => {
  const s = await serve(t, (req, res) => {
    if (req.url === '/c') return void res.writeHead(req.headers['if-none-match'] === '"1"' ? 304 : 200, { etag: '"1"' }).end();
    res.writeHead(404).end();
  });
  const r = await httpGet(s.url('/c'), { ...base, headers: { 'if-none-match': '"1"' }, accept: [304] });
  r.body.resume();
  t.is(r.status, 304);
  await t.throwsAsync(httpGet(s.url('/c'), { ...base, headers: { 'if-none-match': '"1"' } }), { instanceOf: HttpError, message: /HTTP status 304/ });
});
