import fs from 'node:fs';
import { pipeline, type Readable } from 'node:stream';
import type { GlobalOptions } from '../config/global.js';
import type { Label } from '../appc/types.js';
import { ImageNotFoundError, RktError, printable } from '../errors.js';
import { log, say } from '../log.js';
import type { StagedImage, Store } from '../store/store.js';
import { httpGet, httpGetBytes, type HttpOptions, type HttpResponse } from './http.js';
import { progressStream } from './progress.js';
import { stageVerified } from './verify.js';
import type { PullPolicy } from './policy.js';

// An ACI from an http(s) URL, with rkt's remote cache: the store remembers
// for each URL the image it gave, its ETag and its Cache-Control max-age.
// --pull-policy=never uses only what the store remembers; new uses it when
// there is anything; update uses it while max-age has not run out, then asks
// the server with If-None-Match and keeps the stored image on 304.
//
// The body streams straight into the store's staging and the signature
// check at once (see verify.ts); nothing is indexed before the verdict, and
// a download that fails half-way leaves only a temp file that is removed.

/** A detached signature is a few hundred bytes; a server's idea of one beyond this is refused. */
export const MAX_SIGNATURE_BYTES = 1 << 20;
/** Bytes a download may send past the end of the ACI's archive (record padding, gzip trailers). */
export const MAX_TRAILING_BYTES = 1 << 20;

/** What discovery asked for; `id` when a dependency names its image ID. */
interface Expected {
  name: string;
  labels: readonly Label[];
  id?: string;
}

export interface RemoteNet {
  insecureTls: boolean;
  allowHttp: boolean;
  credentials?: HttpOptions['credentials'];
}

export interface RemoteImage {
  /** The ACI's URL: also the key of the remote cache. */
  url: string;
  /** Signature URL or file (--signature); the ACI's URL + ".asc" when absent. */
  signature?: string;
  policy: PullPolicy;
  /** What discovery asked for: the manifest must say the same before anything is stored. */
  expect?: Expected;
  /** Store the image as "latest" of its name (fetched by name without a version). */
  latest?: boolean;
  /** Called with the signature before the check, to trust discovered keys (--trust-keys-from-https). */
  beforeVerify?: (signature: Uint8Array) => Promise<void>;
}

/** The image the store remembers for `url`, if it is still there. */
function cachedImage(store: Store, url: string): { imageId: string; etag?: string; fresh: boolean } | undefined {
  const row = store.db.getRemote(url);
  if (row === undefined || store.db.getImage(row.imageId) === undefined) return undefined;
  const fresh = row.cacheMaxAge !== undefined && row.cacheMaxAge > 0 && row.downloadTime + row.cacheMaxAge * 1000 > Date.now();
  return { imageId: row.imageId, etag: row.etag, fresh };
}

/** Cache-Control's max-age in seconds; 0 for no-cache/no-store. */
export function cacheMaxAge(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  const directives = header.toLowerCase().split(',').map((d) => d.trim());
  if (directives.includes('no-cache') || directives.includes('no-store')) return 0;
  for (const d of directives) {
    const m = /^max-age=(\d{1,10})$/.exec(d);
    if (m) return Number(m[1]);
  }
  return undefined;
}

export async function fetchRemote(store: Store, globals: GlobalOptions, net: RemoteNet, img: RemoteImage): Promise<string> {
  const cached = cachedImage(store, img.url);
  if (img.policy === 'never') {
    if (cached) return cached.imageId;
    throw new ImageNotFoundError(`image ${printable(img.url, 300)} is not in the store and --pull-policy=never forbids fetching it`);
  }
  if (cached && (img.policy === 'new' || cached.fresh)) {
    log().debug({ url: img.url, id: cached.imageId, policy: img.policy }, 'using the image the store has for this URL');
    return cached.imageId;
  }

  if (net.insecureTls) say('warning: TLS verification has been disabled (--insecure-options=tls): anyone on the network path can swap this image');
  say(`fetching image from ${printable(img.url, 300)}`);
  const http: HttpOptions = { what: 'image', insecureTls: net.insecureTls, allowHttp: net.allowHttp, credentials: net.credentials, accept: [304] };
  const response = await httpGet(img.url, cached?.etag ? { ...http, headers: { 'if-none-match': cached.etag } } : http);
  if (response.status === 304 && cached) {
    response.body.destroy();
    log().debug({ url: img.url, etag: cached.etag }, 'not modified: using the stored image');
    store.recordRemote(img.url, cached.imageId, cached.etag, cacheMaxAge(header(response, 'cache-control')));
    return cached.imageId;
  }
  if (response.status === 304) {
    response.body.destroy();
    throw new RktError(`the server answered "not modified" for ${printable(img.url, 300)}, which rkt did not ask about; try again`);
  }

  let staged: StagedImage;
  try {
    staged = await stageDownload(store, globals, net, img, response);
  } catch (err) {
    response.body.destroy();
    throw err;
  }
  try {
    if (img.expect) checkIdentity(staged, img.expect, img.url);
    return store.commit(staged, { latest: img.latest, remote: { url: img.url, etag: header(response, 'etag'), cacheMaxAge: cacheMaxAge(header(response, 'cache-control')) } }).id;
  } catch (err) {
    store.discard(staged);
    throw err;
  }
}

function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

async function stageDownload(store: Store, globals: GlobalOptions, net: RemoteNet, img: RemoteImage, response: HttpResponse): Promise<StagedImage> {
  // pipeline passes a failure of the download on to the reader of `source`, and leaves no error unheard
  const source: Readable = pipeline(response.body, progressStream('Downloading ACI', response.length), () => undefined);
  if (globals.insecureOptions.image) {
    say('warning: signature verification has been disabled (--insecure-options=image)');
    try {
      return await store.stage(source);
    } finally {
      source.destroy();
    }
  }
  const sig = await fetchSignature(net, img);
  await img.beforeVerify?.(sig.data);
  return stageVerified(store, globals, { source, name: img.url, signaturePath: sig.location, signatureData: sig.data, maxTrailing: MAX_TRAILING_BYTES });
}

/** The detached signature: downloaded from beside the image, or the --signature URL or file. */
async function fetchSignature(net: RemoteNet, img: RemoteImage): Promise<{ location: string; data: Uint8Array }> {
  const location = img.signature ?? `${img.url}.asc`;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(location) || location.startsWith('file://')) {
    const file = location.startsWith('file://') ? new URL(location).pathname : location;
    try {
      return { location: file, data: await fs.promises.readFile(file) };
    } catch (err) {
      throw new RktError(`cannot read signature file ${printable(file, 300)}: ${(err as Error).message}; pass --signature=FILE|URL, or skip verification with --insecure-options=image`, { cause: err });
    }
  }
  log().debug({ url: location }, 'downloading signature');
  try {
    const { data } = await httpGetBytes(location, { what: 'signature', insecureTls: net.insecureTls, allowHttp: net.allowHttp, credentials: net.credentials, maxBytes: MAX_SIGNATURE_BYTES });
    return { location, data };
  } catch (err) {
    const status = (err as { status?: number }).status;
    if (status === 404) {
      const { SignatureMissingError } = await import('../trust/verify.js');
      throw new SignatureMissingError(`no signature at ${printable(location, 300)} (HTTP 404); pass --signature=FILE|URL, or skip verification with --insecure-options=image`);
    }
    throw err;
  }
}

/** spec/discovery.md: the name and the labels asked for must be the image's own. */
function checkIdentity(staged: StagedImage, expect: Expected, url: string): void {
  const m = staged.manifest;
  if (expect.id !== undefined && staged.id !== expect.id) {
    throw new RktError(`image at ${printable(url, 300)} is ${staged.id}, but ${printable(expect.id)} was asked for; refusing it`);
  }
  if (m.name !== expect.name) {
    throw new RktError(`image at ${printable(url, 300)} is named ${printable(m.name)}, not ${printable(expect.name)} as discovered; refusing it`);
  }
  for (const want of expect.labels) {
    const have = m.labels?.find((l) => l.name === want.name)?.value;
    if (have !== want.value) {
      throw new RktError(
        `image at ${printable(url, 300)} has ${want.name}=${printable(have ?? '(none)')}, not ${printable(want.value)} as asked; refusing it`,
      );
    }
  }
}

/** The network options of a fetch: --insecure-options and auth.d's credentials. */
export async function remoteNet(globals: GlobalOptions, config: { auth: ReadonlyMap<string, import('../config/loader.js').AuthEntry> } | undefined): Promise<RemoteNet> {
  const { credentialsFor } = await import('./auth.js');
  const auth = config?.auth ?? (await import('../config/loader.js')).loadConfig(globals).auth;
  return { insecureTls: globals.insecureOptions.tls, allowHttp: globals.insecureOptions.http, credentials: credentialsFor(auth) };
}
