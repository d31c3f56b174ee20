import { isErrno } from '../src/errors.js';
import { log } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { enableDebug, parseStopArgs } from '../src/stage1-common/entry.js';
import { isPodProcess, readPid } from '../src/stage1-common/status.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { KVM_TIMEOUTS, stopTimeoutMs } from './config.js';
import { QmpClient, QmpConnectError } from './qmp.js';
import { isPodHelper, readPidFile, socketPath } from './pod-files.js';

// rkt stop for kvm, over qemu's second QMP socket (the run entrypoint holds
// the first): press the ACPI power button, so that systemd in the guest
// stops the apps (SIGTERM, their exit statuses recorded) and powers off;
// if the VM is still there after RKT_KVM_STOP_TIMEOUT seconds (default 10),
// tell qemu to quit, and kill it if even that fails. --force quits at once.
// It returns once qemu is gone; the run entrypoint then finishes the pod.


/** Say in `rkt status` why the pod ended, before ending it: the run entrypoint only sees qemu go. */
function recordCause(paths: PodPaths, cause: string): void {
  try {
    writeFileAtomic(paths.exitCause, `${cause}\n`);
  } catch (err) {
    log().debug(`cannot write ${paths.exitCause}: ${(err as Error).message}`);
  }
}

function killQemu(paths: PodPaths, why: string): void {
  const pid = readPidFile(paths.dir, 'qemuPid');
  if (pid === undefined || !isPodHelper(paths.dir, pid)) return;
  log().debug(`killing qemu (pid ${pid}): ${why}`);
  try {
    recordCause(paths, `rkt stop: ${why}; qemu killed`);
    process.kill(pid, 'SIGKILL');
  } catch (err) {
    if (!isErrno(err, 'ESRCH')) throw err;
  }
}

/** No VM to talk to (not started yet, or gone): signal the run entrypoint, which handles the rest. */
function signalRun(paths: PodPaths, force: boolean): number {
  const pid = readPid(paths);
  if (pid === undefined || !isPodProcess(paths, pid)) {
    log().debug('no running stage1 process; nothing to stop');
    return 0;
  }
  log().debug(`no VM to talk to; sending ${force ? 'SIGKILL' : 'SIGTERM'} to the run process ${pid}`);
  try {
    process.kill(pid, force ? 'SIGKILL' : 'SIGTERM');
  } catch (err) {
    if (!isErrno(err, 'ESRCH')) throw err;
  }
  return 0;
}

export async function stop(argv: string[]): Promise<number> {
  const args = parseStopArgs(argv);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(socketPath(paths.dir, 'qmpCtl'), { timeoutMs: KVM_TIMEOUTS.quitMs, retryUntilMs: KVM_TIMEOUTS.stopConnectMs });
  } catch (err) {
    if (!(err instanceof QmpConnectError)) throw err;
    log().debug(err.message);
    return signalRun(paths, args.force);
  }
  try {
    if (!args.force) {
      log().debug('pressing the power button');
      await qmp.systemPowerdown();
      const timeout = stopTimeoutMs();
      try {
        await qmp.waitForClose({ timeoutMs: timeout });
        log().debug('the guest powered off');
        return 0;
      } catch {
        log().debug(`the guest did not power off within ${timeout / 1000} s; quitting qemu`);
        recordCause(paths, `rkt stop: the guest did not power off within ${timeout / 1000} s; qemu was told to quit`);
      }
    } else {
      recordCause(paths, 'rkt stop --force: qemu was told to quit');
    }
    try {
      await qmp.quit({ timeoutMs: KVM_TIMEOUTS.quitMs });
      log().debug('qemu quit');
    } catch (err) {
      killQemu(paths, `qemu did not quit (${(err as Error).message})`);
    }
    return 0;
  } finally {
    await qmp.close();
  }
}

