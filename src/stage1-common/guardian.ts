import fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { log } from '../log.js';

// A pod guardian: a host shell, child of a run entrypoint but without a
// parent-death signal, so that it outlives the entrypoint by a moment when
// that is killed. Each flavor gives it a script that reads lines on stdin
// ("PID STARTTIME" for each process to kill, "done" at a normal end, and
// whatever else the flavor's script understands); at end of input (the
// kernel closes the pipe whatever killed the entrypoint) the script cleans
// up. It runs with the pod directory as working directory.

/** Field 22 of /proc/PID/stat (start time in clock ticks), or undefined if the process is gone. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export class Guardian {
  private readonly child: ChildProcess;

  constructor(podDir: string, script: string, name: string, args: string[], opts: { stderr: 'inherit' | 'ignore' }) {
    const devNull = fs.openSync('/dev/null', 'r+');
    try {
      // fd 3 is /dev/null: the guardian must not keep the pod lock alive, nor any output pipe open.
      // its own process group: a ^C at rkt's terminal must not kill the pod's watchdog
      this.child = spawn('/bin/sh', ['-c', script, name, ...args], { cwd: podDir, stdio: ['pipe', devNull, opts.stderr === 'inherit' ? 'inherit' : devNull, devNull], detached: true });
    } finally {
      fs.closeSync(devNull);
    }
    this.child.stdin?.on('error', () => undefined);
    this.child.on('error', (err) => log().debug(`pod guardian: ${err.message}`));
  }

  /** Send one line of the flavor's script protocol. */
  send(line: string): void {
    this.child.stdin?.write(`${line}\n`);
  }

  /** Have the guardian kill `pid` if the entrypoint dies without saying done; the start time guards against a recycled pid. */
  watch(pid: number): void {
    const start = processStartTime(pid);
    if (start !== undefined) this.send(`${pid} ${start}`);
  }

  /**
   * The pod's apps: should the entrypoint die, the guardian records why the
   * pod ended unless each has an exit status (in the host-written
   * exit-status/ directory; nothing in the pod's root is ever read).
   */
  watchApps(names: readonly string[]): void {
    for (const n of names) this.send(`app ${n}`);
  }

  /** Normal end: tell the guardian, and wait for it to finish. */
  async done(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.stdin?.end('done\n');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(t);
  }
}
