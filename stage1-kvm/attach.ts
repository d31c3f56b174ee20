import { UsageError } from '../src/errors.js';
import { PodPaths } from '../src/stage1/contract.js';
import { enableDebug, parseFlags } from '../src/stage1-common/entry.js';
import { connectConsole, DETACH_KEY } from './console.js';

// rkt attach for kvm: connect the caller's terminal to the pod's serial
// console (raw mode: every key goes to the guest) until Ctrl-] detaches,
// which leaves the pod running. Arguments: attach [--debug] UUID, run with
// the pod directory as working directory like every entrypoint.

export async function attach(argv: string[]): Promise<number> {
  const p = parseFlags(argv, { booleans: ['debug'] });
  enableDebug(p.booleans.has('debug'));
  if (p.positionals.length !== 1) throw new UsageError('attach takes exactly one pod UUID');
  const paths = new PodPaths(process.cwd());
  if (process.stdin.isTTY) process.stderr.write('Connected to the pod console; press Ctrl-] to detach.\r\n');
  const session = await connectConsole(paths.dir, { stdin: process.stdin, stdout: process.stdout, detachKey: DETACH_KEY });
  const how = await session.done;
  if (process.stdin.isTTY) process.stderr.write(how === 'detached' ? '\r\nDetached; the pod keeps running.\r\n' : '\r\nThe pod console closed.\r\n');
  return 0;
}

