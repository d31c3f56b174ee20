import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { UsageError } from '../src/errors.js';
import { log, say } from '../src/log.js';
import type { PodPaths } from '../src/stage1/contract.js';
import { loadAppSpecs, type AppSpec } from '../src/stage1-common/app-spec.js';
import { STAGE1_FAILURE, type RunArgs } from '../src/stage1-common/entry.js';
import { teardownNetwork } from '../src/stage1-common/pod-net.js';
import { ChannelReports } from '../src/stage1-common/report-channel.js';
import { claimPodIds, type PodIds } from '../src/stage1-common/pod-ids.js';
import { prepareUnitRootfs } from '../src/stage1-common/rootfs.js';
import type { PodEngine } from '../src/stage1-common/supervisor.js';
import { chooseAccel, type AccelChoice } from './accel.js';
import { installDnsFiles } from './app-dns.js';
import { bootTimeoutMs, extraKernelParams, forcedShare, KVM_ENV, KVM_TIMEOUTS, stopTimeoutMs, type Share } from './config.js';
import { connectConsole } from './console.js';
import { KvmBootError, KvmHostError } from './errors.js';
import { KvmGuardian } from './guardian.js';
import { writeGuestConfig } from './guest-config.js';
import { guestIdShift, idmapHelper } from './guest-ids.js';
import { writeGuestNetwork } from './guest-net.js';
import { assembleGuestRoot } from './guest-root.js';
import { checkHostname, customKernel, hostTscKhz, kernelCmdline, kernelPath, STAGE1_KERNEL_HZ } from './kernel.js';
import { checkNetRequest, nicArgs, setupNetwork, type KvmNetwork } from './network.js';
import { pipeFifo } from './output.js';
import { podFile } from './pod-files.js';
import { findQemu, makeOutputFifos, type Helper } from './qemu.js';
import { hostResources, vmSize, type VmSize } from './sizing.js';
import { findVirtiofsd, startVirtiofsd } from './virtiofsd.js';
import { bootTimeoutReport, exitCause, PodVm, type VmEnd } from './vm.js';

// The kvm flavor's engine for the shared pod supervisor: the host side of
// one pod VM. prepare() checks what can be checked, sets up the pod's
// networks, assembles the apps' root filesystems (in the pod's private
// mount namespace, set up by stage0) and writes their systemd units and the
// guest's network configuration into the stage1 rootfs; start() shares that
// rootfs into a qemu VM (virtio-fs, or 9p) and boots it, and copies the
// apps' output to our stdout and stderr (or connects the terminal to the
// serial console for --interactive); the VM keeps the console's log.

function mkfifo(p: string): void {
  const r = spawnSync('mkfifo', ['-m', '0600', p], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new KvmHostError(`mkfifo failed: ${r.stderr?.trim() || r.error?.message || `exit status ${r.status}`}`);
}

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
  kernel: string;
  tscKhz: number | undefined;
  hostname: string;
  share: Share;
  /** virtiofs: the binary. */
  virtiofsd?: string;
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

  constructor(
    private readonly paths: PodPaths,
    private readonly args: RunArgs,
  ) {
    this.guardian = new KvmGuardian(paths.dir);
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
    this.reports = new ChannelReports(this.specs.map((s) => s.name));
    this.guardian.watchApps(this.specs.map((s) => s.name));
    if (this.args.interactive && this.specs.length !== 1) throw new UsageError(`--interactive needs a pod with exactly one app; this one has ${this.specs.length}`);
    const accel = chooseAccel();
    if (accel.warning) log().warn(accel.warning);
    if (accel.kvmProblem) log().debug(`kvm unusable: ${accel.kvmProblem}`);
    const size = vmSize(
      this.specs.map((s) => ({ name: s.name, memoryLimit: s.isolators.memoryLimit, cpuLimitMillis: s.isolators.cpuLimitMillis })),
      hostResources(),
      accel.accel,
    );
    log().debug(`VM size: ${size.explain}`);
    const tscKhz = accel.accel === 'tcg' ? hostTscKhz() : undefined;
    if (accel.accel === 'tcg' && tscKhz === undefined) log().debug('host TSC rate unknown: keeping the PIT so that the guest can calibrate');
    return {
      ...this.chooseShare(),
      accel,
      size,
      qemu: findQemu(),
      kernel: kernelPath(this.paths.stage1Rootfs),
      tscKhz,
      hostname: checkHostname(this.args.hostname ?? `rkt-${this.args.uuid}`),
    };
  }

  async prepare(): Promise<void> {
    this.plan = this.check();
    this.network = await setupNetwork(this.paths, this.args, this.plan.hostname);
    const dns = this.network.dnsFiles;
    if (this.plan.share === 'virtiofs') this.ids = claimPodIds(this.args.uuid);
    const idShift = this.ids && guestIdShift(this.ids.base, idmapHelper(this.paths.stage1Rootfs));
    for (const spec of this.specs) {
      await prepareUnitRootfs(this.paths, spec, 'kvm', { hosts: dns.hosts.fallback, finish: () => installDnsFiles(spec, dns), ...(idShift && { idShift }) });
    }
    const tty = process.stdout as NodeJS.WriteStream;
    writeGuestConfig(this.paths.stage1Rootfs, this.specs, {
      ...(this.args.interactive && { interactive: tty.isTTY ? { rows: tty.rows, columns: tty.columns } : {} }),
    });
    writeGuestNetwork(this.paths.stage1Rootfs, this.specs, this.network.guest);
    makeOutputFifos(this.paths.dir, mkfifo);
  }

  /**
   * virtio-fs where virtiofsd is installed, else 9p. Chosen before anything
   * is mounted: over virtio-fs the apps' files are assembled with the pod's
   * ids (guest-ids.ts), which 9p could not serve.
   */
  private chooseShare(): { share: Share; virtiofsd?: string } {
    const forced = forcedShare();
    if (forced === '9p') return { share: '9p' };
    const bin = findVirtiofsd();
    if (bin) return { share: 'virtiofs', virtiofsd: bin };
    if (forced) throw new KvmHostError(`${KVM_ENV.share}=virtiofs, but virtiofsd is not installed (apt-get install virtiofsd)`);
    log().debug('virtiofsd not found: sharing the pod with 9p');
    return { share: '9p' };
  }

  private async startVirtiofsd(bin: string, coherent: boolean): Promise<Helper> {
    const root = await assembleGuestRoot(this.paths, this.specs, this.ids!.base, idmapHelper(this.paths.stage1Rootfs));
    const h = await startVirtiofsd(bin, { podDir: this.paths.dir, root, base: this.ids!.base, helper: idmapHelper(this.paths.stage1Rootfs), coherent }, KVM_TIMEOUTS.virtiofsdStartMs);
    if (!h) throw new KvmHostError(`virtiofsd did not start (see ${podFile(this.paths.dir, 'virtiofsdLog')}); ${KVM_ENV.share}=9p shares the pod over 9p instead`);
    return h;
  }

  async start(): Promise<void> {
    const plan = this.plan!;
    const network = this.network!;
    const { paths, args } = this;
    // Only host volumes change under the guest's feet; without them the guest may cache freely.
    const coherent = this.specs.some((s) => s.mounts.some((m) => m.kind === 'host'));
    const share = plan.share;
    if (plan.virtiofsd) this.guardian.watch((await this.startVirtiofsd(plan.virtiofsd, coherent)).pid);
    const accel = plan.accel.accel;
    const cmdline = kernelCmdline({
      accel,
      share,
      coherent,
      uuid: args.uuid,
      hostname: plan.hostname,
      debug: args.debug,
      interactive: args.interactive,
      ...(plan.tscKhz !== undefined && { tscKhz: plan.tscKhz }),
      ...(!customKernel() && { kernelHz: STAGE1_KERNEL_HZ }),
      extra: extraKernelParams(),
    });
    log().debug(`booting ${plan.kernel} (${accel}, ${share}): ${cmdline}`);
    this.vm = new PodVm(plan.qemu, {
      podDir: paths.dir,
      uuid: args.uuid,
      accel,
      memoryMiB: plan.size.memoryMiB,
      cpus: plan.size.cpus,
      kernel: plan.kernel,
      cmdline,
      share,
      rootfs: paths.stage1Rootfs,
      pit: accel === 'tcg' && plan.tscKhz === undefined,
      ...(network.guest.length > 0 && { netns: network.netnsPath!, nics: nicArgs(network) }),
    }, { ...(args.debug && !args.interactive && { debug: process.stderr }) });
    await this.vm.start((pid) => this.guardian.watch(pid));
    // qemu has opened the port's FIFO (it answers on QMP): the channel ends when qemu does
    this.reports.attachFifo(`${podFile(paths.dir, 'report')}.out`, { hold: false });
    if (args.interactive) {
      await this.vm.console?.listening();
      const session = await connectConsole(paths.dir, { stdin: process.stdin, stdout: process.stdout, retryMs: 2000 });
      void this.vm.ended.then(() => session.close());
    } else {
      this.drains.push(pipeFifo(`${podFile(paths.dir, 'stdout')}.out`, process.stdout));
      this.drains.push(pipeFifo(`${podFile(paths.dir, 'stderr')}.out`, process.stderr));
    }
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
    // qemu is gone (or going: its tap is removed under it, which it survives)
    await teardownNetwork(this.paths.dir);
    await this.guardian.done();
    // the pod's ids are free for another pod once nothing of this one runs
    this.ids?.lock.release();
  }
}
