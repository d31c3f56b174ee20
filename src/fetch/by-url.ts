import type { GlobalOptions } from '../config/global.js';
import type { Store } from '../store/store.js';
import type { FetchOptions } from './fetch.js';
import { fetchRemote, remoteNet } from './remote.js';

// An image given by its http(s) URL: the ACI there, its signature beside it
// (URL + ".asc") or where --signature says.

export async function fetchByUrl(store: Store, globals: GlobalOptions, url: string, opts: FetchOptions): Promise<string> {
  const net = await remoteNet(globals, opts.config);
  return fetchRemote(store, globals, net, { url, signature: opts.signature, policy: opts.pullPolicy ?? 'new' });
}
