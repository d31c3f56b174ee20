// A small CLI for `rkt enter` sessions without stage0, for tests and
// debugging (guest/boot-test-enter.sh):
//   node dist/stage1-kvm/agent-cli.js SOCKET APP [--tty] [--uid N] [--gid N]
//     [--groups G,G] [--cwd DIR] [--env NAME=VALUE]... -- COMMAND [ARG]...
//   node dist/stage1-kvm/agent-cli.js SOCKET --guest-state
//     a mutable pod's guest, as its agent sees it (agent-app.ts): mounts of
//     apps, units of apps, user-space processes, as "mounts=N units=N processes=N"

import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RktError } from '../src/errors.js';
import { runInGuest, type ExecRequest } from './agent-client.js';
import { appRequest, parseGuestState } from './agent-app.js';

function parseCli(args: string[]): { socketPath: string; req: ExecRequest } {
  const usage = 'usage: agent-cli SOCKET APP [--tty] [--uid N] [--gid N] [--groups G,G] [--cwd DIR] [--env NAME=VALUE]... -- COMMAND [ARG]...';
  const dash = args.indexOf('--');
  if (dash < 2 || dash === args.length - 1) throw new RktError(usage, { exitCode: 2 });
  const [socketPath, app, ...flags] = args.slice(0, dash);
  const req: ExecRequest = { app, argv: args.slice(dash + 1), env: [] };
  const num = (v: string | undefined): number => {
    if (v === undefined || !/^\d+$/.test(v)) throw new RktError(usage, { exitCode: 2 });
    return Number(v);
  };
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i];
    if (f === '--tty') req.tty = true;
    else if (f === '--uid') req.uid = num(flags[++i]);
    else if (f === '--gid') req.gid = num(flags[++i]);
    else if (f === '--groups') req.supplementaryGids = (flags[++i] ?? '').split(',').filter(Boolean).map(num);
    else if (f === '--cwd') req.cwd = flags[++i];
    else if (f === '--env') req.env?.push(flags[++i] ?? '');
    else throw new RktError(`${usage}\nunknown option ${f}`, { exitCode: 2 });
  }
  if (!req.env?.some((e) => e.startsWith('PATH='))) req.env?.push('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  return { socketPath, req };
}

async function main(): Promise<void> {
  // ^C goes to the command (through the terminal with --tty, as SIGNAL
  // otherwise); SIGTERM and SIGHUP end the session: disconnecting makes the
  // agent kill the command, and a stuck guest cannot keep us alive.
  const abort = new AbortController();
  let endedBy: NodeJS.Signals | undefined;
  for (const sig of ['SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      endedBy = sig;
      abort.abort();
    });
  }
  try {
    const argv = process.argv.slice(2);
    if (argv.length === 2 && argv[1] === '--guest-state') {
      const state = parseGuestState(await appRequest([argv[0]!], { op: 'ping', app: '' }, { what: 'agent-cli --guest-state' }));
      if (state === undefined) throw new RktError('the guest answered with no state');
      process.stdout.write(`mounts=${state.mounts} units=${state.units} processes=${state.processes}\n`);
      return;
    }
    const { socketPath, req } = parseCli(argv);
    const status = await runInGuest(socketPath, req, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }, {
      forwardSignals: req.tty === true ? [] : ['SIGINT'],
      signal: abort.signal,
    });
    process.exitCode = status;
  } catch (err) {
    if (!(err instanceof RktError)) throw err;
    process.stderr.write(`${err.message}\n`);
    process.exitCode = endedBy === undefined ? err.exitCode : 128 + os.constants.signals[endedBy];
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) void main();
