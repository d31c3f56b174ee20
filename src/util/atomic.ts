import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

// Atomic file replacement: write a temporary sibling, fsync it, rename it
// over the target, then fsync the directory so the rename itself survives a
// crash. Readers see the old file or the new one, never a torn one.

export function tempSibling(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
}

export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function writeFileAtomic(target: string, data: string | Uint8Array, mode = 0o644): void {
  const tmp = tempSibling(target);
  const fd = fs.openSync(tmp, 'wx', mode);
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(tmp, target);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDir(path.dirname(target));
}

/** Rename with durability of both the entry and its new directory. */
export function renameDurable(from: string, to: string): void {
  fs.renameSync(from, to);
  fsyncDir(path.dirname(to));
  if (path.dirname(from) !== path.dirname(to)) fsyncDir(path.dirname(from));
}
