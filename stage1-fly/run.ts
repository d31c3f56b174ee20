import fs from 'node:fs';
import os from 'node:os';
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { UsageError } from '../src/errors.js';
import { log, say } from '../src/log.js';
import { ISOLATOR } from '../src/appc/isolators.js';
import { LOCK_FD_ENV, PodPaths } from '../src/stage1/contract.js';
import { loadAppSpecs, type AppSpec } from '../src/stage1-common/app-spec.js';
import { refuseStreamModes } from '../src/appc/app-streams.js';
import { enableDebug, parseRunArgs, type RunArgs } from '../src/stage1-common/entry.js';
import { prepareAppRootfs, type ExtraMount } from '../src/stage1-common/rootfs.js';
import { exitStatusOf, markReady, writeAppExitStatus, writePid, type ProcessEnd } from '../src/stage1-common/status.js';
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
  const nets = args.net.length === 0 ? ['host'] : args.net;
  // stage0 says "default" when the user chose nothing; rkt's fly ran such pods on the host network too.
  if (nets.length === 1 && (nets[0] === 'host' || nets[0] === 'default')) {
    if (nets[0] === 'default') log().debug('fly has no pod network: "default" means the host network here');
    return;
  }
  throw new UsageError(`the fly stage1 shares the host network and supports only --net=host, not --net=${args.net.join(',')}`);
}

/** fly enforces no resource isolator (rkt's fly did not either); say which ones are left unapplied. */
function noteIgnoredIsolators(spec: AppSpec): void {
  const names = new Set([...spec.isolators.app, ...spec.isolators.pod].map((i) => i.name));
  names.delete(ISOLATOR.noNewPrivileges);
  if (names.size > 0) log().debug(`app ${spec.name}: fly does not enforce isolators ${[...names].join(', ')}`);
}

interface RunningApp {
  spec: AppSpec;
  child: ChildProcess;
  /** Leads its own process group (non-interactive apps). */
  group: boolean;
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
    for (const app of this.apps) if (app.status === undefined) this.signalApp(app, sig);
  }

  private signalApp(app: RunningApp, sig: NodeJS.Signals): void {
    if (app.child.pid === undefined) return;
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

  private startApp(spec: AppSpec): Promise<void> {
    const argv = appCommand(this.tools, spec);
    const group = !this.interactive;
    const stdio: StdioOptions = [this.interactive ? 'inherit' : 'ignore', 'inherit', 'inherit', this.devNull];
    log().debug({ argv }, `starting app ${spec.name}`);
    // Non-interactive apps get a session of their own: signals reach them
    // only through us (once), and the whole group can be cleaned up.
    const child = spawn(argv[0]!, argv.slice(1), { env: appEnv(spec), stdio, detached: group, cwd: '/' });
    const app: RunningApp = { spec, child, group };
    this.apps.push(app);
    if (child.pid !== undefined) {
      const start = processStartTime(child.pid);
      if (start !== undefined) this.guardian?.stdin?.write(`${child.pid} ${start} ${group ? 1 : 0}\n`);
    }
    return new Promise((resolve) => {
      child.once('spawn', () => resolve());
      child.once('error', (err) => {
        say(`cannot start app ${spec.name}: ${err.message}`);
        this.finish(app, 254);
        resolve();
      });
      child.once('exit', (code, signal) => this.finish(app, exitStatusOf({ code, signal } satisfies ProcessEnd)));
    });
  }

  private finish(app: RunningApp, status: number): void {
    if (app.status !== undefined) return;
    app.status = status;
    log().debug(`app ${app.spec.name} exited with status ${status}`);
    // What the app left running in its group goes with it, as with a unit's cgroup.
    if (app.group && app.child.pid !== undefined) {
      try {
        process.kill(-app.child.pid, 'SIGKILL');
      } catch {
        // no member left
      }
    }
    if (status !== 0) this.failures.push(status);
    writeAppExitStatus(this.paths, app.spec.name, status);
    if (this.apps.every((a) => a.status !== undefined)) for (const w of this.waiters.splice(0)) w();
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
  checkNetwork(args);
  if (args.hostname !== undefined) log().debug(`fly shares the host's UTS namespace; ignoring --hostname=${args.hostname}`);
  if (args.mdsToken !== undefined) log().debug('fly has no metadata service; ignoring --mds-token');
  if (process.env[LOCK_FD_ENV] === undefined) log().debug(`${LOCK_FD_ENV} is not set: the pod directory is not locked by stage0`);

  const paths = new PodPaths(process.cwd());
  const tools = findHostTools();
  const specs = loadAppSpecs(paths);
  refuseStreamModes(specs, 'fly');
  if (args.interactive && specs.length !== 1) throw new UsageError(`--interactive needs a pod with exactly one app; this one has ${specs.length}`);

  const sup = new Supervisor(paths, tools, args.interactive);
  for (const sig of FORWARDED) process.on(sig, () => sup.onSignal(sig));
  // `rkt enter` joins our mount namespace through this pid.
  writePid(paths, process.pid);

  for (const spec of specs) {
    noteIgnoredIsolators(spec);
    const r = await prepareAppRootfs(paths, spec, { extraMounts: FLY_MOUNTS, resolvConf: '/etc/resolv.conf', hosts: FALLBACK_HOSTS });
    log().debug(`app ${spec.name}: rootfs ready at ${r.rootfs}${r.overlay ? '' : ' (private copy)'}`);
  }
  const early = sup.stopSignal;
  if (early !== undefined) {
    log().debug(`${early} before the apps started: not starting them`);
    return 128 + (os.constants.signals[early] ?? 0);
  }
  await sup.start(specs);
  markReady(paths);
  log().debug('all apps started');
  return sup.wait();
}

