import fs from 'node:fs';
import path from 'node:path';
import { spawn, type StdioOptions } from 'node:child_process';
import { RktError } from '../errors.js';
import { parseImageManifest } from '../appc/image-manifest.js';
import type { ImageManifest } from '../appc/types.js';
import { log } from '../log.js';
import { STAGE1_INTERFACE_VERSION } from '../version.js';
import { ANNOTATION, CROSSING_ENV, LOCK_FD_ENV, PodPaths, type Entrypoint } from './contract.js';

export class Stage1Error extends RktError {}

export function stage1Manifest(paths: PodPaths): ImageManifest {
  return parseImageManifest(fs.readFileSync(paths.stage1Manifest));
}

/**
 * The stage1's interface version (1 when it does not say). This stage0 speaks
 * versions 1 to STAGE1_INTERFACE_VERSION and passes each exactly the flags
 * rkt defines for it (args.ts); anything else is refused.
 */
export function interfaceVersion(manifest: ImageManifest): number {
  const v = manifest.annotations?.find((a) => a.name === ANNOTATION.interfaceVersion)?.value;
  const n = v === undefined ? 1 : /^\d{1,9}$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 1) {
    throw new Stage1Error(`stage1 image ${manifest.name} declares stage1 interface version "${v}", which is not a version number (this rkt speaks 1 to ${STAGE1_INTERFACE_VERSION}); fix its ${ANNOTATION.interfaceVersion} annotation`);
  }
  if (n > STAGE1_INTERFACE_VERSION) {
    throw new Stage1Error(`stage1 image ${manifest.name} speaks stage1 interface version ${n}, but this rkt speaks only 1 to ${STAGE1_INTERFACE_VERSION}; use a stage1 for this rkt`);
  }
  return n;
}

/** Absolute path of an entrypoint inside the pod's stage1 rootfs; a clear error if the image lacks it. */
export function entrypointPath(paths: PodPaths, manifest: ImageManifest, which: Entrypoint): string {
  const rel = manifest.annotations?.find((a) => a.name === ANNOTATION[which])?.value;
  if (!rel) throw new Stage1Error(`stage1 image ${manifest.name} has no ${ANNOTATION[which]} entrypoint, so it cannot ${which} pods; use another stage1`);
  const abs = path.join(paths.stage1Rootfs, rel);
  if (!abs.startsWith(paths.stage1Rootfs + path.sep)) throw new Stage1Error(`stage1 image ${manifest.name}: entrypoint ${rel} points outside its rootfs`);
  return abs;
}

/** The environment of a crossing entrypoint (attach): how to enter the pod, as rkt's contract gives it. */
export function crossingEnv(paths: PodPaths, pid: number, app?: string): NodeJS.ProcessEnv {
  return {
    [CROSSING_ENV.enterCmd]: entrypointPath(paths, stage1Manifest(paths), 'enter'),
    [CROSSING_ENV.enterPid]: String(pid),
    ...(app !== undefined && { [CROSSING_ENV.enterApp]: app }),
  };
}

export interface InvokeOptions {
  /** Descriptor of the locked pod directory, handed to stage1 as fd 3. */
  lockFd?: number;
  stdio?: 'inherit' | 'ignore';
  /** Forward these signals received by stage0 to the entrypoint. */
  forwardSignals?: NodeJS.Signals[];
  /**
   * Run in a private mount namespace and die with stage0: stage0 cannot
   * exec() itself away as rkt's Go stage0 does, so the kernel has to tie the
   * pod's life to ours and drop its mounts when the last process is gone.
   */
  isolateMounts?: boolean;
  /**
   * A process group of its own, out of the terminal's reach: a ^C there
   * reaches stage0 alone, which forwards it (forwardSignals) as one request,
   * whatever stage1 is doing at that moment.
   */
  ownProcessGroup?: boolean;
  env?: NodeJS.ProcessEnv;
}

/**
 * Execute an entrypoint with the pod dir as working directory; resolves to
 * its exit status. `args` is given the stage1's interface version, to pass
 * only the flags that version has.
 */
/**
 * What invokeEntrypoint would run, for a caller that runs it itself in
 * another process (the OCI front's stand-in runs the attach entrypoint
 * without a stage0 process in between): the command line, its working
 * directory and the environment it adds.
 */
export function entrypointCommand(paths: PodPaths, which: Entrypoint, args: (version: number) => string[]): { argv: string[]; cwd: string } {
  const manifest = stage1Manifest(paths);
  const entry = entrypointPath(paths, manifest, which);
  if (!fs.existsSync(entry)) throw new Stage1Error(`stage1 entrypoint ${entry} is missing; the stage1 image is broken`);
  return { argv: [entry, ...args(interfaceVersion(manifest))], cwd: paths.dir };
}

export function invokeEntrypoint(paths: PodPaths, which: Entrypoint, args: (version: number) => string[], opts: InvokeOptions = {}): Promise<number> {
  const manifest = stage1Manifest(paths);
  const version = interfaceVersion(manifest);
  const entry = entrypointPath(paths, manifest, which);
  if (!fs.existsSync(entry)) throw new Stage1Error(`stage1 entrypoint ${entry} is missing; the stage1 image is broken`);
  const base = opts.stdio ?? 'inherit';
  const stdio: StdioOptions = opts.lockFd !== undefined ? [base, base, base, opts.lockFd] : [base, base, base];
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  if (opts.lockFd !== undefined) env[LOCK_FD_ENV] = '3';
  const given = args(version);
  const argv = opts.isolateMounts ? ['setpriv', '--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--propagation', 'slave', '--', entry, ...given] : [entry, ...given];
  log().debug({ argv, cwd: paths.dir, version }, `executing stage1 ${which} entrypoint`);
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd: paths.dir, stdio, env, detached: opts.ownProcessGroup ?? false });
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    for (const s of opts.forwardSignals ?? []) process.on(s, forward);
    const done = () => {
      for (const s of opts.forwardSignals ?? []) process.off(s, forward);
    };
    child.once('error', (err) => {
      done();
      reject(new Stage1Error(`cannot execute stage1 ${which} entrypoint ${entry}: ${err.message}`));
    });
    child.once('exit', (code, signal) => {
      done();
      resolve(code ?? 128 + (signal ? (signalNumber(signal) ?? 1) : 1));
    });
  });
}

function signalNumber(sig: NodeJS.Signals): number | undefined {
  return (fs.constants as unknown as { signals?: Record<string, number> }).signals?.[sig] ?? { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 }[sig as string];
}
