import { isErrno } from '../src/errors.js';
import { log } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { enableDebug, parseStopArgs } from '../src/stage1-common/entry.js';
import { isPodProcess, readPid } from '../src/stage1-common/status.js';

// rkt stop for fly: signal the run process, which forwards SIGTERM to every
// app and exits once they have. --force sends SIGKILL instead: the run
// process dies at once, and the apps follow (parent-death signal, and the
// pod guardian for apps that run as another user). It does not wait: stage0
// watches the pod lock for the end.

export function stop(argv: string[]): number {
  const args = parseStopArgs(argv);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  const pid = readPid(paths);
  if (pid === undefined || !isPodProcess(paths, pid)) {
    log().debug(`pod ${args.uuid} has no running stage1 process; nothing to stop`);
    return 0;
  }
  const sig = args.force ? 'SIGKILL' : 'SIGTERM';
  log().debug(`sending ${sig} to pod process ${pid}`);
  try {
    process.kill(pid, sig);
  } catch (err) {
    if (!isErrno(err, 'ESRCH')) throw err;
  }
  return 0;
}

