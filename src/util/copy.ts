import fs from 'node:fs';
import { execa } from './lazy-execa.js';
import { tempSibling, fsyncDir } from './atomic.js';
import path from 'node:path';

/** Copy a file so that the destination appears whole or not at all. */
export function copyFileAtomic(src: string, dest: string): void {
  const tmp = tempSibling(dest);
  try {
    fs.copyFileSync(src, tmp, fs.constants.COPYFILE_FICLONE);
    const fd = fs.openSync(tmp, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, dest);
    fsyncDir(path.dirname(path.resolve(dest)));
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** Copy a directory tree preserving owners, modes, links, xattrs (reflinks where the fs has them). */
export async function copyTree(src: string, dest: string): Promise<void> {
  await execa('cp', ['-a', '--reflink=auto', '--no-target-directory', src, dest]);
}
