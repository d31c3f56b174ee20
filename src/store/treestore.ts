import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { ImageNotFoundError, RktError } from '../errors.js';
import type { Dependency, ImageManifest } from '../appc/types.js';
import { formatImageString } from '../appc/image-ref.js';
import { log } from '../log.js';
import { fsyncDir } from '../util/atomic.js';
import { execa } from '../util/lazy-execa.js';
import { FileLock } from '../util/lock.js';
import type { Store } from './store.js';

export interface Layer {
  id: string;
  manifest: ImageManifest;
}

export interface RenderedTree {
  treeId: string;
  /** Directory holding `rootfs/` and the top image's `manifest`. */
  path: string;
  rootfs: string;
  layers: Layer[];
}

const MAX_DEPTH = 64;

function resolveDependency(store: Store, dep: Dependency, parent: string): string {
  let id: string;
  if (dep.imageID) {
    if (!store.getImage(dep.imageID)) {
      throw new ImageNotFoundError(`dependency ${dep.imageName} (${dep.imageID}) of ${parent} is not in the store; fetch it first`);
    }
    id = dep.imageID;
  } else {
    const found = store.findByName(dep.imageName, dep.labels ?? []);
    if (found.length === 0) {
      const ref = formatImageString({ name: dep.imageName, labels: dep.labels ?? [] });
      throw new ImageNotFoundError(`dependency ${ref} of ${parent} is not in the store; fetch it first`);
    }
    id = found[found.length - 1]!.id;
  }
  // spec/aci.md: a given size must match (it guards against endless data); the store holds the ACI
  // uncompressed, which is what the image ID is the hash of
  const size = store.getImage(id)?.size;
  if (dep.size !== undefined && size !== undefined && size !== dep.size) {
    throw new RktError(`dependency ${dep.imageName} of ${parent}: the image in the store (${id.slice(0, 19)}) is ${size} bytes, but the manifest's dependencies[].size says ${dep.size}`);
  }
  return id;
}

/**
 * The dependency chain of an image in rendering order: the deepest
 * dependency first, the image itself last. Each image's dependencies are
 * laid down in the order its manifest lists them.
 */
export function dependencyChain(store: Store, id: string): Layer[] {
  const out: Layer[] = [];
  const visit = (imageId: string, stack: string[]): void => {
    if (stack.includes(imageId)) throw new RktError(`image dependency cycle: ${[...stack, imageId].join(' -> ')}`);
    if (stack.length > MAX_DEPTH) throw new RktError(`image dependencies nest deeper than ${MAX_DEPTH} levels`);
    const manifest = store.manifest(imageId);
    for (const dep of manifest.dependencies ?? []) visit(resolveDependency(store, dep, manifest.name), [...stack, imageId]);
    out.push({ id: imageId, manifest });
  };
  visit(id, []);
  return out;
}

/** rkt names a rendered tree by a hash over the IDs it was composed from. */
export function treeIdOf(layers: Layer[]): string {
  const h = crypto.createHash('sha512');
  for (const l of layers) h.update(l.id + '\n');
  return `deps-sha512-${h.digest('hex')}`;
}

async function treeSize(dir: string): Promise<number> {
  const { stdout } = await execa('du', ['-s', '-B1', '--apparent-size', dir]);
  return Number(String(stdout).split(/\s/)[0]) || 0;
}

/**
 * Render an image with its dependencies into the tree store, once: the
 * result is cached under cas/tree/<treeId> and reused until the image is
 * removed. A tree appears by rename only when complete. Pods hold a tree's
 * lock shared while they use it, so a cached tree is looked up under a
 * shared lock too; only rendering takes it exclusively.
 */
export async function renderTree(store: Store, id: string, opts: { hold?: boolean } = {}): Promise<RenderedTree & { hold?: FileLock }> {
  const layers = dependencyChain(store, id);
  const treeId = treeIdOf(layers);
  const dir = store.layout.tree(treeId);
  const result = { treeId, path: dir, rootfs: path.join(dir, 'rootfs'), layers };
  const lockPath = store.layout.treeLock(treeId);
  const what = `rendered image ${treeId}`;
  for (;;) {
    const shared = FileLock.acquire(lockPath, 'shared', { what });
    if (store.db.getTree(treeId) && fs.existsSync(dir)) {
      for (const l of layers) store.touch(l.id);
      if (opts.hold) return { ...result, hold: shared };
      shared.release();
      return result;
    }
    shared.release();
    const lock = FileLock.acquire(lockPath, 'exclusive', { what });
    try {
      // someone else may have rendered it while we waited
      if (!(store.db.getTree(treeId) && fs.existsSync(dir))) await renderInto(store, id, treeId, layers);
    } finally {
      lock.release();
    }
  }
}

async function renderInto(store: Store, id: string, treeId: string, layers: Layer[]): Promise<void> {
  const dir = store.layout.tree(treeId);
  // a crash mid-render leaves no row; start again from nothing
  fs.rmSync(dir, { recursive: true, force: true });
  const tmp = path.join(store.layout.tmpDir, `render-${process.pid}-${crypto.randomBytes(6).toString('hex')}`);
  fs.mkdirSync(tmp, { mode: 0o755 });
  const imageLocks = layers.map((l) => FileLock.acquire(store.layout.imageLock(l.id), 'shared'));
  try {
    log().debug({ treeId, layers: layers.map((l) => l.id) }, 'rendering image tree');
    // the renderer (and the tar validation under it) loads only when a tree is missing
    const { renderLayers } = await import('../image/render.js');
    await renderLayers(
      layers.map((l) => ({ tarPath: store.blobPath(l.id), id: l.id, pathWhitelist: l.manifest.pathWhitelist })),
      tmp,
    );
    const size = await treeSize(tmp);
    fs.renameSync(tmp, dir);
    fsyncDir(path.dirname(dir));
    store.db.upsertTree({ id: treeId, imageId: id, size, renderedTime: Date.now() });
    for (const l of layers) store.touch(l.id);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    for (const l of imageLocks) l.release();
  }
}
