import fs from 'node:fs';
import { isErrno } from '../src/errors.js';
import { log } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { enableDebug, parseStopArgs } from '../src/stage1-common/entry.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { NSPAWN_TIMEOUTS, stopTimeoutMs } from './config.js';
import { SIGRTMIN_PLUS_4 } from './container.js';
import { alive, runningPodInit, runningRunProcess } from './pod-process.js';

// rkt stop for nspawn: SIGRTMIN+4 to the pod's systemd, which powers off in
// order: each app gets SIGTERM (SIGKILL after 5 s), its exit hook records
// its status, and systemd exits; nspawn and then the run entrypoint follow.
// If the pod is still there after RKT_NSPAWN_STOP_TIMEOUT seconds (default
// 10), or with --force at once, its init gets SIGKILL, which ends its whole
// PID namespace. It returns once the pod's init is gone and the run
// entrypoint has released the pod's network (bounded wait). A pod whose
// container is not up yet is stopped by signalling the run entrypoint.

const KILL_WAIT_MS = NSPAWN_TIMEOUTS.killWaitMs;

async function gone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return !alive(pid);
}

function signal(pid: number, sig: number | NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if (!isErrno(err, 'ESRCH')) throw err;
  }
}

function killPod(paths: PodPaths, pid: number, why: string): void {
  log().debug(`killing the pod's init (pid ${pid}): ${why}`);
  if (!fs.existsSync(paths.exitCause)) writeFileAtomic(paths.exitCause, `rkt stop: ${why}; the pod was killed\n`);
  signal(pid, 'SIGKILL');
}

export async function stop(argv: string[]): Promise<number> {
  const args = parseStopArgs(argv);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  const pid = runningPodInit(paths, args.uuid);
  if (pid === undefined) {
    // not booted yet (or already gone): the run entrypoint gives up starting it
    const run = runningRunProcess(paths);
    if (run === undefined) {
      log().debug(`pod ${args.uuid} has no running container; nothing to stop`);
      return 0;
    }
    log().debug(`pod ${args.uuid} has no container yet; signalling the run entrypoint (pid ${run})`);
    signal(run, args.force ? 'SIGKILL' : 'SIGTERM');
    return 0;
  }
  const run = runningRunProcess(paths);
  if (args.force) {
    killPod(paths, pid, '--force');
  } else {
    log().debug(`asking the pod's systemd (pid ${pid}) to power off`);
    signal(pid, SIGRTMIN_PLUS_4);
    const timeout = stopTimeoutMs();
    if (await gone(pid, timeout)) return waitForRun(run);
    killPod(paths, pid, `the pod did not stop within ${timeout / 1000} s`);
  }
  if (!(await gone(pid, KILL_WAIT_MS))) log().warn(`the pod's init (pid ${pid}) is still there after SIGKILL`);
  return waitForRun(run);
}

/**
 * Once the container is gone the run entrypoint tears the pod's network
 * down and exits; waiting for it means that when rkt stop returns, the
 * pod's address and forwarded ports are free again.
 */
async function waitForRun(run: number | undefined): Promise<number> {
  if (run !== undefined && !(await gone(run, KILL_WAIT_MS))) log().debug(`the run entrypoint (pid ${run}) is still finishing; rkt gc cleans up after it if it does not`);
  return 0;
}

