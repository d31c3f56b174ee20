import { spawn } from 'node:child_process';
import { processStart } from './state.js';

// The process the shim sees for a container: it lives exactly as long as
// the app and exits with its status. The app itself is a unit in its pod,
// not our child, so a tiny shell loop stands in for it: it watches the exit
// status file the stage1 writes for the app (exit-status/<app> in the pod
// directory) and exits with that status; if the app is removed before it
// ran (its appsinfo directory goes) it exits 137, as a killed process
// would. A POSIX shell costs well under a megabyte resident, against tens
// of megabytes for a node process; the price is a wake-up every 200 ms.

// read fails at the end of a file without a newline (the status file has none) but still sets s
const SCRIPT = 'while :; do if [ -f "$1" ]; then s=; read -r s < "$1"; if [ -n "$s" ]; then exit "$s"; fi; fi; [ -d "$2" ] || exit 137; sleep 0.2; done';

export interface StandIn {
  pid: number;
  pidStart: string;
}

/** Start the stand-in for the app whose exit status file and appsinfo directory are given; it outlives us (the shim inherits it). */
export async function spawnStandIn(statusFile: string, appInfoDir: string): Promise<StandIn> {
  const child = spawn('/bin/sh', ['-c', SCRIPT, 'rkt-oci-standin', statusFile, appInfoDir], { detached: true, stdio: 'ignore' });
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error('cannot start the container\'s stand-in process (/bin/sh)');
  for (let i = 0; i < 100; i++) {
    const start = processStart(pid);
    if (start !== undefined) return { pid, pidStart: start };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`the container's stand-in process ${pid} ended at once`);
}
