import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImageNotFoundError, RktError, UsageError, isErrno, whyUnreadable } from '../errors.js';
import type { GlobalOptions } from '../config/global.js';
import type { RktConfig } from '../config/loader.js';
import { fetchFile } from '../fetch/fetch.js';
import type { Store } from '../store/store.js';
import { RKT_VERSION } from '../version.js';

// Which stage1 image runs a pod: --stage1-{name,path,url,hash,from-dir},
// else stage1.d configuration, else the built-in default flavor. Images in
// the stage1-images directory were installed by root with rkt itself and
// are imported without signature checks, as rkt does for its own stage1.

export const FLAVORS = {
  kvm: { name: 'coreos.com/rkt/stage1-kvm', file: 'stage1-kvm.aci' },
  nspawn: { name: 'coreos.com/rkt/stage1-coreos', file: 'stage1-coreos.aci' },
  fly: { name: 'coreos.com/rkt/stage1-fly', file: 'stage1-fly.aci' },
} as const;
export type Flavor = keyof typeof FLAVORS;

export const DEFAULT_FLAVOR: Flavor = 'kvm';
export const DEFAULT_STAGE1_IMAGES_DIR = '/usr/lib/rkt/stage1-images';

export interface Stage1Flags {
  stage1Name?: string;
  stage1Path?: string;
  stage1Url?: string;
  stage1Hash?: string;
  stage1FromDir?: string;
}

export function stage1ImagesDir(config: RktConfig): string {
  return process.env.RKT_STAGE1_IMAGES_DIR || config.paths.stage1Images || DEFAULT_STAGE1_IMAGES_DIR;
}

/**
 * Import an installed stage1 image once per version of the file: the
 * store remembers which image a file (by path, size and mtime) gave, so a
 * reinstalled stage1 is picked up and an unchanged one costs one stat().
 */
async function importTrusted(store: Store, file: string): Promise<string> {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new ImageNotFoundError(`stage1 image ${file} is not installed; run scripts/setup.sh or give --stage1-path`, { cause: err });
    throw new RktError(`stage1 image ${file} ${whyUnreadable(err)}`, { cause: err });
  }
  const key = `file://${path.resolve(file)}`;
  const tag = `${st.size}-${st.mtimeMs}`;
  const known = store.db.getRemote(key);
  if (known && known.etag === tag && store.getImage(known.imageId)) return known.imageId;
  const id = (await store.importAci(fs.createReadStream(file))).id;
  store.db.setRemote(key, id, tag, undefined, Date.now());
  return id;
}

function splitNameVersion(text: string): { name: string; version?: string } {
  const colon = text.lastIndexOf(':');
  return colon > 0 ? { name: text.slice(0, colon), version: text.slice(colon + 1) } : { name: text };
}

async function byName(store: Store, config: RktConfig, text: string, location?: string): Promise<string> {
  const flavor = (Object.keys(FLAVORS) as Flavor[]).find((f) => f === text);
  const { name, version } = flavor ? { name: FLAVORS[flavor].name, version: RKT_VERSION } : splitNameVersion(text);
  const labels = version ? [{ name: 'version', value: version }] : [];
  const known = (Object.values(FLAVORS) as { name: string; file: string }[]).find((f) => f.name === name);
  const file = location ?? (known ? path.join(stage1ImagesDir(config), known.file) : undefined);
  // an installed image file wins over an older copy of the same version in the store
  if (!file || !fs.existsSync(file.startsWith('file://') ? fileURLToPath(file) : file)) {
    const found = store.findByName(name, labels);
    if (found.length > 0) return found.at(-1)!.id;
  }
  if (!file) throw new ImageNotFoundError(`stage1 image ${text} is not in the store; fetch it first or use --stage1-path`);
  const id = await importTrusted(store, file.startsWith('file://') ? fileURLToPath(file) : file);
  const m = store.manifest(id);
  const got = m.labels?.find((l) => l.name === 'version')?.value;
  if (m.name !== name || (version && got !== version)) {
    throw new RktError(`stage1 image ${file} is ${m.name}:${got ?? '?'}, not the ${name}${version ? ':' + version : ''} asked for; reinstall it with scripts/setup.sh`);
  }
  return id;
}

/** Resolve the stage1 image for a new pod and make sure it is in the store. */
export async function selectStage1(store: Store, globals: GlobalOptions, config: RktConfig, flags: Stage1Flags): Promise<string> {
  const given = (['stage1Name', 'stage1Path', 'stage1Url', 'stage1Hash', 'stage1FromDir'] as const).filter((k) => flags[k] !== undefined);
  if (given.length > 1) throw new UsageError('give at most one of --stage1-name, --stage1-path, --stage1-url, --stage1-hash, --stage1-from-dir');
  if (flags.stage1Path) return fetchFile(store, globals, flags.stage1Path);
  if (flags.stage1Url) {
    if (/^https?:\/\//i.test(flags.stage1Url)) return (await import('../fetch/by-url.js')).fetchByUrl(store, globals, flags.stage1Url, { pullPolicy: 'new', config });
    if (!flags.stage1Url.startsWith('file://')) throw new UsageError('--stage1-url takes a file://, https:// or (with --insecure-options=http) http:// URL');
    return fetchFile(store, globals, fileURLToPath(flags.stage1Url));
  }
  if (flags.stage1Hash) return store.resolveIdPrefix(flags.stage1Hash);
  if (flags.stage1FromDir) {
    if (flags.stage1FromDir.includes('/')) throw new UsageError('--stage1-from-dir takes a file name inside the stage1 images directory, not a path');
    return importTrusted(store, path.join(stage1ImagesDir(config), flags.stage1FromDir));
  }
  if (flags.stage1Name) return byName(store, config, flags.stage1Name);
  if (config.stage1.name) return byName(store, config, `${config.stage1.name}${config.stage1.version ? ':' + config.stage1.version : ''}`, config.stage1.location);
  if (config.stage1.location) return importTrusted(store, config.stage1.location);
  return byName(store, config, DEFAULT_FLAVOR);
}
