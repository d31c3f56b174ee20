import { ImageNotFoundError } from '../errors.js';
import { parseImageString } from '../appc/image-ref.js';
import { ID_PREFIX } from './store.js';
import type { Store } from './store.js';

/** An image argument of a store command: an ID, a unique ID prefix, or a name with labels. */
export function resolveStoredImage(store: Store, arg: string): string {
  if (arg.startsWith(ID_PREFIX)) return store.resolveIdPrefix(arg);
  return resolveStoredImages(store, arg).at(-1)!;
}

/** Every stored image an argument names (all images of a name, or the one ID). */
export function resolveStoredImages(store: Store, arg: string): string[] {
  if (arg.startsWith(ID_PREFIX)) return [store.resolveIdPrefix(arg)];
  const ref = parseImageString(arg);
  const found = store.findByName(ref.name, ref.labels);
  if (found.length === 0) throw new ImageNotFoundError(`no image named ${arg} in the store; see "rkt image list"`);
  return found.map((i) => i.id);
}
