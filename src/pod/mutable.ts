import fs from 'node:fs';
import path from 'node:path';
import { RktError, UsageError, isErrno } from '../errors.js';
import type { GlobalOptions } from '../config/global.js';
import { parsePodManifest, serializePodManifest } from '../appc/pod-manifest.js';
import type { ImageManifest, PodManifest, RuntimeApp } from '../appc/types.js';
import { APPC_VERSION } from '../version.js';
import { fetchImage } from '../fetch/fetch.js';
import { log } from '../log.js';
import { appAddArgv, appArgv, type AppEntrypoint } from '../stage1/args.js';
import { invokeEntrypoint, stage1Manifest, entrypointPath } from '../stage1/invoke.js';
import { readAppExitStatuses, type PodPaths } from '../stage1/contract.js';
import type { Store } from '../store/store.js';
import { renderTree, type RenderedTree } from '../store/treestore.js';
import { writeFileAtomic } from '../util/atomic.js';
import { FileLock } from '../util/lock.js';
import { generatePodManifest } from './manifest-gen.js';
import type { Pod } from './pod.js';
import { newPodArgs, type AppArgs } from './run-args.js';
import { checkApps } from './prepare.js';

// stage0's side of mutable pods (rkt app sandbox, add, start, stop, rm):
// the pod manifest is the list of the pod's apps, rewritten whole (written
// aside, renamed over) under the manifest lock, pod.lck, as rkt does; the
// pod lock itself is the running stage1's. Each command checks what it can
// in the pod directory, then has the stage1 do the rest through its app
// entrypoints, and undoes its own part if the stage1 fails.

/** rkt's runtime annotation on the pod manifest of a mutable pod. */
export const MUTABLE_ANNOTATION = 'coreos.com/rkt/stage1/mutable';

/** The entrypoints a stage1 needs to run mutable pods. */
export const APP_ENTRYPOINTS: readonly AppEntrypoint[] = ['appAdd', 'appStart', 'appStop', 'appRm'];

export function isMutable(m: PodManifest): boolean {
  return m.annotations?.some((a) => a.name === MUTABLE_ANNOTATION && a.value === 'true') ?? false;
}

/** A sandbox needs a stage1 with every app entrypoint; refused before the pod exists. */
export function checkMutableStage1(paths: PodPaths): void {
  const m = stage1Manifest(paths);
  for (const e of APP_ENTRYPOINTS) {
    try {
      entrypointPath(paths, m, e);
    } catch {
      throw new RktError(`stage1 image ${m.name} does not run mutable pods (it has no app entrypoints); use a stage1 that does for "rkt app sandbox", such as the nspawn stage1 (--stage1-name=coreos.com/rkt/stage1-coreos)`);
    }
  }
}

/** Marks in the pod directory, written by stage0 (rkt keeps them as <app>-created and <app>-started). */
function createdMark(paths: PodPaths, app: string): string {
  return path.join(paths.appInfo(app), 'created');
}
function startedMark(paths: PodPaths, app: string): string {
  return path.join(paths.appInfo(app), 'started');
}

export type AppState = 'created' | 'running' | 'exited' | 'unknown';

export interface AppStatus {
  name: string;
  state: AppState;
  image_id: string;
  /** Nanoseconds since the epoch, as rkt's API gives them. */
  created_at?: number;
  started_at?: number;
  finished_at?: number;
  exit_code?: number;
  mounts?: { name: string; container_path: string; read_only: boolean }[];
  user_annotations?: Record<string, string>;
  user_labels?: Record<string, string>;
}

function mtimeNs(file: string): number | undefined {
  try {
    return Math.round(fs.statSync(file).mtimeMs) * 1e6;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

/** Each app of the pod and its state, as `rkt app list` and `rkt app status` show them. */
export function appStatuses(pod: Pod): AppStatus[] {
  const paths = pod.paths;
  const running = pod.state() === 'running';
  const exits = readAppExitStatuses(paths);
  return pod.manifest().apps.map((ra) => {
    const created = mtimeNs(createdMark(paths, ra.name));
    const started = mtimeNs(startedMark(paths, ra.name));
    const code = exits[ra.name];
    const finished = code === undefined ? undefined : mtimeNs(paths.appStatus(ra.name));
    let state: AppState;
    if (code !== undefined) state = 'exited';
    else if (!running) state = started === undefined && created !== undefined ? 'created' : 'unknown';
    else if (started !== undefined) state = 'running';
    // an app of a pod started by rkt run runs from the start
    else state = created === undefined ? 'running' : 'created';
    const app = ra.app;
    return {
      name: ra.name,
      state,
      image_id: ra.image.id,
      ...(created !== undefined && { created_at: created }),
      ...(started !== undefined && { started_at: started }),
      ...(finished !== undefined && { finished_at: finished }),
      ...(code !== undefined && { exit_code: code }),
      ...(ra.mounts?.length && { mounts: ra.mounts.map((m) => ({ name: m.volume, container_path: m.path, read_only: app?.mountPoints?.find((p) => p.path === m.path)?.readOnly ?? false })) }),
      ...(app?.userAnnotations && { user_annotations: app.userAnnotations }),
      ...(app?.userLabels && { user_labels: app.userLabels }),
    };
  });
}

/** A running mutable pod, or a clear error. */
export function mutablePod(pod: Pod): void {
  const state = pod.state();
  if (state !== 'running') throw new RktError(`pod ${pod.uuid} is ${state}; apps are added to, started in, stopped in and removed from running pods only`);
  if (!isMutable(pod.manifest())) throw new RktError(`pod ${pod.uuid} is not a mutable pod; only pods started with "rkt app sandbox" take app commands`);
}

function appOf(pod: Pod, name: string): AppStatus {
  const app = appStatuses(pod).find((a) => a.name === name);
  if (app === undefined) throw new UsageError(`pod ${pod.uuid} has no app "${name}"; see "rkt app list ${pod.uuid}"`);
  return app;
}

/** Rewrite the pod manifest whole, atomically; the caller holds the manifest lock. */
function writeManifest(paths: PodPaths, m: PodManifest): void {
  writeFileAtomic(paths.manifest, serializePodManifest(m));
}

function withManifestLock<T>(pod: Pod, body: () => Promise<T>): Promise<T> {
  const lock = FileLock.acquire(path.join(pod.dir, 'pod.lck'), 'exclusive', { wait: true, what: `the manifest of pod ${pod.uuid}` });
  return body().finally(() => lock.release());
}

async function runAppEntrypoint(pod: Pod, which: AppEntrypoint, argv: string[], what: string): Promise<void> {
  const code = await invokeEntrypoint(pod.paths, which, () => argv, { stdio: 'inherit' });
  if (code !== 0) throw new RktError(`stage1 could not ${what} (status ${code})`);
}

export interface AddOptions {
  app: AppArgs;
  globals: GlobalOptions;
}

/** The app's runtime entry, and the volumes its image's mount points need that the pod does not have yet. */
function runtimeApp(manifest: PodManifest, image: { id: string; manifest: ReturnType<Store['manifest']> }, app: AppArgs): { ra: RuntimeApp; volumes: NonNullable<PodManifest['volumes']> } {
  const one = generatePodManifest([{ args: app, imageId: image.id, manifest: image.manifest }], newPodArgs());
  const ra = one.apps[0]!;
  const have = new Set((manifest.volumes ?? []).map((v) => v.name));
  return { ra, volumes: (one.volumes ?? []).filter((v) => !have.has(v.name)) };
}

/** rkt app add: the app joins the pod manifest and its stage1 prepares it, or neither happens. */
export async function addApp(pod: Pod, store: Store, opts: AddOptions): Promise<string> {
  mutablePod(pod);
  const imageId = await fetchImage(store, opts.globals, opts.app.image, { signature: opts.app.signature, pullPolicy: 'new' });
  const image = { id: imageId, manifest: store.manifest(imageId) };
  const paths = pod.paths;
  return withManifestLock(pod, async () => {
    const before = parsePodManifest(fs.readFileSync(paths.manifest));
    const { ra, volumes } = runtimeApp(before, image, opts.app);
    if (before.apps.some((a) => a.name === ra.name)) throw new UsageError(`pod ${pod.uuid} already has an app named "${ra.name}"; give this one another name with --name`);
    const after: PodManifest = { ...before, apps: [...before.apps, ra], volumes: [...(before.volumes ?? []), ...volumes] };
    // held until app/add returns; the pod's run entrypoint holds it from then on (while the app is in the pod)
    const tree = await renderTree(store, imageId, { hold: true });
    try {
      return await addPrepared(pod, before, after, ra, { kind: 'tree', tree }, opts.globals);
    } finally {
      tree.hold?.release();
    }
  });
}

/** Where an added app's root comes from: an image rendered in the tree store, or a host directory used as it is. */
type AppSource = { kind: 'tree'; tree: RenderedTree } | { kind: 'directory'; dir: string; imageManifest: ImageManifest };

function writeAppSource(paths: PodPaths, app: string, src: AppSource): void {
  if (src.kind === 'tree') {
    fs.copyFileSync(path.join(src.tree.path, 'manifest'), paths.appImageManifest(app));
    fs.writeFileSync(paths.appTreeStoreId(app), src.tree.treeId);
    fs.writeFileSync(paths.appTreeRootfs(app), path.resolve(src.tree.rootfs));
    return;
  }
  fs.writeFileSync(paths.appImageManifest(app), JSON.stringify(src.imageManifest));
  fs.writeFileSync(paths.appTreeRootfs(app), src.dir);
  fs.writeFileSync(paths.appDirectoryMark(app), '');
}

/** appsinfo/, the manifest and the stage1's app/add, for an app's root ready (an image rendered and held, or a directory); each undone if a later one fails. */
async function addPrepared(pod: Pod, before: PodManifest, after: PodManifest, ra: RuntimeApp, src: AppSource, globals: GlobalOptions): Promise<string> {
  const paths = pod.paths;
  fs.rmSync(paths.appInfo(ra.name), { recursive: true, force: true });
  try {
    fs.mkdirSync(paths.appInfo(ra.name), { recursive: true });
    writeAppSource(paths, ra.name, src);
    fs.mkdirSync(paths.appRootfs(ra.name), { recursive: true });
    await checkApps(paths, { ...after, apps: [ra] });
    fs.rmSync(paths.appStatus(ra.name), { force: true });
    writeFileAtomic(createdMark(paths, ra.name), '');
    writeManifest(paths, after);
  } catch (err) {
    fs.rmSync(paths.appInfo(ra.name), { recursive: true, force: true });
    throw err;
  }
  const ins = globals.insecureOptions;
  try {
    await runAppEntrypoint(pod, 'appAdd', appAddArgv({ app: ra.name, debug: globals.debug, uuid: pod.uuid, disableCapabilities: ins.capabilities, disablePaths: ins.paths, disableSeccomp: ins.seccomp }), `add app ${ra.name}`);
  } catch (err) {
    writeManifest(paths, before);
    fs.rmSync(paths.appInfo(ra.name), { recursive: true, force: true });
    throw err;
  }
  log().debug(`app ${ra.name} added to pod ${pod.uuid}`);
  return ra.name;
}

/**
 * rkt app add for an app whose root filesystem is a host directory (an OCI
 * bundle's rootfs), bound as it is into the pod instead of an image from the
 * store: `ra` is the app's complete runtime entry (its app section says how
 * to run it, its mounts carry their own volumes), and the image manifest
 * recorded for it is made up from `ra` alone.
 */
export async function addDirectoryApp(pod: Pod, ra: RuntimeApp, dir: string, globals: GlobalOptions): Promise<string> {
  mutablePod(pod);
  if (!path.isAbsolute(dir)) throw new UsageError(`the root filesystem ${dir} of app ${ra.name} must be an absolute path`);
  if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`the root filesystem ${dir} of app ${ra.name} is not a directory`);
  if (ra.app === undefined) throw new UsageError(`app ${ra.name} has a directory for its root and no image: its runtime entry must say how to run it`);
  const imageManifest: ImageManifest = { acKind: 'ImageManifest', acVersion: APPC_VERSION, name: ra.image.name ?? ra.name, app: ra.app };
  return withManifestLock(pod, async () => {
    const before = parsePodManifest(fs.readFileSync(pod.paths.manifest));
    if (before.apps.some((a) => a.name === ra.name)) throw new UsageError(`pod ${pod.uuid} already has an app named "${ra.name}"; give this one another name`);
    const after: PodManifest = { ...before, apps: [...before.apps, ra] };
    return addPrepared(pod, before, after, ra, { kind: 'directory', dir: fs.realpathSync(dir), imageManifest }, globals);
  });
}

export async function startApp(pod: Pod, name: string, globals: GlobalOptions): Promise<void> {
  mutablePod(pod);
  await withManifestLock(pod, async () => {
    const app = appOf(pod, name);
    if (app.state === 'running') throw new RktError(`app ${name} is already running`);
    if (app.state === 'exited') throw new RktError(`app ${name} has exited (status ${app.exit_code}); remove it ("rkt app rm") and add it again to run it anew`);
    await runAppEntrypoint(pod, 'appStart', appArgv({ app: name, debug: globals.debug }), `start app ${name}`);
    writeFileAtomic(startedMark(pod.paths, name), '');
  });
}

/** rkt app stop; an app that is not running has nothing to stop, and says so. */
export async function stopApp(pod: Pod, name: string, globals: GlobalOptions): Promise<string | undefined> {
  mutablePod(pod);
  return withManifestLock(pod, async () => {
    const app = appOf(pod, name);
    if (app.state === 'created') return `app ${name} has not been started`;
    if (app.state === 'exited') return `app ${name} has already exited`;
    await runAppEntrypoint(pod, 'appStop', appArgv({ app: name, debug: globals.debug }), `stop app ${name}`);
    return undefined;
  });
}

export async function removeApp(pod: Pod, name: string, globals: GlobalOptions): Promise<void> {
  mutablePod(pod);
  await withManifestLock(pod, async () => {
    const app = appOf(pod, name);
    if (app.state === 'running') throw new RktError(`app ${name} is running; stop it first ("rkt app stop ${pod.uuid} --app=${name}")`);
    await runAppEntrypoint(pod, 'appRm', appArgv({ app: name, debug: globals.debug }), `remove app ${name}`);
    const m = parsePodManifest(fs.readFileSync(pod.paths.manifest));
    const apps = m.apps.filter((a) => a.name !== name);
    // volumes no app mounts any more go with the app
    const used = new Set(apps.flatMap((a) => (a.mounts ?? []).map((x) => x.volume)));
    const keep = (m.volumes ?? []).filter((v) => used.has(v.name) || !(app.mounts ?? []).some((x) => x.name === v.name));
    writeManifest(pod.paths, { ...m, apps, volumes: keep });
    fs.rmSync(pod.paths.appInfo(name), { recursive: true, force: true });
    fs.rmSync(pod.paths.appStatus(name), { force: true });
    fs.rmSync(path.join(pod.dir, 'overlay', name), { recursive: true, force: true });
  });
}
