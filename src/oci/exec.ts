import { spawn } from 'node:child_process';
import os from 'node:os';
import { mapProcess, type ProcessIdentity } from './config.js';
import { consoleOf, readJson, waitExit, writePidFile, type Ctx } from './commands.js';
import { OciError } from './errors.js';
import { currentStatus } from './state.js';
import { spawnDetached } from './standin.js';

// runc exec: a process.json run in a container's app through rkt enter,
// which runs a command as its app runs (environment, directory, user).

export interface ExecOptions {
  process?: string;
  detach: boolean;
  pidFile?: string;
  consoleSocket?: string;
  tty: boolean;
}

function sameIdentity(mine: ProcessIdentity, theirs: ProcessIdentity): void {
  const differs = (field: string) => new OciError(`process.${field} differs from the container's; rkt enter runs a command with its app's ${field === 'env' ? 'environment' : field}`);
  if ([...mine.env].sort().join('\0') !== [...theirs.env].sort().join('\0')) throw differs('env');
  if (mine.cwd !== theirs.cwd) throw differs('cwd');
  if (mine.uid !== theirs.uid) throw differs('user.uid');
  if (mine.gid !== theirs.gid) throw differs('user.gid');
  if ([...mine.additionalGids].sort().join() !== [...theirs.additionalGids].sort().join()) throw differs('user.additionalGids');
}

/** runc exec: the process runs through rkt enter in the container's app; resolves to its exit status (0 when detached). */
export async function exec(ctx: Ctx, id: string, opts: ExecOptions): Promise<number> {
  const st = ctx.states.read(id);
  if (currentStatus(st) !== 'running') throw new OciError(`cannot exec in a container that is not running (it is ${currentStatus(st)})`);
  if (st.role === 'sandbox') throw new OciError(`container ${id} is a sandbox, which runs no process of its own in this runtime; exec in one of its containers`);
  if (opts.process === undefined) throw new OciError('exec needs --process FILE (a process.json)');
  const p = mapProcess(readJson(opts.process, 'the process'), 'process');
  const console = consoleOf(ctx, p.terminal || opts.tty, opts.consoleSocket);
  sameIdentity(p.identity, st.identity);
  const argv = ctx.rkt.argv(['enter', `--app=${st.app}`, st.podUuid, ...p.exec]);
  if (opts.detach || console) {
    const proc = await spawnDetached(argv, { stdio: 'inherit', ...(console && { console }) });
    writePidFile(opts.pidFile, proc.pid);
    if (opts.detach) return 0;
    await waitExit(proc.pid, proc.pidStart, Number.MAX_SAFE_INTEGER);
    // not our child once the helper has made it a session leader: its status is the shim's to read
    return 0;
  }
  const child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit' });
  if (child.pid === undefined) throw new OciError(`cannot run ${argv[0]}`);
  writePidFile(opts.pidFile, child.pid);
  return new Promise((resolve) => child.once('exit', (c, s) => resolve(c ?? 128 + (os.constants.signals[s as NodeJS.Signals] ?? 0))));
}

