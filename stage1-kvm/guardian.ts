import fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { log } from '../src/log.js';
import { POD_FILES } from './pod-files.js';

// The pod guardian: a host shell, child of the run entrypoint but without a
// parent-death signal, that outlives it by a moment when it dies. qemu and
// virtiofsd die with the run entrypoint (their parent-death signal); what
// nobody could do then is say why the pod ended. The guardian reads lines on
// stdin: "PID STARTTIME" for each helper, "done" once the run entrypoint has
// finished normally. At end of input (the kernel closes the pipe whatever
// killed the run entrypoint) it kills any helper still running, recognized
// by its start time so that a recycled pid is never hit, and, unless told
// "done", records the exit cause for `rkt status` when some app has no exit
// status. It runs with the pod directory as working directory.

export const GUARDIAN_CAUSE = 'the stage1 run process was killed (rkt run killed?); the VM went down with it';

const SCRIPT = `trap '' INT TERM HUP QUIT
cause=$1 done=0 helpers=
while read -r a b; do
  case $a in done) done=1 ;; *) helpers="$helpers $a:$b" ;; esac
done
for h in $helpers; do
  pid=\${h%%:*}; start=\${h#*:}
  [ -r /proc/$pid/stat ] || continue
  read -r stat < /proc/$pid/stat || continue
  stat=\${stat##*") "}
  set -- $stat
  [ "\${20}" = "$start" ] && kill -9 "$pid" 2>/dev/null
done
[ "$done" = 1 ] && exit 0
[ -e ${POD_FILES.qemuPid} ] || [ -e stage1/rootfs/rkt/apps ] || exit 0
all=1
while IFS= read -r app || [ -n "$app" ]; do
  [ -n "$app" ] || continue
  [ -e "stage1/rootfs/rkt/status/$app" ] || all=0
done < stage1/rootfs/rkt/apps
if [ "$all" = 0 ] && [ ! -e exit-cause ]; then
  printf '%s\\n' "$cause" > .exit-cause.guardian && mv -f .exit-cause.guardian exit-cause
fi
exit 0
`;

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

  constructor(podDir: string) {
    const devNull = fs.openSync('/dev/null', 'r+');
    try {
      // fd 3 is /dev/null: the guardian must not keep the pod lock alive.
      this.child = spawn('/bin/sh', ['-c', SCRIPT, 'rkt-kvm-guardian', GUARDIAN_CAUSE], { cwd: podDir, stdio: ['pipe', devNull, 'inherit', devNull] });
    } finally {
      fs.closeSync(devNull);
    }
    this.child.stdin?.on('error', () => undefined);
    this.child.on('error', (err) => log().debug(`pod guardian: ${err.message}`));
  }

  /** Have the guardian kill `pid` if this process dies without saying done. */
  watch(pid: number): void {
    const start = processStartTime(pid);
    if (start !== undefined) this.child.stdin?.write(`${pid} ${start}\n`);
  }

  /** Normal end: the guardian only cleans up leftovers, and records nothing. */
  async done(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.stdin?.end('done\n');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(t);
  }
}
