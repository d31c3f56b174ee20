import fs from 'node:fs';
import path from 'node:path';

// Entrypoints run host programs (setpriv, nsenter, qemu, systemd-nspawn) by
// absolute path, found in PATH and then in the system directories, since
// stage0 may have been started with a minimal PATH.

const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

export function executable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** An executable on the host, searched in PATH and the system directories. */
export function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter((d) => d.startsWith('/')), ...SYSTEM_DIRS];
  return dirs.map((d) => path.join(d, name)).find(executable);
}
