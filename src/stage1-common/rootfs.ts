import fs from 'node:fs';
import path from 'node:path';
import { execa } from '../util/lazy-execa.js';
import { RktError, isErrno } from '../errors.js';
import { mountsUnder } from '../util/mounts.js';
import { log } from '../log.js';
import type { PodPaths } from '../stage1/contract.js';
import type { AppSpec, VolumeMount } from './app-spec.js';

// Assembling an app's root filesystem: a writable overlay over the image's
// read-only tree, the pod's volumes bound into it, read-only where asked.
// Node has no mount(2), so util-linux mount(8) does the mounting. Every
// path inside an app rootfs is resolved here component by component, the
// way the kernel would resolve it after chroot: an image is untrusted data,
// and a symlink such as /data -> /etc must land on the rootfs's /etc, never
// on the host's.

export class RootfsError extends RktError {}

const MAX_SYMLINKS = 40;

function components(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}

export interface InRootPath {
  /** Host path of the deepest existing, symlink-free prefix (the whole path when `exists`). */
  host: string;
  /** The same, as seen from inside the rootfs. */
  inner: string;
  exists: boolean;
  /** Components still to create below `host` when !exists (may contain ".."). */
  missing: string[];
}

/**
 * Resolve `p` (a path inside the rootfs `root`) to a host path, following
 * symlinks relative to `root` and never climbing above it. The final
 * component is followed too unless `followLast` is false.
 */
export function resolveInRoot(root: string, p: string, followLast = true): InRootPath {
  let done: string[] = [];
  let todo = components(p);
  let links = 0;
  while (todo.length > 0) {
    const c = todo.shift()!;
    if (c === '..') {
      done.pop();
      continue;
    }
    const host = path.join(root, ...done, c);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(host);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      return { host: path.join(root, ...done), inner: '/' + done.join('/'), exists: false, missing: [c, ...todo] };
    }
    if (st.isSymbolicLink() && (todo.length > 0 || followLast)) {
      if (++links > MAX_SYMLINKS) throw new RootfsError(`too many levels of symbolic links resolving ${p} in ${root}`);
      const target = fs.readlinkSync(host);
      if (target.startsWith('/')) done = [];
      todo = [...components(target), ...todo];
      continue;
    }
    if (todo.length > 0 && !st.isDirectory()) {
      throw new RootfsError(`${p} in ${root}: /${[...done, c].join('/')} is not a directory`);
    }
    done.push(c);
  }
  return { host: path.join(root, ...done), inner: '/' + done.join('/'), exists: true, missing: [] };
}

/** Make sure directory `p` exists inside `root` (creating parents, 0755) and return its host path. */
export function ensureDirInRoot(root: string, p: string): string {
  for (;;) {
    const r = resolveInRoot(root, p);
    if (r.exists) {
      if (!fs.statSync(r.host).isDirectory()) throw new RootfsError(`${p} exists in ${root} but is not a directory`);
      return r.host;
    }
    // One component at a time: the next one may be ".." or a symlink to follow.
    fs.mkdirSync(path.join(r.host, r.missing[0]!), { mode: 0o755 });
  }
}

/**
 * Create the mount target `p` inside `root` as a directory or an empty file
 * and return its symlink-free host path. A file standing where a directory
 * is needed is replaced, as the spec asks; the reverse is an error.
 */
export function ensureMountTarget(root: string, p: string, kind: 'dir' | 'file'): string {
  const parent = path.posix.dirname(path.posix.resolve('/', p));
  if (parent === path.posix.resolve('/', p)) {
    throw new RootfsError(`cannot mount over the root of ${root}`);
  }
  ensureDirInRoot(root, parent);
  for (;;) {
    const r = resolveInRoot(root, p);
    if (!r.exists) {
      if (r.missing.length > 1) {
        // a dangling symlink whose target's parents are missing
        fs.mkdirSync(path.join(r.host, r.missing[0]!), { mode: 0o755 });
        continue;
      }
      const host = path.join(r.host, r.missing[0]!);
      if (kind === 'dir') fs.mkdirSync(host, { mode: 0o755 });
      else fs.closeSync(fs.openSync(host, 'wx', 0o644));
      return host;
    }
    const isDir = fs.statSync(r.host).isDirectory();
    if (kind === 'dir' && !isDir) {
      log().warn(`${p} in ${root} is a file; replacing it with a directory to mount a volume on`);
      fs.rmSync(r.host);
      continue;
    }
    if (kind === 'file' && isDir) throw new RootfsError(`cannot mount a file on ${p}: it is a directory in the app's rootfs`);
    return r.host;
  }
}

async function mount(args: string[]): Promise<void> {
  log().debug({ argv: ['mount', ...args] }, 'mount');
  const r = await execa('mount', args, { reject: false, stdin: 'ignore' });
  if (r.exitCode !== 0) throw new RootfsError(`mount ${args.join(' ')} failed: ${String(r.stderr).trim() || `exit status ${r.exitCode}`}`);
}

/** Bind `source` on `target`; read-only binds are remounted ro, submounts of recursive ones too. */
export async function bindMount(source: string, target: string, opts: { recursive?: boolean; readOnly?: boolean } = {}): Promise<void> {
  await mount([opts.recursive ? '--rbind' : '--bind', source, target]);
  if (!opts.readOnly) return;
  // A bind mount ignores "ro" when created; the flag is set by a remount of each mount point.
  const points = opts.recursive ? mountsUnder(target).reverse() : [target];
  for (const p of points) await mount(['-o', 'remount,bind,ro', p]);
}

export async function mountTmpfs(target: string, options = 'mode=1777,nosuid,nodev'): Promise<void> {
  await mount(['-t', 'tmpfs', '-o', options, 'tmpfs', target]);
}

/** A mount a flavor adds to every app besides the pod's volumes (fly: the host's /dev, /proc, /sys, a /tmp). */
export interface ExtraMount {
  kind: 'bind' | 'rbind' | 'tmpfs';
  /** Host path for binds; ignored for tmpfs. */
  source: string;
  /** Path inside the app rootfs. */
  target: string;
  readOnly?: boolean;
}

/**
 * How an app's files are presented when the pod's ids are not the host's
 * (the kvm flavor over virtio-fs, stage1-kvm/guest-ids.ts): the pod's id i
 * is host id hostId(i). The image's tree is shown shifted by an id-mapped
 * lower layer, and what the pod owns is owned on disk by the shifted ids.
 */
export interface IdShift {
  hostId(id: number): number;
  /**
   * Show `tree` read-only at or below `target` (an empty directory), its
   * owners shown as the pod's ids; the overlay's lower layers, topmost first.
   */
  mountLower(tree: string, target: string): Promise<string[]>;
  /** Bind the host volume of `m` on `target` for `spec`'s app. */
  bindHostVolume(spec: AppSpec, m: VolumeMount, target: string): Promise<void>;
}

export interface PrepareOptions {
  extraMounts?: ExtraMount[];
  idShift?: IdShift;
  /** Host file copied to /etc/resolv.conf when the image has none. */
  resolvConf?: string;
  /** Content for /etc/hosts when the image has none. */
  hosts?: string;
}

export interface PreparedRootfs {
  rootfs: string;
  /** False when overlayfs was refused and the rootfs is a private copy. */
  overlay: boolean;
}

// overlayfs options separate with "," and lower layers with ":".
function overlaySafe(p: string): boolean {
  return !/[,:\\\s]/.test(p);
}

/** The overlay's lower layer seen with the pod's ids, and its upper root owned like the image's root. */
async function shiftedLower(paths: PodPaths, spec: AppSpec, upper: string, shift: IdShift): Promise<string[]> {
  if (!overlaySafe(paths.appOverlayUpper(spec.name))) throw new RootfsError(`app ${spec.name}: the pod's path contains a character overlayfs options cannot carry`);
  const lower = path.join(path.dirname(upper), 'lower');
  fs.mkdirSync(lower, { recursive: true, mode: 0o755 });
  const layers = await shift.mountLower(spec.treeRootfs, lower);
  const top = fs.statSync(spec.treeRootfs);
  fs.chownSync(upper, shift.hostId(top.uid), shift.hostId(top.gid));
  fs.chmodSync(upper, top.mode & 0o7777);
  return layers;
}

async function mountImage(paths: PodPaths, spec: AppSpec, shift?: IdShift): Promise<boolean> {
  if (spec.directory && !shift) {
    // the app's root is that directory itself, as an OCI bundle's root is: no overlay, no copy
    fs.mkdirSync(spec.rootfs, { recursive: true, mode: 0o755 });
    await bindMount(spec.treeRootfs, spec.rootfs);
    return false;
  }
  // With the pod's ids shifted (kvm), a directory root is the overlay's lower layer like an
  // image's tree: a writable id-mapped view of it would let the guest own files as host root.
  const upper = paths.appOverlayUpper(spec.name);
  const work = paths.appOverlayWork(spec.name);
  fs.mkdirSync(upper, { recursive: true, mode: 0o755 });
  fs.mkdirSync(work, { recursive: true, mode: 0o700 });
  fs.mkdirSync(spec.rootfs, { recursive: true, mode: 0o755 });
  if (shift) {
    // no private copy here: it would hold the image's owners, not the pod's
    const lower = await shiftedLower(paths, spec, upper, shift);
    await mount(['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower.join(':')},upperdir=${upper},workdir=${work}`, spec.rootfs]);
    return true;
  }
  let why: string;
  if ([spec.treeRootfs, upper, work, spec.rootfs].every(overlaySafe)) {
    try {
      await mount(['-t', 'overlay', 'overlay', '-o', `lowerdir=${spec.treeRootfs},upperdir=${upper},workdir=${work}`, spec.rootfs]);
      return true;
    } catch (err) {
      why = (err as Error).message;
    }
  } else {
    why = 'a path contains a character overlayfs options cannot carry';
  }
  // The tree store's copy must stay pristine, so the app gets its own full copy.
  log().debug(`app ${spec.name}: overlayfs unavailable (${why}); using a private copy of the image`);
  fs.rmSync(upper, { recursive: true, force: true });
  await execa('cp', ['-a', '--reflink=auto', '--no-target-directory', spec.treeRootfs, upper]);
  await bindMount(upper, spec.rootfs);
  return false;
}

/** Check a host volume source the way the spec asks: it must exist and no component may be a symlink. */
export function checkHostSource(source: string, volume: string): fs.Stats {
  let cur = '/';
  for (const c of components(source)) {
    cur = path.join(cur, c);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(cur);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw new RootfsError(`volume "${volume}": source ${source} does not exist on the host`);
      throw err;
    }
    if (st.isSymbolicLink()) {
      let real = '?';
      try {
        real = fs.realpathSync(source);
      } catch {
        // dangling: keep "?"
      }
      throw new RootfsError(`volume "${volume}": ${cur} in source ${source} is a symlink; give the real path (${real})`);
    }
  }
  return fs.statSync(source);
}

/** Create an empty volume's directory (shared by all apps that mount it) with its mode and owner (shifted to the pod's ids). */
export function ensureEmptyVolume(m: VolumeMount, shift?: IdShift): void {
  if (m.kind !== 'empty' || m.empty === undefined) return;
  fs.mkdirSync(m.source, { recursive: true });
  fs.chmodSync(m.source, m.empty.mode);
  fs.chownSync(m.source, shift ? shift.hostId(m.empty.uid) : m.empty.uid, shift ? shift.hostId(m.empty.gid) : m.empty.gid);
}

async function mountVolume(spec: AppSpec, m: VolumeMount, shift?: IdShift): Promise<void> {
  let isDir = true;
  if (m.kind === 'host') isDir = checkHostSource(m.source, m.volume).isDirectory();
  else ensureEmptyVolume(m, shift);
  const target = ensureMountTarget(spec.rootfs, m.target, isDir ? 'dir' : 'file');
  log().debug(`app ${spec.name}: volume ${m.volume} ${m.source} on ${m.target}${m.readOnly ? ' (read-only)' : ''}`);
  if (shift && m.kind === 'host') await shift.bindHostVolume(spec, m, target);
  else await bindMount(m.source, target, { recursive: m.recursive, readOnly: m.readOnly });
}

async function mountExtra(spec: AppSpec, e: ExtraMount): Promise<void> {
  const isDir = e.kind === 'tmpfs' || fs.statSync(e.source).isDirectory();
  const target = ensureMountTarget(spec.rootfs, e.target, isDir ? 'dir' : 'file');
  if (e.kind === 'tmpfs') await mountTmpfs(target);
  else await bindMount(e.source, target, { recursive: e.kind === 'rbind', readOnly: e.readOnly });
}

/** Write /etc/<name> into the rootfs unless the image has one (a dangling symlink counts as having one). */
function provideEtcFile(root: string, name: string, content: () => string | Buffer): void {
  const etc = ensureDirInRoot(root, '/etc');
  const file = path.join(etc, name);
  try {
    fs.lstatSync(file);
    return;
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  fs.writeFileSync(file, content(), { flag: 'wx', mode: 0o644 });
}

/**
 * Assemble the app's rootfs at spec.rootfs: overlay (or private copy) of the
 * image, /etc files the flavor provides, extra mounts, the volumes (parents
 * before children), the working directory checked, and finally the whole
 * rootfs made read-only if the pod manifest asks. Call it in the pod's own
 * mount namespace: nothing here is ever unmounted explicitly.
 */
export async function prepareAppRootfs(paths: PodPaths, spec: AppSpec, opts: PrepareOptions = {}): Promise<PreparedRootfs> {
  const overlay = await mountImage(paths, spec, opts.idShift);
  if (opts.resolvConf !== undefined && fs.existsSync(opts.resolvConf)) {
    const src = opts.resolvConf;
    provideEtcFile(spec.rootfs, 'resolv.conf', () => fs.readFileSync(src));
  }
  if (opts.hosts !== undefined) {
    const hosts = opts.hosts;
    provideEtcFile(spec.rootfs, 'hosts', () => hosts);
  }
  for (const e of opts.extraMounts ?? []) await mountExtra(spec, e);
  const byDepth = [...spec.mounts].sort((a, b) => components(a.target).length - components(b.target).length);
  for (const m of byDepth) await mountVolume(spec, m, opts.idShift);
  const wd = resolveInRoot(spec.rootfs, spec.workingDirectory);
  if (!wd.exists || !fs.statSync(wd.host).isDirectory()) {
    throw new RootfsError(`working directory ${spec.workingDirectory} of app "${spec.name}" does not exist in its rootfs`);
  }
  if (spec.readOnlyRootFS) await mount(['-o', 'remount,bind,ro', spec.rootfs]);
  return { rootfs: spec.rootfs, overlay };
}

/** Found before boot, a missing executable is a clear error instead of status 203 from the pod's systemd; the event handlers' too. */
export function checkAppExec(spec: AppSpec, flavor: string): void {
  const commands: [string, string[]][] = [['exec', spec.exec]];
  if (spec.eventHandlers.preStart) commands.push(['pre-start handler', spec.eventHandlers.preStart]);
  if (spec.eventHandlers.postStop) commands.push(['post-stop handler', spec.eventHandlers.postStop]);
  for (const [what, argv] of commands) {
    const exe = argv[0]!;
    if (!exe.startsWith('/')) throw new RootfsError(`app "${spec.name}": ${what} "${exe}" must be an absolute path in the ${flavor} stage1`);
    const r = resolveInRoot(spec.rootfs, exe);
    let ok = false;
    if (r.exists) {
      const st = fs.statSync(r.host);
      ok = st.isFile() && (st.mode & 0o111) !== 0;
    }
    if (!ok) {
      const fix = what === 'exec' ? 'give the right command with --exec' : `fix the image's ${what}`;
      throw new RootfsError(`app "${spec.name}": ${what} ${exe} ${r.exists ? 'is not an executable file' : 'does not exist'} in image ${spec.imageName}; ${fix}`);
    }
  }
}

// systemd mounts the API file systems in the app's root (RootDirectory=
// implies MountAPIVFS=); a read-only root must have the mount points
// before it becomes read-only.
const API_MOUNT_POINTS = ['/proc', '/sys', '/dev', '/run'];

/**
 * An app rootfs for a flavor whose pod's systemd runs the app as a unit:
 * the shared assembly, then `finish` (the flavor's last touches, such as
 * /etc files), the mount points systemd needs, the exec checked, and the
 * rootfs made read-only last if the pod manifest asks.
 */
export async function prepareUnitRootfs(paths: PodPaths, spec: AppSpec, flavor: string, opts: PrepareOptions & { finish?: () => void } = {}): Promise<PreparedRootfs> {
  const { finish, ...prepare } = opts;
  const r = await prepareAppRootfs(paths, { ...spec, readOnlyRootFS: false }, prepare);
  finish?.();
  for (const p of API_MOUNT_POINTS) ensureDirInRoot(spec.rootfs, p);
  checkAppExec(spec, flavor);
  if (spec.readOnlyRootFS) await mount(['-o', 'remount,bind,ro', spec.rootfs]);
  log().debug(`app ${spec.name}: rootfs ready at ${r.rootfs}${r.overlay ? '' : ' (private copy)'}${spec.readOnlyRootFS ? ', read-only' : ''}`);
  return r;
}
