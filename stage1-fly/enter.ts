import { spawn } from 'node:child_process';
import { RktError } from '../src/errors.js';
import { log } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { loadAppSpecs, pickApp } from '../src/stage1-common/app-spec.js';
import { enableDebug, parseEnterArgs } from '../src/stage1-common/entry.js';
import { exitStatusOf, isPodProcess } from '../src/stage1-common/status.js';
import { appCommand, appEnv, findHostTools } from './exec.js';

// rkt enter for fly: the app rootfs is mounted only in the run process's
// mount namespace, so nsenter joins that first; from there the same
// setpriv/unshare composition as `run` (see exec.ts) puts the command in the
// app's chroot, working directory, credentials and environment.
//
//   nsenter --mount --target=PID -- setpriv ... -- unshare --root=... -- CMD...

export async function enter(argv: string[]): Promise<number> {
  const args = parseEnterArgs(argv);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  if (!isPodProcess(paths, args.pid)) throw new RktError(`process ${args.pid} is not this pod's stage1; the pod is not running`);
  const spec = pickApp(loadAppSpecs(paths), args.appName);
  const tools = findHostTools();
  const argvOut = [tools.nsenter, '--mount', `--target=${args.pid}`, '--', ...appCommand(tools, spec, args.command)];
  // A terminal program needs TERM; the app's own value wins if it has one.
  const extra: Record<string, string> = process.env.TERM ? { TERM: process.env.TERM } : {};
  log().debug({ argv: argvOut }, `entering app ${spec.name}`);
  const child = spawn(argvOut[0]!, argvOut.slice(1), { stdio: 'inherit', env: appEnv(spec, extra) });
  // The command shares our terminal and process group, so ^C reaches it
  // directly; we only must not die of it before the command does.
  const forward = (sig: NodeJS.Signals) => {
    if (sig !== 'SIGINT') child.kill(sig);
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, forward);
  return new Promise((resolve, reject) => {
    child.once('error', (err) => reject(new RktError(`cannot run ${tools.nsenter}: ${err.message}`)));
    child.once('exit', (code, signal) => resolve(exitStatusOf({ code, signal })));
  });
}

