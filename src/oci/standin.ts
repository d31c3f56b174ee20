import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { OciError } from './errors.js';
import { processStart } from './state.js';

// The process the shim sees for a container: it lives exactly as long as
// the app, exits with its status, and connects the app's streams to the
// stdio the shim gave create. The app itself is a unit in its pod, not our
// child, so a small POSIX shell script stands in for it:
//   - it starts the stage1's attach entrypoint on the app, as
//     `rkt attach --mode=stdin,stdout,stderr` would (the app's streams are in
//     rkt's stream mode), with the shim's stdio, and without a stage0
//     process of its own;
//   - it watches the exit status file the stage1 writes for the app
//     (exit-status/<app> in the pod directory) and exits with that status,
//     once the attach has drained the app's output (5 s at most);
//   - if the app is taken out of the pod before it ran (its appsinfo
//     directory goes) or the pod ends without a status for it, it exits 137,
//     as a killed process would.
// The shell costs under 2 MB resident; the attach entrypoint is a node
// process (about 50 MB) for as long as the app runs.

const SCRIPT = [
  // the shim closing a terminal's master hangs the terminal up: the status is still to be reported
  "trap '' HUP",
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
  /** The command connecting the app's streams to ours (the stage1's attach entrypoint), if any, its directory and environment. */
  attach?: { argv: string[]; cwd: string; env: NodeJS.ProcessEnv };
  /** A terminal: the console helper and runc's --console-socket (the attach runs on the terminal it makes). */
  console?: { helper: string; socket: string };
}

/** Start the stand-in; it outlives us (the shim, a subreaper, inherits it) and has our stdio, or the terminal it sent. */
export function spawnStandIn(opts: StandInOptions): Promise<StandIn> {
  const argv = ['/bin/sh', '-c', SCRIPT, 'rkt-oci-standin', opts.statusFile, opts.appInfoDir, String(opts.podPid), ...(opts.attach?.argv ?? [])];
  return spawnDetached(argv, { stdio: opts.attach ? 'inherit' : 'ignore', ...(opts.console && { console: opts.console }), ...(opts.attach && { cwd: opts.attach.cwd, env: opts.attach.env }) });
}

export interface DetachedOptions {
  stdio: 'inherit' | 'ignore';
  /** Run argv on a new terminal sent over runc's console socket (through the console helper). */
  console?: { helper: string; socket: string };
  cwd?: string;
  /** Added to ours. */
  env?: NodeJS.ProcessEnv;
}

/**
 * Start argv in its own session, to outlive us; resolves once argv runs
 * (past the console helper, which executes it in place), or rejects with
 * what the helper said if it ended first.
 */
export async function spawnDetached(argv: string[], opts: DetachedOptions): Promise<StandIn> {
  const helper = opts.console?.helper;
  const where = { ...(opts.cwd !== undefined && { cwd: opts.cwd }), env: { ...process.env, ...opts.env } };
  const child = helper
    ? // the helper makes its own session, with the terminal as its controlling one
      spawn(helper, [opts.console!.socket, ...argv], { stdio: ['ignore', 'ignore', 'pipe'], ...where })
    : spawn(argv[0]!, argv.slice(1), { detached: true, stdio: opts.stdio, ...where });
  let said = '';
  child.stderr?.on('data', (b: Buffer) => (said += b.toString()));
  const pid = child.pid;
  if (pid === undefined) throw new OciError(`cannot run ${helper ?? argv[0]}`);
  const helperExe = helper === undefined ? undefined : fs.realpathSync(helper);
  for (let i = 0; i < 500 && child.exitCode === null; i++) {
    const start = processStart(pid);
    if (start !== undefined && (helperExe === undefined || readExe(pid) !== helperExe)) {
      child.stderr?.destroy();
      child.unref();
      return { pid, pidStart: start };
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  await new Promise((r) => setTimeout(r, 20));
  throw new OciError(said.trim().split('\n').pop() || `${helper ?? argv[0]} (pid ${pid}) ended at once`);
}

function readExe(pid: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
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
