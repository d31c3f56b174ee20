import fs from 'node:fs';
import os from 'node:os';
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { UsageError } from '../src/errors.js';
import { checkHostOnlyNetList } from '../src/net/netlist.js';
import { log, say } from '../src/log.js';
import { checkIsolators, FLY_ISOLATORS } from '../src/stage1-common/isolator-support.js';
import { LOCK_FD_ENV, PodPaths } from '../src/stage1/contract.js';
import { loadPodManifest, resolveAppSpecs, type AppSpec } from '../src/stage1-common/app-spec.js';
import { refuseStreamModes } from '../src/appc/app-streams.js';
import { addMetadataUrl } from '../src/stage1-common/metadata.js';
import type { DnsConfMode } from '../src/stage1/args.js';
import { enableDebug, parseRunArgs, refuseRunFlags, type RunArgs } from '../src/stage1-common/entry.js';
import { prepareAppRootfs, type ExtraMount } from '../src/stage1-common/rootfs.js';
import { exitStatusOf, markReady, preStartExplanation, writeAppExitStatus, writeExitCause, writePid, type ProcessEnd } from '../src/stage1-common/status.js';
import { phase } from '../src/util/phase-trace.js';
import { appCommand, appEnv, findHostTools, guardianCommand, processStartTime, type HostTools } from './exec.js';

// The fly run entrypoint: no isolation beyond a chroot per app, on the
// host's network, PID, IPC and UTS namespaces. stage0 has already put us in
// a private mount namespace that dies with the pod, so every mount made
// here disappears by itself, even after a SIGKILL; nothing is unmounted by
// hand. The process stays as the apps' supervisor: it forwards signals,
// records each exit status, and exits with the pod's.

// What rkt's fly gives every app besides its volumes.
const FLY_MOUNTS: ExtraMount[] = [
  { kind: 'rbind', source: '/dev', target: '/dev' },
  { kind: 'rbind', source: '/proc', target: '/proc' },
  { kind: 'rbind', source: '/sys', target: '/sys' },
  { kind: 'tmpfs', source: 'tmpfs', target: '/tmp' },
];
const FALLBACK_HOSTS = '127.0.0.1 localhost localdomain\n::1 localhost ip6-localhost ip6-loopback\n';

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
// A ^C at the terminal reaches us twice, straight from the tty and again
// forwarded by stage0; the apps must see it once.
const DUPLICATE_WINDOW_MS = 100;

function checkNetwork(args: RunArgs): void {
  checkHostOnlyNetList(args.net, 'fly');
  if (args.net[0] === 'default') log().debug('fly has no pod network: "default" means the host network here');
}

/**
 * /etc/resolv.conf and /etc/hosts by --dns-conf-mode, as rkt's fly: "host"
 * and "stage0" bind the host's file or the one stage0 wrote over the app's,
 * read-only; by default the app keeps its own, or gets the host's
 * resolv.conf and a stub hosts when the image has none; "none" adds nothing.
 */
function dnsFiles(paths: PodPaths, mode: DnsConfMode): { extraMounts: ExtraMount[]; resolvConf?: string; hosts?: string } {
  const extraMounts: ExtraMount[] = [];
  const out: { extraMounts: ExtraMount[]; resolvConf?: string; hosts?: string } = { extraMounts };
  const bind = (source: string, target: string) => extraMounts.push({ kind: 'bind', source, target, readOnly: true });
  if (mode.resolv === 'host') bind('/etc/resolv.conf', '/etc/resolv.conf');
  else if (mode.resolv === 'stage0') bind(paths.stage0ResolvConf, '/etc/resolv.conf');
  else if (mode.resolv === 'default') out.resolvConf = '/etc/resolv.conf';
  if (mode.hosts === 'host') bind('/etc/hosts', '/etc/hosts');
  else if (mode.hosts === 'stage0') bind(paths.stage0Hosts, '/etc/hosts');
  else out.hosts = FALLBACK_HOSTS;
  return out;
}

interface RunningApp {
  spec: AppSpec;
  /** What runs for it now: a handler or the app itself. */
  child?: ChildProcess;
  /** Leads its own process group (non-interactive apps). */
  group: boolean;
  /** Set once the app has ended, before its post-stop handler. */
  ending?: boolean;
  status?: number;
}

class Supervisor {
  private readonly apps: RunningApp[] = [];
  private guardian?: ChildProcess;
  private readonly devNull = fs.openSync('/dev/null', 'r+');
  private readonly lastSignal = new Map<NodeJS.Signals, number>();
  private readonly failures: number[] = [];
  private readonly waiters: (() => void)[] = [];
  private pendingStop?: NodeJS.Signals;
  /** The first stop signal after the apps were started. */
  private stopping?: NodeJS.Signals;
  private started = false;

  constructor(
    private readonly paths: PodPaths,
    private readonly tools: HostTools,
    private readonly interactive: boolean,
  ) {}

  /** Signals that arrive before the apps start stop the pod from starting. */
  onSignal(sig: NodeJS.Signals): void {
    const now = Date.now();
    const last = this.lastSignal.get(sig);
    this.lastSignal.set(sig, now);
    if (last !== undefined && now - last < DUPLICATE_WINDOW_MS) return;
    if (!this.started) {
      this.pendingStop ??= sig;
      return;
    }
    // an interactive app shares our terminal and process group: the tty already told it
    if (sig === 'SIGINT' && this.interactive) return;
    log().debug(`forwarding ${sig} to the apps`);
    this.stopping ??= sig;
    // a running post-stop handler is let finish: it is the app's clean-up
    for (const app of this.apps) if (!app.ending) this.signalApp(app, sig);
  }

  private signalApp(app: RunningApp, sig: NodeJS.Signals): void {
    if (app.child?.pid === undefined) return;
    try {
      process.kill(app.group ? -app.child.pid : app.child.pid, sig);
    } catch {
      // already gone
    }
  }

  get stopSignal(): NodeJS.Signals | undefined {
    return this.pendingStop;
  }

  private startGuardian(): ChildProcess {
    const argv = guardianCommand(this.tools);
    // fd 3 mapped to /dev/null: nobody but us may keep the pod lock alive.
    const g = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'ignore', 'inherit', this.devNull], cwd: '/' });
    g.stdin?.on('error', () => undefined);
    return g;
  }

  /** Start every app; resolves once each has either been executed or failed to be. */
  async start(specs: AppSpec[]): Promise<void> {
    this.started = true;
    this.guardian = this.startGuardian();
    await Promise.all(specs.map((spec) => this.startApp(spec)));
  }

  /** Spawn `command` as the app, chrooted in its rootfs; the guardian learns of it. */
  private spawnInApp(spec: AppSpec, command: readonly string[], stdin: 'inherit' | 'ignore'): ChildProcess {
    const argv = appCommand(this.tools, spec, command);
    const group = !this.interactive;
    const stdio: StdioOptions = [stdin, 'inherit', 'inherit', this.devNull];
    log().debug({ argv }, `starting ${command === spec.exec ? 'app' : 'a handler of app'} ${spec.name}`);
    // Non-interactive apps get a session of their own: signals reach them
    // only through us (once), and the whole group can be cleaned up.
    const child = spawn(argv[0]!, argv.slice(1), { env: appEnv(spec), stdio, detached: group, cwd: '/' });
    if (child.pid !== undefined) {
      const start = processStartTime(child.pid);
      if (start !== undefined) this.guardian?.stdin?.write(`${child.pid} ${start} ${group ? 1 : 0}\n`);
    }
    return child;
  }

  /** Run an event handler of the app to its end; resolves to its exit status. */
  private runHandler(app: RunningApp, which: 'pre-start' | 'post-stop', command: readonly string[]): Promise<number> {
    const child = this.spawnInApp(app.spec, command, 'ignore');
    app.child = child;
    return new Promise((resolve) => {
      child.once('error', (err) => {
        say(`cannot run the ${which} handler of app ${app.spec.name}: ${err.message}`);
        resolve(254);
      });
      child.once('exit', (code, signal) => {
        this.killGroup(app);
        resolve(exitStatusOf({ code, signal } satisfies ProcessEnd));
      });
    });
  }

  /**
   * Start one app: its pre-start handler first, to its end (spec/aci.md);
   * when that fails the app never runs and ends with the handler's status.
   * Resolves once the app has either been executed or failed to be.
   */
  private async startApp(spec: AppSpec): Promise<void> {
    const app: RunningApp = { spec, group: !this.interactive };
    this.apps.push(app);
    const pre = spec.eventHandlers.preStart;
    if (pre) {
      const status = await this.runHandler(app, 'pre-start', pre);
      // a stop that came while the handler ran: the app is not started at all, and that is no failure of the handler
      if (this.stopping !== undefined) return this.finish(app, 128 + (os.constants.signals[this.stopping] ?? 0), false);
      if (status !== 0) {
        const why = preStartExplanation(spec.name, status);
        say(why);
        writeExitCause(this.paths, why);
        return this.finish(app, status, false);
      }
    }
    const child = this.spawnInApp(spec, spec.exec, this.interactive ? 'inherit' : 'ignore');
    app.child = child;
    return new Promise((resolve) => {
      child.once('spawn', () => resolve());
      child.once('error', (err) => {
        say(`cannot start app ${spec.name}: ${err.message}`);
        void this.finish(app, 254, true);
        resolve();
      });
      child.once('exit', (code, signal) => void this.finish(app, exitStatusOf({ code, signal } satisfies ProcessEnd), true));
    });
  }

  /** What the app (or its handler) left running in its group goes with it, as with a unit's cgroup. */
  private killGroup(app: RunningApp): void {
    if (app.group && app.child?.pid !== undefined) {
      try {
        process.kill(-app.child.pid, 'SIGKILL');
      } catch {
        // no member left
      }
    }
  }

  /** The app has ended: its post-stop handler runs (if it ran at all), then its status is recorded. */
  private async finish(app: RunningApp, status: number, ran: boolean): Promise<void> {
    if (app.ending) return;
    app.ending = true;
    log().debug(`app ${app.spec.name} exited with status ${status}`);
    this.killGroup(app);
    const post = app.spec.eventHandlers.postStop;
    if (ran && post) {
      const s = await this.runHandler(app, 'post-stop', post);
      if (s !== 0) say(`the post-stop handler of app ${app.spec.name} failed with status ${s}`);
    }
    app.status = status;
    if (status !== 0) this.failures.push(status);
    writeAppExitStatus(this.paths, app.spec.name, status);
    if (this.apps.every((a) => a.status !== undefined)) {
      phase('app-exit');
      for (const w of this.waiters.splice(0)) w();
    }
  }

  /** Resolves when every app has exited, to the pod's exit status. */
  async wait(): Promise<number> {
    if (!this.apps.every((a) => a.status !== undefined)) await new Promise<void>((r) => this.waiters.push(r));
    await this.stopGuardian();
    // one app: its status; several: the first that failed
    if (this.apps.length === 1) return this.apps[0]!.status!;
    return this.failures[0] ?? 0;
  }

  private async stopGuardian(): Promise<void> {
    const g = this.guardian;
    if (!g || g.exitCode !== null || g.signalCode !== null) return;
    const exited = new Promise<void>((r) => g.once('exit', () => r()));
    // end of input with every app gone: it finds nothing to kill and exits
    g.stdin?.end();
    const timer = setTimeout(() => g.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  }
}

export async function run(argv: string[]): Promise<number> {
  const args = parseRunArgs(argv);
  enableDebug(args.debug);
  phase('stage1-start');
  checkNetwork(args);
  phase('network');
  // as rkt's fly: the pod shares the host's UTS namespace; said, not refused, so that scripts written for rkt keep working
  if (args.hostname !== undefined) log().warn(`the fly stage1 shares the host's hostname; --hostname=${args.hostname} has no effect`);
  refuseRunFlags('fly', args, {
    privateUsers: 'fly runs apps in the host\'s user namespace, with the host\'s ids',
    mutable: 'fly runs its apps as plain host processes and does not run mutable pods (rkt app sandbox); use the nspawn stage1',
  });
  // fly restricts none of what these relax, as rkt's fly: there is nothing to switch off
  if (args.disableCapabilities || args.disablePaths || args.disableSeccomp) log().debug('fly applies no capability, path or seccomp restriction: nothing to disable');
  if (process.env[LOCK_FD_ENV] === undefined) log().debug(`${LOCK_FD_ENV} is not set: the pod directory is not locked by stage0`);

  const paths = new PodPaths(process.cwd());
  const tools = findHostTools();
  const pm = loadPodManifest(paths);
  if ((pm.ports ?? []).length > 0) {
    throw new UsageError(`the fly stage1 shares the host network and forwards no ports (${pm.ports!.map((p) => p.name).join(', ')}): drop --port, the apps listen on the host directly`);
  }
  const specs = resolveAppSpecs(paths, pm);
  refuseStreamModes(specs, 'fly');
  addMetadataUrl(paths, args, specs, () => '127.0.0.1');
  if (args.interactive && specs.length !== 1) throw new UsageError(`--interactive needs a pod with exactly one app; this one has ${specs.length}`);

  const sup = new Supervisor(paths, tools, args.interactive);
  for (const sig of FORWARDED) process.on(sig, () => sup.onSignal(sig));
  // `rkt enter` joins our mount namespace through this pid.
  writePid(paths, process.pid);

  // rkt's fly ignored isolators; here a limit fly cannot apply is refused rather than dropped
  checkIsolators(specs, FLY_ISOLATORS);
  for (const spec of specs) {
    const dns = dnsFiles(paths, args.dnsConfMode);
    const r = await prepareAppRootfs(paths, spec, { ...dns, extraMounts: [...FLY_MOUNTS, ...dns.extraMounts] });
    log().debug(`app ${spec.name}: rootfs ready at ${r.rootfs}${r.overlay ? '' : ' (private copy)'}`);
  }
  phase('app-rootfs');
  const early = sup.stopSignal;
  if (early !== undefined) {
    log().debug(`${early} before the apps started: not starting them`);
    return 128 + (os.constants.signals[early] ?? 0);
  }
  await sup.start(specs);
  markReady(paths);
  log().debug('all apps started');
  phase('app-start');
  const status = await sup.wait();
  phase('pod-exit');
  return status;
}

