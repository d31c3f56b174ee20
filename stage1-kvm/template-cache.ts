import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { isErrno, LockBusyError } from '../src/errors.js';
import { fsyncDir, writeFileAtomic } from '../src/util/atomic.js';
import { FileLock } from '../src/util/lock.js';

// The cache of saved template VMs (template.ts): one per key, where the key
// names everything the saved memory depends on: the qemu binary, the guest
// kernel and the template's initramfs (by content), and qemu's command line
// with the pod's own paths and names taken out (machine, memory, vCPUs,
// devices, kernel command line). Nothing of a pod is in a template: it is
// saved before any pod's files, network or identity reach the guest.
//
// <dir>/<key>.state   qemu's migration stream (the guest's memory and devices)
// <dir>/<key>.json    what is expected of it: format, key, size, sha256
// <dir>/<key>.lock    flock: one builder at a time; readers check under it
//
// The directory is root's, mode 0700; a state file is opened read-only by
// the run entrypoint and handed to qemu as a descriptor, so no guest and no
// qemu can write it. Its sha256 is checked on every use: a template that
// fails the check is removed and the pod boots cold.

/** Bumped whenever what a template holds changes meaning. */
export const TEMPLATE_FORMAT = 1;

export interface TemplateFiles {
  state: string;
  meta: string;
  lock: string;
}

interface TemplateMeta {
  format: number;
  key: string;
  size: number;
  sha256: string;
}

/** What the key is made of; `args` is qemu's command line with the pod's own paths and names replaced. */
export interface TemplateKeyParts {
  qemu: string;
  kernel: string;
  initrd: string;
  args: readonly string[];
}

function hashFile(file: string): string {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    hashFd(fd, h);
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

/** Hash through an open descriptor with positioned reads: its offset stays 0 for qemu. */
function hashFd(fd: number, h: crypto.Hash): void {
  const buf = Buffer.allocUnsafe(1 << 20);
  for (let pos = 0; ; ) {
    const n = fs.readSync(fd, buf, 0, buf.length, pos);
    if (n === 0) return;
    h.update(buf.subarray(0, n));
    pos += n;
  }
}

/** hashFd without holding up the event loop between reads: qemu loads the state meanwhile. */
async function hashFdAsync(fd: number): Promise<string> {
  const h = crypto.createHash('sha256');
  const buf = Buffer.allocUnsafe(1 << 20);
  for (let pos = 0; ; ) {
    const n = await new Promise<number>((resolve, reject) => fs.read(fd, buf, 0, buf.length, pos, (err, got) => (err ? reject(err) : resolve(got))));
    if (n === 0) return h.digest('hex');
    h.update(buf.subarray(0, n));
    pos += n;
  }
}

export function templateKey(p: TemplateKeyParts): string {
  // the binary by identity (a reinstall changes it), the guest's boot files by content
  const q = fs.statSync(p.qemu);
  const parts = {
    format: TEMPLATE_FORMAT,
    qemu: { path: p.qemu, dev: q.dev, ino: q.ino, size: q.size, mtimeMs: q.mtimeMs },
    kernel: hashFile(p.kernel),
    initrd: hashFile(p.initrd),
    args: p.args,
  };
  return crypto.createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

export function templateFiles(dir: string, key: string): TemplateFiles {
  const base = path.join(dir, key);
  return { state: `${base}.state`, meta: `${base}.json`, lock: `${base}.lock` };
}

/** The cache directory, root's alone. */
export function makeTemplateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(dir);
  // root's when the run entrypoint makes it (as root); whoever runs us, in the unit tests
  if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) {
    throw new Error(`template directory ${dir} must be a directory owned by root with mode 0700`);
  }
}

/** One builder at a time; the others wait (without blocking the event loop) and then find its template. */
export async function lockTemplate(files: TemplateFiles, timeoutMs: number): Promise<FileLock> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return FileLock.acquire(files.lock, 'exclusive', { wait: false, what: 'the template' });
    } catch (err) {
      if (!(err instanceof LockBusyError) || Date.now() > deadline) throw err;
    }
    await sleep(50);
  }
}

export type OpenedTemplate = { fd: number; sha256: string } | { missing: true } | { invalid: string };

/**
 * The template's state, open read-only, its record and size checked; call
 * with the lock held. Its contents are checked by checkTemplate, which may
 * run while qemu loads them: the guest runs only once it has passed.
 */
export function openTemplate(files: TemplateFiles, key: string): OpenedTemplate {
  let meta: TemplateMeta;
  try {
    meta = JSON.parse(fs.readFileSync(files.meta, 'utf8')) as TemplateMeta;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return { missing: true };
    return { invalid: `its record cannot be read (${(err as Error).message})` };
  }
  if (meta.format !== TEMPLATE_FORMAT || meta.key !== key || !Number.isInteger(meta.size) || typeof meta.sha256 !== 'string') {
    return { invalid: 'its record does not match this qemu, kernel and machine' };
  }
  let fd: number;
  try {
    fd = fs.openSync(files.state, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    return { invalid: `its state cannot be opened (${(err as Error).message})` };
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile() || st.size !== meta.size) {
    fs.closeSync(fd);
    return { invalid: `its state is damaged (size ${st.size}, expected ${meta.size})` };
  }
  return { fd, sha256: meta.sha256 };
}

/** Whether an opened state is the one its record describes; a reason if not. */
export async function checkTemplate(opened: { fd: number; sha256: string }): Promise<string | undefined> {
  const sum = await hashFdAsync(opened.fd);
  return sum === opened.sha256 ? undefined : 'its state is damaged (its sha256 differs from its record)';
}

/** Make a freshly written state file the template: its record last, so that a record always describes a whole file. */
export function installTemplate(files: TemplateFiles, key: string, tmpState: string): void {
  fs.chmodSync(tmpState, 0o600);
  const meta: TemplateMeta = { format: TEMPLATE_FORMAT, key, size: fs.statSync(tmpState).size, sha256: hashFile(tmpState) };
  const fd = fs.openSync(tmpState, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmpState, files.state);
  writeFileAtomic(files.meta, `${JSON.stringify(meta)}\n`, 0o600);
  fsyncDir(path.dirname(files.state));
}

/** Forget a template (the record first: without it the state is never used). */
export function dropTemplate(files: TemplateFiles): void {
  fs.rmSync(files.meta, { force: true });
  fs.rmSync(files.state, { force: true });
}
