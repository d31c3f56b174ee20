import fs from 'node:fs';
import { execa } from './lazy-execa.js';
import { log } from '../log.js';

// The mount table as this process sees it, and taking a tree of mounts
// down. Both stage0 (removing a pod) and the flavors (gc) need it.

export interface MountInfo {
  id: number;
  parentId: number;
  /** The path inside the filesystem that is mounted ("/" unless a bind of a subtree). */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
  /** The filesystem's own options, as the kernel shows them (a filesystem may escape within them). */
  superOptions: string;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
export function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** One line of mountinfo, or undefined when it is not one (too few fields, no "-" separator). */
export function parseMountinfoLine(line: string): MountInfo | undefined {
  const f = line.split(' ');
  const sep = f.indexOf('-', 6);
  if (sep < 0 || f.length < sep + 4) return undefined;
  const id = Number(f[0]);
  const parentId = Number(f[1]);
  if (!Number.isInteger(id) || !Number.isInteger(parentId) || !f[3]!.startsWith('/') || !f[4]!.startsWith('/')) return undefined;
  return {
    id,
    parentId,
    root: unescapeMountinfo(f[3]!),
    mountPoint: unescapeMountinfo(f[4]!),
    fsType: f[sep + 1]!,
    source: unescapeMountinfo(f[sep + 2]!),
    superOptions: f.slice(sep + 3).join(' '),
  };
}

/** The mount table in mountinfo's format; lines that are not mounts are left out. */
export function parseMountinfo(text: string): MountInfo[] {
  return text.split('\n').flatMap((l) => parseMountinfoLine(l) ?? []);
}

/** The mount table of this process's mount namespace. */
export function readMountinfo(file = '/proc/self/mountinfo'): MountInfo[] {
  return parseMountinfo(fs.readFileSync(file, 'utf8'));
}

/** The mount that `p` (an absolute path without symlinks) is on: the last one mounted at its longest mounted prefix. */
export function mountOf(p: string, table: MountInfo[] = readMountinfo()): MountInfo | undefined {
  let best: MountInfo | undefined;
  for (const m of table) {
    const under = m.mountPoint === '/' || p === m.mountPoint || p.startsWith(m.mountPoint + '/');
    if (under && (best === undefined || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  return best;
}

/** Mount points at or below `dir`, deepest first (the order to unmount them in). */
export function mountsUnder(dir: string, table: MountInfo[] = readMountinfo()): string[] {
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  const points = table.map((m) => m.mountPoint).filter((p) => p === dir || p.startsWith(prefix));
  return [...new Set(points)].sort((a, b) => b.split('/').length - a.split('/').length || b.length - a.length);
}

/**
 * Unmount everything at or below `dir`, deepest first so that a parent is
 * never busy because of its children; a busy mount is detached lazily and
 * the kernel frees it with its last user. Returns what is still mounted.
 */
export async function unmountAllUnder(dir: string): Promise<string[]> {
  for (const p of mountsUnder(dir)) {
    log().debug(`unmounting ${p}`);
    const r = await execa('umount', [p], { reject: false, stdin: 'ignore' });
    if (r.exitCode === 0) continue;
    const lazy = await execa('umount', ['--lazy', p], { reject: false, stdin: 'ignore' });
    if (lazy.exitCode !== 0) log().warn(`cannot unmount ${p}: ${String(lazy.stderr).trim()}`);
  }
  return mountsUnder(dir);
}
