import { createRequire } from 'node:module';

// Pseudo-terminals for apps in tty mode. Node has no openpty() or
// TIOCSWINSZ; node-pty's addon has both. Only the addon is loaded (the
// stage1 image carries it next to the entrypoints' bundles, like fs-ext),
// not node-pty's JavaScript, which would fork a process per terminal.

interface PtyAddon {
  open(cols: number, rows: number): { master: number; slave: number; pty: string };
  resize(fd: number, cols: number, rows: number): void;
}

let addon: PtyAddon | undefined;

function load(): PtyAddon {
  addon ??= createRequire(import.meta.url)('node-pty/build/Release/pty.node') as PtyAddon;
  return addon;
}

export interface Pty {
  /** The master, kept by the relay. */
  master: number;
  /** The slave, kept open too: a master whose slave nobody holds reads EIO. */
  slave: number;
  /** The slave's path on the host (/dev/pts/N). */
  path: string;
}

export function openPty(cols = 80, rows = 24): Pty {
  const t = load().open(cols, rows);
  return { master: t.master, slave: t.slave, path: t.pty };
}

/** Set the terminal's size; the app gets SIGWINCH. Zero or out-of-range sizes are ignored. */
export function resizePty(master: number, cols: number, rows: number): void {
  if (cols < 1 || rows < 1 || cols > 0xffff || rows > 0xffff) return;
  load().resize(master, cols, rows);
}
