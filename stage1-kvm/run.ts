import { PodPaths } from '../src/stage1/contract.js';
import { enableDebug, parseRunArgs, refuseRunFlags } from '../src/stage1-common/entry.js';
import { noteRunContext } from '../src/stage1-common/run-context.js';
import { writePid } from '../src/stage1-common/status.js';
import { PodSupervisor } from '../src/stage1-common/supervisor.js';
import { phase } from '../src/util/phase-trace.js';
import { KVM_TIMEOUTS } from './config.js';
import { VmEngine } from './vm-engine.js';

// The kvm run entrypoint: the shared pod supervisor around the VM engine
// (vm-engine.ts). It stays for the life of the pod and exits with the
// pod's status.

export async function run(argv: string[]): Promise<number> {
  const args = parseRunArgs(argv);
  enableDebug(args.debug);
  phase('stage1-start');
  const paths = new PodPaths(process.cwd());
  noteRunContext('kvm', args);
  refuseRunFlags('kvm', args, {
    privateUsers: 'the guest\'s ids are never the host\'s already (each pod gets its own block of host ids); run without it',
  });
  // rkt enter and stop find the pod's process through this; its mtime is the pod's start time.
  writePid(paths, process.pid);
  const engine = new VmEngine(paths, args);
  return new PodSupervisor(engine, {
    paths,
    bootTimeoutMs: () => engine.bootTimeoutMs(),
    endGraceMs: KVM_TIMEOUTS.endGraceMs,
    interactive: args.interactive,
    mutable: args.mutable,
  }).run();
}
