import fs from 'node:fs';
import path from 'node:path';
import { RktError, UsageError, isErrno, whyUnreadable } from '../errors.js';
import { DEFAULT_CAPABILITIES } from '../appc/capabilities.js';
import { parseImageManifest } from '../appc/image-manifest.js';
import { capabilitiesRemoveSet, capabilitiesRetainSet, cpuLimitMillis, memoryLimit, noNewPrivileges } from '../appc/isolators.js';
import { parsePodManifest } from '../appc/pod-manifest.js';
import type { App, EnvironmentVariable, ImageManifest, Isolator, MountPoint, PodManifest, RuntimeApp, Volume } from '../appc/types.js';
import type { PodPaths } from '../stage1/contract.js';
import { appStreams, type AppStreams } from '../appc/app-streams.js';
import { resolveInRoot } from './rootfs.js';
import { appRlimits, type Rlimit } from '../appc/rlimits.js';

// Everything a flavor needs to start one app, resolved once from the pod
// manifest and the app's image: the command, numeric credentials looked up
// in the image's own /etc/passwd and /etc/group (spec/aci.md), the
// environment of spec/ace.md, the volumes as host paths, and the isolators
// as typed values. Flavors differ in how they apply it, not in what it is.

export class AppSpecError extends RktError {}

/** PATH an app gets when neither its image nor the pod sets one (spec/ace.md). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface VolumeMount {
  volume: string;
  kind: 'host' | 'empty';
  /** Absolute host path bound into the app. */
  source: string;
  /** Absolute path inside the app's rootfs. */
  target: string;
  readOnly: boolean;
  recursive: boolean;
  /** Empty volumes: how to create `source`. */
  empty?: { mode: number; uid: number; gid: number };
}

export interface EventHandlers {
  preStart?: string[];
  postStop?: string[];
}

export interface AppIsolators {
  /** Bytes; the smaller of the app's and the pod's limits. */
  memoryLimit?: number;
  /** Millicores; the smaller of the app's and the pod's limits. */
  cpuLimitMillis?: number;
  /** The capability bounding set the app should get (canonical CAP_ names). */
  capabilities: string[];
  capabilitiesRetain?: string[];
  capabilitiesRemove?: string[];
  noNewPrivileges: boolean;
  /** The app's isolators as written, for flavors that apply more kinds. */
  app: Isolator[];
  /** The pod-level isolators, which bound the app's. */
  pod: Isolator[];
}

export interface AppSpec {
  name: string;
  imageName: string;
  exec: string[];
  /** As written in the manifest. */
  user: string;
  group: string;
  uid: number;
  gid: number;
  supplementaryGids: number[];
  /** The app's complete environment, in order; nothing else is inherited. */
  env: EnvironmentVariable[];
  workingDirectory: string;
  readOnlyRootFS: boolean;
  /** Commands run in the app's context before its exec starts and after it has ended (spec/aci.md). */
  eventHandlers: EventHandlers;
  mounts: VolumeMount[];
  isolators: AppIsolators;
  /** The rendered image in the tree store: read-only, never written. */
  treeRootfs: string;
  /** treeRootfs is a host directory that is the app's root as it is (bound, not overlaid: the app writes to it). */
  directory?: boolean;
  /** Resource limits (setrlimit) from the app's rlimits annotation. */
  rlimits?: Rlimit[];
  /** Where the app's rootfs is assembled (its chroot). */
  rootfs: string;
  /** Its --stdin, --stdout and --stderr modes (from its annotations in the pod manifest). */
  streams: AppStreams;
}

export interface ResolveOptions {
  paths: PodPaths;
  treeRootfs: string;
  directory?: boolean;
  /** Value for the spec's `container` variable; fly leaves it out, its apps are not contained. */
  container?: string;
}

interface PasswdEntry {
  name: string;
  id: number;
  gid?: number;
  home?: string;
  shell?: string;
}

/** Entries of an /etc/passwd- or /etc/group-style file in the rootfs; a missing file has none. */
function readIdFile(rootfs: string, file: string): PasswdEntry[] {
  const r = resolveInRoot(rootfs, file);
  let text: string;
  try {
    if (!r.exists) return [];
    text = fs.readFileSync(r.host, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'EISDIR')) return [];
    throw err;
  }
  return text.split('\n').flatMap((line): PasswdEntry[] => {
    const f = line.split(':');
    if (line.startsWith('#') || f.length < 3 || !/^\d+$/.test(f[2]!)) return [];
    const e: PasswdEntry = { name: f[0]!, id: Number(f[2]) };
    if (file === '/etc/passwd' && f[3] !== undefined && /^\d+$/.test(f[3])) e.gid = Number(f[3]);
    if (file === '/etc/passwd' && f[5]) e.home = f[5];
    if (file === '/etc/passwd' && f[6]) e.shell = f[6];
    return [e];
  });
}

/**
 * spec/aci.md: a name is looked up in the image's own file first; failing
 * that an all-digit value is the id itself; a value starting with "/" means
 * the owner (or group) of that file inside the rootfs.
 */
function resolveId(rootfs: string, value: string, kind: 'user' | 'group', app: string): { id: number; entry?: PasswdEntry } {
  if (value.startsWith('/')) {
    const r = resolveInRoot(rootfs, value);
    if (!r.exists) throw new AppSpecError(`${kind} "${value}" of app "${app}" names a file that does not exist in its image`);
    const st = fs.statSync(r.host);
    return { id: kind === 'user' ? st.uid : st.gid };
  }
  const entry = readIdFile(rootfs, kind === 'user' ? '/etc/passwd' : '/etc/group').find((e) => e.name === value);
  if (entry) return { id: entry.id, entry };
  if (/^\d+$/.test(value) && Number(value) <= 4294967294) return { id: Number(value) };
  throw new AppSpecError(`${kind} "${value}" not found in image of app "${app}"`);
}

/**
 * HOME, USER, LOGNAME and SHELL as a login would set them (rkt sets them
 * too): from the app user's entry in the image's /etc/passwd, looked up by
 * id when the user was given as a number. Without an entry, root is still
 * root (/root, /bin/sh); another id gets HOME=/ and no name.
 */
function accountEnv(rootfs: string, user: { id: number; entry?: PasswdEntry }): Record<string, string | undefined> {
  const entry = user.entry ?? readIdFile(rootfs, '/etc/passwd').find((e) => e.id === user.id);
  const name = entry?.name ?? (user.id === 0 ? 'root' : undefined);
  return { HOME: entry?.home ?? (user.id === 0 ? '/root' : '/'), USER: name, LOGNAME: name, SHELL: entry?.shell ?? '/bin/sh' };
}

/** Later lists override earlier ones by name; a name keeps the place it first appeared in. */
function mergeEnv(...lists: (EnvironmentVariable[] | undefined)[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const list of lists) for (const e of list ?? []) out.set(e.name, e.value);
  return out;
}

function samePath(a: string, b: string): boolean {
  return path.posix.resolve('/', a) === path.posix.resolve('/', b);
}

function parseMode(mode: string | undefined, volume: string): number {
  const m = mode ?? '0755';
  if (!/^[0-7]{1,5}$/.test(m)) throw new AppSpecError(`volume "${volume}": mode "${m}" is not octal`);
  return parseInt(m, 8);
}

function volumeMount(paths: PodPaths, app: string, vol: Volume, target: string, mp: MountPoint | undefined, private_: boolean): VolumeMount {
  const m: VolumeMount = {
    volume: vol.name,
    kind: vol.kind,
    source: '',
    target: path.posix.resolve('/', target),
    // rkt: the volume's own readOnly wins; an unset one takes the mount point's
    readOnly: vol.readOnly ?? mp?.readOnly ?? false,
    // non-recursive unless asked, so mounting "/" cannot drag every host mount along
    recursive: vol.recursive ?? false,
  };
  if (vol.kind === 'host') {
    if (!vol.source) throw new AppSpecError(`host volume "${vol.name}" has no source`);
    m.source = vol.source;
  } else {
    // "." cannot occur in an AC name, so an app's private volume never collides with a pod volume.
    m.source = paths.emptyVolume(private_ ? `${app}.${vol.name}` : vol.name);
    m.empty = { mode: parseMode(vol.mode, vol.name), uid: vol.uid ?? 0, gid: vol.gid ?? 0 };
  }
  return m;
}

/**
 * The pod manifest's mounts, then any mount point of the app nobody
 * mounted: served by the pod volume of its name, or, as rkt does, by an
 * implicit empty volume of that name.
 */
function resolveMounts(pm: PodManifest, ra: RuntimeApp, mountPoints: MountPoint[], paths: PodPaths): VolumeMount[] {
  const volumes = new Map((pm.volumes ?? []).map((v) => [v.name, v]));
  const out: VolumeMount[] = [];
  const served = new Set<string>();
  for (const m of ra.mounts ?? []) {
    const vol = m.appVolume ?? volumes.get(m.volume);
    if (!vol) throw new AppSpecError(`app "${ra.name}" mounts volume "${m.volume}", which the pod does not declare`);
    const mp = mountPoints.find((p) => p.name === m.volume) ?? mountPoints.find((p) => samePath(p.path, m.path));
    if (mp) served.add(mp.name);
    out.push(volumeMount(paths, ra.name, vol, m.path, mp, m.appVolume !== undefined));
  }
  for (const mp of mountPoints) {
    if (served.has(mp.name) || out.some((m) => samePath(m.target, mp.path))) continue;
    const vol: Volume = volumes.get(mp.name) ?? { name: mp.name, kind: 'empty', mode: '0755', uid: 0, gid: 0 };
    out.push(volumeMount(paths, ra.name, vol, mp.path, mp, false));
  }
  return out;
}

function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

function resolveIsolators(app: Isolator[], pod: Isolator[]): AppIsolators {
  const retain = capabilitiesRetainSet(app);
  const remove = capabilitiesRemoveSet(app);
  const capabilities = retain ?? DEFAULT_CAPABILITIES.filter((c) => !(remove ?? []).includes(c));
  const iso: AppIsolators = { capabilities: [...capabilities], noNewPrivileges: noNewPrivileges(app), app, pod };
  const mem = minDefined(memoryLimit(app), memoryLimit(pod));
  const cpu = minDefined(cpuLimitMillis(app), cpuLimitMillis(pod));
  if (mem !== undefined) iso.memoryLimit = mem;
  if (cpu !== undefined) iso.cpuLimitMillis = cpu;
  if (retain) iso.capabilitiesRetain = retain;
  if (remove) iso.capabilitiesRemove = remove;
  return iso;
}

function eventHandlers(app: App): EventHandlers {
  const out: EventHandlers = {};
  for (const h of app.eventHandlers ?? []) {
    if (h.name === 'pre-start') out.preStart = [...h.exec];
    else out.postStop = [...h.exec];
  }
  return out;
}

/** Resolve one app of the pod. The user database is read from `opts.treeRootfs`, the image itself. */
export function resolveAppSpec(pm: PodManifest, ra: RuntimeApp, image: ImageManifest, opts: ResolveOptions): AppSpec {
  // The pod's app section replaces the image's (spec/pods.md); only exec and env fall back or merge.
  const app: App | undefined = ra.app ?? image.app;
  if (!app) throw new AppSpecError(`app "${ra.name}": neither the pod manifest nor image ${image.name} says how to run it`);
  const exec = ra.app?.exec?.length ? ra.app.exec : image.app?.exec;
  if (!exec?.length) throw new AppSpecError(`app "${ra.name}" has no exec: image ${image.name} names no command; give one with --exec`);
  const activated = (app.ports ?? []).find((p) => p.socketActivated === true);
  if (activated) {
    throw new AppSpecError(`app "${ra.name}": port "${activated.name}" asks for socket activation (app.ports[].socketActivated), which this rkt does not support; set it to false and let the app listen itself`);
  }
  const user = resolveId(opts.treeRootfs, app.user, 'user', ra.name);
  const group = resolveId(opts.treeRootfs, app.group, 'group', ra.name);

  const env = mergeEnv(image.app?.environment, ra.app?.environment);
  env.set('AC_APP_NAME', ra.name);
  if (!env.has('PATH')) env.set('PATH', DEFAULT_PATH);
  for (const [name, value] of Object.entries(accountEnv(opts.treeRootfs, user))) {
    if (value !== undefined && !env.has(name)) env.set(name, value);
  }
  if (opts.container !== undefined && !env.has('container')) env.set('container', opts.container);

  const mountPoints = [...(image.app?.mountPoints ?? [])];
  for (const mp of ra.app?.mountPoints ?? []) {
    const i = mountPoints.findIndex((p) => p.name === mp.name);
    if (i === -1) mountPoints.push(mp);
    else mountPoints[i] = mp;
  }

  const rlimits = appRlimits(ra.name, ra.annotations);
  return {
    name: ra.name,
    imageName: image.name,
    exec: [...exec],
    user: app.user,
    group: app.group,
    uid: user.id,
    gid: group.id,
    supplementaryGids: [...(app.supplementaryGIDs ?? [])],
    env: [...env].map(([name, value]) => ({ name, value })),
    workingDirectory: app.workingDirectory || '/',
    readOnlyRootFS: ra.readOnlyRootFS ?? false,
    eventHandlers: eventHandlers(app),
    mounts: resolveMounts(pm, ra, mountPoints, opts.paths),
    isolators: resolveIsolators(app.isolators ?? [], pm.isolators ?? []),
    treeRootfs: opts.treeRootfs,
    ...(opts.directory && { directory: true }),
    ...(rlimits.length > 0 && { rlimits }),
    rootfs: opts.paths.appRootfs(ra.name),
    streams: appStreams(ra.name, ra.annotations),
  };
}

/** A file stage0 writes into every prepared pod. */
export function readPodFile(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new AppSpecError(`${what} ${file} is missing; the pod directory is incomplete`, { cause: err });
    throw new AppSpecError(`${what} ${file} ${whyUnreadable(err)}`, { cause: err });
  }
}

export function loadPodManifest(paths: PodPaths): PodManifest {
  return parsePodManifest(readPodFile(paths.manifest, 'pod manifest'));
}

/**
 * The spec of every app of `pm`, in manifest order, from the image
 * manifests and tree store paths stage0 left in appsinfo/. stage0 calls it
 * before writing the pod manifest, to refuse a pod whose users do not exist.
 */
export function resolveAppSpecs(paths: PodPaths, pm: PodManifest, opts: { container?: string } = {}): AppSpec[] {
  return pm.apps.map((ra) => {
    const image = parseImageManifest(readPodFile(paths.appImageManifest(ra.name), `image manifest of app "${ra.name}"`));
    const treeRootfs = readPodFile(paths.appTreeRootfs(ra.name), `tree store path of app "${ra.name}"`).toString('utf8').trim();
    if (!path.isAbsolute(treeRootfs)) throw new AppSpecError(`${paths.appTreeRootfs(ra.name)} must hold an absolute path, not "${treeRootfs}"`);
    const directory = fs.existsSync(paths.appDirectoryMark(ra.name));
    return resolveAppSpec(pm, ra, image, { paths, treeRootfs, directory, ...(opts.container !== undefined && { container: opts.container }) });
  });
}

/** The spec of every app of the pod whose directory `paths` is, from its pod manifest. */
export function loadAppSpecs(paths: PodPaths, opts: { container?: string } = {}): AppSpec[] {
  return resolveAppSpecs(paths, loadPodManifest(paths), opts);
}

/** The app an entrypoint acts on: the one named, or the only one the pod has. */
export function pickApp(specs: AppSpec[], name: string | undefined): AppSpec {
  if (name !== undefined) {
    const spec = specs.find((s) => s.name === name);
    if (!spec) throw new UsageError(`the pod has no app named "${name}"; it has ${specs.map((s) => s.name).join(', ')}`);
    return spec;
  }
  if (specs.length === 1) return specs[0]!;
  throw new UsageError(`the pod has several apps (${specs.map((s) => s.name).join(', ')}); say which with --appname`);
}
