import fs from 'node:fs';
import { Guardian } from '../src/stage1-common/guardian.js';
import type { PodPaths } from '../src/stage1/contract.js';
import { isPodProcess, readPid } from '../src/stage1-common/status.js';

// The pod's processes as the host sees them. The pid file holds the
// container's PID 1 (the stage1 contract's first option): `rkt enter` joins
// its namespaces, `rkt stop` signals it. A pid file outlives its process
// and pids are recycled, so a pid is only ever acted on once it is proven
// to be this pod's init: PID 1 of its own PID namespace, carrying the pod's
// UUID in the environment nspawn gave it (container_uuid, from
// /etc/machine-id, which the run entrypoint sets to the pod UUID).

function nsPid(pid: number): number[] | undefined {
  try {
    const line = fs
      .readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('NSpid:'));
    return line?.slice(6).trim().split(/\s+/).map(Number);
  } catch {
    return undefined;
  }
}

function normalizeUuid(u: string): string {
  return u.replace(/-/g, '').toLowerCase();
}

/** Whether `pid` is the init of the container running pod `uuid`. */
export function isPodInit(pid: number, uuid: string): boolean {
  const ns = nsPid(pid);
  if (ns === undefined || ns.length < 2 || ns.at(-1) !== 1) return false;
  try {
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    const v = env.find((e) => e.startsWith('container_uuid='))?.slice('container_uuid='.length);
    return v !== undefined && normalizeUuid(v) === normalizeUuid(uuid);
  } catch {
    return false;
  }
}

/** The run entrypoint's own pid, for stopping a pod whose container is not up yet. */
export const RUN_PID_FILE = 'nspawn-run.pid';

/** The run entrypoint, if it is still running this pod (it never leaves the pod directory). */
export function runningRunProcess(paths: PodPaths): number | undefined {
  try {
    const pid = Number(fs.readFileSync(`${paths.dir}/${RUN_PID_FILE}`, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 && isPodProcess(paths, pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The pod's init from the pid file, if it is alive and really the pod's. */
export function runningPodInit(paths: PodPaths, uuid: string): number | undefined {
  const pid = readPid(paths);
  return pid !== undefined && isPodInit(pid, uuid) ? pid : undefined;
}

function childrenOf(pid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter((s) => s !== '')
      .map(Number);
  } catch {
    // no CONFIG_PROC_CHILDREN: scan
    const out: number[] = [];
    for (const d of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
        if (Number(stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[1]) === pid) out.push(Number(d));
      } catch {
        // gone
      }
    }
    return out;
  }
}

/** The container's init among nspawn's children: PID 1 of a PID namespace of its own. */
export function containerInitOf(nspawnPid: number): number | undefined {
  for (const c of childrenOf(nspawnPid)) {
    const ns = nsPid(c);
    if (ns !== undefined && ns.length >= 2 && ns.at(-1) === 1) return c;
  }
  return undefined;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// The guardian: a host shell, child of the run entrypoint but without a
// parent-death signal. nspawn dies with the run entrypoint (its
// parent-death signal), but the container's init does not die with nspawn:
// it is reparented and the pod would run on unseen. The guardian reads
// "PID STARTTIME" and "app NAME" lines on stdin, and "done" when the run entrypoint ends
// normally; at end of input (the kernel closes the pipe however the run
// entrypoint died) it SIGKILLs each still-running process it was given,
// recognized by its start time so that a recycled pid is never hit. Killing
// the container's init kills its whole PID namespace. Then it removes the
// pod's cgroups once they are empty, and records why the pod ended if not
// every app could say it itself.
const SCRIPT = `trap '' INT TERM HUP QUIT
cause=$1; shift
done=0 procs= apps=
while read -r a b; do
  case $a in
    done) done=1 ;;
    app) apps="$apps $b" ;;
    cgroup) set -- "$@" "$b" ;;
    *) procs="$procs $a:$b" ;;
  esac
done
[ "$done" = 1 ] && exit 0
remove_cgroups() {
  left=0
  for d in "$@"; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    [ -d "$d" ] && left=1
  done
  return $left
}
for p in $procs; do
  pid=\${p%%:*}; start=\${p#*:}
  [ -r /proc/$pid/stat ] || continue
  read -r stat < /proc/$pid/stat || continue
  fields=\${stat##*") "}
  start_now=$(echo "$fields" | cut -d' ' -f20)
  [ "$start_now" = "$start" ] && kill -9 "$pid" 2>/dev/null
done
# the killed processes leave their cgroups within moments
n=0
until remove_cgroups "$@" || [ $n -ge 30 ]; do sleep 0.1; n=$((n + 1)); done
all=1
for app in $apps; do
  [ -e "exit-status/$app" ] || all=0
done
if [ "$all" = 0 ] && [ ! -e exit-cause ]; then
  printf '%s\\n' "$cause" > .exit-cause.guardian && mv -f .exit-cause.guardian exit-cause
fi
exit 0
`;

export const GUARDIAN_CAUSE = 'the stage1 run process was killed (rkt run killed?); the pod went down with it';

/** The nspawn flavor's guardian: kills the pod's processes, removes its cgroups, records why the pod ended. */
export class NspawnGuardian extends Guardian {
  constructor(podDir: string) {
    super(podDir, SCRIPT, 'rkt-nspawn-guardian', [GUARDIAN_CAUSE], { stderr: 'ignore' });
  }

  /** Have the guardian remove this cgroup directory tree if this process dies without saying done. */
  watchCgroup(dir: string): void {
    this.send(`cgroup ${dir}`);
  }
}
