import fs from 'node:fs';
import { execa } from './lazy-execa.js';
import { log } from '../log.js';

// The mount table as this process sees it, and taking a tree of mounts
// down. Both stage0 (removing a pod) and the flavors (gc) need it.

export interface MountInfo {
  id: number;
  parentId: number;
  mountPoint: string;
  fsType: string;
  source: string;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The mount table of this process's mount namespace. */
export function readMountinfo(file = '/proc/self/mountinfo'): MountInfo[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const f = line.split(' ');
      const sep = f.indexOf('-', 6);
      return {
        id: Number(f[0]),
        parentId: Number(f[1]),
        mountPoint: unescapeMountinfo(f[4] ?? ''),
        fsType: f[sep + 1] ?? '',
        source: unescapeMountinfo(f[sep + 2] ?? ''),
      };
    });
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
