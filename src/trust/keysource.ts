import fs from 'node:fs';
import { RktError } from '../errors.js';

// Where `rkt trust` gets a key's bytes from: a local file, or an http(s) URL
// as in rkt ("rkt trust --prefix=coreos.com/etcd https://coreos.com/dist/pubkeys/aci-pubkeys.gpg").
// Plain http needs --insecure-allow-http: a key fetched in clear text can be
// swapped by anyone on the path, and trusting it would be worthless.

/** Public key files are a few KiB; refuse to buffer a server's idea of "a key" beyond this. */
const MAX_KEY_BYTES = 1 << 20;
const FETCH_TIMEOUT_MS = 30_000;

export interface KeySource {
  /** The location as the user gave it, for messages. */
  location: string;
  data: Uint8Array;
  /** Fetched over https (rkt's --trust-keys-from-https then skips the review). */
  https: boolean;
}

export function isUrl(location: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(location);
}

export async function readKeySource(location: string, opts: { allowHttp: boolean }): Promise<KeySource> {
  if (!isUrl(location)) {
    try {
      const st = await fs.promises.stat(location);
      if (!st.isFile()) throw new Error('not a regular file');
      if (st.size > MAX_KEY_BYTES) throw new Error(`${st.size} bytes is too big for a public key`);
      return { location, data: new Uint8Array(await fs.promises.readFile(location)), https: false };
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.message;
      throw new RktError(`cannot read key file "${location}": ${why}`, { cause: err });
    }
  }
  let url: URL;
  try {
    url = new URL(location);
  } catch {
    throw new RktError(`invalid key URL "${location}"`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new RktError(`cannot fetch key "${location}": only local files and http(s) URLs are supported`);
  }
  if (url.protocol === 'http:' && !opts.allowHttp) {
    throw new RktError(`refusing to fetch key "${location}" over plain http; use https, or pass --insecure-allow-http if you really mean it`);
  }
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow', signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  } catch (err) {
    const cause = (err as Error & { cause?: Error }).cause;
    throw new RktError(`cannot fetch key "${location}": ${cause?.message ?? (err as Error).message}`, { cause: err });
  }
  // A redirect must not silently downgrade https to http.
  const final = new URL(res.url || location);
  if (final.protocol === 'http:' && !opts.allowHttp) {
    throw new RktError(`refusing key "${location}": it redirects to plain http (${final.href}); pass --insecure-allow-http if you really mean it`);
  }
  if (!res.ok) throw new RktError(`cannot fetch key "${location}": HTTP status ${res.status}`);
  const chunks: Uint8Array[] = [];
  let total = 0;
  if (res.body !== null) {
    for await (const chunk of res.body) {
      total += chunk.length;
      if (total > MAX_KEY_BYTES) throw new RktError(`cannot fetch key "${location}": more than ${MAX_KEY_BYTES} bytes, not a public key`);
      chunks.push(chunk);
    }
  }
  return { location, data: new Uint8Array(Buffer.concat(chunks)), https: final.protocol === 'https:' };
}
