// Rendering stored ACIs to disk with GNU tar, which restores ownership,
// modes (setuid included), hard links, symlinks, times and file capabilities
// exactly. The tar file is validated again on the way in, because the store
// is only a directory on disk: the bytes are hashed (a changed blob is
// reported as corruption), re-checked by the same rules as at import, and
// reach tar only once approved, so a refusal kills tar before the offending
// entry exists.
//
// Extracting over earlier layers adds one danger a single archive does not
// have: a lower layer may hold a symlink (say rootfs/etc -> /) that GNU tar
// would follow when an upper layer writes rootfs/etc/passwd. Every entry's
// parent directories are therefore resolved on disk first and must stay in
// the rootfs.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ImageFormatError, RktError, isErrno } from '../errors.js';
import type { ArchiveView, CheckedEntry } from './tar-check.js';
import { copyValidated } from './validated-copy.js';
import { applyPathWhitelist } from './whitelist.js';

export { applyPathWhitelist };

/** A stored image no longer hashes to its ID. */
export class CorruptImageError extends ImageFormatError {}

// --numeric-owner: image uids are uids in the image, never host names.
// xattrs: user.* plus file capabilities; trusted.* and security.selinux
// would let an image label host files or steer overlayfs, so they are left.
export const TAR_EXTRACT_ARGS: readonly string[] = [
  '-x', '-f', '-', '--numeric-owner', '--same-owner', '--same-permissions',
  '--xattrs', '--xattrs-include=user.*', '--xattrs-include=security.capability',
  '--no-acls', '--no-selinux', '--warning=no-unknown-keyword',
];

export interface ExtractOptions {
  /** The image ID the file must hash to ("sha512-<hex>"). */
  expectedId?: string;
}

/**
 * Extract an uncompressed ACI tar into `dest` (created if needed). When dest
 * already holds a rendered layer, the new one is laid over it. On failure
 * tar is stopped and dest is left for the caller to remove.
 */
export async function extractAciTar(tarPath: string, dest: string, opts: ExtractOptions = {}): Promise<void> {
  try {
    await fsp.access(tarPath, fs.constants.R_OK);
  } catch (err) {
    throw new RktError(`cannot read the image file ${tarPath} (${(err as Error).message}); fetch the image again`, { cause: err });
  }
  await fsp.mkdir(dest, { recursive: true });
  const before = await fsp.lstat(dest);
  const overlay = (await fsp.readdir(dest)).length > 0;
  const guard = overlay ? overlayGuard(dest, tarPath) : undefined;
  const tar = spawn('tar', [...TAR_EXTRACT_ARGS, '-C', dest], {
    stdio: ['pipe', 'ignore', 'pipe'],
    env: { ...process.env, LC_ALL: 'C' },
  });
  let stderr = '';
  tar.stderr.setEncoding('utf8');
  tar.stderr.on('data', (s: string) => {
    if (stderr.length < 16384) stderr += s;
  });
  const exited = new Promise<{ code: number | null; error?: Error }>((resolve) => {
    tar.once('error', (error) => resolve({ code: null, error }));
    tar.once('close', (code) => resolve({ code }));
  });
  const expected = opts.expectedId;
  try {
    await copyValidated(fs.createReadStream(tarPath, { highWaterMark: 1024 * 1024 }), tar.stdin, {
      name: tarPath,
      onEntry: guard,
      sinkMayCloseEarly: true,
      verifyDigest: expected
        ? (hex) => {
            if (`sha512-${hex}` !== expected) {
              throw new CorruptImageError(
                `the stored image ${expected} is corrupt: ${tarPath} now hashes to sha512-${hex.slice(0, 32)}...; ` +
                  'remove it with "rkt image rm" and fetch it again',
              );
            }
          }
        : undefined,
    });
    const { code, error } = await exited;
    if (error) throw new RktError(`cannot run tar to extract ${tarPath}: ${error.message}; install GNU tar`, { cause: error });
    if (code !== 0) {
      const why = stderr.trim().split('\n').filter((l) => !/^tar: Exiting with failure/.test(l)).slice(-3).join('; ');
      throw new RktError(`extracting ${tarPath} into ${dest} failed: ${why || `tar exited with status ${code}`}`);
    }
  } catch (err) {
    if (tar.exitCode === null && tar.signalCode === null) tar.kill('SIGKILL');
    await exited;
    throw err;
  }
  // A "./" entry makes tar apply its owner and mode to dest itself.
  const after = await fsp.lstat(dest);
  if (after.uid !== before.uid || after.gid !== before.gid) await fsp.lchown(dest, before.uid, before.gid);
  if ((after.mode & 0o7777) !== (before.mode & 0o7777)) await fsp.chmod(dest, before.mode & 0o7777);
}

export interface RenderLayer {
  /** The uncompressed ACI tar in the store. */
  tarPath: string;
  /** Its image ID, checked while extracting. */
  id: string;
  /** The image manifest's pathWhitelist, if any. */
  pathWhitelist?: string[];
}

/**
 * Compose an image over its dependencies into `dest`. `layers` is in
 * rendering order: the deepest dependency first, the image itself last.
 * Later layers override earlier ones file by file; each layer's whitelist
 * prunes the tree composed so far right after that layer (so it covers the
 * layer and everything beneath it); dest/manifest ends up the last image's.
 */
export async function renderLayers(layers: RenderLayer[], dest: string): Promise<void> {
  if (layers.length === 0) throw new RktError('nothing to render: no image layers given');
  for (const layer of layers) {
    await extractAciTar(layer.tarPath, dest, { expectedId: layer.id });
    if (layer.pathWhitelist && layer.pathWhitelist.length > 0) {
      await applyPathWhitelist(path.join(dest, 'rootfs'), layer.pathWhitelist);
    }
  }
}

type Guard = (entry: CheckedEntry, archive: ArchiveView) => void;

/**
 * Checks for laying an archive over an existing tree. Runs before tar can
 * see the entry. Results per parent directory are cached: the only later
 * changes to a checked path come from this same archive, and the checker
 * already refuses entries below its symlinks and non-directories.
 */
function overlayGuard(dest: string, image: string): Guard {
  const realDest = fs.realpathSync.native(dest);
  const rootfs = path.join(realDest, 'rootfs');
  const inside = (p: string): boolean => p === rootfs || p.startsWith(`${rootfs}/`);
  const parents = new Map<string, { real: string; fresh: boolean }>();
  const refuse = (entry: CheckedEntry, rule: string): ImageFormatError =>
    new ImageFormatError(`${image} cannot be laid over its dependencies: entry "${entry.name}": ${rule}`);

  // Where tar will put children of `rel`, and whether that directory will be
  // new (so nothing from lower layers can be in the way below it).
  const resolveParent = (entry: CheckedEntry, rel: string, archive: ArchiveView): { real: string; fresh: boolean } => {
    let cur = realDest;
    let fresh = false;
    const comps = rel.split('/');
    for (let i = 0; i < comps.length; i++) {
      const next = path.join(cur, comps[i]!);
      const q = comps.slice(0, i + 1).join('/');
      if (fresh) {
        cur = next;
        continue;
      }
      const st = lstatOrUndefined(next);
      // tar makes a declared directory real before reaching its children,
      // replacing whatever a lower layer left there.
      if (archive.hasDirectoryEntry(q)) {
        if (!st?.isDirectory()) fresh = true;
        cur = next;
        continue;
      }
      if (!st) {
        fresh = true;
        cur = next;
      } else if (st.isDirectory()) {
        cur = next;
      } else if (st.isSymbolicLink()) {
        let target: string;
        try {
          target = fs.realpathSync.native(next);
        } catch (err) {
          if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) throw refuse(entry, `"${q}" from a lower layer is a dangling symlink`);
          if (isErrno(err, 'ELOOP')) throw refuse(entry, `"${q}" from a lower layer is a symlink loop`);
          throw new RktError(`cannot resolve "${q}" in ${rootfs}: ${(err as Error).message}`, { cause: err });
        }
        if (!inside(target)) throw refuse(entry, `"${q}" from a lower layer is a symlink that leads outside the rootfs`);
        if (!fs.statSync(target).isDirectory()) throw refuse(entry, `"${q}" from a lower layer does not lead to a directory`);
        cur = target;
      } else {
        throw refuse(entry, `"${q}" is a file in a lower layer, not a directory`);
      }
    }
    return { real: cur, fresh };
  };

  return (entry, archive) => {
    if (!entry.path.startsWith('rootfs/')) return;
    const rel = entry.path.slice(0, entry.path.lastIndexOf('/'));
    let parent = parents.get(rel);
    if (!parent) {
      parent = resolveParent(entry, rel, archive);
      parents.set(rel, parent);
    }
    if (entry.type === 'directory' || parent.fresh) return;
    // An upper layer's file replaces a lower layer's directory outright
    // (GNU tar would only fail on the non-empty directory).
    const target = path.join(parent.real, path.basename(entry.path));
    if (lstatOrUndefined(target)?.isDirectory()) fs.rmSync(target, { recursive: true, force: true });
  };
}

function lstatOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
