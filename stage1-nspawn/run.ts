import { PodPaths } from '../src/stage1/contract.js';
import { enableDebug, parseRunArgs } from '../src/stage1-common/entry.js';
import { noteRunContext } from '../src/stage1-common/run-context.js';
import { PodSupervisor } from '../src/stage1-common/supervisor.js';
import { phase } from '../src/util/phase-trace.js';
import { bootTimeoutMs, NSPAWN_TIMEOUTS } from './config.js';
import { ContainerEngine } from './container-engine.js';
import { podRunOptions, takeFlavorFlags } from './options.js';

// The nspawn run entrypoint: the shared pod supervisor around the
// container engine (container-engine.ts). It stays for the life of the pod
// and exits with the pod's status.

export async function run(argv: string[]): Promise<number> {
  const { flags, rest } = takeFlavorFlags(argv);
  const args = parseRunArgs(rest);
  enableDebug(args.debug);
  phase('stage1-start');
  const paths = new PodPaths(process.cwd());
  noteRunContext('nspawn', args);
  const engine = new ContainerEngine(paths, args, podRunOptions(paths, args, flags));
  return new PodSupervisor(engine, {
    paths,
    bootTimeoutMs: () => bootTimeoutMs(),
    endGraceMs: NSPAWN_TIMEOUTS.endGraceMs,
    interactive: args.interactive,
  }).run();
}
