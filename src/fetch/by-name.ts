import type { ImageRef } from '../appc/image-ref.js';
import { formatImageString } from '../appc/image-ref.js';
import type { GlobalOptions } from '../config/global.js';
import { ImageNotFoundError, RktError } from '../errors.js';
import { log, say } from '../log.js';
import type { Store } from '../store/store.js';
import { discoverImage } from './discovery.js';
import type { FetchOptions } from './fetch.js';
import { fetchRemote, remoteNet } from './remote.js';

// An image given by name (and labels): from the store when the pull policy
// lets it be, else found by appc discovery and fetched from the first
// endpoint that works, with the remote cache of its URL (see remote.ts).

/** `expectId`: the image ID a dependency names; an image found by discovery must be that one. */
export async function fetchByName(store: Store, globals: GlobalOptions, ref: ImageRef, opts: FetchOptions, expectId?: string): Promise<string> {
  const policy = opts.pullPolicy ?? 'new';
  const shown = formatImageString(ref);
  if (policy !== 'update') {
    const found = store.findByName(ref.name, ref.labels);
    if (found.length > 0) return found[found.length - 1]!.id;
    if (policy === 'never') throw new ImageNotFoundError(`image ${shown} is not in the store and --pull-policy=never forbids fetching it`);
  }
  const net = await remoteNet(globals, opts.config);
  say(`searching for app image ${shown}`);
  const found = await discoverImage(ref.name, ref.labels, net);
  const beforeVerify =
    globals.trustKeysFromHttps && !net.insecureTls
      ? async (signature: Uint8Array): Promise<void> => {
          const { Keystore } = await import('../trust/keystore.js');
          const { trustSignerFromHttps } = await import('../trust/discovered-keys.js');
          await trustSignerFromHttps({ keystore: new Keystore(globals), name: ref.name, signature, keyUrls: found.keys });
        }
      : undefined;
  const latest = !ref.labels.some((l) => l.name === 'version');
  let firstFailure: unknown;
  for (const endpoint of found.endpoints) {
    try {
      return await fetchRemote(store, globals, net, {
        url: endpoint.aci,
        signature: opts.signature ?? endpoint.asc,
        policy: 'update',
        expect: { name: ref.name, labels: ref.labels, id: expectId },
        latest,
        beforeVerify,
      });
    } catch (err) {
      // a signature or identity failure is the image's verdict, not the mirror's: do not try the next one
      if (!(err instanceof RktError) || !isTransportFailure(err)) throw err;
      firstFailure ??= err;
      log().debug({ url: endpoint.aci, err: err.message }, 'discovery endpoint failed, trying the next');
    }
  }
  throw firstFailure;
}

function isTransportFailure(err: RktError): boolean {
  return err.name === 'HttpError';
}
