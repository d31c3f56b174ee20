import { spawn } from 'node:child_process';
import os from 'node:os';
import { mapProcess, type ProcessIdentity } from './config.js';
import { consoleOf, entrypointOnApp, readJson, waitExit, writePidFile, type Ctx } from './commands.js';
import { OciError } from './errors.js';
import { currentStatus } from './state.js';
import { spawnDetached } from './standin.js';
import { enterProcessArgs, type EnterProcess } from '../stage1-common/enter-process.js';
import { enterArgv } from '../stage1/args.js';

// runc exec: a process.json run in a container's app by the stage1's enter
// entrypoint, as `rkt enter` runs it, with the process's own environment,
// working directory and user in place of the app's (docs/stage1-interface.md).

export interface ExecOptions {
  process?: string;
  detach: boolean;
  pidFile?: string;
  consoleSocket?: string;
  tty: boolean;
}

/** The process spec's environment, directory and user, all of them: runc runs an exec with exactly its spec's. */
export function enterProcessOf(p: ProcessIdentity): EnterProcess {
  return {
    env: p.env.map((e) => ({ name: e.slice(0, e.indexOf('=')), value: e.slice(e.indexOf('=') + 1) })),
    workingDirectory: p.cwd,
    uid: p.uid,
    gid: p.gid,
    supplementaryGids: p.additionalGids,
  };
}

/** runc exec: the process runs through the enter entrypoint in the container's app; resolves to its exit status (0 when detached). */
export async function exec(ctx: Ctx, id: string, opts: ExecOptions): Promise<number> {
  const st = ctx.states.read(id);
  if (currentStatus(st) !== 'running') throw new OciError(`cannot exec in a container that is not running (it is ${currentStatus(st)})`);
  if (st.role === 'sandbox') throw new OciError(`container ${id} is a sandbox, which runs no process of its own in this runtime; exec in one of its containers`);
  if (opts.process === undefined) throw new OciError('exec needs --process FILE (a process.json)');
  const p = mapProcess(readJson(opts.process, 'the process'), 'process');
  const console = consoleOf(ctx, p.terminal || opts.tty, opts.consoleSocket);
  const { flags, env } = enterProcessArgs(enterProcessOf(p.identity));
  const enter = entrypointOnApp(ctx, st.podUuid, st.app!, 'enter', (pid) => enterArgv({ pid, appName: st.app!, processFlags: flags }, p.exec), env);
  if (opts.detach || console) {
    const proc = await spawnDetached(enter.argv, { stdio: 'inherit', cwd: enter.cwd, env: enter.env, ...(console && { console }) });
    writePidFile(opts.pidFile, proc.pid);
    if (opts.detach) return 0;
    await waitExit(proc.pid, proc.pidStart, Number.MAX_SAFE_INTEGER);
    // not our child once the helper has made it a session leader: its status is the shim's to read
    return 0;
  }
  const child = spawn(enter.argv[0]!, enter.argv.slice(1), { stdio: 'inherit', cwd: enter.cwd, env: { ...process.env, ...enter.env } });
  if (child.pid === undefined) throw new OciError(`cannot run ${enter.argv[0]}`);
  writePidFile(opts.pidFile, child.pid);
  return new Promise((resolve) => child.once('exit', (c, s) => resolve(c ?? 128 + (os.constants.signals[s as NodeJS.Signals] ?? 0))));
}
