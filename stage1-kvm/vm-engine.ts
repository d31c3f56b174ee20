import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { UsageError } from '../src/errors.js';
import { log, say } from '../src/log.js';
import type { PodPaths } from '../src/stage1/contract.js';
import { addMetadataUrl } from '../src/stage1-common/metadata.js';
import { loadAppSpecs, type AppSpec } from '../src/stage1-common/app-spec.js';
import { withAllCapabilities } from '../src/stage1-common/insecure.js';
import { checkIsolators, KVM_ISOLATORS, SECCOMP_ISOLATORS } from '../src/stage1-common/isolator-support.js';
import { STAGE1_FAILURE, type RunArgs } from '../src/stage1-common/entry.js';
import { hostAddressFromPod, teardownNetwork } from '../src/stage1-common/pod-net.js';
import { ChannelReports } from '../src/stage1-common/report-channel.js';
import { checkIdRange, claimPodIds, qemuIds, readIdFiles, type PodIds } from '../src/stage1-common/pod-ids.js';
import { prepareUnitRootfs } from '../src/stage1-common/rootfs.js';
import type { PodEngine } from '../src/stage1-common/supervisor.js';
import { phase } from '../src/util/phase-trace.js';
import { chooseAccel, type AccelChoice } from './accel.js';
import { installDnsFiles } from './app-dns.js';
import { bootTimeoutMs, checkShare, extraKernelParams, KVM_TIMEOUTS, stopTimeoutMs } from './config.js';
import { attachToApp } from './agent-client.js';
import { KvmBootError, KvmHostError } from './errors.js';
import { KvmGuardian } from './guardian.js';
import { writeGuestConfig } from './guest-config.js';
import { guestIdShift, idmapHelper } from './guest-ids.js';
import { writeGuestNetwork } from './guest-net.js';
import { writeGuestVolumes } from './guest-volumes.js';
import { assembleGuestRoot } from './guest-root.js';
import { checkHostname, customKernel, hostTscKhz, kernelCmdline, kernelPath, STAGE1_KERNEL_HZ } from './kernel.js';
import { checkNetRequest, nicArgs, setupNetwork, type KvmNetwork } from './network.js';
import { pipeFifo } from './output.js';
import { agentSocketPaths, podFile } from './pod-files.js';
import { findQemu, makeQemuDir, type Helper } from './qemu.js';
import { hostResources, vmSize, type VmSize } from './sizing.js';
import { findVirtiofsd, startVirtiofsd } from './virtiofsd.js';
import { createVmCgroup, removeVmCgroup, vmMemoryLimitBytes } from './vm-cgroup.js';
import { bootTimeoutReport, exitCause, PodVm, type VmEnd } from './vm.js';
import { MutableApps, sandboxSize, saveMutableState, shareGuestRoot, waitForGuest, writeMutableGuest } from './mutable.js';

// The kvm flavor's engine for the shared pod supervisor: the host side of
// one pod VM. prepare() checks what can be checked, sets up the pod's
// networks, assembles the apps' root filesystems (in the pod's private
// mount namespace, set up by stage0) and writes their systemd units and the
// guest's network configuration into the stage1 rootfs; start() shares that
// rootfs into a qemu VM (virtio-fs) and boots it, and copies the
// apps' output to our stdout and stderr (or connects the terminal to the
// serial console for --interactive); the VM keeps the console's log.

/** Exit status for a VM that ended before its apps could report: a kill looks like one. */
function abnormalStatus(end: VmEnd): number {
  if (end.signal !== null) return 128 + (os.constants.signals[end.signal] ?? 0);
  if (end.shutdown?.reason === 'host-qmp-quit') return 137;
  return STAGE1_FAILURE;
}

interface Plan {
  accel: AccelChoice;
  size: VmSize;
  qemu: string;
  virtiofsd: string;
  kernel: string;
  tscKhz: number | undefined;
  hostname: string;
}

export class VmEngine implements PodEngine<VmEnd> {
  specs: AppSpec[] = [];
  reports = new ChannelReports([]);
  private plan: Plan | undefined;
  private network: KvmNetwork | undefined;
  private vm: PodVm | undefined;
  private ids: PodIds | undefined;
  private readonly guardian: KvmGuardian;
  private readonly drains: Promise<void>[] = [];
  private cgroupProcs: string[] = [];
  /** rkt app sandbox (mutable.ts). */
  private readonly mutable: MutableApps | undefined;

  constructor(
    private readonly paths: PodPaths,
    private readonly args: RunArgs,
  ) {
    this.guardian = new KvmGuardian(paths.dir);
    if (args.mutable) this.mutable = new MutableApps(paths);
  }

  get ended(): Promise<VmEnd> {
    // no VM (yet): nothing to wait for
    return this.vm?.ended ?? Promise.resolve({ code: null, signal: null });
  }

  get hasEnded(): boolean {
    return this.vm?.hasEnded ?? false;
  }

  /** Until every app must have started: the guest boots several times slower under tcg. */
  bootTimeoutMs(): number {
    return bootTimeoutMs(this.plan?.accel.accel ?? 'tcg');
  }

  /** Everything that can be refused is refused here, before anything exists on the host. */
  private check(): Plan {
    checkNetRequest(this.args.net);
    this.specs = loadAppSpecs(this.paths);
    if (this.args.disableCapabilities) {
      log().warn('--insecure-options=capabilities: apps keep every capability');
      this.specs = this.specs.map(withAllCapabilities);
    }
    if (this.args.disableSeccomp) log().warn('--insecure-options=seccomp: apps run without seccomp filters');
    checkIsolators(this.specs, KVM_ISOLATORS, this.args.disableSeccomp ? SECCOMP_ISOLATORS : undefined);
    if (this.args.disablePaths) log().warn("--insecure-options=paths: apps see the guest's whole /dev, the agent's port included");
    this.reports = new ChannelReports(this.specs.map((s) => s.name));
    this.guardian.watchApps(this.specs.map((s) => s.name));
    if (this.args.mutable && this.args.interactive) throw new UsageError('--interactive cannot be used with a mutable pod: its apps come later');
    if (this.args.interactive && this.specs.length !== 1) throw new UsageError(`--interactive needs a pod with exactly one app; this one has ${this.specs.length}`);
    const accel = chooseAccel();
    if (accel.warning) log().warn(accel.warning);
    if (accel.kvmProblem) log().debug(`kvm unusable: ${accel.kvmProblem}`);
    const size = vmSize(
      this.mutable ? sandboxSize() : this.specs.map((s) => ({ name: s.name, memoryLimit: s.isolators.memoryLimit, cpuLimitMillis: s.isolators.cpuLimitMillis })),
      hostResources(),
      accel.accel,
    );
    log().debug(`VM size: ${size.explain}`);
    const tscKhz = accel.accel === 'tcg' ? hostTscKhz() : undefined;
    if (accel.accel === 'tcg' && tscKhz === undefined) log().debug('host TSC rate unknown: keeping the PIT so that the guest can calibrate');
    checkShare();
    checkIdRange(readIdFiles());
    const virtiofsd = findVirtiofsd();
    if (!virtiofsd) throw new KvmHostError('virtiofsd is not installed; the kvm stage1 shares the pod\'s files with its VM through it (Debian 12: apt-get install qemu-system-common; later releases: apt-get install virtiofsd)');
    return {
      accel,
      size,
      qemu: findQemu(),
      virtiofsd,
      kernel: kernelPath(this.paths.stage1Rootfs),
      tscKhz,
      hostname: checkHostname(this.args.hostname ?? `rkt-${this.args.uuid}`),
    };
  }

  async prepare(): Promise<void> {
    this.plan = this.check();
    // the pod's own block of ids: the guest's ids on shared files (guest-ids.ts), and qemu's,
    // which its taps and files belong to
    this.ids = claimPodIds(this.args.uuid);
    const qemu = qemuIds(this.ids);
    log().debug(`pod ids: slot ${this.ids.slot}, guest ids from ${this.ids.base}, qemu runs as uid ${qemu.uid}, gid ${qemu.gid}`);
    this.network = await setupNetwork(this.paths, this.args, this.plan.hostname, qemu);
    phase('network');
    addMetadataUrl(this.paths, this.args, this.specs, () => hostAddressFromPod(this.paths.dir, this.network!.mode));
    const dns = this.network.dnsFiles;
    const idShift = guestIdShift(this.ids.base, idmapHelper(this.paths.stage1Rootfs));
    for (const spec of this.specs) {
      await prepareUnitRootfs(this.paths, spec, 'kvm', { hosts: dns.hosts.fallback, finish: () => installDnsFiles(spec, dns), idShift });
    }
    writeGuestConfig(this.paths.stage1Rootfs, this.specs, {
      sharedDevices: this.args.disablePaths,
      ...(this.args.interactive && { interactive: this.interactiveTty() }),
    });
    writeGuestNetwork(this.paths.stage1Rootfs, this.specs, this.network.guest);
    writeGuestVolumes(this.paths.stage1Rootfs, this.specs);
    if (this.mutable) {
      this.mutable.init(this.specs);
      const netStep = this.network.guest.length > 0;
      writeMutableGuest(this.paths.stage1Rootfs, netStep);
      saveMutableState(this.paths, { base: this.ids.base, dns, sharedDevices: this.args.disablePaths, netStep });
    }
    makeQemuDir(this.paths.dir, qemu);
  }

  /** --interactive: a terminal when rkt run has one on stdin and stdout (as nspawn decides), with its size. */
  private interactiveTty(): { tty: boolean; rows?: number; columns?: number } {
    const out = process.stdout as NodeJS.WriteStream;
    if (process.stdin.isTTY !== true || out.isTTY !== true) return { tty: false };
    return { tty: true, rows: out.rows, columns: out.columns };
  }

  /**
   * virtiofsd serving the guest's root (guest-root.ts) with the pod's ids, in
   * the pod's cgroup (its v2 one: rkt-idmap joins it before exec). A pod
   * whose virtiofsd does not start fails: there is no other share
   * (config.ts, checkShare).
   */
  private async startShare(coherent: boolean): Promise<Helper> {
    const helper = idmapHelper(this.paths.stage1Rootfs);
    const root = await assembleGuestRoot(this.paths, this.specs, this.ids!.base, helper);
    if (this.mutable) await shareGuestRoot();
    const v2 = this.cgroupProcs.map((p) => path.dirname(p)).find((d) => fs.existsSync(path.join(d, 'cgroup.controllers')));
    const h = await startVirtiofsd(this.plan!.virtiofsd, { podDir: this.paths.dir, root, base: this.ids!.base, helper, coherent, ...(v2 !== undefined && { cgroup: v2 }) }, KVM_TIMEOUTS.virtiofsdStartMs);
    if (!h) throw new KvmHostError(`virtiofsd did not start, so the pod's files cannot reach its VM (see ${podFile(this.paths.dir, 'virtiofsdLog')})`);
    return h;
  }

  async start(): Promise<void> {
    const plan = this.plan!;
    const network = this.network!;
    const { paths, args } = this;
    // Only host volumes change under the guest's feet; without them the guest may cache freely.
    // So do a mutable pod's apps' (mutable.ts).
    const coherent = this.mutable !== undefined || this.specs.some((s) => s.mounts.some((m) => m.kind === 'host'));
    const accel = plan.accel.accel;
    // before any helper starts, so that each can be put in it
    this.cgroupProcs = createVmCgroup(paths.dir, args.uuid, vmMemoryLimitBytes(plan.size.memoryMiB, accel)).procs;
    const virtiofsd = await this.startShare(coherent);
    phase('share-start');
    this.guardian.watch(virtiofsd.pid);
    const cmdline = kernelCmdline({
      accel,
      uuid: args.uuid,
      hostname: plan.hostname,
      debug: args.debug,
      interactive: args.interactive,
      ...(plan.tscKhz !== undefined && { tscKhz: plan.tscKhz }),
      ...(!customKernel() && { kernelHz: STAGE1_KERNEL_HZ }),
      noSeccomp: this.args.disableSeccomp,
      extra: extraKernelParams(),
    });
    log().debug(`booting ${plan.kernel} (${accel}): ${cmdline}`);
    const ids = qemuIds(this.ids!);
    // qemu connects to virtiofsd's socket as the pod's uid
    fs.chownSync(podFile(paths.dir, 'virtiofsSocket'), ids.uid, ids.gid);
    this.vm = new PodVm(plan.qemu, {
      podDir: paths.dir,
      uuid: args.uuid,
      accel,
      memoryMiB: plan.size.memoryMiB,
      cpus: plan.size.cpus,
      kernel: plan.kernel,
      cmdline,
      pit: accel === 'tcg' && plan.tscKhz === undefined,
      ids,
      cgroupProcs: this.cgroupProcs,
      ...(network.guest.length > 0 && { netns: network.netnsPath!, nics: nicArgs(network) }),
    }, { ...(args.debug && !args.interactive && { debug: process.stderr }) });
    await this.vm.start((pid) => this.guardian.watch(pid));
    // qemu has opened the port's FIFO (it answers on QMP): the channel ends when qemu does
    this.reports.attachFifo(`${podFile(paths.dir, 'report')}.out`, { hold: false });
    if (args.interactive) {
      this.drains.push(this.attachInteractive());
    } else {
      this.drains.push(pipeFifo(`${podFile(paths.dir, 'stdout')}.out`, process.stdout));
      this.drains.push(pipeFifo(`${podFile(paths.dir, 'stderr')}.out`, process.stderr));
    }
    if (this.mutable) await waitForGuest(paths.dir, this.bootTimeoutMs(), () => this.hasEnded);
  }

  /**
   * --interactive: rkt run's stdin, stdout and stderr are the app's, through
   * the guest agent (its ATTACH), connected once the guest reports the app
   * started (its unit starts after the agent has made its streams): what is
   * typed or piped before waits unread in rkt run's stdin, and the end of
   * piped input reaches the app as end of file. (A connection made while
   * the guest still boots was seen to stay unserved by qemu.) The console stays the
   * operators' (rkt attach --mode=console) and its log; nothing of it
   * reaches the app's output.
   */
  private async attachInteractive(): Promise<void> {
    const spec = this.specs[0]!;
    const { tty } = this.interactiveTty();
    const stdin = process.stdin.readableEnded ? null : process.stdin;
    const deadline = Date.now() + this.bootTimeoutMs();
    while (!this.reports.started().has(spec.name)) {
      if (this.hasEnded || Date.now() > deadline) return; // the supervisor says why
      await new Promise((r) => setTimeout(r, 50));
    }
    try {
      await attachToApp(
        agentSocketPaths(this.paths.dir),
        { app: spec.name, stdin: true, stdout: true, stderr: !tty },
        tty,
        { stdin, stdout: process.stdout, stderr: process.stderr },
        { who: 'rkt run --interactive' },
      );
    } catch (err) {
      // the pod's end says what happened to the app; this only says why its streams did not flow
      if (!this.hasEnded) log().warn((err as Error).message);
    }
  }

  refreshApps(): string[] {
    const r = this.mutable?.refresh();
    if (r === undefined) return [];
    this.specs = this.args.disableCapabilities ? r.specs.map(withAllCapabilities) : r.specs;
    this.reports.setApps(r.specs.map((s) => s.name), r.changed);
    this.guardian.watchApps(r.added);
    return r.changed;
  }

  powerOff(): void {
    void this.vm?.powerdown(stopTimeoutMs());
  }

  forceEnd(): void {
    void this.vm?.quit();
  }

  kill(): void {
    this.vm?.kill();
  }

  startFailure(): Error | undefined {
    const netError = this.reports.netError();
    return netError === undefined ? undefined : new KvmBootError(`the guest could not configure the pod network (${netError})`);
  }

  bootTimedOut(timeoutMs: number): Error {
    // the error is one line; the console's last words are what says why
    const { lines, error } = bootTimeoutReport(this.paths.dir, timeoutMs);
    if (lines.length > 0) say(`the guest console ended with:\n${lines.join('\n')}`);
    return error;
  }

  async finish(): Promise<void> {
    const consoleDone = this.vm?.console?.closed ?? Promise.resolve();
    await Promise.race([Promise.all([...this.drains, consoleDone, this.reports.drain(KVM_TIMEOUTS.drainMs)]), new Promise((r) => setTimeout(r, KVM_TIMEOUTS.drainMs))]);
    await this.vm?.close();
  }

  abnormalEnd(end: VmEnd): { cause: string; status: number } {
    return { cause: exitCause(end, this.paths.dir), status: abnormalStatus(end) };
  }

  async cleanup(): Promise<void> {
    this.reports.close();
    this.mutable?.release();
    // qemu is gone (or going: its tap is removed under it, which it survives)
    await teardownNetwork(this.paths.dir);
    await this.guardian.done();
    const left = await removeVmCgroup(this.paths.dir, this.args.uuid);
    if (left.length > 0) log().warn(`cannot remove the pod's cgroups ${left.join(', ')}; rkt gc will try again`);
    // the pod's ids are free for another pod once nothing of this one runs
    this.ids?.lock.release();
  }
}
