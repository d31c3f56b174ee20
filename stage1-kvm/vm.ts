import { setTimeout as sleep } from 'node:timers/promises';
import os from 'node:os';
import { log } from '../src/log.js';
import { QmpClient, type QmpCloseReason } from './qmp.js';
import type { GuestPanickedEventData, ShutdownEventData } from './qmp.js';
import { KVM_ENV, KVM_TIMEOUTS } from './config.js';
import { KvmBootError } from './errors.js';
import { capLine, MAX_LINE_CHARS } from '../src/util/untrusted-text.js';
import { phase } from '../src/util/phase-trace.js';
import { ConsoleRelay, type ConsoleRelayOptions } from './console-relay.js';
import { consoleTail } from './console-log.js';
import { lastLines } from './output.js';
import { podFile, socketPath, writePidFile } from './pod-files.js';
import { closeQemuDir, startQemu, type QemuProcess, type VmConfig } from './qemu.js';

// One pod's VM as the run entrypoint sees it: the qemu process, the QMP
// connection it keeps for the VM's events, the host end of its serial
// console (console-relay.ts), and, once qemu is gone, what ended it.
// Stopping is graceful first (the ACPI power button: systemd in the guest
// stops the apps, which record their statuses, then powers off) and
// forceful after a timeout.

export interface VmEnd {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last SHUTDOWN event: who asked qemu to stop, if anyone did. */
  shutdown?: ShutdownEventData;
  /** GUEST_PANICKED: qemu's pvpanic device saw the guest kernel panic. */
  panic?: GuestPanickedEventData;
}


export class PodVm {
  private qemu!: QemuProcess;
  private qemuPid: number | undefined;
  private relay: ConsoleRelay | undefined;
  private qmp: QmpClient | undefined;
  private shutdown: ShutdownEventData | undefined;
  private panic: GuestPanickedEventData | undefined;
  private endValue: VmEnd | undefined;
  private stopping = false;
  ended!: Promise<VmEnd>;

  constructor(
    private readonly qemuBinary: string,
    readonly config: VmConfig,
    private readonly consoleOptions: ConsoleRelayOptions = {},
  ) {}

  /** qemu's pid, or its launcher's until qemu's is known. */
  get pid(): number {
    return this.qemuPid ?? this.qemu.pid;
  }

  get hasEnded(): boolean {
    return this.endValue !== undefined;
  }

  /**
   * Start qemu, connect to its monitor, close its directory to it and let
   * the guest run; rejects with qemu's own complaint if it exits first.
   * `onSpawn` is told the launcher's pid, then qemu's; `beforeCont` runs
   * on the monitor before the guest does (a restored template gets the
   * pod's devices there: template-vm.ts).
   */
  async start(onSpawn?: (pid: number) => void, beforeCont?: (qmp: QmpClient) => Promise<void>): Promise<void> {
    this.qemu = startQemu(this.qemuBinary, this.config);
    if (this.qemu.pid > 0) onSpawn?.(this.qemu.pid);
    // read from the start: until then the guest's console waits on a full socket
    // (no descriptor when the spawn itself failed: qemu's exit says why below)
    if (this.qemu.console) this.relay = new ConsoleRelay(this.config.podDir, this.qemu.console, this.consoleOptions);
    this.ended = this.qemu.exited.then((e) => {
      this.endValue = { ...e, ...(this.shutdown && { shutdown: this.shutdown }), ...(this.panic && { panic: this.panic }) };
      log().debug({ ...this.endValue }, 'qemu exited');
      return this.endValue;
    });
    // The jail reports qemu's pid as it starts it; only from then on is there
    // a monitor to wait for (polling before would back off past the moment it
    // appears). No pid (the jail failed) or none in time: the monitor's own
    // wait below says what happened.
    const pid = await Promise.race([this.qemu.qemuPid, sleep(KVM_TIMEOUTS.qmpConnectMs).then(() => undefined)]);
    if (pid !== undefined) {
      this.qemuPid = pid;
      writePidFile(this.config.podDir, 'qemuPid', pid);
      onSpawn?.(pid);
    }
    const connect = QmpClient.connect(socketPath(this.config.podDir, 'qmp'), { retryUntilMs: KVM_TIMEOUTS.qmpConnectMs, timeoutMs: KVM_TIMEOUTS.qmpConnectMs });
    const failed = (e: VmEnd): KvmBootError => new KvmBootError(`qemu failed to start (${describeEnd(e)}): ${qemuComplaint(this.config.podDir)}`);
    let first: { c: QmpClient } | { e: VmEnd };
    try {
      first = await Promise.race([connect.then((c) => ({ c })), this.ended.then((e) => ({ e }))]);
    } catch (err) {
      // the monitor went away as qemu died: qemu's own words say why
      const end = await Promise.race([this.ended, sleep(2000).then(() => undefined)]);
      if (end !== undefined) throw failed(end);
      throw err;
    }
    if ('e' in first) {
      void connect.then((c) => c.close(), () => undefined);
      throw failed(first.e);
    }
    const qmp = first.c;
    this.qmp = qmp;
    log().debug(`QMP connected: qemu ${qmp.qemuVersion}, pid ${this.pid}`);
    qmp.on('SHUTDOWN', (ev) => {
      this.shutdown = ev.data;
      log().debug({ ...ev.data }, 'VM shutdown');
    });
    qmp.on('GUEST_PANICKED', (ev) => {
      this.panic = ev.data;
      log().debug({ ...ev.data }, 'guest panicked');
      // with action "pause" qemu would keep the dead VM around
      if (ev.data.action !== 'poweroff') void this.quit();
    });
    qmp.on('close', (r: QmpCloseReason) => log().debug(`QMP connection closed: ${r.message}`));
    // qemu has made every file it makes (all its chardevs are open once the monitor answers)
    closeQemuDir(this.config.podDir);
    await beforeCont?.(qmp);
    phase('vm-start');
    try {
      await qmp.cont({ timeoutMs: KVM_TIMEOUTS.contMs });
    } catch (err) {
      throw new KvmBootError(`qemu did not start the VM: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * The graceful stop: press the power button, and if the guest has not
   * powered off after `timeoutMs`, quit qemu (then kill it).
   */
  async powerdown(timeoutMs: number): Promise<void> {
    if (this.stopping || this.hasEnded) return;
    this.stopping = true;
    try {
      await this.qmp?.systemPowerdown({ timeoutMs: KVM_TIMEOUTS.commandMs });
    } catch (err) {
      log().debug(`system_powerdown: ${(err as Error).message}`);
    }
    const done = await Promise.race([this.ended.then(() => true), sleep(timeoutMs).then(() => false)]);
    if (!done) {
      log().debug(`the guest did not power off within ${timeoutMs} ms; quitting qemu`);
      await this.quit();
    }
  }

  /**
   * Ask qemu to exit now; kill it if it has not within KVM_TIMEOUTS.quitMs
   * of the command's answer. A wedged qemu that does not answer either
   * costs both bounds: up to twice quitMs in all.
   */
  async quit(): Promise<void> {
    if (this.hasEnded) return;
    try {
      await this.qmp?.quit({ timeoutMs: KVM_TIMEOUTS.quitMs });
    } catch (err) {
      log().debug(`quit: ${(err as Error).message}`);
    }
    const done = await Promise.race([this.ended.then(() => true), sleep(KVM_TIMEOUTS.quitMs).then(() => false)]);
    if (!done) this.kill();
  }

  kill(): void {
    if (!this.hasEnded) this.qemu.child.kill('SIGKILL');
  }

  /** The console relay, once qemu is started (console.sock is served from then on). */
  get console(): ConsoleRelay | undefined {
    return this.relay;
  }

  async close(): Promise<void> {
    await this.qmp?.close();
  }
}

/** "exit status 1", "signal 9 (SIGKILL)". */
export function describeEnd(e: { code: number | null; signal: NodeJS.Signals | null }): string {
  if (e.signal !== null) return `killed by signal ${os.constants.signals[e.signal] ?? '?'} (${e.signal})`;
  return `exit status ${e.code}`;
}

/** qemu's last words from its log, for error messages. */
export function qemuComplaint(podDir: string): string {
  const lines = lastLines(podFile(podDir, 'qemuLog'), 3).map((l) => l.replace(/^qemu-system-x86_64: /, ''));
  return lines.length > 0 ? lines.join('; ') : 'qemu said nothing (see the pod directory for qemu.log)';
}

/**
 * The console's "Kernel panic" line, as context for a panic the host
 * observed; never evidence of one (any root process in the guest can print
 * it, on the console or through /dev/kmsg).
 */
export function panicLine(podDir: string): string | undefined {
  return consoleTail(podDir, 60).findLast((l) => /Kernel panic - /.test(l))?.replace(/^.*?Kernel panic - /, '');
}

function describeCause(end: VmEnd, podDir: string): string {
  // GUEST_PANICKED (or the shutdown it causes) is qemu's word, from the pvpanic device
  if (end.panic !== undefined || end.shutdown?.reason === 'guest-panic') {
    const context = panicLine(podDir);
    return `guest panicked${context ? `: ${context}` : ''}`;
  }
  if (end.signal !== null) return `qemu ${describeEnd(end)}`;
  const reason = end.shutdown?.reason;
  if (reason === 'host-qmp-quit') return 'qemu was told to quit over QMP';
  if (reason === 'host-signal') return 'qemu was stopped by a signal';
  // a panic before the pvpanic driver is up (panic=-1) ends this way too, but so does a guest's own reboot
  if (reason === 'guest-reset') return 'the guest rebooted or crashed early (qemu runs with -no-reboot)';
  if (end.code !== 0) return `qemu ended with ${describeEnd(end)}: ${qemuComplaint(podDir)}`;
  if (reason === 'guest-shutdown') return 'the guest powered off before every app had exited';
  return `qemu exited (${describeEnd(end)}) before every app had exited`;
}

/**
 * Why the VM ended while some apps had no exit status, in words for
 * `rkt status` (exit-cause): one printable line of bounded length. Only
 * asked when something went wrong, so it always has an answer. What the
 * host observed decides; guest text is only quoted, sanitised.
 */
export function exitCause(end: VmEnd, podDir: string): string {
  return capLine(describeCause(end, podDir), 2 * MAX_LINE_CHARS);
}

/**
 * What a pod that did not start its apps in time has to say: the console's
 * last lines (sanitised, capped) to print, and the one-line error.
 */
export function bootTimeoutReport(podDir: string, timeoutMs: number): { lines: string[]; error: KvmBootError } {
  const lines = consoleTail(podDir, 10);
  const hint = lines.length > 0 ? `last console line: ${lines.at(-1)}` : 'its console is empty; run with --debug to see the boot messages';
  return { lines, error: new KvmBootError(`the VM did not start the apps within ${timeoutMs / 1000} s (${hint}); set ${KVM_ENV.bootTimeout} to wait longer`) };
}
