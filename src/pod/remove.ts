import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { RktError } from '../errors.js';
import { mountsUnder } from '../util/mounts.js';

/**
 * Remove a pod directory. Anything still mounted below it (a crashed
 * stage1 outside its private namespace) is unmounted first, and rm never
 * crosses into another file system: a leftover volume bind mount must never
 * let the removal reach host files.
 */
export function removePodDir(dir: string): void {
  if (!fs.existsSync(dir)) return;
  for (const m of mountsUnder(dir)) {
    try {
      execFileSync('umount', ['--lazy', m], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
  const left = mountsUnder(dir);
  if (left.length > 0) throw new RktError(`cannot remove pod directory ${dir}: ${left[0]} is still mounted; unmount it and run "rkt gc" again`);
  execFileSync('rm', ['-rf', '--one-file-system', '--', dir], { stdio: 'ignore' });
}
