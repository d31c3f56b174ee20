import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { parseImageManifest } from '../appc/image-manifest.js';
import { RktError, UsageError, isErrno, whyUnreadable } from '../errors.js';
import { importAci } from '../image/import.js';
import { log } from '../log.js';
import { FIRST_ID, GUEST_IDS, SLOT_IDS, SLOTS } from '../stage1-common/pod-ids.js';
import { StoreLayout } from '../store/layout.js';
import { fsyncDir, tempSibling } from '../util/atomic.js';
import { FileLock } from '../util/lock.js';
import { mountsUnder } from '../util/mounts.js';
import { Pod } from './pod.js';

// rkt export: an exited pod's app as an ACI, its image manifest over its
// root filesystem as the app left it. Every flavor gives an app an overlay
// whose writable layer stays in the pod directory (overlay/<app>/upper)
// after the pod's mount namespace is gone; where overlayfs was refused, the
// upper dir holds a full private copy instead. overlayfs itself marks which:
// it creates work/work in the work dir of every overlay it mounts.
//
// The rootfs is assembled again only inside a private mount namespace of
// the tar process (the upper layer read-only over the image's tree, so no
// whiteout or opaque dir is interpreted by hand and nothing is written to
// the pod), so no mount can outlive the export, however rkt ends. The pod is
// locked shared and the image tree too, so that neither gc removes them
// meanwhile. The ACI is written to a temporary sibling, checked with the
// same validator as an import, and only then given its name.

export class ExportError extends RktError {}

export interface ExportOptions {
  /** The app to export; needed when the pod has several. */
  app?: string;
  overwrite: boolean;
}

/** Which app of the pod, as rkt chooses: the named one, or the only one. */
function chooseApp(apps: string[], wanted: string | undefined, uuid: string): string {
  if (wanted !== undefined && wanted !== '') {
    if (!apps.includes(wanted)) throw new UsageError(`pod ${uuid} has no app named "${wanted}"; its apps are ${apps.join(', ')}`);
    return wanted;
  }
  if (apps.length === 0) throw new ExportError(`pod ${uuid} has no apps to export`);
  if (apps.length > 1) throw new UsageError(`pod ${uuid} has several apps (${apps.join(', ')}); choose one with --app=NAME`);
  return apps[0]!;
}

// overlayfs options separate with "," and lower layers with ":".
function checkOverlaySafe(p: string): void {
  if (/[,:\\\s]/.test(p)) throw new ExportError(`${p} contains a character overlayfs options cannot carry; cannot assemble the app's rootfs`);
}

/**
 * The kvm flavor's apps write as the pod's block of host ids (guest id i is
 * host id base+i, src/stage1-common/pod-ids.ts); an image holds the pod's own
 * ids, so the block is shifted back. The block is found from the owner of
 * the upper layer's root, which the flavor gives the image root's owner.
 */
export function shiftBase(upperRootUid: number): number | undefined {
  if (upperRootUid < FIRST_ID || upperRootUid >= FIRST_ID + SLOTS * SLOT_IDS) return undefined;
  return FIRST_ID + Math.floor((upperRootUid - FIRST_ID) / SLOT_IDS) * SLOT_IDS;
}

/** GNU tar --owner-map/--group-map lines taking the block back to 0..65535. */
function idMap(base: number): string {
  const lines: string[] = [];
  for (let i = 0; i < GUEST_IDS; i++) lines.push(`+${base + i} +${i}`);
  return lines.join('\n') + '\n';
}

interface Source {
  /** "overlay": upper over the tree; "copy": the upper dir is the whole rootfs. */
  kind: 'overlay' | 'copy';
  upper: string;
  tree?: string;
  treeId?: string;
}

function appSource(pod: Pod, app: string): Source {
  const upper = pod.paths.appOverlayUpper(app);
  try {
    if (!fs.lstatSync(upper).isDirectory()) throw new ExportError(`${upper} is not a directory; the pod directory is damaged`);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new ExportError(`app "${app}" of pod ${pod.uuid} has no root filesystem left (it never started); nothing to export`);
    throw err;
  }
  if (!fs.existsSync(path.join(pod.paths.appOverlayWork(app), 'work'))) return { kind: 'copy', upper };
  const read = (file: string, what: string): string => {
    try {
      return fs.readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new ExportError(`the ${what} of app "${app}" (${file}) ${whyUnreadable(err)}; the pod directory is damaged`, { cause: err });
    }
  };
  const tree = read(pod.paths.appTreeRootfs(app), 'image tree path');
  const treeId = read(pod.paths.appTreeStoreId(app), 'tree store ID');
  if (!path.isAbsolute(tree)) throw new ExportError(`${pod.paths.appTreeRootfs(app)} must hold an absolute path; the pod directory is damaged`);
  return { kind: 'overlay', upper, tree, treeId };
}

/** Hold the image tree shared, as a pod does, so that image gc leaves it alone while we read it. */
function holdTree(dataDir: string, src: Source): FileLock | undefined {
  if (src.kind !== 'overlay') return undefined;
  const missing = () => new ExportError(`the image of this app is no longer rendered in the store (${src.tree}); fetch and render the image again ("rkt image render") or export a newer pod`);
  let lock: FileLock;
  try {
    lock = FileLock.acquire(new StoreLayout(dataDir).treeLock(src.treeId!), 'shared', { wait: false, create: false, what: `rendered image ${src.treeId}` });
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw missing();
    throw err;
  }
  if (!fs.existsSync(src.tree!)) {
    lock.release();
    throw missing();
  }
  return lock;
}

// Inside the private mount namespace: assemble the rootfs read-only at $3, then hand over to tar.
// The upper layer is the app's work, untrusted: overlayfs is told to follow no redirect it might hold.
const ASSEMBLE = [
  'case "$1" in',
  '  overlay) mount -t overlay overlay -o "ro,redirect_dir=nofollow,metacopy=off,lowerdir=$2" "$3" ;;',
  '  copy) mount --bind "$2" "$3" ;;',
  'esac',
  'shift 3',
  'exec tar "$@"',
].join('\n');

async function writeTar(src: Source, manifest: Buffer, stage: string, out: string, shift: number | undefined): Promise<void> {
  const rootfs = path.join(stage, 'rootfs');
  fs.mkdirSync(rootfs, { mode: 0o755 });
  fs.writeFileSync(path.join(stage, 'manifest'), manifest, { mode: 0o644 });
  const lower = src.kind === 'overlay' ? `${src.upper}:${src.tree!}` : src.upper;
  if (src.kind === 'overlay') for (const p of [src.upper, src.tree!, rootfs]) checkOverlaySafe(p);
  const tarArgs = [
    '-c', '-f', '-', '-C', stage, '--format=posix', '--pax-option=delete=atime,delete=ctime', '--sort=name',
    '--numeric-owner', '--xattrs', '--xattrs-include=user.*', '--xattrs-include=security.capability', '--no-acls', '--no-selinux',
  ];
  if (shift !== undefined) {
    const map = path.join(stage, 'idmap');
    fs.writeFileSync(map, idMap(shift));
    tarArgs.push(`--owner-map=${map}`, `--group-map=${map}`);
  }
  tarArgs.push('manifest', 'rootfs');
  const argv = ['--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--propagation', 'private', '--', 'sh', '-ec', ASSEMBLE, 'sh', src.kind, lower, rootfs, ...tarArgs];
  log().debug({ argv: ['setpriv', ...argv] }, 'export: writing the ACI');
  const child = spawn('setpriv', argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s: string) => {
    if (stderr.length < 8192) stderr += s;
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code));
  });
  const file = fs.createWriteStream(out, { flags: 'wx', mode: 0o644 });
  await pipeline(child.stdout, zlib.createGzip(), file);
  const code = await exited;
  if (code !== 0) throw new ExportError(`writing the ACI failed: ${stderr.trim().split('\n').slice(-3).join('; ') || `tar exited with status ${code}`}`);
  const fd = fs.openSync(out, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** The written file must read back as a valid ACI, by the rules an import applies. */
async function validate(file: string): Promise<string> {
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  const r = await importAci(fs.createReadStream(file), sink, { name: file });
  return r.id;
}

/** Give the finished file its name: replacing only with --overwrite, never a file that appeared meanwhile otherwise. */
function publish(tmp: string, output: string, overwrite: boolean): void {
  if (overwrite) {
    fs.renameSync(tmp, output);
  } else {
    try {
      fs.linkSync(tmp, output);
    } catch (err) {
      if (isErrno(err, 'EEXIST')) throw new UsageError(`${output} already exists; choose another file or pass --overwrite`);
      throw err;
    }
    fs.rmSync(tmp, { force: true });
  }
  fsyncDir(path.dirname(output));
}

function checkExited(pod: Pod): void {
  const state = pod.state();
  if (state !== 'exited' && state !== 'exited garbage') throw new ExportError(`pod ${pod.uuid} is ${state}; only exited pods can be exported`);
}

/** Export an app of an exited pod to `output` (a .aci file); resolves to the new image's ID. */
export async function exportPodApp(dataDir: string, uuid: string, output: string, opts: ExportOptions): Promise<string> {
  if (path.extname(output) !== '.aci') throw new UsageError(`the output file must end in .aci (given ${output})`);
  const target = path.resolve(output);
  if (!opts.overwrite && fs.existsSync(target)) throw new UsageError(`${output} already exists; choose another file or pass --overwrite`);
  try {
    fs.accessSync(path.dirname(target), fs.constants.W_OK);
  } catch (err) {
    const why = isErrno(err, 'ENOENT') ? 'does not exist' : `is not writable (${(err as Error).message})`;
    throw new UsageError(`cannot write ${output}: its directory ${path.dirname(target)} ${why}`, { cause: err });
  }
  let pod = Pod.find(dataDir, uuid);
  checkExited(pod);
  const lock = pod.lock('shared', false);
  let treeLock: FileLock | undefined;
  let stage: string | undefined;
  let tmp: string | undefined;
  try {
    // the lock is on the directory, which gc may have moved before we took it
    pod = Pod.find(dataDir, pod.uuid);
    checkExited(pod);
    const app = chooseApp(pod.appNames(), opts.app, pod.uuid);
    const manifestFile = pod.paths.appImageManifest(app);
    let manifest: Buffer;
    try {
      manifest = fs.readFileSync(manifestFile);
    } catch (err) {
      throw new ExportError(`the image manifest of app "${app}" (${manifestFile}) ${whyUnreadable(err)}; the pod directory is damaged`, { cause: err });
    }
    parseImageManifest(manifest);
    if (mountsUnder(pod.paths.appRootfs(app)).length > 0) throw new ExportError(`the rootfs of app "${app}" still has mounts on the host; only pods whose mounts are gone can be exported`);
    const src = appSource(pod, app);
    treeLock = holdTree(dataDir, src);
    const shift = shiftBase(fs.statSync(src.upper).uid);
    stage = fs.mkdtempSync(path.join(os.tmpdir(), `rkt-export-${pod.uuid}-`));
    tmp = tempSibling(target);
    await writeTar(src, manifest, stage, tmp, shift);
    const id = await validate(tmp);
    publish(tmp, target, opts.overwrite);
    tmp = undefined;
    return id;
  } finally {
    if (tmp !== undefined) fs.rmSync(tmp, { force: true });
    if (stage !== undefined) fs.rmSync(stage, { recursive: true, force: true });
    treeLock?.release();
    lock.release();
  }
}
