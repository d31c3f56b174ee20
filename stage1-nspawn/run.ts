import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { UsageError } from '../src/errors.js';
import { log } from '../src/log.js';
import { LOCK_FD_ENV, PodPaths } from '../src/stage1/contract.js';
import { loadAppSpecs, type AppSpec } from '../src/stage1-common/app-spec.js';
import { enableDebug, parseRunArgs, runEntrypoint, STAGE1_FAILURE } from '../src/stage1-common/entry.js';
import { ensureDirInRoot, prepareAppRootfs, resolveInRoot, type PrepareOptions } from '../src/stage1-common/rootfs.js';
import { markReady, readAppExitStatuses, writePid } from '../src/stage1-common/status.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import { createPodCgroups, ourHierarchies, removeCgroups } from './cgroups.js';
import { PodContainer } from './container.js';
import { NspawnBootError, NspawnConfigError, NspawnHostError } from './errors.js';
import { drain, FifoCopy, FifoFeed, mkfifo } from './io.js';
import { extraCapabilities, machinedAvailable, nspawnCommand, which } from './nspawn-args.js';
import { rootfsEtcOptions, setupNetwork, teardownNetwork } from './network.js';
import { checkNetwork, insecure, loadSyscallTable, podRunOptions, takeFlavorFlags, type PodRunOptions } from './options.js';
import { NspawnGuardian, RUN_PID_FILE } from './pod-process.js';
import { oomKilledApps, STAGE1, startedApps, withAllCapabilities, writePodConfig } from './pod-units.js';
import { seccompPlan, type SeccompUnitPlan } from './seccomp.js';

// The nspawn run entrypoint. In the pod's private mount namespace (set up
// by stage0) it assembles each app's root filesystem, writes the apps'
// systemd units into the stage1 rootfs, and boots that rootfs with
// systemd-nspawn: the pod's systemd runs each app as a unit with its
// isolators, records each exit status, and exits when the last app has.
// Before any of that it sets up the pod's network namespace and CNI
// networks (network.ts), which nspawn joins. This process stays for the
// life of the pod: it copies the apps' output to its own stdout and
// stderr, turns stop signals into an orderly power-off, tears the network
// down once the container has ended, and exits with the pod's status.
//
// Environment: RKT_NSPAWN_BOOT_TIMEOUT (seconds until every app must have
// been started, default 30), RKT_STAGE1_NSPAWN (the systemd-nspawn to use
// instead of the one on PATH).

const BOOT_TIMEOUT_ENV = 'RKT_NSPAWN_BOOT_TIMEOUT';
const NSPAWN_ENV = 'RKT_STAGE1_NSPAWN';
const DRAIN_MS = 3000;
/** Where nspawn keeps per-machine state; it must be a tmpfs for nspawn to clean it up. */
const NSPAWN_RUNTIME = '/run/systemd/nspawn';
const TMPFS_MAGIC = 0x01021994;

function bootTimeoutMs(): number {
  const v = process.env[BOOT_TIMEOUT_ENV]?.trim();
  if (!v) return 30_000;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${BOOT_TIMEOUT_ENV}=${v} is not a number of seconds`);
  return n * 1000;
}

/** The host's systemd-nspawn, or the one RKT_STAGE1_NSPAWN names. */
function findNspawn(): string {
  const given = process.env[NSPAWN_ENV]?.trim();
  const found = given ? (fs.existsSync(given) ? given : undefined) : which('systemd-nspawn');
  if (found === undefined) {
    throw new NspawnHostError(`systemd-nspawn is not installed on this host${given ? ` (${NSPAWN_ENV}=${given})` : ''}; install it (Debian: apt-get install systemd-container) or use another stage1`);
  }
  return found;
}

/** Found now, a missing executable is a clear error instead of status 203 from the pod's systemd. */
function checkExec(spec: AppSpec): void {
  const exe = spec.exec[0]!;
  if (!exe.startsWith('/')) throw new NspawnConfigError(`app "${spec.name}": exec "${exe}" must be an absolute path in the nspawn stage1`);
  const r = resolveInRoot(spec.rootfs, exe);
  const ok = r.exists && fs.statSync(r.host).isFile() && (fs.statSync(r.host).mode & 0o111) !== 0;
  if (!ok) throw new NspawnConfigError(`app "${spec.name}": ${exe} ${r.exists ? 'is not an executable file' : 'does not exist'} in image ${spec.imageName}; give the right command with --exec`);
}

/** Mount points the pod's systemd mounts the API file systems on (MountAPIVFS=). */
const API_DIRS = ['/dev', '/proc', '/sys', '/run'];

/**
 * The shared assembly, with one step of ours before a read-only rootfs is
 * made read-only: the mount points systemd needs for the app's /dev, /proc
 * and friends, which it cannot create in a read-only root.
 */
async function prepareRootfs(paths: PodPaths, spec: AppSpec, etc: PrepareOptions): Promise<void> {
  const r = await prepareAppRootfs(paths, { ...spec, readOnlyRootFS: false }, etc);
  log().debug(`app ${spec.name}: rootfs ready at ${r.rootfs}${r.overlay ? '' : ' (private copy)'}`);
  checkExec(spec);
  if (!spec.readOnlyRootFS) return;
  for (const d of API_DIRS) ensureDirInRoot(spec.rootfs, d);
  await execa('mount', ['-o', 'remount,bind,ro', spec.rootfs]);
}

function warn(message: string): void {
  process.stderr.write(`stage1: warning: ${message}\n`);
}

/** Everything about the pod decided before any mount is made: a refusal leaves nothing behind. */
function plan(paths: PodPaths, specs: AppSpec[], opts: PodRunOptions): { specs: AppSpec[]; seccomp: Map<string, SeccompUnitPlan>; caps: string[] | 'all' } {
  const table = loadSyscallTable(paths.stage1Rootfs);
  const noSeccomp = insecure(opts, 'seccomp');
  const seccomp = new Map(specs.map((s) => [s.name, seccompPlan(s.name, s.isolators.app, table, { insecure: noSeccomp })]));
  if (noSeccomp) warn('--insecure-options=seccomp: apps run without seccomp filters');
  for (const [app, p] of seccomp) if (p.disabledBecause && !noSeccomp) log().debug(`app ${app}: no seccomp filter, as ${p.disabledBecause}`);
  if (insecure(opts, 'capabilities')) {
    warn('--insecure-options=capabilities: apps keep every capability');
    return { specs: specs.map(withAllCapabilities), seccomp, caps: 'all' };
  }
  if (insecure(opts, 'paths')) warn('--insecure-options=paths: /proc and /sys paths are not masked for the apps');
  return { specs, seccomp, caps: extraCapabilities(specs.map((s) => s.isolators.capabilities)) };
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

function writeCause(paths: PodPaths, cause: string): void {
  if (fs.existsSync(paths.exitCause)) return;
  writeFileAtomic(paths.exitCause, `${cause}\n`);
}

/** The pod's exit status: the one app's, else the first failing one (in exit order), else 0. */
function podStatus(paths: PodPaths, specs: AppSpec[], statuses: Record<string, number>): number {
  if (specs.length === 1) return statuses[specs[0]!.name]!;
  const failing = Object.entries(statuses)
    .filter(([, s]) => s !== 0)
    .map(([app, s]) => ({ s, t: fs.statSync(paths.appStatus(app)).mtimeMs }))
    .sort((a, b) => a.t - b.t);
  return failing[0]?.s ?? 0;
}

function mib(bytes: number): string {
  return bytes % (1024 * 1024) === 0 ? `${bytes / 1024 / 1024} MiB` : `${bytes} bytes (${(bytes / 1024 / 1024).toFixed(1)} MiB)`;
}

/** Say why apps died when the reason is ours to know: the OOM killer, a seccomp filter. */
function explainEnds(paths: PodPaths, specs: AppSpec[], statuses: Record<string, number>, seccomp: Map<string, SeccompUnitPlan>): void {
  const oom = oomKilledApps(paths.stage1Rootfs);
  for (const spec of specs) {
    let why: string | undefined;
    if (oom.has(spec.name)) {
      const limit = spec.isolators.memoryLimit;
      const over = `more memory than its limit${limit !== undefined ? ` of ${mib(limit)}` : ''}`;
      why =
        statuses[spec.name] === 128 + os.constants.signals.SIGKILL
          ? `app ${spec.name} was killed by the kernel's OOM killer: it needed ${over}`
          : `the kernel's OOM killer killed a process of app ${spec.name}, which needed ${over}`;
    } else if (statuses[spec.name] === 128 + os.constants.signals.SIGSYS && (seccomp.get(spec.name)?.filters.length ?? 0) > 0) {
      why = `app ${spec.name} was killed by its seccomp filter (SIGSYS): it made a system call its os/linux/seccomp isolator forbids; allow that call, or set "errno" to make forbidden calls fail instead`;
    }
    if (why === undefined) continue;
    process.stderr.write(`stage1: ${why}\n`);
    writeCause(paths, why);
  }
}

class StopRequests {
  private first: number | undefined;
  private container: PodContainer | undefined;
  pending: NodeJS.Signals | undefined;

  attach(c: PodContainer): void {
    this.container = c;
    if (this.pending !== undefined) this.onSignal(this.pending);
  }

  onSignal(sig: NodeJS.Signals): void {
    if (this.container === undefined) {
      this.pending ??= sig;
      return;
    }
    const now = Date.now();
    if (this.first === undefined) {
      this.first = now;
      log().debug(`${sig}: stopping the pod`);
      this.container.powerOff();
    } else if (now - this.first > 1000) {
      // a second request, not the echo of the first (stage0 forwards what the terminal also sent us)
      log().debug(`${sig} again: killing the pod`);
      this.container.kill();
    }
  }
}

async function waitUntilStarted(paths: PodPaths, specs: AppSpec[], c: PodContainer, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!c.hasEnded) {
    const started = startedApps(paths.stage1Rootfs);
    if (specs.every((s) => started.has(s.name))) {
      markReady(paths);
      return;
    }
    if (Date.now() >= deadline) {
      c.kill();
      await c.ended;
      const lines = c.lastConsoleLines(10);
      if (lines.length > 0) process.stderr.write(`stage1: the pod's systemd said:\n${lines.map((l) => `stage1:   ${l}\n`).join('')}`);
      throw new NspawnBootError(`the pod did not start its apps within ${timeoutMs / 1000} s; run with --debug to see systemd's messages, or set ${BOOT_TIMEOUT_ENV} to wait longer`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function run(argv: string[]): Promise<number> {
  const { flags, rest } = takeFlavorFlags(argv);
  const args = parseRunArgs(rest);
  enableDebug(args.debug);
  if (args.mdsToken !== undefined) log().debug('the nspawn stage1 has no metadata service; ignoring --mds-token');
  if (process.env[LOCK_FD_ENV] === undefined) log().debug(`${LOCK_FD_ENV} is not set: the pod directory is not locked by stage0`);
  const paths = new PodPaths(process.cwd());
  // until the container's init is known (the pid file), rkt stop signals us
  writeFileAtomic(path.join(paths.dir, RUN_PID_FILE), `${process.pid}\n`);
  const opts = podRunOptions(paths, flags);
  const stops = new StopRequests();
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => stops.onSignal(sig));

  let planned: ReturnType<typeof plan>;
  let nspawn: string;
  try {
    nspawn = findNspawn();
    checkNetwork(args);
    const loaded = loadAppSpecs(paths, { container: 'rkt' });
    if (args.interactive && loaded.length !== 1) throw new UsageError(`--interactive needs a pod with exactly one app; this one has ${loaded.length}`);
    planned = plan(paths, loaded, opts);
  } catch (err) {
    // refused before anything was mounted or started: only `rkt status` needs telling
    writeCause(paths, `stage1 failed: ${(err as Error).message.split('\n')[0]}`);
    throw err;
  }
  const { specs, seccomp, caps } = planned;
  const tty = args.interactive && process.stdin.isTTY === true;
  const register = machinedAvailable();
  let container: PodContainer | undefined;
  let cgroupDirs: string[] = [];
  const copies: FifoCopy[] = [];
  let feed: FifoFeed | undefined;
  const guardian = new NspawnGuardian(paths.dir);
  const hostname = args.hostname ?? `rkt-${args.uuid}`;
  try {
    const network = await setupNetwork(paths, args, hostname);
    const etc = rootfsEtcOptions(network.result.dnsFiles, network.result.mode);
    for (const spec of specs) await prepareRootfs(paths, spec, etc);
    const out = process.stdout as NodeJS.WriteStream;
    writePodConfig(paths.stage1Rootfs, specs, {
      uuid: args.uuid,
      hostname,
      seccomp: { filters: [] },
      seccompByApp: seccomp,
      insecurePaths: insecure(opts, 'paths'),
      ...(args.interactive && { interactive: { tty, ...(tty && out.isTTY && { rows: out.rows, columns: out.columns }) } }),
    });
    fs.rmSync(paths.exitCause, { force: true });
    const rootfsPath = (p: string): string => path.join(paths.stage1Rootfs, p);
    if (!tty) {
      mkfifo(rootfsPath(STAGE1.stdout), rootfsPath(STAGE1.stderr));
      copies.push(new FifoCopy(rootfsPath(STAGE1.stdout), process.stdout), new FifoCopy(rootfsPath(STAGE1.stderr), process.stderr));
      if (args.interactive) {
        mkfifo(rootfsPath(STAGE1.stdin));
        feed = new FifoFeed(rootfsPath(STAGE1.stdin), process.stdin);
      }
    }
    await privateNspawnRuntime();
    let cgroupProcs: string[] = [];
    if (!register) {
      const hierarchies = ourHierarchies(fs.readFileSync('/proc/self/cgroup', 'utf8'), fs.readFileSync('/proc/self/mountinfo', 'utf8'));
      cgroupProcs = createPodCgroups(paths.dir, args.uuid, hierarchies);
      cgroupDirs = cgroupProcs.map((p) => path.dirname(p));
      for (const d of cgroupDirs) guardian.watchCgroup(d);
    }
    if (stops.pending !== undefined) {
      log().debug(`${stops.pending} before the pod started: not starting it`);
      return 128 + (os.constants.signals[stops.pending] ?? 0);
    }

    const { argv: nsArgv, env } = nspawnCommand({
      nspawn,
      uuid: args.uuid,
      hostname,
      rootfs: paths.stage1Rootfs,
      debug: args.debug,
      console: tty ? 'interactive' : 'read-only',
      capabilities: caps,
      ...(opts.privateUsers !== undefined && { privateUsers: opts.privateUsers }),
      ipc: opts.ipc,
      register,
      insecureSeccomp: insecure(opts, 'seccomp'),
      ...(network.netnsPath !== undefined && { netnsPath: network.netnsPath }),
    });
    container = new PodContainer({ argv: nsArgv, env, cgroupProcs, terminal: tty, showConsole: args.debug });
    const init = await container.start((pid) => guardian.watch(pid));
    guardian.watch(init);
    // rkt enter and stop find the pod through this: the container's PID 1.
    writePid(paths, init);
    stops.attach(container);
    await waitUntilStarted(paths, specs, container, bootTimeoutMs());
    log().debug('all apps started');
    feed?.readerStarted();
    const end = await container.ended;
    await drain(copies, DRAIN_MS);
    feed?.destroy();

    const statuses = readAppExitStatuses(paths);
    explainEnds(paths, specs, statuses, seccomp);
    if (specs.every((s) => statuses[s.name] !== undefined)) return podStatus(paths, specs, statuses);
    const lines = container.lastConsoleLines(5);
    const cause = end.signal !== null ? `the pod was killed (${end.signal})` : `systemd-nspawn exited with status ${end.code} before every app had exited${lines.length > 0 ? `: ${lines.at(-1)}` : ''}`;
    writeCause(paths, cause);
    if (!args.interactive) process.stderr.write(`stage1: ${cause}\n`);
    return Object.values(statuses).find((s) => s !== 0) ?? (end.signal === 'SIGKILL' ? 137 : STAGE1_FAILURE);
  } catch (err) {
    if (!specs.every((s) => readAppExitStatuses(paths)[s.name] !== undefined)) writeCause(paths, `stage1 failed: ${(err as Error).message.split('\n')[0]}`);
    container?.kill();
    if (container) await container.ended;
    throw err;
  } finally {
    for (const c of copies) c.destroy();
    feed?.destroy();
    if (cgroupDirs.length > 0) await removePodCgroups(cgroupDirs);
    // the container has ended (or never started): nothing uses the namespace any more
    await teardownNetwork(paths.dir);
    await guardian.done();
  }
}

/** The container's processes are gone with its init; their cgroups empty within moments. */
async function removePodCgroups(dirs: string[]): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const left = removeCgroups(dirs);
    if (left.length === 0) return;
    if (i === 49) log().warn(`cannot remove the pod's cgroups ${left.join(', ')}; rkt gc will try again`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

runEntrypoint(run);
