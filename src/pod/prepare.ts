import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { RktError, UsageError, whyUnreadable } from '../errors.js';
import type { GlobalOptions } from '../config/global.js';
import type { RktConfig } from '../config/loader.js';
import { parsePodManifest, serializePodManifest } from '../appc/pod-manifest.js';
import type { PodManifest } from '../appc/types.js';
import { fetchImage } from '../fetch/fetch.js';
import { pullPolicyOf } from '../fetch/policy.js';
import { log } from '../log.js';
import { PodPaths, type RunOptions } from '../stage1/contract.js';
import { selectStage1 } from '../stage1/select.js';
import { entrypointPath, interfaceVersion, stage1Manifest } from '../stage1/invoke.js';
import type { Store } from '../store/store.js';
import { renderTree, type RenderedTree } from '../store/treestore.js';
import { writeFileAtomic } from '../util/atomic.js';
import { phase } from '../util/phase-trace.js';
import type { FileLock } from '../util/lock.js';
import { generatePodManifest, type ResolvedApp } from './manifest-gen.js';
import { Pod } from './pod.js';
import { podDir } from './layout.js';
import { removePodDir } from './remove.js';
import type { RunArgs } from './run-args.js';

export interface PreparedPod {
  pod: Pod;
  lock: FileLock;
  /** Shared locks on the rendered trees the pod uses, so no gc removes them under it. */
  treeLocks: FileLock[];
}

function readPodManifestFile(file: string): PodManifest {
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch (err) {
    throw new UsageError(`--pod-manifest ${file} ${whyUnreadable(err)}`, { cause: err });
  }
  return parsePodManifest(data);
}

async function resolveApps(store: Store, globals: GlobalOptions, config: RktConfig, args: RunArgs): Promise<ResolvedApp[]> {
  const pullPolicy = pullPolicyOf(args.pod, 'new', (w) => log().warn(w));
  const out: ResolvedApp[] = [];
  for (const app of args.apps) {
    const imageId = await fetchImage(store, globals, app.image, { signature: app.signature, pullPolicy, config });
    out.push({ args: app, imageId, manifest: store.manifest(imageId) });
  }
  return out;
}

/**
 * Create a pod directory and fill it for stage1: embryo, then prepare,
 * then prepared. On any failure the half-made pod is removed, so bad input
 * leaves nothing behind. The returned lock is held exclusively.
 */
export async function preparePod(store: Store, globals: GlobalOptions, config: RktConfig, args: RunArgs): Promise<PreparedPod> {
  if (args.pod.podManifest && args.apps.length > 0) throw new UsageError('--pod-manifest cannot be combined with images on the command line');
  const uuid = crypto.randomUUID();
  const embryo = podDir(globals.dir, 'embryo', uuid);
  // pods hold app rootfs with setuid files: the pods dir is root's alone
  fs.mkdirSync(path.join(globals.dir, 'pods'), { recursive: true, mode: 0o700 });
  fs.mkdirSync(embryo, { recursive: true, mode: 0o750 });
  const pod = new Pod(globals.dir, uuid, 'embryo');
  const lock = pod.lock('exclusive', false);
  const treeLocks: FileLock[] = [];
  try {
    pod.moveTo('prepare');
    const stage1Id = await selectStage1(store, globals, config, args.pod);
    let manifest: PodManifest;
    if (args.pod.podManifest) {
      manifest = readPodManifestFile(args.pod.podManifest);
      for (const app of manifest.apps) store.resolveIdPrefix(app.image.id);
    } else {
      manifest = generatePodManifest(await resolveApps(store, globals, config, args), args.pod);
    }
    phase('image-lookup');
    const paths = pod.paths;
    const stage1Tree = await renderTree(store, stage1Id, { hold: true });
    treeLocks.push(stage1Tree.hold!);
    // stage1 images are small and root-owned: an in-process copy beats spawning cp
    fs.cpSync(stage1Tree.path, paths.stage1, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
    fs.writeFileSync(paths.stage1TreeStoreId, stage1Tree.treeId);
    // a stage1 that cannot run pods is refused now, before the pod exists
    const s1 = stage1Manifest(paths);
    interfaceVersion(s1);
    entrypointPath(paths, s1, 'run');
    // an image used by several apps is rendered and held once: a second
    // flock on the same tree from this process would wait on our own lock
    const trees = new Map<string, RenderedTree>();
    for (const app of manifest.apps) {
      let tree = trees.get(app.image.id);
      if (!tree) {
        const held = await renderTree(store, app.image.id, { hold: true });
        trees.set(app.image.id, held);
        treeLocks.push(held.hold!);
        tree = held;
      }
      fs.mkdirSync(paths.appInfo(app.name), { recursive: true });
      fs.copyFileSync(path.join(tree.path, 'manifest'), paths.appImageManifest(app.name));
      fs.writeFileSync(paths.appTreeStoreId(app.name), tree.treeId);
      fs.writeFileSync(paths.appTreeRootfs(app.name), path.resolve(tree.rootfs));
      fs.mkdirSync(paths.appRootfs(app.name), { recursive: true });
    }
    await checkApps(paths, manifest);
    writeFileAtomic(paths.manifest, serializePodManifest(manifest));
    pod.moveTo('prepared');
    log().debug({ uuid }, 'pod prepared');
    phase('pod-preparation');
    return { pod, lock, treeLocks };
  } catch (err) {
    for (const l of treeLocks) l.release();
    removePodDir(pod.dir);
    lock.release();
    throw err;
  }
}

/**
 * What would only fail once the pod is up is refused now: a user or group
 * the image does not have, or an exec the image does not contain.
 */
async function checkApps(paths: PodPaths, manifest: PodManifest): Promise<void> {
  const { resolveAppSpecs } = await import('../stage1-common/app-spec.js');
  const { resolveInRoot } = await import('../stage1-common/rootfs.js');
  let specs;
  try {
    specs = resolveAppSpecs(paths, manifest);
  } catch (err) {
    if (err instanceof RktError) throw err;
    throw new RktError(`cannot prepare the pod's apps: ${(err as Error).message}`);
  }
  for (const spec of specs) {
    const exec = spec.exec[0]!;
    // a program brought in by a volume is there only at run time
    const fromVolume = spec.mounts.some((m) => exec === m.target || exec.startsWith(m.target.replace(/\/?$/, '/')));
    if (!fromVolume && exec.startsWith('/') && !resolveInRoot(spec.treeRootfs, exec).exists) {
      throw new RktError(`app "${spec.name}": ${exec} does not exist in image ${spec.imageName}; give --exec with a program the image has`);
    }
  }
}

/** Options stage1 entrypoints read back (enter, stop and gc run without stage0's flags). */
export function writeRunOptions(pod: Pod, opts: RunOptions): void {
  writeFileAtomic(pod.paths.runOptions, JSON.stringify(opts));
}
