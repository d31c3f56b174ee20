import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { RuntimeApp } from '../appc/types.js';
import { writeFileAtomic } from '../util/atomic.js';
import { mountsUnder, readMountinfo } from '../util/mounts.js';
import { mapConfig, type OciPlan } from './config.js';
import { OciError } from './errors.js';
import { rktError, type Rkt } from './rkt.js';
import { checkId, currentStatus, isAlive, notFound, processStart, type ContainerState, type StateDir } from './state.js';
import { isDevNull, spawnStandIn } from './standin.js';
import { STREAMS, parseAttachMode, streamAnnotations, type AppStreams } from '../appc/app-streams.js';
import { Pod } from '../pod/pod.js';
import { attachArgv } from '../stage1/args.js';
import { crossingEnv, entrypointCommand } from '../stage1/invoke.js';

// runc's commands, as containerd's runc v2 shim calls them, on rkt's
// mutable pods: a CRI sandbox is a pod started with rkt app sandbox, a
// container an app added to it, a plain container (ctr run) a pod with one
// app. The pid the shim waits for is the sandbox's rkt app sandbox process,
// or the app's stand-in (standin.ts).

const READY_TIMEOUT_MS = 600_000;

export interface Ctx {
  states: StateDir;
  rkt: Rkt;
  /** The console helper (dist/oci/rkt-oci-console). */
  consoleHelper: string;
}

export interface CreateOptions {
  bundle?: string;
  pidFile?: string;
  consoleSocket?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function readJson(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new OciError(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new OciError(`${what} ${file} is not JSON: ${(err as Error).message}`);
  }
}

/** runc's rules: a terminal goes through a console socket, and a console socket is only for a terminal. */
export function consoleOf(ctx: Ctx, terminal: boolean, consoleSocket: string | undefined): { helper: string; socket: string } | undefined {
  if (terminal && consoleSocket === undefined) throw new OciError('process.terminal needs --console-socket: this runtime sends the terminal there, as runc does');
  if (!terminal && consoleSocket !== undefined) throw new OciError('--console-socket is only for a process with a terminal (process.terminal)');
  return consoleSocket === undefined ? undefined : { helper: ctx.consoleHelper, socket: path.resolve(consoleSocket) };
}

export function writePidFile(file: string | undefined, pid: number): void {
  if (file === undefined) return;
  writeFileAtomic(path.resolve(file), String(pid));
}

export async function waitExit(pid: number, start: string, ms: number): Promise<boolean> {
  for (let waited = 0; waited < ms; waited += 100) {
    if (processStart(pid) !== start) return true;
    await sleep(100);
  }
  return processStart(pid) !== start;
}

/** rkt app sandbox for a sandbox (or a plain container), up and ready; the process that runs it is returned with the pod's UUID. */
async function startSandbox(ctx: Ctx, id: string, plan: OciPlan): Promise<{ uuid: string; child: ChildProcess }> {
  const uuidFile = path.join(ctx.states.dir(id), 'pod-uuid');
  const flags = [`--uuid-file-save=${uuidFile}`, `--annotation=rkt-ts/oci-container-id=${id}`];
  if (plan.netns !== undefined) flags.push(`--net-namespace=${plan.netns}`);
  if (plan.hostname !== undefined) flags.push(`--hostname=${plan.hostname}`);
  const child = ctx.rkt.spawnSandbox(flags, path.join(ctx.states.dir(id), 'sandbox.log'));
  let code: number | null = null;
  child.once('exit', (c, s) => (code = c ?? 128 + (os.constants.signals[s as NodeJS.Signals] ?? 0)));
  child.once('error', () => (code = 254));
  const early = () => new OciError(`rkt app sandbox exited with status ${code} before the pod was ready: ${rktError(fs.readFileSync(path.join(ctx.states.dir(id), 'sandbox.log'), 'utf8')) || 'it said nothing'}`);
  let uuid = '';
  for (let waited = 0; ; waited += 50) {
    if (code !== null) throw early();
    if (uuid === '' && fs.existsSync(uuidFile)) uuid = fs.readFileSync(uuidFile, 'utf8').trim();
    if (uuid !== '' && fs.existsSync(path.join(ctx.rkt.podDir(uuid), 'ready'))) return { uuid, child };
    if (waited > READY_TIMEOUT_MS) {
      await removePod(ctx, uuid, child.pid);
      throw new OciError(`the pod of container ${id} was not ready after ${READY_TIMEOUT_MS / 1000} s`);
    }
    await sleep(50);
  }
}

/** Stop and remove a pod (and wait for the process running it); what is already gone is fine. */
async function removePod(ctx: Ctx, uuid: string, sandboxPid?: number, sandboxStart?: string): Promise<void> {
  if (uuid !== '' && fs.existsSync(ctx.rkt.podDir(uuid))) {
    const stop = await ctx.rkt.run(['stop', uuid], { allowFail: true });
    if (stop.code !== 0) await ctx.rkt.run(['stop', '--force', uuid], { allowFail: true });
  }
  if (sandboxPid !== undefined) {
    const start = sandboxStart ?? processStart(sandboxPid);
    if (start !== undefined && !(await waitExit(sandboxPid, start, 120_000))) {
      if (uuid !== '') await ctx.rkt.run(['stop', '--force', uuid], { allowFail: true });
      if (!(await waitExit(sandboxPid, start, 30_000))) process.kill(sandboxPid, 'SIGKILL');
    }
  }
  if (uuid === '') return;
  for (let i = 0; i < 50; i++) {
    const rm = await ctx.rkt.run(['rm', uuid], { allowFail: true });
    if (rm.code === 0 || !fs.existsSync(path.join(ctx.rkt.dataDir, 'pods')) || !podExists(ctx, uuid)) return;
    await sleep(200);
  }
  throw new OciError(`cannot remove pod ${uuid}; "rkt gc" will, once it has ended`);
}

function podExists(ctx: Ctx, uuid: string): boolean {
  const pods = path.join(ctx.rkt.dataDir, 'pods');
  return fs.readdirSync(pods).some((d) => fs.existsSync(path.join(pods, d, uuid)));
}

/** The app's stream modes: a terminal, or a stream for each of our stdio the shim did not leave as /dev/null. */
function streamModes(terminal: boolean): AppStreams {
  if (terminal) return { stdin: 'tty', stdout: 'tty', stderr: 'tty' };
  return { stdin: isDevNull(0) ? 'null' : 'stream', stdout: isDevNull(1) ? 'null' : 'stream', stderr: isDevNull(2) ? 'null' : 'stream' };
}

/**
 * rbind of a tree with no mount below its top is a plain bind: the same
 * files, and one the kvm flavor can share (it refuses recursive volumes).
 */
function plainWhereSame(ra: RuntimeApp): RuntimeApp {
  const table = readMountinfo();
  const mounts = ra.mounts?.map((m) => {
    const v = m.appVolume;
    if (v?.kind !== 'host' || v.recursive !== true || v.source === undefined) return m;
    const real = fs.realpathSync(v.source);
    return mountsUnder(real, table).some((p) => p !== real) ? m : { ...m, appVolume: { ...v, recursive: false } };
  });
  return { ...ra, ...(mounts && { mounts }) };
}

/**
 * A stage1 entrypoint on one app of the pod, as rkt runs it (in the pod
 * directory, with the variables that reach across to stage1) but without a
 * stage0 process in between: the stand-in's attach, exec's enter.
 */
export function entrypointOnApp(ctx: Ctx, uuid: string, app: string, which: 'attach' | 'enter', args: (podPid: number) => string[], env: NodeJS.ProcessEnv = {}): { argv: string[]; cwd: string; env: NodeJS.ProcessEnv } {
  const pod = Pod.find(ctx.rkt.dataDir, uuid);
  const pid = pod.pid();
  if (pid === undefined) throw new OciError(`pod ${uuid} has not given its pid yet`);
  const { command: argv } = entrypointCommand(pod.paths, which, () => args(pid));
  return { argv, cwd: pod.paths.dir, env: { ...crossingEnv(pod.paths, pid, app), ...env } };
}

/** The stage1's attach entrypoint on the app, as `rkt attach --app=APP --mode=MODE` runs it. */
function attachCommand(ctx: Ctx, uuid: string, app: string, mode: string): { argv: string[]; cwd: string; env: NodeJS.ProcessEnv } {
  const { action, endpoints } = parseAttachMode(mode);
  return entrypointOnApp(ctx, uuid, app, 'attach', () => attachArgv({ action, app, debug: false, ...(endpoints && { endpoints }) }));
}

/** The app joins the pod with the bundle's root as its root; its stand-in is returned. */
async function addApp(ctx: Ctx, id: string, uuid: string, podPid: number, plan: OciPlan, console: { helper: string; socket: string } | undefined): Promise<{ pid: number; pidStart: string }> {
  const modes = streamModes(console !== undefined);
  const ra = plainWhereSame({ ...plan.app!, annotations: [...(plan.app!.annotations ?? []), ...streamAnnotations(modes)] });
  const raFile = path.join(ctx.states.dir(id), 'runtime-app.json');
  fs.writeFileSync(raFile, JSON.stringify(ra));
  await ctx.rkt.run(['app', 'add', uuid, `--rootfs-dir=${plan.rootfs}`, `--runtime-app=${raFile}`]);
  const podDir = ctx.rkt.podDir(uuid);
  const wanted = console ? 'tty' : STREAMS.filter((n) => modes[n] === 'stream').join(',');
  try {
    return await spawnStandIn({
      statusFile: path.join(podDir, 'exit-status', ra.name),
      appInfoDir: path.join(podDir, 'appsinfo', ra.name),
      podPid,
      ...(wanted !== '' && { attach: attachCommand(ctx, uuid, ra.name, wanted) }),
      ...(console && { console }),
    });
  } catch (err) {
    await ctx.rkt.run(['app', 'rm', uuid, `--app=${ra.name}`], { allowFail: true });
    throw err;
  }
}

export async function create(ctx: Ctx, id: string, opts: CreateOptions): Promise<void> {
  checkId(id);
  const bundle = path.resolve(opts.bundle ?? process.cwd());
  const plan = mapConfig(id, readJson(path.join(bundle, 'config.json'), 'the bundle config'), bundle);
  const console = consoleOf(ctx, plan.terminal && plan.role !== 'sandbox', plan.role === 'sandbox' ? undefined : opts.consoleSocket);
  if (plan.role === 'sandbox' && opts.consoleSocket !== undefined) throw new OciError('--console-socket: a sandbox runs no process of its own in this runtime, so it has no terminal');
  if (plan.role !== 'sandbox' && !fs.statSync(plan.rootfs, { throwIfNoEntry: false })?.isDirectory()) throw new OciError(`root.path ${plan.rootfs} is not a directory`);
  let sandbox: ContainerState | undefined;
  if (plan.role === 'container') {
    sandbox = ctx.states.tryRead(plan.sandboxId!);
    if (sandbox === undefined || sandbox.role !== 'sandbox') throw new OciError(`the sandbox ${plan.sandboxId} of container ${id} is not a sandbox this runtime runs`);
    if (currentStatus(sandbox) === 'stopped') throw new OciError(`the sandbox ${plan.sandboxId} of container ${id} has stopped`);
    if (plan.hostname !== undefined && plan.hostname !== (sandbox.hostname ?? plan.hostname)) throw new OciError(`hostname "${plan.hostname}" differs from the sandbox's ("${sandbox.hostname}"); a container has its pod's hostname`);
  }
  const lock = ctx.states.claim(id);
  let uuid = '';
  let sandboxProc: ChildProcess | undefined;
  try {
    let pid: number;
    let pidStart: string;
    if (plan.role === 'container') {
      uuid = sandbox!.podUuid;
      ({ pid, pidStart } = await addApp(ctx, id, uuid, sandbox!.pid, plan, console));
    } else {
      const s = await startSandbox(ctx, id, plan);
      uuid = s.uuid;
      sandboxProc = s.child;
      if (plan.role === 'sandbox') {
        pid = s.child.pid!;
        pidStart = processStart(pid) ?? '';
      } else ({ pid, pidStart } = await addApp(ctx, id, uuid, s.child.pid!, plan, console));
    }
    const st: ContainerState = {
      version: 1,
      id,
      bundle,
      role: plan.role,
      flavor: ctx.rkt.flavor,
      podUuid: uuid,
      ...(plan.app && { app: plan.app.name }),
      ...(plan.sandboxId !== undefined && { sandboxId: plan.sandboxId }),
      status: 'created',
      pid,
      pidStart,
      created: new Date().toISOString(),
      annotations: plan.annotations,
      identity: plan.identity,
      ...(plan.hostname !== undefined && { hostname: plan.hostname }),
      ...(plan.role === 'standalone' && sandboxProc?.pid !== undefined && { sandboxPid: sandboxProc.pid, sandboxStart: processStart(sandboxProc.pid) ?? '' }),
    };
    ctx.states.write(st);
    writePidFile(opts.pidFile, pid);
  } catch (err) {
    if (plan.role !== 'container') await removePod(ctx, uuid, sandboxProc?.pid).catch(() => undefined);
    ctx.states.remove(id);
    throw err;
  } finally {
    lock.release();
  }
}

function locked<T>(ctx: Ctx, id: string, body: (st: ContainerState) => Promise<T>): Promise<T> {
  const lock = ctx.states.lock(id);
  return (async () => body(ctx.states.read(id)))().finally(() => lock.release());
}

export function start(ctx: Ctx, id: string): Promise<void> {
  return locked(ctx, id, async (st) => {
    const status = currentStatus(st);
    if (status === 'stopped') throw new OciError('cannot start a container that has stopped');
    if (status === 'running') throw new OciError('cannot start an already running container');
    if (st.role !== 'sandbox') await ctx.rkt.run(['app', 'start', st.podUuid, `--app=${st.app}`]);
    ctx.states.write({ ...st, status: 'running' });
  });
}

export function parseSignal(text: string): number {
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    if (n > 64) throw new OciError(`signal ${text} is out of range`);
    return n;
  }
  const name = text.toUpperCase().startsWith('SIG') ? text.toUpperCase() : `SIG${text.toUpperCase()}`;
  const n = (os.constants.signals as Record<string, number>)[name];
  if (n === undefined) throw new OciError(`unknown signal "${text}"`);
  return n;
}

const S = os.constants.signals;
/** The signals that stop an app (rkt app stop: SIGTERM, then SIGKILL after its stop timeout). */
const STOPPING = new Set([S.SIGTERM, S.SIGINT, S.SIGQUIT, S.SIGHUP, S.SIGKILL]);

export function kill(ctx: Ctx, id: string, signal: string, _all: boolean): Promise<void> {
  const sig = parseSignal(signal);
  return locked(ctx, id, async (st) => {
    if (currentStatus(st) === 'stopped') throw new OciError('container not running');
    if (sig === 0) return;
    if (!STOPPING.has(sig)) throw new OciError(`signal ${signal}: this runtime delivers only signals that stop a container (TERM, INT, QUIT, HUP, KILL)`);
    if (st.role === 'sandbox') {
      await ctx.rkt.run(['stop', ...(sig === S.SIGKILL ? ['--force'] : []), st.podUuid]);
      return;
    }
    // a created app never ran: taking it out ends its stand-in
    const verb = st.status === 'created' ? 'rm' : 'stop';
    await ctx.rkt.run(['app', verb, st.podUuid, `--app=${st.app}`]);
  });
}

/** How long a delete waits for a pod that is going down to be gone: a kvm guest's shutdown under tcg takes a while. */
const POD_END_MS = 120_000;

function appStatus(ctx: Ctx, st: ContainerState): ReturnType<Rkt['run']> {
  return ctx.rkt.run(['app', 'status', st.podUuid, `--app=${st.app}`, '--format=json'], { allowFail: true });
}

/** Whether the pod of `st` stops running within `ms`: rkt app status then fails. */
async function podEnds(ctx: Ctx, st: ContainerState, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  do {
    if ((await appStatus(ctx, st)).code !== 0) return true;
    await new Promise((r) => setTimeout(r, 1000));
  } while (Date.now() < deadline);
  return false;
}

async function removeApp(ctx: Ctx, st: ContainerState): Promise<void> {
  if (!fs.existsSync(path.join(ctx.rkt.podDir(st.podUuid), 'appsinfo', st.app!))) return;
  const status = await appStatus(ctx, st);
  if (status.code !== 0) return;
  if ((JSON.parse(status.stdout) as { state: string }).state === 'running') await ctx.rkt.run(['app', 'stop', st.podUuid, `--app=${st.app}`], { allowFail: true });
  const rm = await ctx.rkt.run(['app', 'rm', st.podUuid, `--app=${st.app}`], { allowFail: true });
  if (rm.code === 0 || !fs.existsSync(path.join(ctx.rkt.podDir(st.podUuid), 'appsinfo', st.app!))) return;
  // the pod may have stopped or be ending under the rm (containerd deletes a dead shim's sandbox
  // and containers at once; a kvm guest going down drops the agent's connection): the app then
  // ends with its pod
  if (!(await podRunning(ctx, st)) || (await podEnds(ctx, st, POD_END_MS))) return;
  throw new OciError(`cannot remove app ${st.app} of pod ${st.podUuid}: ${rm.stderr.trim().split('\n').pop()}`);
}

/**
 * Whether the container's pod still runs: the rkt app sandbox process that
 * runs it lives exactly as long (the pod's lock is no sign: rkt rm holds it
 * too). An ended pod's remains are rkt gc's to collect, as for any pod.
 */
async function podRunning(ctx: Ctx, st: ContainerState): Promise<boolean> {
  let proc: { pid: number; pidStart: string } | undefined;
  if (st.role === 'sandbox') proc = st;
  else if (st.role === 'standalone') proc = st.sandboxPid === undefined ? undefined : { pid: st.sandboxPid, pidStart: st.sandboxStart ?? '' };
  else proc = ctx.states.tryRead(st.sandboxId!);
  // a pod that has just ended (what made the removal fail) takes a moment to take its process with it
  return proc !== undefined && isAlive(proc) && !(await waitExit(proc.pid, proc.pidStart, 10_000));
}

export async function remove(ctx: Ctx, id: string, force: boolean): Promise<void> {
  // waits for a create or another command on it to finish
  const lock = ctx.states.lock(id);
  try {
    const st = ctx.states.tryRead(id);
    if (st === undefined) {
      // a create that died before it recorded anything: nothing else is ours
      ctx.states.remove(id);
      throw notFound(id);
    }
    if (currentStatus(st) === 'running' && !force) throw new OciError(`cannot delete container ${id} that is not stopped: running`);
    // a pod that has ended but cannot be removed yet (it is still going) is left to rkt gc: the
    // record goes anyway, or nothing would ever delete it (the shim that asked may be gone)
    const orGc = async (err: unknown) => {
      if (await podRunning(ctx, st)) throw err;
    };
    if (st.role === 'sandbox') await removePod(ctx, st.podUuid, isAlive(st) ? st.pid : undefined, st.pidStart).catch(orGc);
    else await removeApp(ctx, st);
    if (st.role === 'standalone') {
      const sandbox = st.sandboxPid === undefined ? undefined : { pid: st.sandboxPid, pidStart: st.sandboxStart ?? '' };
      await removePod(ctx, st.podUuid, sandbox && isAlive(sandbox) ? sandbox.pid : undefined, st.sandboxStart).catch(orGc);
    }
    // the stand-in sees its app gone within a moment; it never outlives a delete
    if (st.role !== 'sandbox' && isAlive(st) && !(await waitExit(st.pid, st.pidStart, 2000))) process.kill(st.pid, 'SIGKILL');
    ctx.states.remove(id);
  } finally {
    lock.release();
  }
}
