import { UsageError } from '../src/errors.js';
import { PodPaths } from '../src/stage1/contract.js';
import { enableDebug, parseAttachArgs } from '../src/stage1-common/entry.js';
import { connectConsole, DETACH_KEY } from './console.js';

// rkt attach for kvm: connect the caller's terminal to the pod's serial
// console (raw mode: every key goes to the guest) until Ctrl-] detaches,
// which leaves the pod running. Arguments are rkt's (parseAttachArgs); run
// with the pod directory as working directory like every entrypoint. The
// serial console is the one endpoint: the pod's terminal, whichever app
// holds it, so tty-in and tty-out are all `list` shows.

const ENDPOINTS = ['tty-in', 'tty-out'];

export async function attach(argv: string[]): Promise<number> {
  const args = parseAttachArgs(argv);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  if (args.action === 'list') {
    process.stdout.write(ENDPOINTS.map((e) => `${e}\n`).join(''));
    return 0;
  }
  if (args.action === 'custom-attach') {
    const e = args.endpoints;
    const streams = (['stdin', 'stdout', 'stderr'] as const).filter((k) => e[k]);
    if (streams.length > 0) throw new UsageError(`the kvm stage1 attaches only the pod's serial console (tty-in, tty-out), not ${streams.join(', ')}`);
    if (!e.ttyIn || !e.ttyOut) throw new UsageError('the kvm stage1 attaches the serial console both ways: ask for tty-in and tty-out together');
  }
  if (process.stdin.isTTY) process.stderr.write('Connected to the pod console; press Ctrl-] to detach.\r\n');
  const session = await connectConsole(paths.dir, { stdin: process.stdin, stdout: process.stdout, detachKey: DETACH_KEY });
  const how = await session.done;
  if (process.stdin.isTTY) process.stderr.write(how === 'detached' ? '\r\nDetached; the pod keeps running.\r\n' : '\r\nThe pod console closed.\r\n');
  return 0;
}
