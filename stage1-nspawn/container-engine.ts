import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { UsageError } from '../src/errors.js';
import { log, say } from '../src/log.js';
import type { PodPaths } from '../src/stage1/contract.js';
import { loadAppSpecs, type AppSpec } from '../src/stage1-common/app-spec.js';
import { STAGE1_FAILURE, type RunArgs } from '../src/stage1-common/entry.js';
import { addMetadataUrl } from '../src/stage1-common/metadata.js';
import { hostAddressFromPod, teardownNetwork } from '../src/stage1-common/pod-net.js';
import { ChannelReports } from '../src/stage1-common/report-channel.js';
import { prepareUnitRootfs } from '../src/stage1-common/rootfs.js';
import { writePid } from '../src/stage1-common/status.js';
import type { EngineEnd, PodEngine } from '../src/stage1-common/supervisor.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { mkfifo } from '../src/util/fifo.js';
import { phase } from '../src/util/phase-trace.js';
import { createPodCgroups, hostHierarchies, removeCgroupsWaiting } from '../src/stage1-common/cgroups.js';
import { bootTimeoutMs, CGROUPS_FILE, NSPAWN_ENV, NSPAWN_TIMEOUTS, nspawnOverride } from './config.js';
import { PodContainer } from './container.js';
import { NspawnBootError, NspawnHostError } from './errors.js';
import { drain, FifoCopy, FifoFeed } from './io.js';
import { PodIo } from './app-io.js';
import { extraCapabilities, machinedAvailable, nspawnCommand, which } from './nspawn-args.js';
import { rootfsEtcOptions, setupNetwork } from './network.js';
import { checkNetwork, insecure, loadSyscallTable, type PodRunOptions } from './options.js';
import { NspawnGuardian, RUN_PID_FILE } from './pod-process.js';
import { STAGE1, writePodConfig } from './pod-units.js';
import { withAllCapabilities } from '../src/stage1-common/insecure.js';
import { checkIsolators, NSPAWN_ISOLATORS, SECCOMP_ISOLATORS } from '../src/stage1-common/isolator-support.js';
import { seccompPlan, type SeccompUnitPlan } from './seccomp.js';
import { appGeneration, TreeHolds } from '../src/stage1-common/mutable-pod.js';
import { saveEtcOptions, shareContainerRoot, waitForPodTarget } from './mutable.js';

// The nspawn flavor's engine for the shared pod supervisor. prepare()
// decides everything about the pod before anything is mounted (a refusal
// leaves nothing behind), then sets up the pod's network namespace and CNI
// networks (network.ts), assembles each app's root filesystem in the pod's
// private mount namespace and writes the apps' systemd units into the
// stage1 rootfs; start() boots that rootfs with systemd-nspawn in the pod's
// cgroups (pod-process.ts has the guardian that outlives us), whose systemd
// runs each app as a unit with its isolators.

/** Where nspawn keeps per-machine state; it must be a tmpfs for nspawn to clean it up. */
const NSPAWN_RUNTIME = '/run/systemd/nspawn';
const TMPFS_MAGIC = 0x01021994;

/** The host's systemd-nspawn, or the one RKT_NSPAWN_BINARY names. */
function findNspawn(): string {
  const given = nspawnOverride();
  const found = given ? (fs.existsSync(given) ? given : undefined) : which('systemd-nspawn');
  if (found === undefined) {
    throw new NspawnHostError(`systemd-nspawn is not installed on this host${given ? ` (${NSPAWN_ENV.binary}=${given})` : ''}; install it (Debian: apt-get install systemd-container) or use another stage1`);
  }
  return found;
}

async function privateNspawnRuntime(): Promise<void> {
  // nspawn refuses to clean up its state under a /run that is not a tmpfs
  // (some containers and CI hosts); in our own mount namespace a tmpfs is free.
  try {
    if (fs.statfsSync('/run').type === TMPFS_MAGIC) return;
    fs.mkdirSync(NSPAWN_RUNTIME, { recursive: true });
    await execa('mount', ['-t', 'tmpfs', '-o', 'mode=0755,nosuid,nodev', 'tmpfs', NSPAWN_RUNTIME]);
  } catch (err) {
    log().debug(`cannot give nspawn a private ${NSPAWN_RUNTIME}: ${(err as Error).message}`);
  }
}

/** The container's processes are gone with its init; their cgroups empty within moments. */
async function removePodCgroups(dirs: string[]): Promise<void> {
  const left = await removeCgroupsWaiting(dirs);
  if (left.length > 0) log().warn(`cannot remove the pod's cgroups ${left.join(', ')}; rkt gc will try again`);
}

interface Plan {
  nspawn: string;
  seccomp: Map<string, SeccompUnitPlan>;
  caps: string[] | 'all';
}

export class ContainerEngine implements PodEngine {
  specs: AppSpec[] = [];
  reports = new ChannelReports([]);
  private plan: Plan | undefined;
  private container: PodContainer | undefined;
  private netnsPath: string | undefined;
  private cgroupProcs: string[] = [];
  private readonly copies: FifoCopy[] = [];
  private feed: FifoFeed | undefined;
  /** The relays of the apps' own streams (stream and tty modes). */
  private readonly io: PodIo;
  /** Relay changes of a mutable pod, one after the other. */
  private ioWork: Promise<void> = Promise.resolve();
  private readonly guardian: NspawnGuardian;
  private readonly tty: boolean;
  private readonly hostname: string;
  /** A mutable pod's apps as last read from the pod manifest: name to generation (mutable.ts). */
  private generations = new Map<string, string>();
  private manifestSeen = '';
  private readonly trees: TreeHolds;

  constructor(
    private readonly paths: PodPaths,
    private readonly args: RunArgs,
    private readonly opts: PodRunOptions,
  ) {
    this.guardian = new NspawnGuardian(paths.dir);
    this.trees = new TreeHolds(paths);
    this.io = new PodIo(paths);
    this.tty = args.interactive && process.stdin.isTTY === true;
    this.hostname = args.hostname ?? `rkt-${args.uuid}`;
    // until the container's init is known (the pid file), rkt stop signals us
    writeFileAtomic(path.join(paths.dir, RUN_PID_FILE), `${process.pid}\n`);
  }

  get ended(): Promise<EngineEnd> {
    // no container (yet): nothing to wait for
    return this.container?.ended ?? Promise.resolve({ code: null, signal: null });
  }

  get hasEnded(): boolean {
    return this.container?.hasEnded ?? false;
  }

  /** Everything about the pod decided before any mount is made: a refusal leaves nothing behind. */
  private check(): Plan {
    const nspawn = findNspawn();
    checkNetwork(this.args);
    if (this.args.mutable && this.args.interactive) throw new UsageError('--interactive cannot be used with a mutable pod: its apps come later');
    if (this.args.mutable && this.opts.privateUsers !== undefined) throw new UsageError('the nspawn stage1 cannot run a mutable pod with --private-users: apps added later would need the pod\'s id shift');
    const loaded = loadAppSpecs(this.paths, { container: 'rkt' });
    if (this.args.interactive && loaded.length !== 1) throw new UsageError(`--interactive needs a pod with exactly one app; this one has ${loaded.length}`);
    const noSeccomp = insecure(this.opts, 'seccomp');
    checkIsolators(loaded, NSPAWN_ISOLATORS, noSeccomp ? SECCOMP_ISOLATORS : undefined);
    const table = loadSyscallTable(this.paths.stage1Rootfs);
    const seccomp = new Map(loaded.map((s) => [s.name, seccompPlan(s.name, s.isolators.app, table, { insecure: noSeccomp })]));
    if (noSeccomp) log().warn('--insecure-options=seccomp: apps run without seccomp filters');
    for (const [app, p] of seccomp) if (p.disabledBecause && !noSeccomp) log().debug(`app ${app}: no seccomp filter, as ${p.disabledBecause}`);
    if (insecure(this.opts, 'capabilities')) {
      log().warn('--insecure-options=capabilities: apps keep every capability');
      this.specs = loaded.map(withAllCapabilities);
      return { nspawn, seccomp, caps: 'all' };
    }
    if (insecure(this.opts, 'paths')) log().warn('--insecure-options=paths: /proc and /sys paths are not masked for the apps');
    this.specs = loaded;
    return { nspawn, seccomp, caps: extraCapabilities(loaded.map((s) => s.isolators.capabilities)) };
  }

  async prepare(): Promise<void> {
    const plan = (this.plan = this.check());
    this.reports = new ChannelReports(this.specs.map((s) => s.name));
    this.guardian.watchApps(this.specs.map((s) => s.name));
    const { paths, args } = this;
    if (args.mutable) {
      await shareContainerRoot(paths.stage1Rootfs);
      for (const s of this.specs) this.generations.set(s.name, appGeneration(paths, s.name));
    }
    const network = await setupNetwork(paths, args, this.hostname);
    phase('network');
    this.netnsPath = network.netnsPath;
    addMetadataUrl(paths, args, this.specs, () => hostAddressFromPod(paths.dir, network.result.mode));
    const etc = rootfsEtcOptions(network.result.dnsFiles, network.result.mode);
    if (args.mutable) saveEtcOptions(paths, etc);
    for (const spec of this.specs) await prepareUnitRootfs(paths, spec, 'nspawn', etc);
    const out = process.stdout as NodeJS.WriteStream;
    writePodConfig(paths.stage1Rootfs, paths.dir, this.specs, {
      uuid: args.uuid,
      hostname: this.hostname,
      seccomp: { filters: [] },
      seccompByApp: plan.seccomp,
      insecurePaths: insecure(this.opts, 'paths'),
      mutable: args.mutable,
      ...(args.interactive && { interactive: { tty: this.tty, ...(this.tty && out.isTTY && { rows: out.rows, columns: out.columns }) } }),
    });
    const rootfsPath = (p: string): string => path.join(paths.stage1Rootfs, p);
    if (!this.tty) {
      mkfifo(rootfsPath(STAGE1.stdout), rootfsPath(STAGE1.stderr));
      this.copies.push(new FifoCopy(rootfsPath(STAGE1.stdout), process.stdout), new FifoCopy(rootfsPath(STAGE1.stderr), process.stderr));
      if (args.interactive) {
        mkfifo(rootfsPath(STAGE1.stdin));
        this.feed = new FifoFeed(rootfsPath(STAGE1.stdin), process.stdin);
      }
    }
    // The report channel is opened now, before the container exists, and
    // only ever read through this descriptor: its path is the container's.
    for (const spec of this.specs) await this.io.add(spec);
    mkfifo(rootfsPath(STAGE1.reportFifo));
    this.reports.attachFifo(rootfsPath(STAGE1.reportFifo), { hold: true });
    await privateNspawnRuntime();
  }

  async start(): Promise<void> {
    const plan = this.plan!;
    const { paths, args } = this;
    const register = machinedAvailable();
    if (!register) {
      this.cgroupProcs = createPodCgroups(paths.dir, CGROUPS_FILE, args.uuid, hostHierarchies());
      for (const p of this.cgroupProcs) this.guardian.watchCgroup(path.dirname(p));
    }
    const { argv, env } = nspawnCommand({
      nspawn: plan.nspawn,
      uuid: args.uuid,
      hostname: this.hostname,
      rootfs: paths.stage1Rootfs,
      debug: args.debug,
      console: this.tty ? 'interactive' : 'read-only',
      capabilities: plan.caps,
      ...(this.opts.privateUsers !== undefined && { privateUsers: this.opts.privateUsers }),
      ipc: this.opts.ipc,
      register,
      insecureSeccomp: insecure(this.opts, 'seccomp'),
      insecurePaths: insecure(this.opts, 'paths'),
      ...(this.netnsPath !== undefined && { netnsPath: this.netnsPath }),
    });
    this.container = new PodContainer({ argv, env, cgroupProcs: this.cgroupProcs, terminal: this.tty, showConsole: args.debug });
    const init = await this.container.start((pid) => this.guardian.watch(pid));
    phase('container-start');
    this.guardian.watch(init);
    // rkt enter and stop find the pod through this: the container's PID 1.
    writePid(paths, init);
    if (args.mutable) await waitForPodTarget(init, STAGE1.podTarget, bootTimeoutMs(), () => this.hasEnded);
  }

  refreshApps(): string[] {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.paths.manifest);
    } catch {
      return [];
    }
    // the manifest is replaced whole (rename) whenever an app comes or goes
    const seen = `${st.ino}:${st.mtimeMs}`;
    if (seen === this.manifestSeen) return [];
    let specs: AppSpec[];
    try {
      specs = loadAppSpecs(this.paths, { container: 'rkt' });
    } catch (err) {
      log().warn(`cannot read the pod's apps: ${(err as Error).message}`);
      return [];
    }
    this.manifestSeen = seen;
    const now = new Map(specs.map((s) => [s.name, appGeneration(this.paths, s.name)]));
    const changed = [...new Set([...this.generations.keys(), ...now.keys()])].filter((a) => this.generations.get(a) !== now.get(a));
    this.generations = now;
    this.specs = specs;
    this.reports.setApps(now.keys(), changed);
    const added = changed.filter((a) => now.has(a));
    this.relayStreams(changed, specs.filter((s) => added.includes(s.name)));
    this.trees.update(added, changed);
    this.guardian.watchApps(added);
    return changed;
  }

  /** A mutable pod's added apps get their relays before app/add returns (it waits for them); removed ones lose theirs. */
  private relayStreams(changed: readonly string[], added: readonly AppSpec[]): void {
    const work = async (): Promise<void> => {
      for (const app of changed) await this.io.remove(app);
      for (const spec of added) {
        try {
          await this.io.add(spec);
        } catch (err) {
          log().warn(`app ${spec.name}: cannot relay its streams: ${(err as Error).message}`);
          this.io.markFailed(spec.name, (err as Error).message);
        }
      }
    };
    this.ioWork = this.ioWork.then(work, work);
  }

  onStarted(): void {
    this.feed?.readerStarted();
  }

  powerOff(): void {
    this.container?.powerOff();
  }

  forceEnd(): void {
    this.container?.kill();
  }

  kill(): void {
    this.container?.kill();
  }

  bootTimedOut(timeoutMs: number): Error {
    const lines = this.container?.lastConsoleLines(10) ?? [];
    if (lines.length > 0) say(`the pod's systemd said:\n${lines.join('\n')}`);
    return new NspawnBootError(`the pod did not start its apps within ${timeoutMs / 1000} s; run with --debug to see systemd's messages, or set ${NSPAWN_ENV.bootTimeout} to wait longer`);
  }

  async finish(): Promise<void> {
    await Promise.all([drain(this.copies, NSPAWN_TIMEOUTS.drainMs), this.reports.drain(NSPAWN_TIMEOUTS.drainMs)]);
    this.feed?.destroy();
  }

  explainAppEnd(spec: AppSpec, status: number): string | undefined {
    if (status !== 128 + os.constants.signals.SIGSYS || (this.plan?.seccomp.get(spec.name)?.filters.length ?? 0) === 0) return undefined;
    return `app ${spec.name} was killed by its seccomp filter (SIGSYS): it made a system call its os/linux/seccomp isolator forbids; allow that call, or set "errno" to make forbidden calls fail instead`;
  }

  abnormalEnd(end: EngineEnd): { cause: string; status: number } {
    const lines = this.container?.lastConsoleLines(5) ?? [];
    const cause = end.signal !== null ? `the pod was killed (${end.signal})` : `systemd-nspawn exited with status ${end.code} before every app had exited${lines.length > 0 ? `: ${lines.at(-1)}` : ''}`;
    return { cause, status: end.signal === 'SIGKILL' ? 137 : STAGE1_FAILURE };
  }

  async cleanup(): Promise<void> {
    this.trees.releaseAll();
    for (const c of this.copies) c.destroy();
    this.reports.close();
    this.feed?.destroy();
    await this.ioWork;
    await this.io.closeAll();
    if (this.cgroupProcs.length > 0) await removePodCgroups(this.cgroupProcs.map((p) => path.dirname(p)));
    // the container has ended (or never started): nothing uses the namespace any more
    await teardownNetwork(this.paths.dir);
    await this.guardian.done();
  }
}
