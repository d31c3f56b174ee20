import fs from 'node:fs';
import { log } from '../log.js';
import { interruptedCause } from '../stage1-common/status.js';
import type { PodPaths } from './contract.js';
import { entrypointCommand, type InvokeOptions } from './invoke.js';
import { useLauncherChannel } from './launcher-channel.js';

// rkt's stage0 exec()s the stage1 run entrypoint and is gone; Node.js cannot
// exec. bin/rkt therefore starts stage0 under a small launcher
// (src/launcher/rkt-launch.c) that can: stage0 prepares the pod, hands the
// launcher an exec plan and exits, and the launcher starts the entrypoint
// and stays as the pod's stage0 (signals, exit status, the locks), a few
// hundred KiB in place of a Node.js process for the pod's whole life. The
// plan's format is described in the launcher.

export interface HandOverOptions extends Required<Pick<InvokeOptions, 'lockFd' | 'isolateMounts' | 'ownProcessGroup'>> {
  env?: NodeJS.ProcessEnv;
  /** Other descriptors (shared locks) to keep open while the pod runs. */
  holdFds: number[];
  /** Where stage0 records why a pod ended when its entrypoint was killed before it listened, and where app statuses appear. */
  exitCause: string;
  statusDir: string;
}

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** The plan as the launcher reads it: a little-endian length, then NUL-terminated fields. */
export function encodePlan(cwd: string, command: string[], env: NodeJS.ProcessEnv, opts: HandOverOptions): Buffer {
  const envList = Object.entries(env)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  const fields = [
    'rkt-plan-1',
    cwd,
    opts.ownProcessGroup ? '1' : '0',
    opts.isolateMounts ? '1' : '0',
    String(opts.lockFd),
    String(opts.holdFds.length),
    ...opts.holdFds.map(String),
    opts.exitCause,
    opts.statusDir,
    ...STOP_SIGNALS.map(interruptedCause),
    String(command.length),
    ...command,
    String(envList.length),
    ...envList,
  ];
  if (fields.some((f) => f.includes('\0'))) throw new Error('a stage1 plan field holds a NUL byte');
  const body = Buffer.from(fields.map((f) => `${f}\0`).join(''));
  const head = Buffer.alloc(4);
  head.writeUInt32LE(body.length);
  return Buffer.concat([head, body]);
}

/**
 * Hand the pod's run entrypoint to the launcher, if bin/rkt started us
 * through one. Returns false when there is none or it refused (the caller
 * then runs the entrypoint itself); when it took the pod this process exits
 * at once, without touching the locks (they are the launcher's now).
 */
export function handOverRunEntrypoint(paths: PodPaths, args: (version: number) => string[], opts: HandOverOptions): boolean {
  const channel = useLauncherChannel();
  if (channel === undefined) return false;
  const { command, env, version } = entrypointCommand(paths, 'run', args, opts);
  const plan = encodePlan(paths.dir, command, env, opts);
  log().debug({ argv: command, cwd: paths.dir, version }, 'handing the stage1 run entrypoint to the launcher');
  let answer: Buffer;
  try {
    const out = fs.openSync(`/proc/${channel.pid}/fd/${channel.plan}`, fs.constants.O_WRONLY);
    const back = fs.openSync(`/proc/${channel.pid}/fd/${channel.answer}`, fs.constants.O_RDONLY);
    fs.writeSync(out, plan);
    fs.closeSync(out);
    answer = Buffer.alloc(1);
    const n = fs.readSync(back, answer, 0, 1, null);
    fs.closeSync(back);
    if (n !== 1) return false;
  } catch (err) {
    log().debug({ err }, 'the launcher cannot take the pod; stage0 runs its entrypoint itself');
    return false;
  }
  if (answer.toString() !== '1') {
    log().debug('the launcher refused the pod; stage0 runs its entrypoint itself');
    return false;
  }
  process.exit(0);
}
