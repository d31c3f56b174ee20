import { UsageError } from '../src/errors.js';
import { isAttachable } from '../src/appc/app-streams.js';
import { PodPaths } from '../src/stage1/contract.js';
import { loadAppSpecs, pickApp } from '../src/stage1-common/app-spec.js';
import { enableDebug, parseAttachArgs } from '../src/stage1-common/entry.js';
import { attachAppStreams, endpoints } from '../stage1-kvm/attach.js';
import { attachSocket } from './app-io.js';

// rkt attach for nspawn, with the arguments rkt's stage1 interface gives
// (parseAttachArgs), run with the pod directory as working directory. The
// app's streams are the run entrypoint's relay (app-io.ts), reached on its
// socket in the pod directory with the kvm agent's ATTACH framing: the
// client, the endpoint names, the --mode=list output and the refusals are
// the kvm stage1's (stage1-kvm/attach.ts), so both flavors read the same.
// A container has no serial console: --mode=console is refused.

export async function attach(argv: string[]): Promise<number> {
  const args = parseAttachArgs(argv);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  if (args.action === 'console') throw new UsageError('an nspawn pod has no serial console; attach to an app\'s streams, or use "rkt enter" for a shell');
  const spec = pickApp(loadAppSpecs(paths), args.app);
  if (args.action === 'list') {
    process.stdout.write(`${JSON.stringify({ version: 1, targets: endpoints(spec.streams).map((name) => ({ name })) }, null, 4)}\n`);
    return 0;
  }
  if (!isAttachable(spec.streams)) {
    throw new UsageError(`app "${spec.name}" has no attachable streams: run it with --stdin, --stdout or --stderr set to tty or stream`);
  }
  return attachAppStreams(spec, args.action, args.endpoints, attachSocket(paths.dir, spec.name), { closed: "The app's streams closed (the app was removed or the pod stopped).", anyClients: true });
}
