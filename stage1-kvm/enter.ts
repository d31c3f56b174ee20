import { RktError } from '../src/errors.js';
import { log, say } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { loadAppSpecs, pickApp } from '../src/stage1-common/app-spec.js';
import { enableDebug, parseEnterArgs } from '../src/stage1-common/entry.js';
import { isPodProcess } from '../src/stage1-common/status.js';
import { AgentExecError, runInGuest } from './agent-client.js';
import { socketPath } from './pod-files.js';

// rkt enter for kvm: the command runs in the VM, in the app's rootfs with
// the app's credentials, environment and working directory, started by the
// guest agent over the virtio-serial port rkt.agent (guest/agent/PROTOCOL.md).
// No SSH, no network: the port is a socket in the pod directory.

export async function enter(argv: string[]): Promise<number> {
  const args = parseEnterArgs(argv);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  if (!isPodProcess(paths, args.pid)) throw new RktError(`process ${args.pid} is not this pod's stage1; the pod is not running`);
  const spec = pickApp(loadAppSpecs(paths), args.appName);
  const env = spec.env.map((e) => `${e.name}=${e.value}`);
  // A terminal program needs TERM; the app's own value wins if it has one.
  if (process.env.TERM && !spec.env.some((e) => e.name === 'TERM')) env.push(`TERM=${process.env.TERM}`);
  const tty = process.stdin.isTTY === true && process.stdout.isTTY === true;
  log().debug(`entering app ${spec.name}${tty ? ' with a terminal' : ''}: ${args.command.join(' ')}`);
  try {
    return await runInGuest(
      socketPath(paths.dir, 'agent'),
      {
        app: spec.name,
        argv: args.command,
        env,
        uid: spec.uid,
        gid: spec.gid,
        supplementaryGids: spec.supplementaryGids,
        cwd: spec.workingDirectory,
        tty,
      },
      { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
      // with a terminal ^C is a keystroke for the guest; without, pass the signals on
      { forwardSignals: tty ? [] : ['SIGINT', 'SIGTERM', 'SIGHUP'] },
    );
  } catch (err) {
    // Not started: 127 not found, 126 not executable, 125 setup, as shells and docker exec say it.
    if (!(err instanceof AgentExecError)) throw err;
    say(err.message);
    return err.exitCode;
  }
}

