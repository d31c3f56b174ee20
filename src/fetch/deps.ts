import type { GlobalOptions } from '../config/global.js';
import { formatImageString } from '../appc/image-ref.js';
import { RktError, printable } from '../errors.js';
import { log } from '../log.js';
import type { Store } from '../store/store.js';
import type { FetchOptions } from './fetch.js';

// As rkt does, an image fetched from the network brings its dependencies
// along: each one the store cannot provide (by image ID, or by name and
// labels as rendering looks them up) is found by appc discovery, verified
// like any image, and then its own dependencies in turn. With
// --pull-policy=never nothing is fetched: rendering then names what is missing.

const MAX_DEPTH = 64;

export async function fetchDependencies(store: Store, globals: GlobalOptions, id: string, opts: FetchOptions, stack: string[] = []): Promise<void> {
  if (opts.pullPolicy === 'never') return;
  if (stack.includes(id)) throw new RktError(`image dependency cycle: ${[...stack, id].join(' -> ')}`);
  if (stack.length > MAX_DEPTH) throw new RktError(`image dependencies nest deeper than ${MAX_DEPTH} levels`);
  const manifest = store.manifest(id);
  for (const dep of manifest.dependencies ?? []) {
    const ref = { name: dep.imageName, labels: dep.labels ?? [] };
    let depId: string | undefined;
    if (dep.imageID !== undefined && store.getImage(dep.imageID)) depId = dep.imageID;
    else if (dep.imageID === undefined) depId = store.findByName(ref.name, ref.labels).at(-1)?.id;
    if (depId === undefined) {
      log().debug({ image: manifest.name, dependency: formatImageString(ref) }, 'fetching a dependency');
      const { fetchByName } = await import('./by-name.js');
      // with an ID, the store's images of that name are not it: ask the network
      depId = await fetchByName(store, globals, ref, { config: opts.config, pullPolicy: dep.imageID === undefined ? 'new' : 'update' }, dep.imageID);
      if (dep.imageID !== undefined && depId !== dep.imageID) {
        throw new RktError(`dependency ${printable(formatImageString(ref))} of ${printable(manifest.name)} is ${depId} where discovery leads, not ${printable(dep.imageID)} as the manifest asks`);
      }
    }
    await fetchDependencies(store, globals, depId, opts, [...stack, id]);
  }
}
