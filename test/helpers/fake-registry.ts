import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { BuiltImage } from './oci.js';
import { OCI_MANIFEST } from './oci.js';

// A registry that lies: a small Docker Registry API v2 server on loopback
// whose answers a test chooses, to see rkt refuse each kind of bad answer.
// It speaks plain http (rkt runs with --insecure-options=http against it).

export type TokenMode = 'ok' | 'garbage' | 'error' | 'endless' | 'no-token';

export interface FakeRegistryOptions {
  /** Ask for bearer tokens from /token, answered as `token` says. */
  token?: TokenMode;
  /** Override the answer for a path: return true when handled. */
  override?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean;
}

const TOKEN = 'test-token-123';

export class FakeRegistry {
  readonly manifests = new Map<string, { body: Buffer; type: string }>();
  readonly blobs = new Map<string, Buffer>();
  readonly requests: string[] = [];
  private constructor(private readonly server: http.Server, readonly host: string) {}

  static async start(opts: FakeRegistryOptions = {}): Promise<FakeRegistry> {
    let self: FakeRegistry | undefined;
    const server = http.createServer((req, res) => self!.handle(req, res, opts));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    self = new FakeRegistry(server, `127.0.0.1:${(server.address() as AddressInfo).port}`);
    return self;
  }

  /** Serve `img` as REPO:TAG (and by its digest). */
  add(repo: string, tag: string, img: BuiltImage): void {
    this.manifests.set(`${repo}:${tag}`, { body: img.manifest, type: OCI_MANIFEST });
    this.manifests.set(`${repo}:${img.manifestDigest}`, { body: img.manifest, type: OCI_MANIFEST });
    this.blobs.set(img.configDigest, img.config);
    for (const l of img.layers) this.blobs.set(l.digest, l.blob);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse, opts: FakeRegistryOptions): void {
    const url = new URL(req.url ?? '/', `http://${this.host}`);
    this.requests.push(url.pathname);
    if (opts.override?.(req, res)) return;
    if (url.pathname === '/token') return this.token(res, opts.token ?? 'ok');
    if (opts.token && req.headers.authorization !== `Bearer ${TOKEN}`) {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${this.host}/token",service="fake"`, 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNAUTHORIZED"}]}');
      return;
    }
    if (url.pathname === '/v2/') {
      res.end('{}');
      return;
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (m?.[2] === 'manifests') {
      const found = this.manifests.get(`${m[1]}:${m[3]}`);
      if (found) {
        res.writeHead(200, { 'content-type': found.type, 'content-length': found.body.length });
        res.end(found.body);
        return;
      }
    } else if (m?.[2] === 'blobs') {
      const found = this.blobs.get(m[3]!);
      if (found) {
        res.writeHead(200, { 'content-length': found.length });
        res.end(found);
        return;
      }
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"errors":[{"code":"NOT_FOUND"}]}');
  }

  private token(res: http.ServerResponse, mode: TokenMode): void {
    switch (mode) {
      case 'ok':
        res.end(JSON.stringify({ token: TOKEN }));
        return;
      case 'garbage':
        res.end('<html>not json</html>');
        return;
      case 'error':
        res.writeHead(500);
        res.end('oops');
        return;
      case 'no-token':
        res.end(JSON.stringify({ token: 'has spaces\r\nand newlines' }));
        return;
      case 'endless':
        endless(res);
        return;
    }
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Write zeros until the client goes away (bounded: 512 MiB at most). */
export function endless(res: http.ServerResponse, headers: http.OutgoingHttpHeaders = {}): void {
  res.writeHead(200, headers);
  const chunk = Buffer.alloc(64 * 1024);
  let sent = 0;
  const pump = (): void => {
    while (!res.destroyed && sent < 512 * 1024 * 1024) {
      sent += chunk.length;
      if (!res.write(chunk)) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  res.once('close', () => res.removeAllListeners('drain'));
  pump();
}
