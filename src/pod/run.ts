import fs from 'node:fs';
import os from 'node:os';
import { interruptedCause } from '../stage1-common/status.js';
import { writeFileAtomic } from '../util/atomic.js';
import { RktError } from '../errors.js';
import type { GlobalOptions } from '../config/global.js';
import { runArgv, type RunFlags } from '../stage1/args.js';
import { dnsConfModeFor, writeStage0DnsFiles } from '../stage1/dns-conf.js';
import { registerPod, unregisterPod, type MetadataAccess } from '../mds/client.js';
import { invokeEntrypoint } from '../stage1/invoke.js';
import type { RunOptions } from '../stage1/contract.js';
import type { FileLock } from '../util/lock.js';
import { phase, phaseTrace } from '../util/phase-trace.js';
import { writeRunOptions } from './prepare.js';
import type { Pod } from './pod.js';

export interface StartOptions {
  net: string[];
  interactive: boolean;
  hostname?: string;
  dns?: RunOptions['dns'];
  hostsEntries?: string[];
  privateUsers?: string;
  ipc?: string;
  /** rkt's --mds-register: register the pod with the metadata service for as long as it runs. */
  mdsRegister?: boolean;
  /** rkt app sandbox: stage1 runs the pod with --mutable. */
  mutable?: boolean;
  /** rkt app sandbox --net-namespace: the existing network namespace the pod joins. */
  netns?: string;
}

/**
 * Move a prepared pod to run/ and hand it to its stage1's run entrypoint,
 * which inherits the pod lock. Resolves to the entrypoint's exit status:
 * for a one-app pod, the app's.
 */
export async function startPod(pod: Pod, lock: FileLock, globals: GlobalOptions, opts: StartOptions): Promise<number> {
  if (pod.stateDir !== 'prepared') throw new RktError(`pod ${pod.uuid} is not prepared (it is ${pod.state()}); only prepared pods can run`);
  // before the pod counts as running: a refusal leaves it prepared, registered nowhere
  const mds = opts.mdsRegister ? await registerPod(pod.paths, pod.uuid) : undefined;
  try {
    pod.moveTo('run');
    return await runStage1(pod, lock, globals, opts, mds);
  } finally {
    if (mds) await unregisterPod(pod.dir, pod.uuid);
    phase('stage0-exit');
  }
}

async function runStage1(pod: Pod, lock: FileLock, globals: GlobalOptions, opts: StartOptions, mds: MetadataAccess | undefined): Promise<number> {
  const insecure = Object.entries(globals.insecureOptions)
    .filter(([, on]) => on)
    .map(([k]) => k);
  const net = opts.net.length > 0 ? opts.net : ['default'];
  writeRunOptions(pod, {
    uuid: pod.uuid,
    net,
    debug: globals.debug,
    interactive: opts.interactive,
    hostname: opts.hostname,
    dataDir: fs.realpathSync(globals.dir),
    localConfig: globals.localConfig,
    systemConfig: globals.systemConfig,
    insecureOptions: insecure,
    dns: opts.dns,
    hostsEntries: opts.hostsEntries,
    ...(opts.privateUsers !== undefined ? { privateUsers: opts.privateUsers } : {}),
    ...(opts.ipc !== undefined ? { ipc: opts.ipc } : {}),
    ...(opts.netns !== undefined ? { netns: opts.netns } : {}),
    // The token also travels as rkt's --mds-token; the service's port has no
    // flag in rkt's contract, so a stage1 finds it here (metadataServiceOf()
    // in src/stage1-common/metadata.ts, where the flag wins for the token).
    ...(mds !== undefined ? { metadataService: mds } : {}),
  });
  const dnsReq = { ...(opts.dns !== undefined && { dns: opts.dns }), ...(opts.hostsEntries !== undefined && { hostsEntries: opts.hostsEntries }) };
  const dnsConfMode = dnsConfModeFor(dnsReq);
  writeStage0DnsFiles(pod.paths, dnsConfMode, dnsReq);
  const ins = globals.insecureOptions;
  const flags: RunFlags = {
    debug: globals.debug,
    net,
    interactive: opts.interactive,
    ...(opts.privateUsers !== undefined && { privateUsers: opts.privateUsers }),
    ...(mds !== undefined && { mdsToken: mds.token }),
    localConfig: globals.localConfig,
    ...(opts.hostname !== undefined && { hostname: opts.hostname }),
    dnsConfMode,
    disableCapabilities: ins.capabilities,
    disablePaths: ins.paths,
    disableSeccomp: ins.seccomp,
    ...(opts.mutable && { mutable: true }),
  };
  const forwarded: NodeJS.Signals[] = [];
  const note = (sig: NodeJS.Signals): void => void forwarded.push(sig);
  for (const s of STOP_SIGNALS) process.on(s, note);
  try {
    // the signals are forwarded from the moment this call returns (rkt run relies on it)
    const code = await invokeEntrypoint(pod.paths, 'run', (v) => runArgv(v, flags, pod.uuid), {
      lockFd: lock.fd,
      isolateMounts: true,
      forwardSignals: [...STOP_SIGNALS],
      // an interactive pod's app needs the terminal's foreground group
      ownProcessGroup: !opts.interactive,
      // the entrypoint's phase marks continue this process's timeline
      ...(globals.debug && { env: phaseTrace().env() }),
    });
    if (forwarded[0] !== undefined) explainUnheardStop(pod, forwarded[0], code);
    return code;
  } finally {
    for (const s of STOP_SIGNALS) process.off(s, note);
  }
}

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * A stop request that reached stage1 before it listened for one (node's
 * start-up) killed it: the pod ended with no app status and no cause. Say
 * what the supervisor would have said.
 */
function explainUnheardStop(pod: Pod, sig: NodeJS.Signals, code: number): void {
  if (code !== 128 + (os.constants.signals[sig] ?? 0)) return;
  if (Object.keys(pod.appExitStatuses()).length > 0 || fs.existsSync(pod.paths.exitCause)) return;
  writeFileAtomic(pod.paths.exitCause, `${interruptedCause(sig)}\n`);
}
