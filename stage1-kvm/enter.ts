import os from 'node:os';
import { RktError } from '../src/errors.js';
import { log, say } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { loadAppSpecs, pickApp } from '../src/stage1-common/app-spec.js';
import { enableDebug, parseEnterArgs } from '../src/stage1-common/entry.js';
import { isPodProcess } from '../src/stage1-common/status.js';
import { AgentExecError, AgentInterruptedError, runInGuest } from './agent-client.js';
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
  // With a terminal, ^C is a keystroke for the guest, and a signal (the
  // terminal hung up, a kill) ends the session at once: disconnecting makes
  // the agent kill the command. Without, the first is passed on to the
  // command, a second one disconnects (agent-client.ts).
  const abort = new AbortController();
  let endedBy: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    endedBy ??= sig;
    abort.abort();
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  if (tty) for (const sig of signals) process.once(sig, onSignal);
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
      {
        forwardSignals: tty ? [] : [...signals],
        signal: abort.signal,
        onWait: () => say(`another rkt enter session of this pod is running; waiting for it to end`),
      },
    );
  } catch (err) {
    if (endedBy !== undefined) return 128 + os.constants.signals[endedBy];
    // Not started: 127 not found, 126 not executable, 125 setup, as shells and docker exec say it.
    if (!(err instanceof AgentExecError) && !(err instanceof AgentInterruptedError)) throw err;
    say(err.message);
    return err.exitCode;
  } finally {
    for (const sig of signals) process.removeListener(sig, onSignal);
  }
}

