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

export async function readKeySource(location: string, opts: { allowHttp: boolean; insecureTls?: boolean }): Promise<KeySource> {
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
  const { httpGetBytes } = await import('../fetch/http.js');
  // the shared client refuses a redirect from https down to http unless allowed
  const { url: final, data } = await httpGetBytes(url, {
    what: 'public key',
    allowHttp: opts.allowHttp,
    insecureTls: opts.insecureTls,
    maxBytes: MAX_KEY_BYTES,
    timeoutMs: FETCH_TIMEOUT_MS,
  });
  // a key fetched without checking the server's certificate is no better than one fetched over http
  return { location, data: new Uint8Array(data), https: final.protocol === 'https:' && opts.insecureTls !== true };
}
