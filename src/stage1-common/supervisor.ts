import { setTimeout as sleep } from 'node:timers/promises';
import fs from 'node:fs';
import os from 'node:os';
import { log, say } from '../log.js';
import type { PodPaths } from '../stage1/contract.js';
import { phase } from '../util/phase-trace.js';
import { MAX_LINE_CHARS, sanitizeLine } from '../util/untrusted-text.js';
import type { AppSpec } from './app-spec.js';
import type { AppExit, AppReports } from './app-reports.js';
import { markReady, preStartExplanation, writeAppExitStatus, writeExitCause } from './status.js';

// The one pod supervisor of the flavors whose pod boots an init of its own
// (kvm: systemd in a VM; nspawn: systemd in a container). The run
// entrypoint of such a flavor is this loop around an engine: prepare the
// host, start the pod, mark it ready once every app runs, turn stop
// requests into a power-off, wait for the end, and exit with the pod's
// status, saying in `rkt status` (exit-cause) why the pod ended whenever
// the apps could not say it themselves. What differs between flavors is
// behind PodEngine; nothing here knows about qemu or nspawn.

/** How the pod's main process ended, as node reports it. */
export interface EngineEnd {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface PodEngine<E extends EngineEnd = EngineEnd> {
  /** The apps of the pod, once prepare() has loaded them (empty before). */
  readonly specs: readonly AppSpec[];
  /** What the pod reports about its apps, over a channel the host owns. */
  readonly reports: AppReports;
  /** Checks, then host set-up before any pod process exists (networks, app root filesystems, the pod's configuration). */
  prepare(): Promise<void>;
  /** Start the pod's processes; resolves once they run, after which `ended` is valid. */
  start(): Promise<void>;
  readonly ended: Promise<E>;
  readonly hasEnded: boolean;
  /** The orderly stop: the apps get SIGTERM and record their statuses. */
  powerOff(): void;
  /** End a pod that does not end by itself (a second stop request, or every app gone but the pod still up). */
  forceEnd(): void;
  /** End the pod now (on an error). */
  kill(): void;
  /** Every app has started. */
  onStarted?(): void;
  /** An error the pod itself reported while starting (kvm: the guest could not configure its network). */
  startFailure?(): Error | undefined;
  /** The error for a pod that did not start its apps in time; may print the console's last words. */
  bootTimedOut(timeoutMs: number): Error;
  /** After the end: output still in flight, open connections. */
  finish(): Promise<void>;
  /** Why the pod ended before every app had reported, and the status to exit with then. */
  abnormalEnd(end: E): { cause: string; status: number };
  /** Why an app ended, when the flavor can tell (a seccomp kill). */
  explainAppEnd?(spec: AppSpec, status: number): string | undefined;
  /** Undo what prepare() and start() set up on the host; never throws. */
  cleanup(): Promise<void>;
}

export interface SuperviseOptions {
  paths: PodPaths;
  /** Until every app must have started; asked once the pod has started (it may depend on what prepare() found). */
  bootTimeoutMs: () => number;
  /** How long a pod whose apps have all exited may take to end by itself. */
  endGraceMs: number;
  /** --interactive: the app owns the terminal, so the pod's end is not narrated on stderr. */
  interactive: boolean;
  /** Where stop requests come from (default: this process's SIGINT, SIGTERM and SIGHUP). */
  signals?: NodeJS.EventEmitter;
  /** Poll interval for the pod's reports. */
  pollMs?: number;
}

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
// an exit cause is at most two console lines' worth (vm.ts)
const EXIT_CAUSE_MAX_CHARS = 2 * MAX_LINE_CHARS;
/** A second stop request closer than this to the first is its echo (stage0 forwards what the terminal also sent us). */
const STOP_ECHO_MS = 1000;


function signalStatus(sig: NodeJS.Signals): number {
  return 128 + (os.constants.signals[sig] ?? 0);
}

/** Stop requests: the first powers the pod off, a later one forces the end; before start they are kept for later. */
export class StopRequests {
  private first: number | undefined;
  private engine: PodEngine | undefined;
  pending: NodeJS.Signals | undefined;

  attach(engine: PodEngine): void {
    this.engine = engine;
    if (this.pending !== undefined) this.onSignal(this.pending);
  }

  onSignal(sig: NodeJS.Signals, now = Date.now()): void {
    if (this.engine === undefined) {
      this.pending ??= sig;
      return;
    }
    if (this.first === undefined) {
      this.first = now;
      log().debug(`${sig}: powering the pod off`);
      this.engine.powerOff();
    } else if (now - this.first > STOP_ECHO_MS) {
      log().debug(`${sig} again: forcing the pod's end`);
      this.engine.forceEnd();
    }
  }
}

/** The pod's exit status: the one app's, else the first failing one in exit order, else 0. */
export function podStatus(specs: readonly AppSpec[], exits: readonly AppExit[]): number {
  if (specs.length === 1) return exits.find((e) => e.app === specs[0]!.name)?.status ?? 0;
  return exits.find((e) => e.status !== 0)?.status ?? 0;
}

function mib(bytes: number): string {
  return bytes % (1024 * 1024) === 0 ? `${bytes / 1024 / 1024} MiB` : `${bytes} bytes (${(bytes / 1024 / 1024).toFixed(1)} MiB)`;
}

/** Why the OOM killer's victim died, in words for the user. */
export function oomExplanation(spec: AppSpec, status: number): string {
  const limit = spec.isolators.memoryLimit;
  const over = `more memory than its limit${limit !== undefined ? ` of ${mib(limit)}` : ''}`;
  return status === 128 + os.constants.signals.SIGKILL
    ? `app ${spec.name} was killed by the kernel's OOM killer: it needed ${over}`
    : `the kernel's OOM killer killed a process of app ${spec.name}, which needed ${over}`;
}

export class PodSupervisor {
  private readonly stops = new StopRequests();
  private readonly pollMs: number;

  constructor(
    private readonly engine: PodEngine,
    private readonly opts: SuperviseOptions,
  ) {
    this.pollMs = opts.pollMs ?? 20;
  }

  private readonly recorded = new Set<string>();

  /**
   * Write each exit the pod has reported into the pod directory, where
   * `rkt status` and `rkt list` read it: only the host writes there.
   */
  private record(): AppExit[] {
    const exits = this.engine.reports.exits();
    for (const e of exits) {
      if (this.recorded.has(e.app)) continue;
      this.recorded.add(e.app);
      writeAppExitStatus(this.opts.paths, e.app, e.status);
    }
    return exits;
  }

  private allExited(): boolean {
    const specs = this.engine.specs;
    if (specs.length === 0) return false;
    const exited = new Set(this.record().map((e) => e.app));
    return specs.every((s) => exited.has(s.name));
  }

  /** The first cause wins: whoever saw the pod end first (rkt stop, the guardian) knew best. */
  writeCause(cause: string): void {
    // causes can quote what the pod said: one printable line, whatever it sent
    writeExitCause(this.opts.paths, sanitizeLine(cause, EXIT_CAUSE_MAX_CHARS));
  }

  /** Run the pod to its end; resolves with the status the run entrypoint exits with. */
  async run(): Promise<number> {
    const source = this.opts.signals ?? process;
    const onSignal = (sig: NodeJS.Signals): void => this.stops.onSignal(sig);
    const handlers = STOP_SIGNALS.map((sig) => [sig, () => onSignal(sig)] as const);
    for (const [sig, h] of handlers) source.on(sig, h);
    fs.rmSync(this.opts.paths.exitCause, { force: true });
    let started = false;
    try {
      await this.engine.prepare();
      phase('app-rootfs');
      if (this.stops.pending !== undefined) {
        log().debug(`${this.stops.pending} before the pod started: not starting it`);
        return signalStatus(this.stops.pending);
      }
      started = true;
      await this.engine.start();
      this.stops.attach(this.engine);
      await this.waitUntilStarted();
      this.engine.onStarted?.();
      const end = await this.waitForEnd();
      await this.engine.finish();
      return this.outcome(end);
    } catch (err) {
      // Whatever went wrong, `rkt status` should say it, unless the apps all told their own story.
      if (!this.allExited()) this.writeCause(`stage1 failed: ${(err as Error).message.split('\n')[0]}`);
      if (started) {
        this.engine.kill();
        await Promise.race([this.engine.ended, sleep(5000)]);
      }
      throw err;
    } finally {
      for (const [sig, h] of handlers) source.off(sig, h);
      await this.engine.cleanup();
      phase('pod-exit');
    }
  }

  /**
   * Mark the pod ready once every app has been started (or has already
   * exited). A pod that gets nowhere within the boot timeout is killed; an
   * app whose pre-start handler is running has got somewhere.
   */
  private async waitUntilStarted(): Promise<void> {
    const t0 = Date.now();
    const timeoutMs = this.opts.bootTimeoutMs();
    const deadline = t0 + timeoutMs;
    while (!this.engine.hasEnded) {
      this.record();
      const started = this.engine.reports.started();
      if (this.engine.specs.every((s) => started.has(s.name))) {
        markReady(this.opts.paths);
        log().debug(`all apps started after ${Date.now() - t0} ms`);
        return;
      }
      const failure = this.engine.startFailure?.();
      // an app whose pre-start handler runs has got past the boot: its handler may take as long as it needs (rkt)
      const preStarting = this.engine.reports.preStarting?.() ?? new Set<string>();
      const booting = this.engine.specs.some((s) => !started.has(s.name) && !preStarting.has(s.name));
      const timedOut = booting && Date.now() >= deadline;
      if (failure !== undefined || timedOut) {
        this.engine.kill();
        await this.engine.ended;
        throw failure ?? this.engine.bootTimedOut(timeoutMs);
      }
      await sleep(this.pollMs);
    }
  }

  /** The pod's end; a pod whose apps have all exited but which stays up is ended after the grace period. */
  private async waitForEnd(): Promise<EngineEnd> {
    let allSince: number | undefined;
    const timer = setInterval(() => {
      if (allSince === undefined) {
        if (this.allExited()) allSince = Date.now();
      } else if (Date.now() - allSince > this.opts.endGraceMs) {
        clearInterval(timer);
        log().warn(`every app has exited but the pod did not end within ${this.opts.endGraceMs / 1000} s; ending it`);
        this.engine.forceEnd();
      }
    }, Math.max(this.pollMs, 100));
    try {
      return await this.engine.ended;
    } finally {
      clearInterval(timer);
    }
  }

  /** Say why apps died when the reason is known to the host: the OOM killer, the flavor's own knowledge. */
  private explainEnds(exits: readonly AppExit[]): void {
    const oom = this.engine.reports.oomKilled();
    const preStart = this.engine.reports.preStartFailed?.() ?? new Set<string>();
    for (const spec of this.engine.specs) {
      const status = exits.find((e) => e.app === spec.name)?.status;
      if (status === undefined) continue;
      const why = preStart.has(spec.name)
        ? preStartExplanation(spec.name, status)
        : oom.has(spec.name)
          ? oomExplanation(spec, status)
          : this.engine.explainAppEnd?.(spec, status);
      if (why === undefined) continue;
      say(why);
      this.writeCause(why);
    }
  }

  private outcome(end: EngineEnd): number {
    const exits = this.record();
    this.explainEnds(exits);
    const specs = this.engine.specs;
    if (specs.every((s) => exits.some((e) => e.app === s.name))) return podStatus(specs, exits);
    const { cause, status } = this.engine.abnormalEnd(end);
    this.writeCause(cause);
    log().debug(`pod ended abnormally: ${cause}`);
    if (!this.opts.interactive) say(cause);
    return exits.find((e) => e.status !== 0)?.status ?? status;
  }
}
