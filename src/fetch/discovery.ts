import { RktError, printable } from '../errors.js';
import type { Label } from '../appc/types.js';
import { log } from '../log.js';
import { aciEndpoints, discoveryPaths, extractAcMeta, pubkeyUrls, type AcMeta, type AciEndpoint } from './discovery-meta.js';
import { HttpError, httpGetBytes, type HttpOptions } from './http.js';

// appc meta discovery (spec/discovery.md) over the network: fetch
// https://{prefix}?ac-discovery=1 for the name and then for each parent
// path, until a page gives what is looked for. As in rkt, plain http is
// tried after https only with --insecure-options=http.

/** A discovery page is a small HTML document; anything bigger is refused. */
export const MAX_DISCOVERY_PAGE = 1 << 20;

export class DiscoveryError extends RktError {}

export interface DiscoveryNet {
  insecureTls: boolean;
  allowHttp: boolean;
  credentials?: HttpOptions['credentials'];
}

export interface DiscoveredImage {
  endpoints: AciEndpoint[];
  /** Public key URLs offered by the same page. */
  keys: string[];
  /** The page that gave them. */
  page: string;
}

/** The appc architecture name of this machine (appc uses Go's names, arm64 as aarch64). */
export function appcArch(arch: string = process.arch): string {
  const names: Record<string, string> = { x64: 'amd64', ia32: 'i386', arm64: 'aarch64', arm: 'armv7l', ppc64: 'ppc64le', s390x: 's390x' };
  return names[arch] ?? arch;
}

/**
 * The labels discovery fills templates with: the ones asked for, and as in
 * rkt the default version "latest", os "linux" and this machine's arch.
 */
export function discoveryLabels(labels: readonly Label[]): Map<string, string> {
  const out = new Map(labels.map((l) => [l.name, l.value] as [string, string]));
  if (!out.has('version')) out.set('version', 'latest');
  if (!out.has('os')) out.set('os', 'linux');
  if (!out.has('arch')) out.set('arch', appcArch());
  return out;
}

/** Fetch and parse one discovery page; undefined when the server has none there (4xx). */
async function fetchPage(prefix: string, net: DiscoveryNet): Promise<{ page: string; metas: AcMeta[] } | undefined> {
  const schemes = net.allowHttp ? ['https', 'http'] : ['https'];
  let firstError: unknown;
  let absent = false;
  for (const scheme of schemes) {
    const page = `${scheme}://${prefix}?ac-discovery=1`;
    try {
      log().debug({ page }, 'discovery: fetching');
      const { data } = await httpGetBytes(page, {
        what: 'discovery page',
        insecureTls: net.insecureTls,
        allowHttp: net.allowHttp,
        credentials: net.credentials,
        maxBytes: MAX_DISCOVERY_PAGE,
      });
      const metas = extractAcMeta(data.toString('utf8'));
      log().debug({ page, tags: metas.length }, 'discovery: page read');
      return { page, metas };
    } catch (err) {
      // 401 and 403 also send the walk up, but are remembered: "add credentials" says more than "not found"
      // as in appc, any failure over https (a 404 too) is followed by plain http when that is allowed
      if (err instanceof HttpError && err.status !== undefined && err.status >= 400 && err.status < 500 && err.status !== 401 && err.status !== 403) {
        log().debug({ page, status: err.status }, 'discovery: no page here');
        absent = true;
        continue;
      }
      firstError ??= err;
      log().debug({ page, err: (err as Error).message }, 'discovery: failed');
    }
  }
  // a page missing over one scheme does not hide a request for credentials over the other
  const auth = firstError instanceof HttpError && (firstError.status === 401 || firstError.status === 403);
  if (firstError !== undefined && (!absent || auth)) throw firstError;
  return undefined;
}

/**
 * Walk up the name's path until a page has something `pick` accepts.
 * Network failures on the way are remembered: if nothing is found, the
 * first of them says more than "not found".
 */
async function walk<T>(name: string, net: DiscoveryNet, pick: (metas: AcMeta[], page: string) => T | undefined): Promise<T | undefined> {
  let failure: unknown;
  for (const prefix of discoveryPaths(name)) {
    let found: { page: string; metas: AcMeta[] } | undefined;
    try {
      found = await fetchPage(prefix, net);
    } catch (err) {
      failure ??= err;
      continue;
    }
    if (found === undefined) continue;
    const picked = pick(found.metas, found.page);
    if (picked !== undefined) return picked;
  }
  if (failure !== undefined) throw failure;
  return undefined;
}

/** Discover where the image `name` with `labels` lives. */
export async function discoverImage(name: string, labels: readonly Label[], net: DiscoveryNet): Promise<DiscoveredImage> {
  const vars = { name, labels: discoveryLabels(labels) };
  const found = await walk(name, net, (metas, page) => {
    // templates this rkt cannot fetch (hdfs://, or http:// without leave) do not compete for the best match
    const endpoints = aciEndpoints(metas.filter((m) => m.name !== 'ac-discovery' || allowedScheme(m.uri, net)), vars).filter((e) => allowedScheme(e.aci, net) && allowedScheme(e.asc, net));
    return endpoints.length > 0 ? { endpoints, keys: pubkeyUrls(metas, name), page } : undefined;
  });
  if (found === undefined) {
    const wanted = [...vars.labels].map(([k, v]) => `${k}=${v}`).join(', ');
    throw new DiscoveryError(
      `appc discovery found no template for ${printable(name)} (${wanted}) at https://${printable(name)}?ac-discovery=1 or its parents; check the name and labels, or fetch the image by URL or file`,
    );
  }
  log().debug({ name, page: found.page, endpoints: found.endpoints }, 'discovery: found');
  return found;
}

/** Discover the public key URLs published for a name prefix (rkt trust --prefix). */
export async function discoverPubkeys(prefix: string, net: DiscoveryNet): Promise<string[]> {
  const keys = await walk(prefix, net, (metas) => {
    const urls = pubkeyUrls(metas, prefix).filter((u) => allowedScheme(u, net));
    return urls.length > 0 ? urls : undefined;
  });
  if (keys === undefined) {
    throw new DiscoveryError(
      `appc discovery found no public keys (ac-discovery-pubkeys) for ${printable(prefix)}; get the publisher's key and pass it: rkt trust --prefix=${printable(prefix)} KEYFILE`,
    );
  }
  return keys;
}

function allowedScheme(url: string, net: DiscoveryNet): boolean {
  return url.startsWith('https://') || (net.allowHttp && url.startsWith('http://'));
}
