import fs from 'node:fs';
import path from 'node:path';

// What a test needs from the host. scripts/setup.sh installs and builds all
// of it, so a missing piece is a broken set-up: the test fails saying what
// to install or run, it never skips.

/** Throws unless this process runs as root. */
export function needRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new Error(`${what} need root: run them as root (npm test does, after scripts/setup.sh)`);
}

/** Throws unless `file` exists; `remedy` says how to get it. */
export function needFile(file: string, remedy: string): void {
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: ${remedy}`);
}

/** The path of command `name` (sbin included, where root's tools live), or a failure naming its Debian package. */
export function needCommand(name: string, debPackage: string): string {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const d of dirs) {
    if (d === '') continue;
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not in this directory
    }
  }
  throw new Error(`${name} is not installed: install the Debian package ${debPackage} (scripts/setup.sh does)`);
}
