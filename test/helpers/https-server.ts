import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { execa, type Result } from 'execa';
import { RKT, type RktEnv } from './rkt.js';
import { needCommand } from './prereqs.js';

// A web server for the fetch tests, started by the test itself, on
// loopback only: a throw-away CA made with openssl, a server certificate for
// the test's DNS names, and a route table the test fills in.
//
// appc discovery always asks https://NAME/ on port 443. So that no test
// touches the host's names or ports, the server listens on port 443 of an
// address of its own in 127.0.0.0/8, and rkt runs in a private mount
// namespace (unshare --mount) where a bind mount puts a hosts file over
// /etc/hosts that maps the test's names to that address. The namespace dies
// with rkt, leaving the host as it was.

export interface TestCa {
  dir: string;
  /** PEM file of the CA: what NODE_EXTRA_CA_CERTS points at. */
  caFile: string;
  cert: Buffer;
  key: Buffer;
}

export async function makeCa(names: string[], ips: string[]): Promise<TestCa> {
  needCommand('openssl', 'openssl');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rkt-ca-'));
  const f = (n: string): string => path.join(dir, n);
  const run = (args: string[]): Promise<unknown> => execa('openssl', args, { cwd: dir });
  await run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=rkt test CA']);
  await run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', `/CN=${names[0]}`]);
  const san = [...names.map((n) => `DNS:${n}`), ...ips.map((i) => `IP:${i}`)].join(',');
  fs.writeFileSync(f('ext.cnf'), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  await run(['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.pem'), '-days', '2', '-extfile', f('ext.cnf')]);
  return { dir, caFile: f('ca.pem'), cert: fs.readFileSync(f('server.pem')), key: fs.readFileSync(f('server.key')) };
}

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

export interface Served {
  method: string;
  host: string;
  path: string;
  headers: http.IncomingHttpHeaders;
}

/** Routes are "host path" or just "path" (any host); unknown ones answer 404. */
export class TestServer {
  readonly routes = new Map<string, Handler>();
  readonly log: Served[] = [];
  private server: http.Server | undefined;
  private readonly sockets = new Set<import('node:net').Socket>();
  address = '';
  port = 0;

  constructor(private readonly tls: TestCa | undefined) {}

  route(key: string, handler: Handler): void {
    this.routes.set(key, handler);
  }

  /** Serve bytes, with optional headers. */
  file(key: string, data: Buffer | string, headers: Record<string, string> = {}): void {
    this.route(key, (_req, res) => {
      res.writeHead(200, { 'content-length': String(Buffer.byteLength(data)), ...headers });
      res.end(data);
    });
  }

  /** Listen on `host`:`port`; port 0 picks one. */
  async listen(host: string, port = 0): Promise<void> {
    const handle: Handler = (req, res) => {
      const hostName = (req.headers.host ?? '').replace(/:\d+$/, '');
      const url = req.url ?? '/';
      this.log.push({ method: req.method ?? '', host: hostName, path: url, headers: req.headers });
      const h = this.routes.get(`${hostName} ${url}`) ?? this.routes.get(url);
      if (h === undefined) {
        res.writeHead(404).end('not found');
        return;
      }
      h(req, res);
    };
    this.server = this.tls ? https.createServer({ cert: this.tls.cert, key: this.tls.key }, handle) : http.createServer(handle);
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    const server = this.server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const a = server.address() as AddressInfo;
    this.address = a.address;
    this.port = a.port;
  }

  url(pathAndQuery: string, host = this.address): string {
    const scheme = this.tls ? 'https' : 'http';
    const defaultPort = this.tls ? 443 : 80;
    return `${scheme}://${host}${this.port === defaultPort ? '' : `:${this.port}`}${pathAndQuery}`;
  }

  requests(pathPart: string): Served[] {
    return this.log.filter((r) => r.path.includes(pathPart));
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/**
 * A server on port 443 of a fresh 127.x.y.z address (tried until one is
 * free), for discovery by DNS name.
 */
export async function listenOnOwn443(server: TestServer): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const ip = `127.${77 + (attempt % 3)}.${Math.floor(Math.random() * 250) + 1}.${Math.floor(Math.random() * 250) + 1}`;
    try {
      await server.listen(ip, 443);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  throw new Error('no free 127.x.y.z:443 found for the test server');
}

/**
 * Run the real CLI as RktEnv.run does, but in a private mount namespace
 * whose /etc/hosts maps `names` to `ip`.
 */
export function runWithHosts(
  env: RktEnv,
  names: string[],
  ip: string,
  args: string[],
  opts: { input?: string; env?: Record<string, string>; timeout?: number } = {},
): Promise<Result> {
  needCommand('unshare', 'util-linux');
  const hosts = env.file(`hosts-${process.pid}-${Math.random().toString(16).slice(2)}`);
  fs.writeFileSync(hosts, `127.0.0.1 localhost\n${names.map((n) => `${ip} ${n}`).join('\n')}\n`);
  return execa('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', hosts, RKT, ...env.globals(), ...args], {
    reject: false,
    input: opts.input ?? '',
    env: opts.env,
    timeout: opts.timeout ?? 120_000,
  }) as unknown as Promise<Result>;
}

/** A private rkt world, a GnuPG home and an https server with its own CA, all removed when the test ends. */
export async function httpsWorld(
  t: import('ava').ExecutionContext,
  prefix: string,
  names: string[],
  ips: string[],
): Promise<{ env: RktEnv; gpg: import('./gpg.js').Gpg; ca: TestCa; server: TestServer }> {
  const { RktEnv } = await import('./rkt.js');
  const { Gpg } = await import('./gpg.js');
  const env = new RktEnv(prefix);
  const gpg = new Gpg();
  const ca = await makeCa(names, ips);
  const server = new TestServer(ca);
  t.teardown(async () => {
    await server.close();
    env.cleanup();
    gpg.cleanup();
    fs.rmSync(ca.dir, { recursive: true, force: true });
  });
  return { env, gpg, ca, server };
}
