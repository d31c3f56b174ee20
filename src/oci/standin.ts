import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { processStart } from './state.js';

// The process the shim sees for a container: it lives exactly as long as
// the app, exits with its status, and connects the app's streams to the
// stdio the shim gave create. The app itself is a unit in its pod, not our
// child, so a small POSIX shell script stands in for it:
//   - it starts `rkt attach --mode=stdin,stdout,stderr` on the app (the
//     app's streams are in rkt's stream mode), with the shim's stdio;
//   - it watches the exit status file the stage1 writes for the app
//     (exit-status/<app> in the pod directory) and exits with that status,
//     once the attach has drained the app's output (5 s at most);
//   - if the app is taken out of the pod before it ran (its appsinfo
//     directory goes) or the pod ends without a status for it, it exits 137,
//     as a killed process would.
// The shell costs well under a megabyte resident; the attach is a node
// process (tens of megabytes) for as long as the app runs.

const SCRIPT = [
  'st=$1; info=$2; pod=$3; shift 3; a=',
  // an asynchronous command's stdin is /dev/null unless redirected from a saved copy
  'if [ $# -gt 0 ]; then exec 3<&0; "$@" <&3 3<&- & a=$!; exec 3<&-; fi',
  'finish() { if [ -n "$a" ]; then i=0; while kill -0 $a 2>/dev/null && [ $i -lt 25 ]; do sleep 0.2; i=$((i+1)); done; kill $a 2>/dev/null; fi; exit "$1"; }',
  // read fails at the end of a file without a newline (the status file has none) but still sets s
  'status() { s=; [ -f "$st" ] && read -r s < "$st"; [ -n "$s" ]; }',
  'while :; do',
  '  if status; then finish "$s"; fi',
  '  if [ ! -d "$info" ] || ! kill -0 "$pod" 2>/dev/null; then if status; then finish "$s"; fi; finish 137; fi',
  '  sleep 0.2',
  'done',
].join('\n');

export interface StandIn {
  pid: number;
  pidStart: string;
}

export interface StandInOptions {
  /** The app's exit status file in the pod directory. */
  statusFile: string;
  /** The app's appsinfo directory. */
  appInfoDir: string;
  /** The process running the app's pod (rkt app sandbox): when it is gone, so is the app. */
  podPid: number;
  /** The command connecting the app's streams to ours (rkt attach), if any. */
  attach?: string[];
}

/** Start the stand-in; it outlives us (the shim, a subreaper, inherits it) and has our stdio. */
export async function spawnStandIn(opts: StandInOptions): Promise<StandIn> {
  const args = ['-c', SCRIPT, 'rkt-oci-standin', opts.statusFile, opts.appInfoDir, String(opts.podPid), ...(opts.attach ?? [])];
  const child = spawn('/bin/sh', args, { detached: true, stdio: opts.attach ? 'inherit' : 'ignore' });
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error("cannot start the container's stand-in process (/bin/sh)");
  for (let i = 0; i < 100; i++) {
    const start = processStart(pid);
    if (start !== undefined) return { pid, pidStart: start };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`the container's stand-in process ${pid} ended at once`);
}

/** Whether fd is /dev/null (what the shim leaves a stream it does not want as). */
export function isDevNull(fd: number): boolean {
  try {
    const st = fs.fstatSync(fd);
    const dn = fs.statSync('/dev/null');
    return st.isCharacterDevice() && st.rdev === dn.rdev;
  } catch {
    return true;
  }
}
