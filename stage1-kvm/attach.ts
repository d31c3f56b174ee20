import { RktError, UsageError } from '../src/errors.js';
import { PodPaths } from '../src/stage1/contract.js';
import { isAttachable, type AppStreams } from '../src/appc/app-streams.js';
import type { AttachAction, AttachEndpoints } from '../src/stage1/args.js';
import { loadAppSpecs, pickApp, type AppSpec } from '../src/stage1-common/app-spec.js';
import { enableDebug, parseAttachArgs } from '../src/stage1-common/entry.js';
import { AgentExecError, attachToApp, type AttachRequest } from './agent-client.js';
import { connectConsole, DETACH_KEY } from './console.js';
import { agentSocketPaths } from './pod-files.js';

// rkt attach for kvm. Arguments as rkt's stage1 interface (version 5) gives
// them (parseAttachArgs): --action=list|auto-attach|custom-attach, and ours,
// console; --app=NAME; --tty-in, --tty-out, --stdin, --stdout, --stderr;
// run with the pod directory as working directory.
//
// An app's own streams (--stdin/--stdout/--stderr tty or stream) are
// reached through the guest agent (ATTACH, guest/agent/PROTOCOL.md): the
// pod never gets a path on the host. `--action=console` (`rkt attach
// --mode=console`) connects to the VM's serial console instead, for
// operators; so does the default action on a pod none of whose apps has
// attachable streams, as `rkt attach UUID` always did. Both detach on
// Ctrl-] with a terminal, or on a signal, and leave the pod running.

const EXIT_USAGE = new UsageError('').exitCode;

/** The endpoints an app offers, by rkt's names: tty, or some of stdin, stdout, stderr. */
export function endpoints(s: AppStreams): string[] {
  if (s.stdin === 'tty') return ['tty'];
  return (['stdin', 'stdout', 'stderr'] as const).filter((n) => s[n] === 'stream');
}

/** What to ask the agent for, or a usage error naming what the app offers. */
export function attachRequest(spec: AppSpec, action: AttachAction, e?: AttachEndpoints): { req: AttachRequest; tty: boolean } {
  const offered = endpoints(spec.streams);
  const tty = offered.includes('tty');
  if (action === 'auto-attach') {
    return { req: { app: spec.name, stdin: tty || offered.includes('stdin'), stdout: tty || offered.includes('stdout'), stderr: offered.includes('stderr') }, tty };
  }
  if (action !== 'custom-attach' || e === undefined) throw new Error(`not an attach action: ${action}`);
  const wanted = [
    ...(e.ttyIn ? ['tty-in'] : []),
    ...(e.ttyOut ? ['tty-out'] : []),
    ...(e.stdin ? ['stdin'] : []),
    ...(e.stdout ? ['stdout'] : []),
    ...(e.stderr ? ['stderr'] : []),
  ];
  const missing = wanted.filter((w) => !offered.includes(w.startsWith('tty') ? 'tty' : w));
  if (wanted.length === 0 || missing.length > 0) {
    throw new UsageError(`app "${spec.name}" offers ${offered.length > 0 ? offered.join(', ') : 'no endpoints'}, not ${missing.join(', ') || 'nothing'}`);
  }
  return { req: { app: spec.name, stdin: e.ttyIn || e.stdin, stdout: e.ttyOut || e.stdout, stderr: e.stderr }, tty };
}

async function attachConsole(paths: PodPaths): Promise<number> {
  if (process.stdin.isTTY) process.stderr.write('Connected to the pod console; press Ctrl-] to detach.\r\n');
  const session = await connectConsole(paths.dir, { stdin: process.stdin, stdout: process.stdout, detachKey: DETACH_KEY });
  const how = await session.done;
  if (process.stdin.isTTY) process.stderr.write(how === 'detached' ? '\r\nDetached; the pod keeps running.\r\n' : '\r\nThe pod console closed.\r\n');
  return 0;
}

export async function attach(argv: string[]): Promise<number> {
  const args = parseAttachArgs(argv);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  if (args.action === 'console') return attachConsole(paths);
  const specs = loadAppSpecs(paths);
  // `rkt attach UUID` of a pod none of whose apps has streams: its console, as before apps had streams
  if (args.action === 'auto-attach' && !specs.some((s) => isAttachable(s.streams))) return attachConsole(paths);
  const spec = pickApp(specs, args.app);
  if (args.action === 'list') {
    // rkt prints its endpoints file; ours have no address on the host, only names
    process.stdout.write(`${JSON.stringify({ version: 1, targets: endpoints(spec.streams).map((name) => ({ name })) }, null, 4)}\n`);
    return 0;
  }
  if (!isAttachable(spec.streams)) {
    throw new UsageError(`app "${spec.name}" has no attachable streams: run it with --stdin, --stdout or --stderr set to tty or stream (rkt attach --mode=console reaches the pod's console)`);
  }
  return attachAppStreams(spec, args.action, args.endpoints, agentSocketPaths(paths.dir), { closed: 'The pod has stopped.' });
}

/**
 * Connect this process's stdio to an app's streams on `sockets` (the guest
 * agent's ports, or the nspawn relay's socket: the same ATTACH framing)
 * until the user detaches (Ctrl-] at a terminal, or a signal) or the other
 * side goes away; the app keeps running either way.
 */
export async function attachAppStreams(
  spec: AppSpec,
  action: AttachAction,
  e: AttachEndpoints | undefined,
  sockets: string | readonly string[],
  opts: { closed: string; anyClients?: boolean },
): Promise<number> {
  const { req, tty } = attachRequest(spec, action, e);
  const interactive = tty && req.stdin && process.stdin.isTTY === true;
  const abort = new AbortController();
  const detach = (): void => abort.abort();
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const sig of signals) process.on(sig, detach);
  if (interactive) process.stderr.write(`Attached to the terminal of app ${spec.name}; press Ctrl-] to detach.\r\n`);
  try {
    const how = await attachToApp(
      sockets,
      req,
      tty,
      { stdin: req.stdin ? process.stdin : null, stdout: process.stdout, stderr: process.stderr },
      { signal: abort.signal, who: 'rkt attach', ...(opts.anyClients && { anyClients: true }), ...(interactive && { detachKey: DETACH_KEY }) },
    );
    if (interactive) process.stderr.write(how === 'detached' ? '\r\nDetached; the app keeps running.\r\n' : `\r\n${opts.closed}\r\n`);
    return 0;
  } catch (err) {
    if (err instanceof AgentExecError) throw new RktError(err.message, { exitCode: EXIT_USAGE, cause: err });
    throw err;
  } finally {
    for (const sig of signals) process.removeListener(sig, detach);
  }
}
