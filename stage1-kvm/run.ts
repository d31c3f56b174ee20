import fs from 'node:fs';
import os from 'node:os';
import { spawnSync } from 'node:child_process';
import { UsageError } from '../src/errors.js';
import { log } from '../src/log.js';
import { LOCK_FD_ENV, PodPaths } from '../src/stage1/contract.js';
import { loadAppSpecs, type AppSpec } from '../src/stage1-common/app-spec.js';
import { enableDebug, parseRunArgs, runEntrypoint, STAGE1_FAILURE } from '../src/stage1-common/entry.js';
import { ensureDirInRoot, prepareAppRootfs, resolveInRoot } from '../src/stage1-common/rootfs.js';
import { markReady, readAppExitStatuses, writePid } from '../src/stage1-common/status.js';
import { writeFileAtomic } from '../src/util/atomic.js';
import type { PodDnsFiles } from '../src/net/dns.js';
import { chooseAccel } from './accel.js';
import { installDnsFiles } from './app-dns.js';
import { connectConsole } from './console.js';
import { KvmBootError, KvmHostError } from './errors.js';
import { KvmGuardian } from './guardian.js';
import { startedApps, writeGuestConfig } from './guest-config.js';
import { guestNetworkError, writeGuestNetwork } from './guest-net.js';
import { checkHostname, customKernel, EXTRA_PARAMS_ENV, STAGE1_KERNEL_HZ, hostTscKhz, kernelCmdline, kernelPath, type Share } from './kernel.js';
import { FileFollower, lastLines, pipeFifo } from './output.js';
import { podFile } from './pod-files.js';
import { findQemu, findVirtiofsd, makeOutputFifos, startVirtiofsd, type Helper } from './qemu.js';
import { checkNetRequest, nicArgs, setupNetwork, teardownNetwork } from './network.js';
import { hostResources, vmSize } from './sizing.js';
import { exitCause, PodVm, type VmEnd } from './vm.js';

// The kvm run entrypoint: sets up the pod's networks (network.ts), prepares
// the apps' root filesystems (in the pod's private mount namespace, set up
// by stage0), writes their systemd units and the guest's network
// configuration into the stage1 rootfs, and boots that rootfs as the root
// filesystem of a qemu VM whose systemd runs the apps. It stays for the
// life of the pod: it copies the apps' output to its own stdout and stderr,
// turns stop signals into an ACPI power-off, records why the VM ended when
// the apps could not say it themselves, tears the network down, and exits
// with the pod's status.
//
// Environment: RKT_KVM_ACCEL=kvm|tcg, RKT_KVM_SHARE=9p|virtiofs,
// RKT_STAGE1_KVM_KERNEL, RKT_HYPERVISOR_EXTRA_KERNEL_PARAMS,
// RKT_KVM_BOOT_TIMEOUT and RKT_KVM_STOP_TIMEOUT (seconds).

const SHARE_ENV = 'RKT_KVM_SHARE';
const BOOT_TIMEOUT_ENV = 'RKT_KVM_BOOT_TIMEOUT';
export const STOP_TIMEOUT_ENV = 'RKT_KVM_STOP_TIMEOUT';
// Output still in flight when qemu exits is read within this.
const DRAIN_MS = 3000;
// The guest powers off right after the last app's exit; this is for when it does not.
const POWEROFF_GRACE_MS = 10_000;

function seconds(env: string, dflt: number): number {
  const v = process.env[env]?.trim();
  if (!v) return dflt * 1000;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${env}=${v} is not a number of seconds`);
  return n * 1000;
}

/** The app's executable must exist in its rootfs: found now, it is a clear error instead of status 203 from the guest. */
function checkExec(spec: AppSpec): void {
  const exe = spec.exec[0]!;
  if (!exe.startsWith('/')) throw new KvmHostError(`app "${spec.name}": exec "${exe}" must be an absolute path in the kvm stage1`);
  const r = resolveInRoot(spec.rootfs, exe);
  let ok = false;
  if (r.exists) {
    const st = fs.statSync(r.host);
    ok = st.isFile() && (st.mode & 0o111) !== 0;
  }
  if (!ok) throw new KvmHostError(`app "${spec.name}": ${exe} ${r.exists ? 'is not an executable file' : 'does not exist'} in image ${spec.imageName}; give the right command with --exec`);
}

// systemd mounts these in the app's root (RootDirectory= implies MountAPIVFS=);
// a read-only root must have the mount points before it becomes read-only.
const API_MOUNT_POINTS = ['/proc', '/sys', '/dev', '/run'];

/** The app's rootfs (shared code), its resolv.conf and hosts, the mount points systemd needs, read-only last if asked. */
async function prepareApp(paths: PodPaths, spec: AppSpec, dnsFiles: PodDnsFiles): Promise<void> {
  const r = await prepareAppRootfs(paths, { ...spec, readOnlyRootFS: false }, { hosts: dnsFiles.hosts.fallback });
  installDnsFiles(spec, dnsFiles);
  for (const p of API_MOUNT_POINTS) ensureDirInRoot(spec.rootfs, p);
  if (spec.readOnlyRootFS) {
    const m = spawnSync('mount', ['-o', 'remount,bind,ro', spec.rootfs], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    if (m.status !== 0) throw new KvmHostError(`app "${spec.name}": cannot make its rootfs read-only: ${m.stderr?.trim() || `exit status ${m.status}`}`);
  }
  log().debug(`app ${spec.name}: rootfs ready at ${r.rootfs}${r.overlay ? '' : ' (private copy)'}${spec.readOnlyRootFS ? ', read-only' : ''}`);
  checkExec(spec);
}

function mkfifos(paths: string[]): void {
  const r = spawnSync('mkfifo', ['-m', '0600', ...paths], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new KvmHostError(`mkfifo failed: ${r.stderr?.trim() || r.error?.message || `exit status ${r.status}`}`);
}

async function chooseShare(paths: PodPaths, coherent: boolean): Promise<{ share: Share; virtiofsd?: Helper }> {
  const forced = process.env[SHARE_ENV]?.trim();
  if (forced && forced !== '9p' && forced !== 'virtiofs') throw new UsageError(`${SHARE_ENV}=${forced}: use 9p or virtiofs`);
  if (forced === '9p') return { share: '9p' };
  const bin = findVirtiofsd();
  if (!bin) {
    if (forced) throw new KvmHostError(`${SHARE_ENV}=virtiofs, but virtiofsd is not installed (apt-get install virtiofsd)`);
    log().debug('virtiofsd not found: sharing the pod with 9p');
    return { share: '9p' };
  }
  const h = await startVirtiofsd(bin, paths.dir, paths.stage1Rootfs, coherent);
  if (h) return { share: 'virtiofs', virtiofsd: h };
  if (forced) throw new KvmHostError(`${SHARE_ENV}=virtiofs, but virtiofsd did not start (see ${podFile(paths.dir, 'virtiofsdLog')})`);
  log().debug('virtiofsd did not start: sharing the pod with 9p');
  return { share: '9p' };
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

/** Exit status for a VM that ended before its apps could report: a kill looks like one. */
function abnormalStatus(end: VmEnd): number {
  if (end.signal !== null) return 128 + (os.constants.signals[end.signal] ?? 0);
  if (end.shutdown?.reason === 'host-qmp-quit') return 137;
  return STAGE1_FAILURE;
}

function writeCause(paths: PodPaths, cause: string): void {
  if (fs.existsSync(paths.exitCause)) return;
  writeFileAtomic(paths.exitCause, `${cause}\n`);
}

function allExited(paths: PodPaths, specs: AppSpec[]): boolean {
  const st = readAppExitStatuses(paths);
  return specs.every((s) => st[s.name] !== undefined);
}

class StopRequests {
  private first: number | undefined;
  private vm: PodVm | undefined;
  pending: NodeJS.Signals | undefined;

  constructor(private readonly stopTimeoutMs: number) {}

  attach(vm: PodVm): void {
    this.vm = vm;
    if (this.pending !== undefined) this.onSignal(this.pending);
  }

  onSignal(sig: NodeJS.Signals): void {
    const now = Date.now();
    if (this.vm === undefined) {
      this.pending ??= sig;
      return;
    }
    if (this.first === undefined) {
      this.first = now;
      log().debug(`${sig}: powering the VM off`);
      void this.vm.powerdown(this.stopTimeoutMs);
    } else if (now - this.first > 1000) {
      // a second request, not the echo of the first (stage0 forwards what the terminal also sent us)
      log().debug(`${sig} again: quitting qemu`);
      void this.vm.quit();
    }
  }
}

async function run(argv: string[]): Promise<number> {
  const args = parseRunArgs(argv);
  enableDebug(args.debug);
  if (args.mdsToken !== undefined) log().debug('the kvm stage1 has no metadata service; ignoring --mds-token');
  if (process.env[LOCK_FD_ENV] === undefined) log().debug(`${LOCK_FD_ENV} is not set: the pod directory is not locked by stage0`);
  const paths = new PodPaths(process.cwd());
  // rkt enter and stop find the pod's process through this; its mtime is the pod's start time.
  writePid(paths, process.pid);
  fs.rmSync(paths.exitCause, { force: true });
  const stops = new StopRequests(seconds(STOP_TIMEOUT_ENV, 10));
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => stops.onSignal(sig));
  const guardian = new KvmGuardian(paths.dir);
  let vm: PodVm | undefined;
  let specs: AppSpec[] = [];
  try {
    checkNetRequest(args.net);
    specs = loadAppSpecs(paths);
    if (args.interactive && specs.length !== 1) throw new UsageError(`--interactive needs a pod with exactly one app; this one has ${specs.length}`);
    const accel = chooseAccel();
    if (accel.warning) process.stderr.write(`${accel.warning}\n`);
    if (accel.kvmProblem) log().debug(`kvm unusable: ${accel.kvmProblem}`);
    const size = vmSize(
      specs.map((s) => ({ name: s.name, memoryLimit: s.isolators.memoryLimit, cpuLimitMillis: s.isolators.cpuLimitMillis })),
      hostResources(),
      accel.accel,
    );
    log().debug(`VM size: ${size.explain}`);
    const qemu = findQemu();
    const kernel = kernelPath(paths.stage1Rootfs);
    const tscKhz = accel.accel === 'tcg' ? hostTscKhz() : undefined;
    if (accel.accel === 'tcg' && tscKhz === undefined) log().debug('host TSC rate unknown: keeping the PIT so that the guest can calibrate');

    const hostname = checkHostname(args.hostname ?? `rkt-${args.uuid}`);

    // last of the checks, first of the work: what it sets up is undone in finally
    const network = await setupNetwork(paths, args, hostname);
    for (const spec of specs) await prepareApp(paths, spec, network.dnsFiles);
    const tty = process.stdout as NodeJS.WriteStream;
    writeGuestConfig(paths.stage1Rootfs, specs, {
      ...(args.interactive && { interactive: tty.isTTY ? { rows: tty.rows, columns: tty.columns } : {} }),
    });
    writeGuestNetwork(paths.stage1Rootfs, specs, network.guest);
    makeOutputFifos(paths.dir, (p) => mkfifos([p]));
    if (stops.pending !== undefined) {
      log().debug(`${stops.pending} before the VM started: not starting it`);
      return 128 + (os.constants.signals[stops.pending] ?? 0);
    }

    // Only host volumes change under the guest's feet; without them the guest may cache freely.
    const coherent = specs.some((s) => s.mounts.some((m) => m.kind === 'host'));
    const { share, virtiofsd } = await chooseShare(paths, coherent);
    if (virtiofsd) guardian.watch(virtiofsd.pid);
    const cmdline = kernelCmdline({
      accel: accel.accel,
      share,
      coherent,
      uuid: args.uuid,
      hostname,
      debug: args.debug,
      interactive: args.interactive,
      ...(tscKhz !== undefined && { tscKhz }),
      ...(!customKernel() && { kernelHz: STAGE1_KERNEL_HZ }),
      extra: process.env[EXTRA_PARAMS_ENV],
    });
    log().debug(`booting ${kernel} (${accel.accel}, ${share}): ${cmdline}`);
    vm = new PodVm(qemu, {
      podDir: paths.dir,
      uuid: args.uuid,
      accel: accel.accel,
      memoryMiB: size.memoryMiB,
      cpus: size.cpus,
      kernel,
      cmdline,
      share,
      rootfs: paths.stage1Rootfs,
      pit: accel.accel === 'tcg' && tscKhz === undefined,
      ...(network.guest.length > 0 && { netns: network.netnsPath!, nics: nicArgs(network) }),
    });
    await vm.start((pid) => guardian.watch(pid));
    stops.attach(vm);

    const drains: Promise<void>[] = [];
    let follower: FileFollower | undefined;
    if (args.interactive) {
      const session = await connectConsole(paths.dir, { stdin: process.stdin, stdout: process.stdout, retryMs: 2000 });
      void vm.ended.then(() => session.close());
    } else {
      drains.push(pipeFifo(`${podFile(paths.dir, 'stdout')}.out`, process.stdout));
      drains.push(pipeFifo(`${podFile(paths.dir, 'stderr')}.out`, process.stderr));
      if (args.debug) follower = new FileFollower(podFile(paths.dir, 'consoleLog'), process.stderr).start();
    }

    await waitUntilStarted(paths, specs, vm, seconds(BOOT_TIMEOUT_ENV, accel.accel === 'kvm' ? 30 : 90));
    const end = await waitForEnd(paths, specs, vm);
    follower?.stop();
    await Promise.race([Promise.all(drains), new Promise((r) => setTimeout(r, DRAIN_MS))]);
    await vm.close();

    const statuses = readAppExitStatuses(paths);
    if (specs.every((s) => statuses[s.name] !== undefined)) return podStatus(paths, specs, statuses);
    const cause = exitCause(end, paths.dir);
    writeCause(paths, cause);
    log().debug(`pod ended abnormally: ${cause}`);
    if (!args.interactive) process.stderr.write(`stage1: ${cause}\n`);
    return Object.values(statuses).find((s) => s !== 0) ?? abnormalStatus(end);
  } catch (err) {
    // Whatever went wrong, `rkt status` should say it, unless the apps all told their own story.
    if (specs.length === 0 || !allExited(paths, specs)) writeCause(paths, `stage1 failed: ${(err as Error).message.split('\n')[0]}`);
    vm?.kill();
    throw err;
  } finally {
    // qemu is gone (or going: its tap is removed under it, which it survives)
    await teardownNetwork(paths.dir);
    await guardian.done();
  }
}

/**
 * Mark the pod ready once systemd in the guest has executed every app (or
 * it has already exited). A guest that gets nowhere within the boot timeout
 * is stopped, and the error shows the last lines of its console.
 */
async function waitUntilStarted(paths: PodPaths, specs: AppSpec[], vm: PodVm, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const t0 = Date.now();
  while (!vm.hasEnded) {
    const started = startedApps(paths.stage1Rootfs);
    if (specs.every((s) => started.has(s.name))) {
      markReady(paths);
      log().debug(`all apps started after ${Date.now() - t0} ms`);
      return;
    }
    const netError = guestNetworkError(paths.stage1Rootfs);
    if (netError !== undefined) {
      vm.kill();
      await vm.ended;
      throw new KvmBootError(`the guest could not configure the pod network (${netError})`);
    }
    if (Date.now() >= deadline) {
      vm.kill();
      await vm.ended;
      // fail() prints one line; the console's last words are what says why
      const lines = lastLines(podFile(paths.dir, 'consoleLog'), 10);
      if (lines.length > 0) process.stderr.write(`stage1: the guest console ended with:\n${lines.map((l) => `stage1:   ${l}\n`).join('')}`);
      const hint = lines.length > 0 ? `last console line: ${lines.at(-1)}` : 'its console is empty; run with --debug to see the boot messages';
      throw new KvmBootError(`the VM did not start the apps within ${timeoutMs / 1000} s (${hint}); set ${BOOT_TIMEOUT_ENV} to wait longer`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Wait for qemu to exit. The guest powers itself off once every app has
 * exited; should it not (a broken guest image, a hung shutdown), the VM is
 * quit after a grace period rather than kept forever.
 */
async function waitForEnd(paths: PodPaths, specs: AppSpec[], vm: PodVm): Promise<VmEnd> {
  let allSince: number | undefined;
  const timer = setInterval(() => {
    if (allSince === undefined) {
      if (allExited(paths, specs)) allSince = Date.now();
    } else if (Date.now() - allSince > POWEROFF_GRACE_MS) {
      clearInterval(timer);
      log().warn(`every app has exited but the guest did not power off within ${POWEROFF_GRACE_MS / 1000} s; stopping the VM`);
      void vm.quit();
    }
  }, 100);
  try {
    return await vm.ended;
  } finally {
    clearInterval(timer);
  }
}

runEntrypoint(run);
