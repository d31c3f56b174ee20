import path from 'node:path';
import { parseImageManifest } from '../appc/image-manifest.js';
import { ImageNotFoundError, UsageError } from '../errors.js';
import { ID_PREFIX, Store, type ImageInfo } from '../store/store.js';
import { APPC_VERSION } from '../version.js';
import { int64, type ImageFilter, type ImageMsg } from './messages.js';
import { hasAllKeyValues, imageVersion, keyValues } from './pods.js';

// Images as the v1alpha API shows them, read from the store's index with the
// same code as "rkt image list". The store is opened read-only per request:
// the service holds nothing open between requests.

function imageMessage(img: ImageInfo, detail: boolean): ImageMsg {
  const m = parseImageManifest(img.manifest);
  return {
    base_format: { type: 'IMAGE_TYPE_APPC', version: APPC_VERSION },
    id: img.id,
    name: img.name,
    version: imageVersion(m),
    import_timestamp: String(Math.floor(img.importTime / 1000)),
    manifest: detail ? Buffer.from(img.manifest, 'utf8') : Buffer.alloc(0),
    size: String(img.size + img.treeSize),
    annotations: keyValues(m.annotations),
    labels: keyValues(img.labels),
  };
}

/** rkt's rules: every condition of one filter must hold. */
export function imageMatches(img: ImageMsg, f: ImageFilter): boolean {
  if (f.ids.length > 0 && !f.ids.includes(img.id)) return false;
  if (f.full_names.length > 0 && !f.full_names.includes(img.name)) return false;
  if (f.prefixes.length > 0 && !f.prefixes.some((p) => img.name.startsWith(p))) return false;
  if (f.base_names.length > 0 && !f.base_names.includes(path.posix.basename(img.name))) return false;
  if (f.keywords.length > 0 && !f.keywords.some((k) => img.name.includes(k))) return false;
  const imported = Number(img.import_timestamp);
  const after = int64(f.imported_after, 'imported_after');
  const before = int64(f.imported_before, 'imported_before');
  if (after > 0 && imported <= after) return false;
  if (before > 0 && imported >= before) return false;
  if (!hasAllKeyValues(img.labels, f.labels)) return false;
  if (!hasAllKeyValues(img.annotations, f.annotations)) return false;
  return true;
}

function withStore<T>(dataDir: string, fn: (store: Store) => T): T {
  const store = Store.open(dataDir, { readonly: true });
  try {
    return fn(store);
  } finally {
    store.close();
  }
}

export function listImageMessages(dataDir: string, filters: ImageFilter[], detail: boolean): ImageMsg[] {
  return withStore(dataDir, (store) =>
    store
      .listImages()
      .map((img) => imageMessage(img, detail))
      .filter((img) => filters.length === 0 || filters.some((f) => imageMatches(img, f))),
  );
}

/** One image by full ID or unique ID prefix, with its manifest. */
export function inspectImageMessage(dataDir: string, id: string): ImageMsg {
  if (id === '') throw new UsageError('no image ID given');
  if (!id.startsWith(ID_PREFIX)) throw new UsageError(`"${id}" is not an image ID; IDs start with ${ID_PREFIX}`);
  return withStore(dataDir, (store) => {
    const img = store.getImage(store.resolveIdPrefix(id));
    if (!img) throw new ImageNotFoundError(`image ${id} is not in the store`);
    return imageMessage(img, true);
  });
}

/** Image IDs and names in the store now, for the event watcher. */
export function storedImageNames(dataDir: string): Map<string, string> {
  return withStore(dataDir, (store) => new Map(store.listImages().map((i) => [i.id, i.name])));
}
