import http from 'node:http';
import https from 'node:https';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { RktError, printable } from '../errors.js';
import { log } from '../log.js';

// The one HTTP GET client of stage0: ACIs and their signatures, discovery
// pages, public keys and (later) registry blobs all come through here, so
// the rules that keep a hostile or broken server harmless live in one place:
//
// - https by default; plain http only when the caller allows it, and never
//   reached by a redirect from https unless allowed;
// - TLS checked against the system CAs (plus NODE_EXTRA_CA_CERTS, which Node
//   reads at start-up); skipping the check is the caller's loud decision;
// - redirects followed, at most MAX_REDIRECTS, a loop is an error;
// - credentials chosen per hop for the host of that hop, and only over https,
//   so a redirect to another host does not carry them along;
// - a stall (no byte for `timeoutMs`) is an error, as is a body longer than
//   the cap or than its Content-Length, or shorter than its Content-Length;
// - an AbortSignal cancels the request and the body.

export const MAX_REDIRECTS = 10;
const COALESCE_BYTES = 256 * 1024;

/** Seconds without a byte before a request fails; RKT_HTTP_TIMEOUT overrides it (documented in docs/images.md). */
export function defaultTimeoutMs(): number {
  const env = Number(process.env.RKT_HTTP_TIMEOUT);
  return Number.isFinite(env) && env > 0 ? env * 1000 : 60_000;
}

export interface HttpOptions {
  /** What is fetched, for messages: "image", "signature", "discovery page". */
  what: string;
  /** Do not verify the server's certificate (--insecure-options=tls). */
  insecureTls?: boolean;
  /** Allow plain http, as the first URL or after a redirect (--insecure-options=http). */
  allowHttp?: boolean;
  /** Extra request headers (Accept, If-None-Match). */
  headers?: Record<string, string>;
  /** Credentials for a host: asked for each hop, sent over https only. */
  credentials?: (url: URL) => Record<string, string> | undefined;
  /** Largest body accepted, in bytes. */
  maxBytes?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Statuses returned to the caller instead of failing (304 for conditional requests), or 'any' (a registry client reads 401 challenges). */
  accept?: number[] | 'any';
  method?: 'GET' | 'HEAD';
  /** Redirects followed before giving up (default MAX_REDIRECTS). */
  maxRedirects?: number;
  /** Send credentials over plain http too (a registry the user allowed over http); never across a redirect to http from https. */
  credentialsOverHttp?: boolean;
}

export interface HttpResponse {
  /** The URL after redirects. */
  url: URL;
  status: number;
  headers: http.IncomingHttpHeaders;
  /** Length announced by the server, if any. */
  length?: number;
  /** The body, bounded and checked as described above. Consume or destroy it. */
  body: Readable;
}

/** A failed request: one line that says which URL and why. */
export class HttpError extends RktError {
  constructor(
    message: string,
    readonly status?: number,
    opts: { cause?: unknown } = {},
  ) {
    super(message, opts);
  }
}

function shown(url: URL): string {
  // credentials in a URL never reach a message
  const u = new URL(url.href);
  u.username = '';
  u.password = '';
  return printable(u.href, 300);
}

/** Why a connection failed, in words that say what to do. */
function describeNetworkError(err: NodeJS.ErrnoException, url: URL): string {
  const code = err.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ERR_TLS_CERT_ALTNAME/.test(code)) {
    return `the TLS certificate of ${url.host} cannot be verified (${code}); add its CA to the system's CAs (or point NODE_EXTRA_CA_CERTS at a PEM file of it), or skip the check with --insecure-options=tls`;
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `cannot resolve host ${url.hostname}`;
  if (code === 'ECONNREFUSED') return `connection to ${url.host} refused`;
  if (code === 'ECONNRESET') return `connection to ${url.host} reset`;
  if (code === 'EPROTO' || /SSL|TLS/i.test(code) || /wrong version number|packet length too long/.test(err.message)) {
    return `TLS handshake with ${url.host} failed (${printable(err.message, 120)}); if it speaks only plain http, allow that with --insecure-options=http`;
  }
  return err.message;
}

/**
 * GET `target`, following redirects. Resolves once the headers of the final
 * response are in; a status outside 2xx (and `accept`) is an HttpError.
 */
export async function httpGet(target: string | URL, opts: HttpOptions): Promise<HttpResponse> {
  let url = parseUrl(target, opts.what);
  const seen = new Set<string>();
  for (let hop = 0; ; hop++) {
    checkScheme(url, opts, hop > 0);
    if (seen.has(url.href)) throw new HttpError(`cannot fetch ${opts.what} from ${shown(url)}: redirect loop`);
    seen.add(url.href);
    const res = await request(url, opts);
    const status = res.statusCode ?? 0;
    if (status >= 300 && status < 400 && status !== 304) {
      res.resume();
      const location = res.headers.location;
      if (location === undefined) throw new HttpError(`cannot fetch ${opts.what} from ${shown(url)}: HTTP ${status} without a Location`, status);
      const max = opts.maxRedirects ?? MAX_REDIRECTS;
      if (hop >= max) throw new HttpError(`cannot fetch ${opts.what}: more than ${max} redirects (last ${shown(url)})`, status);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new HttpError(`cannot fetch ${opts.what} from ${shown(url)}: bad redirect Location ${printable(location, 200)}`, status);
      }
      log().debug({ from: shown(url), to: shown(next), status }, `${opts.what}: redirected`);
      url = next;
      continue;
    }
    const accepted = opts.accept === 'any' || (opts.accept ?? []).includes(status);
    if ((status < 200 || status >= 300) && !accepted) {
      res.resume();
      throw new HttpError(`cannot fetch ${opts.what} from ${shown(url)}: HTTP status ${status}${statusHint(status, url)}`, status);
    }
    const announced = res.headers['content-length'];
    const length = announced !== undefined && /^\d+$/.test(announced) ? Number(announced) : undefined;
    if (length !== undefined && opts.maxBytes !== undefined && length > opts.maxBytes) {
      res.destroy();
      throw new HttpError(`cannot fetch ${opts.what} from ${shown(url)}: ${length} bytes is more than the ${opts.maxBytes} bytes a ${opts.what} may have`);
    }
    log().debug({ url: shown(url), status, length }, `${opts.what}: response`);
    return { url, status, headers: res.headers, length, body: checkedBody(res, url, length, opts) };
  }
}

/** GET a small document whole (a discovery page, a key, a signature); `maxBytes` is required. */
export async function httpGetBytes(target: string | URL, opts: HttpOptions & { maxBytes: number }): Promise<{ url: URL; data: Buffer; response: HttpResponse }> {
  const response = await httpGet(target, opts);
  const chunks: Buffer[] = [];
  for await (const chunk of response.body as AsyncIterable<Buffer>) chunks.push(chunk);
  return { url: response.url, data: Buffer.concat(chunks), response };
}

function statusHint(status: number, url: URL): string {
  if (status === 401 || status === 403) return `; add credentials for ${url.hostname} in auth.d (see docs/configuration.md)`;
  if (status === 404) return '; check the name or URL';
  return '';
}

function parseUrl(target: string | URL, what: string): URL {
  if (target instanceof URL) return target;
  try {
    return new URL(target);
  } catch {
    throw new HttpError(`cannot fetch ${what}: ${printable(target, 300)} is not a URL`);
  }
}

function checkScheme(url: URL, opts: HttpOptions, redirected: boolean): void {
  if (url.protocol === 'https:') return;
  if (url.protocol === 'http:') {
    if (opts.allowHttp) return;
    throw new HttpError(
      redirected
        ? `refusing ${opts.what}: a redirect leads to plain http (${shown(url)}); pass --insecure-options=http if you really mean it`
        : `refusing to fetch ${opts.what} over plain http (${shown(url)}); use https, or pass --insecure-options=http if you really mean it`,
    );
  }
  throw new HttpError(`cannot fetch ${opts.what} from ${shown(url)}: only https (and, if allowed, http) URLs are supported`);
}

function request(url: URL, opts: HttpOptions): Promise<http.IncomingMessage> {
  const headers: Record<string, string> = { 'user-agent': 'rkt-ts', ...opts.headers };
  if (url.protocol === 'https:' || opts.credentialsOverHttp) Object.assign(headers, opts.credentials?.(url));
  const timeout = opts.timeoutMs ?? defaultTimeoutMs();
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void =>
      reject(err instanceof HttpError ? err : new HttpError(`cannot fetch ${opts.what} from ${shown(url)}: ${describeNetworkError(err, url)}`, undefined, { cause: err }));
    const common = { method: opts.method ?? 'GET', headers, signal: opts.signal, timeout, agent: false };
    const req = url.protocol === 'https:' ? https.request(url, { ...common, rejectUnauthorized: !opts.insecureTls }, resolve) : http.request(url, common, resolve);
    req.end();
    req.on('timeout', () => req.destroy(new HttpError(`cannot fetch ${opts.what} from ${shown(url)}: no answer in ${timeout / 1000} s`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.name === 'AbortError') reject(new HttpError(`fetching ${opts.what} from ${shown(url)} was cancelled`, undefined, { cause: err }));
      else onError(err);
    });
  });
}

/**
 * The response body as the caller sees it: every byte counted against the
 * cap and the announced length, and a stall or a short body is an error
 * rather than a silent end.
 */
function checkedBody(res: http.IncomingMessage, url: URL, length: number | undefined, opts: HttpOptions): Readable {
  const limit = opts.maxBytes;
  const timeout = opts.timeoutMs ?? defaultTimeoutMs();
  let seen = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const fail = (message: string): HttpError => new HttpError(`cannot fetch ${opts.what} from ${shown(url)}: ${message}`);
  const out = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      seen += chunk.length;
      if (limit !== undefined && seen > limit) return cb(fail(`more than ${limit} bytes, too big for a ${opts.what}`));
      if (length !== undefined && seen > length) return cb(fail(`more bytes than the ${length} the server announced`));
      // TLS hands over 16 KiB records; every consumer downstream (hash, tar check, signature)
      // pays per chunk, so they get fewer, larger ones
      pending.push(chunk);
      pendingBytes += chunk.length;
      if (pendingBytes >= COALESCE_BYTES) {
        const joined = Buffer.concat(pending, pendingBytes);
        pending = [];
        pendingBytes = 0;
        return cb(null, joined);
      }
      cb();
    },
    flush(cb: TransformCallback) {
      if (length !== undefined && seen < length && opts.method !== 'HEAD') return cb(fail(`the download was cut short after ${seen} of ${length} bytes`));
      cb(null, pendingBytes > 0 ? Buffer.concat(pending, pendingBytes) : undefined);
    },
  });
  let stalled: HttpError | undefined;
  const closed = (): HttpError => stalled ?? fail(`the download was cut short after ${seen} bytes (the connection closed)`);
  res.setTimeout(timeout, () => {
    stalled = fail(`the server stopped sending for ${timeout / 1000} s`);
    res.destroy(stalled);
  });
  res.on('error', (err: Error) => out.destroy(err instanceof HttpError ? err : err.message === 'aborted' ? closed() : (stalled ?? fail(err.message))));
  res.on('aborted', () => out.destroy(closed()));
  out.on('close', () => {
    if (!res.complete) res.destroy();
  });
  res.pipe(out);
  return out;
}
