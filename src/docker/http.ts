// The HTTP(S) transport of the registry client: one request at a time,
// redirects followed (at most a few, credentials dropped when the host
// changes), TLS verified against the system CAs plus NODE_EXTRA_CA_CERTS,
// and every wait bounded by an idle timeout.

import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { RktError, printable } from '../errors.js';
import { interrupted } from './digest.js';

export const MAX_REDIRECTS = 5;
// A registry that stops sending for this long is given up on (a stalled download never hangs rkt).
const IDLE_TIMEOUT_MS = 60_000;

export class HttpError extends RktError {}

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
  /** Credentials to send while the host stays the one first asked. */
  authorization?: string;
  method?: 'GET' | 'HEAD';
}

function once(url: URL, opts: RequestOptions, withAuth: boolean): Promise<HttpResponse> {
  const mod = url.protocol === 'https:' ? https : http;
  const headers: Record<string, string> = { 'user-agent': 'rkt-ts', ...(opts.headers ?? {}) };
  if (withAuth && opts.authorization) headers.authorization = opts.authorization;
  return new Promise((resolve, reject) => {
    const req = mod.request(
      url,
      { method: opts.method ?? 'GET', headers, rejectUnauthorized: !opts.insecureTls, timeout: IDLE_TIMEOUT_MS },
      (res) => {
        res.setTimeout(IDLE_TIMEOUT_MS, () => res.destroy(new HttpError(`${url.host} stopped sending for ${IDLE_TIMEOUT_MS / 1000}s; try again later`)));
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res, url });
      },
    );
    req.once('timeout', () => req.destroy(new HttpError(`${url.host} did not answer within ${IDLE_TIMEOUT_MS / 1000}s; check that the registry is up`)));
    req.once('error', (err) => reject(describeNetworkError(err, url)));
    req.end();
  });
}

/** Errors of the network and TLS layers, in one line that says what to do. */
export function describeNetworkError(err: Error, url: URL): RktError {
  if (err instanceof RktError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const where = `${url.protocol}//${url.host}`;
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS_CERT/.test(code)) {
    return new HttpError(
      `the TLS certificate of ${where} cannot be verified (${code}); add its CA to the system's trust store or NODE_EXTRA_CA_CERTS, or skip the check with --insecure-options=tls`,
      { cause: err },
    );
  }
  if (code === 'EPROTO' || /SSL|TLS/.test(code) || /wrong version number|packet length too long/.test(err.message)) {
    return new HttpError(`TLS with ${where} failed (${printable(err.message, 120)}); if it only speaks plain http, allow that with --insecure-options=http`, { cause: err });
  }
  if (code === 'ECONNREFUSED') return new HttpError(`cannot connect to ${where}: connection refused; check the registry address and that it is up`, { cause: err });
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new HttpError(`cannot resolve the host ${url.hostname}; check the registry name`, { cause: err });
  return new HttpError(`request to ${where} failed: ${printable(err.message, 160)}`, { cause: err });
}

/** GET (or HEAD) `url`, following redirects. The caller consumes or destroys the body. */
export async function request(url: URL, opts: RequestOptions = {}): Promise<HttpResponse> {
  let current = url;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const res = await once(current, opts, current.host === url.host && current.protocol === url.protocol);
    if (![301, 302, 303, 307, 308].includes(res.status)) return res;
    res.body.resume();
    const location = res.headers.location;
    if (!location) throw new HttpError(`${current.host} answered ${res.status} without a Location header; the registry is broken`);
    let next: URL;
    try {
      next = new URL(location, current);
    } catch {
      throw new HttpError(`${current.host} redirected to an invalid URL; the registry is broken`);
    }
    if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new HttpError(`${current.host} redirected to a ${printable(next.protocol, 20)} URL, which is not followed`);
    if (current.protocol === 'https:' && next.protocol === 'http:') {
      throw new HttpError(`${current.host} redirected from https to plain http (${next.host}); refused`);
    }
    current = next;
  }
  throw new HttpError(`more than ${MAX_REDIRECTS} redirects starting at ${url.href}; the registry is misconfigured or hostile`);
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
