// The HTTP(S) transport of the registry client: a registry's view of the
// shared client (at most a few redirects, credentials dropped when the host
// changes, TLS against the system CAs plus NODE_EXTRA_CA_CERTS, every wait
// bounded by the idle timeout), and bounded reads of small answers.

import type http from 'node:http';
import type { Readable } from 'node:stream';
import { HttpError, httpGet } from '../fetch/http.js';
import { interrupted } from './digest.js';

export { HttpError };
export const MAX_REDIRECTS = 5;

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Readable;
  /** The URL that answered, after redirects. */
  url: URL;
}

export interface RequestOptions {
  headers?: Record<string, string>;
  /** Skip TLS certificate verification (--insecure-options=tls). */
  insecureTls?: boolean;
  /** Credentials to send while the host (and scheme) stays the one first asked. */
  authorization?: string;
  method?: 'GET' | 'HEAD';
}

/**
 * GET (or HEAD) `url` through stage0's one HTTP client (src/fetch/http.ts),
 * following redirects; every status comes back to the registry client, which
 * reads 401 challenges and its own errors. A registry reached over https is
 * never followed down to plain http; one the user allowed over http
 * (--insecure-options=http, decided by the caller) stays on it. The caller
 * consumes or destroys the body.
 */
export async function request(url: URL, opts: RequestOptions = {}): Promise<HttpResponse> {
  const { authorization } = opts;
  const res = await httpGet(url, {
    what: 'registry data',
    method: opts.method,
    headers: opts.headers,
    insecureTls: opts.insecureTls,
    allowHttp: url.protocol === 'http:',
    accept: 'any',
    maxRedirects: MAX_REDIRECTS,
    credentials: authorization === undefined ? undefined : (u) => (u.host === url.host && u.protocol === url.protocol ? { authorization } : undefined),
    credentialsOverHttp: true,
  });
  return { status: res.status, headers: res.headers, body: res.body, url: res.url };
}

/** A response body, read whole up to `max` bytes (more is an error naming `what`). */
export async function readBody(res: HttpResponse, max: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) {
    res.body.destroy();
    throw new HttpError(`${what} is ${declared} bytes; the limit is ${max}; the registry is misbehaving`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const c of res.body) {
      size += (c as Buffer).length;
      if (size > max) {
        res.body.destroy();
        throw new HttpError(`${what} is larger than the limit of ${max} bytes; the registry is misbehaving`);
      }
      chunks.push(c as Buffer);
    }
  } catch (err) {
    throw interrupted(err as Error, what);
  }
  return Buffer.concat(chunks);
}
