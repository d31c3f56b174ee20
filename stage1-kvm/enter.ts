import os from 'node:os';
import { RktError } from '../src/errors.js';
import { log, say } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { loadAppSpecs, pickApp } from '../src/stage1-common/app-spec.js';
import { enteredAs } from '../src/stage1-common/enter-process.js';
import { enableDebug, parseEnterArgs } from '../src/stage1-common/entry.js';
import { isPodProcess } from '../src/stage1-common/status.js';
import { AgentExecError, AgentInterruptedError, runInGuest } from './agent-client.js';
import { agentSocketPaths } from './pod-files.js';

// rkt enter for kvm: the command runs in the VM, in the app's rootfs with
// the app's credentials, environment and working directory (or those the
// caller chose: enter-process.ts), started by the
// guest agent over the virtio-serial port rkt.agent (guest/agent/PROTOCOL.md).
// No SSH, no network: the port is a socket in the pod directory.

export async function enter(argv: string[]): Promise<number> {
  const args = parseEnterArgs(argv);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  if (!isPodProcess(paths, args.pid)) throw new RktError(`process ${args.pid} is not this pod's stage1; the pod is not running`);
  const spec = enteredAs(pickApp(loadAppSpecs(paths), args.appName), args.process);
  const env = spec.env.map((e) => `${e.name}=${e.value}`);
  // A terminal program needs TERM; the app's own value wins if it has one.
  if (process.env.TERM && !spec.env.some((e) => e.name === 'TERM')) env.push(`TERM=${process.env.TERM}`);
  const tty = process.stdin.isTTY === true && process.stdout.isTTY === true;
  log().debug(`entering app ${spec.name}${tty ? ' with a terminal' : ''}: ${args.command.join(' ')}`);
  // SIGTERM and SIGHUP end the session at once: disconnecting makes the
  // agent kill the command, so a command that ignores them (an interactive
  // shell does) cannot keep `rkt enter` alive. SIGINT too with a terminal,
  // where ^C is a keystroke for the guest and a SIGINT comes from kill;
  // without one, the first SIGINT is passed on to the command (a ^C), a
  // second one disconnects (agent-session.ts).
  const abort = new AbortController();
  let endedBy: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    endedBy ??= sig;
    abort.abort();
  };
  const ending = tty ? (['SIGINT', 'SIGTERM', 'SIGHUP'] as const) : (['SIGTERM', 'SIGHUP'] as const);
  for (const sig of ending) process.once(sig, onSignal);
  try {
    return await runInGuest(
      agentSocketPaths(paths.dir),
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
      {
        forwardSignals: tty ? [] : ['SIGINT'],
        signal: abort.signal,
        onWait: () => say(`every port of the pod's guest agent is in use by other rkt enter sessions; waiting for one to end`),
      },
    );
  } catch (err) {
    if (endedBy !== undefined) return 128 + os.constants.signals[endedBy];
    // Not started: 127 not found, 126 not executable, 125 setup, as shells and docker exec say it.
    if (!(err instanceof AgentExecError) && !(err instanceof AgentInterruptedError)) throw err;
    say(err.message);
    return err.exitCode;
  } finally {
    for (const sig of ending) process.removeListener(sig, onSignal);
  }
}

