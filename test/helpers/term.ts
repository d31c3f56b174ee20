import pty from 'node-pty';

/** A command run at a pseudo-terminal, as a user at a terminal meets it. */
export interface Term {
  output: () => string;
  write: (s: string) => void;
  resize: (cols: number, rows: number) => void;
  /** Wait until the output so far matches; fails with the output after `ms`. */
  waitFor: (re: RegExp, ms?: number) => Promise<void>;
  exited: Promise<number>;
  kill: () => void;
}

export interface TermOptions {
  cwd: string;
  size?: { cols: number; rows: number };
  /** The default wait of waitFor (kvm pods boot slowly under tcg). */
  waitMs?: number;
}

export function spawnTerm(file: string, args: string[], opts: TermOptions): Term {
  const p = pty.spawn(file, args, { name: 'xterm', ...(opts.size ?? { cols: 100, rows: 30 }), cwd: opts.cwd, env: process.env as Record<string, string> });
  let out = '';
  let done = false;
  p.onData((d) => (out += d));
  const exited = new Promise<number>((r) =>
    p.onExit(({ exitCode }) => {
      done = true;
      r(exitCode);
    }),
  );
  return {
    output: () => out,
    write: (s) => p.write(s),
    resize: (cols, rows) => p.resize(cols, rows),
    waitFor: async (re, ms = opts.waitMs ?? 60_000) => {
      const end = Date.now() + ms;
      while (!re.test(out)) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${re} in terminal output:\n${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    exited,
    kill: () => {
      if (!done) p.kill('SIGKILL');
    },
  };
}

/** Resize the terminal and wait until the shell running in it reports the new size (stty size). */
export async function resizeAndCheck(term: Term, cols: number, rows: number, settleMs = 500): Promise<void> {
  term.resize(cols, rows);
  // SIGWINCH takes its way through the attach or run, then the pod
  await new Promise((r) => setTimeout(r, settleMs));
  term.write('stty size\r');
  await term.waitFor(new RegExp(`${rows} ${cols}`));
}
