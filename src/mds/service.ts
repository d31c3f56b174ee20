import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { RktError, isErrno } from '../errors.js';
import { log } from '../log.js';
import { PodIdentity } from './identity.js';
import { answer, FLAVOR, FLAVOR_HEADER } from './public-api.js';
import { register } from './registration-api.js';
import { PodRegistry } from './registry.js';

// `rkt metadata-service`: two HTTP servers over one registry. Registration
// on a Unix socket that only root can open; the apps' side on a TCP port,
// where every request comes from a pod that may be hostile: small bodies,
// short deadlines, a cap on connections per address, and no answer that
// says more than the caller's own token allows.

/** Limits of the apps' side. */
export const PUBLIC_LIMITS = {
  bodyBytes: 64 * 1024,
  headerBytes: 8 * 1024,
  connectionsPerAddress: 32,
  connections: 1024,
  requestMs: 10_000,
  headersMs: 5_000,
  keepAliveMs: 5_000,
} as const;

/** A pod manifest with many apps and annotations still fits. */
export const REGISTRATION_BODY_BYTES = 4 * 1024 * 1024;

export interface ServiceOptions {
  socketPath: string;
  /** A listening registration socket inherited from systemd (socket activation); its file is systemd's to remove. */
  activatedFd?: number;
  /** 0 picks a free port (tests). */
  port: number;
  /** Address of the apps' side; default every IPv4 address, as rkt. */
  host?: string;
}

class BodyTooLarge extends Error {}

function readBody(req: http.IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) return Promise.reject(new BodyTooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        req.pause();
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res: http.ServerResponse, status: number, type: string, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

/** The URL as logged: the token (the first path segment) is a secret. */
function redacted(url: string): string {
  return url.replace(/^\/[^/?]*/, '/<token>');
}

/** Refuse to replace a socket some service still answers on; remove one nobody does. */
async function clearStaleSocket(socketPath: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socketPath);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return;
    throw err;
  }
  if (!st.isSocket()) throw new RktError(`${socketPath} exists and is not a socket; remove it or choose another path with RKT_METADATA_SERVICE_SOCKET`);
  const alive = await new Promise<boolean>((resolve) => {
    const c = net.connect(socketPath);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (alive) throw new RktError(`a metadata service already listens on ${socketPath}; stop it first, or give this one another socket with RKT_METADATA_SERVICE_SOCKET`);
  fs.rmSync(socketPath, { force: true });
}

function listen(server: http.Server | net.Server, target: { path: string } | { port: number; host: string } | { fd: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(target, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export class MetadataService {
  readonly registry = new PodRegistry();
  private readonly identity = new PodIdentity();
  private readonly perAddress = new Map<string, number>();
  private registration?: http.Server;
  private activated?: http.Server;
  private public?: http.Server;
  private socketPath = '';
  port = 0;

  async start(opts: ServiceOptions): Promise<void> {
    this.socketPath = opts.socketPath;
    const pub = (this.public = http.createServer(
      { maxHeaderSize: PUBLIC_LIMITS.headerBytes, requestTimeout: PUBLIC_LIMITS.requestMs, headersTimeout: PUBLIC_LIMITS.headersMs, keepAliveTimeout: PUBLIC_LIMITS.keepAliveMs },
      (req, res) => void this.onPublic(req, res),
    ));
    pub.maxConnections = PUBLIC_LIMITS.connections;
    pub.on('connection', (s) => this.admit(s));
    pub.on('clientError', (_err, s) => s.destroy());
    try {
      await listen(pub, { port: opts.port, host: opts.host ?? '0.0.0.0' });
    } catch (err) {
      throw new RktError(`cannot listen on TCP port ${opts.port}: ${(err as Error).message}; choose another with --listen-port`, { cause: err });
    }
    this.port = (pub.address() as AddressInfo).port;

    const reg = http.createServer((req, res) => void this.onRegistration(req, res));
    if (opts.activatedFd !== undefined) {
      await listen(reg, { fd: opts.activatedFd });
      this.activated = reg;
      return;
    }
    try {
      fs.mkdirSync(path.dirname(opts.socketPath), { recursive: true, mode: 0o755 });
      await clearStaleSocket(opts.socketPath);
    } catch (err) {
      await this.close();
      throw err;
    }
    this.registration = reg;
    // only root registers pods: the socket is created 0600, never briefly open to others
    const mask = process.umask(0o177);
    try {
      await listen(reg, { path: opts.socketPath });
    } catch (err) {
      await this.close();
      throw new RktError(`cannot listen on ${opts.socketPath}: ${(err as Error).message}`, { cause: err });
    } finally {
      process.umask(mask);
    }
  }

  /** One address (a pod) may hold only so many connections: a flood from one pod cannot starve the others. */
  private admit(socket: net.Socket): void {
    const addr = socket.remoteAddress ?? '';
    const n = (this.perAddress.get(addr) ?? 0) + 1;
    if (n > PUBLIC_LIMITS.connectionsPerAddress) {
      socket.destroy();
      return;
    }
    this.perAddress.set(addr, n);
    socket.once('close', () => {
      const left = (this.perAddress.get(addr) ?? 1) - 1;
      if (left <= 0) this.perAddress.delete(addr);
      else this.perAddress.set(addr, left);
    });
  }

  private async onPublic(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let body: Buffer;
    try {
      body = await readBody(req, PUBLIC_LIMITS.bodyBytes);
    } catch (err) {
      if (err instanceof BodyTooLarge) {
        send(res, 413, 'text/plain; charset=us-ascii', `the body is larger than ${PUBLIC_LIMITS.bodyBytes} bytes\n`, { Connection: 'close' });
        res.on('finish', () => req.socket.destroy());
      } else req.socket.destroy();
      return;
    }
    const r = answer({ method: req.method ?? '', url: req.url ?? '', flavor: req.headers[FLAVOR_HEADER], contentType: req.headers['content-type'], body }, this.registry, this.identity);
    log().debug(`${req.method} ${redacted(req.url ?? '')} from ${req.socket.remoteAddress}: ${r.status}`);
    send(res, r.status, r.contentType, req.method === 'HEAD' ? '' : r.body, { 'Metadata-Flavor': FLAVOR, ...(r.allow !== undefined && { Allow: r.allow }) });
  }

  private async onRegistration(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let body: Buffer;
    try {
      body = await readBody(req, REGISTRATION_BODY_BYTES);
    } catch (err) {
      if (err instanceof BodyTooLarge) send(res, 413, 'text/plain', `the body is larger than ${REGISTRATION_BODY_BYTES} bytes\n`, { Connection: 'close' });
      else req.socket.destroy();
      return;
    }
    const r = register({ method: req.method ?? '', url: req.url ?? '', body }, this.registry, this.port);
    log().debug(`registration: ${req.method} ${(req.url ?? '').replace(/token=[^&]*/, 'token=<token>')}: ${r.status}`);
    send(res, r.status, 'text/plain', r.body);
  }

  async close(): Promise<void> {
    const closing = [this.public, this.registration, this.activated].filter((s): s is http.Server => s !== undefined && s.listening);
    for (const s of closing) s.closeAllConnections();
    await Promise.all(closing.map((s) => new Promise<void>((r) => s.close(() => r()))));
    if (this.registration) fs.rmSync(this.socketPath, { force: true });
  }
}
