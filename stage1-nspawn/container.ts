import { setTimeout as sleep } from 'node:timers/promises';
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import fs from 'node:fs';
import { log } from '../src/log.js';
import { NspawnBootError } from './errors.js';
import { alive, containerInitOf } from './pod-process.js';

// One pod's container as the run entrypoint sees it: the systemd-nspawn
// process, the container's init inside it, and what nspawn and the pod's
// systemd said (its console), kept for error messages or shown live with
// --debug. nspawn is started through a shell that first moves itself into
// the pod's cgroups (so that nspawn, and the container, start there) and
// then execs setpriv, which arms the parent-death signal: nspawn dies with
// us, and the guardian takes care of the container it leaves behind.

export interface ContainerEnd {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ContainerConfig {
  argv: string[];
  env: Record<string, string>;
  /** cgroup.procs files to join before nspawn starts. */
  cgroupProcs: string[];
  /** Give nspawn our terminal (--console=interactive). */
  terminal: boolean;
  /** Copy what nspawn and the pod's systemd say to our stderr as it comes. */
  showConsole: boolean;
}

const JOIN_AND_EXEC = `pid=$$
while [ "$1" != -- ]; do
  echo "$pid" > "$1" || { echo "stage1: cannot join cgroup $1" >&2; exit 125; }
  shift
done
shift
exec "$@"`;

const CONSOLE_LINES = 30;

/** systemd's "power off" signal, SIGRTMIN+4 with glibc's SIGRTMIN (34); node has no name for it. */
export const SIGRTMIN_PLUS_4 = 38;


export class PodContainer {
  private child!: ChildProcess;
  private endValue: ContainerEnd | undefined;
  private readonly consoleTail: string[] = [];
  private partial = '';
  ended!: Promise<ContainerEnd>;
  /** Host pid of the container's PID 1, once known. */
  init: number | undefined;

  constructor(readonly config: ContainerConfig) {}

  get pid(): number {
    return this.child.pid ?? 0;
  }

  get hasEnded(): boolean {
    return this.endValue !== undefined;
  }

  /** What nspawn and the pod's systemd said last. */
  lastConsoleLines(n = 10): string[] {
    const all = this.partial.trim() === '' ? this.consoleTail : [...this.consoleTail, this.partial];
    return all.slice(-n);
  }

  private onConsole(chunk: Buffer): void {
    if (this.config.showConsole) process.stderr.write(chunk);
    const lines = (this.partial + chunk.toString('utf8')).split(/\r?\n/);
    this.partial = lines.pop() ?? '';
    for (const l of lines) if (l.trim() !== '') this.consoleTail.push(l);
    if (this.consoleTail.length > CONSOLE_LINES) this.consoleTail.splice(0, this.consoleTail.length - CONSOLE_LINES);
  }

  /** Start nspawn; resolves once the container's init is known, rejects if nspawn ends first. */
  async start(onPid: (pid: number) => void): Promise<number> {
    const { argv, env, cgroupProcs, terminal } = this.config;
    const full = ['/bin/sh', '-c', JOIN_AND_EXEC, 'rkt-nspawn-launch', ...cgroupProcs, '--', 'setpriv', '--pdeathsig', 'KILL', '--', ...argv];
    log().debug({ argv: full }, 'starting systemd-nspawn');
    // fd 3 is /dev/null: the pod lock stage0 gave us (RKT_LOCK_FD) is ours alone to hold
    const devNull = fs.openSync('/dev/null', 'r+');
    const stdio: StdioOptions = terminal ? ['inherit', 'inherit', 'inherit', devNull] : ['ignore', 'pipe', 'pipe', devNull];
    try {
      // without a terminal to share, out of rkt's process group: a ^C there is the supervisor's stop request, not nspawn's
      this.child = spawn(full[0]!, full.slice(1), { stdio, env: { ...process.env, ...env }, detached: !terminal });
    } finally {
      fs.closeSync(devNull);
    }
    this.child.stdout?.on('data', (c: Buffer) => this.onConsole(c));
    this.child.stderr?.on('data', (c: Buffer) => this.onConsole(c));
    this.ended = new Promise((resolve) => {
      this.child.once('error', (err) => {
        this.onConsole(Buffer.from(`cannot start systemd-nspawn: ${err.message}\n`));
        this.endValue = { code: 127, signal: null };
        resolve(this.endValue);
      });
      this.child.once('exit', (code, signal) => {
        this.endValue = { code, signal };
        log().debug({ code, signal }, 'systemd-nspawn exited');
        resolve(this.endValue);
      });
    });
    if (this.child.pid !== undefined) onPid(this.child.pid);
    // nspawn forks the container's init within milliseconds of starting
    for (let i = 0; !this.hasEnded; i++) {
      const init = this.child.pid === undefined ? undefined : containerInitOf(this.child.pid);
      if (init !== undefined) {
        this.init = init;
        return init;
      }
      await sleep(i < 50 ? 2 : 20);
    }
    const why = this.lastConsoleLines(3).join(' / ') || `exit status ${this.endValue?.code ?? '?'}`;
    throw new NspawnBootError(`systemd-nspawn failed to start the pod's container: ${why}`);
  }

  /** Ask for an orderly stop: nspawn passes SIGRTMIN+4 (power off) to the pod's systemd. */
  powerOff(): void {
    if (this.hasEnded) return;
    log().debug('asking the pod to power off');
    if (this.init !== undefined && alive(this.init)) {
      try {
        process.kill(this.init, SIGRTMIN_PLUS_4);
        return;
      } catch {
        // gone, or not ours to signal: ask nspawn
      }
    }
    this.child.kill('SIGTERM');
  }

  /** Kill the container at once: SIGKILL to its init ends its whole PID namespace. */
  kill(): void {
    if (this.init !== undefined) {
      try {
        process.kill(this.init, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (!this.hasEnded) this.child.kill('SIGKILL');
  }
}
