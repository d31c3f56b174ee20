import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { RktError } from '../src/errors.js';
import { log } from '../src/log.js';
import { capabilityNumber } from '../src/appc/capabilities.js';
import { PodPaths } from '../src/stage1/contract.js';
import { loadAppSpecs, type AppSpec } from '../src/stage1-common/app-spec.js';
import { enableDebug, parseAppArgs, type AppEntryArgs } from '../src/stage1-common/entry.js';
import { withAllCapabilities } from '../src/stage1-common/insecure.js';
import { checkIsolators, NSPAWN_ISOLATORS, SECCOMP_ISOLATORS } from '../src/stage1-common/isolator-support.js';
import { prepareUnitRootfs } from '../src/stage1-common/rootfs.js';
import { appUnitName, appUnitNames } from '../src/stage1-common/units.js';
import { inRunNamespace, waitForRecordedExit } from '../src/stage1-common/mutable-pod.js';
import { unmountAllUnder } from '../src/util/mounts.js';
import { NspawnHostError } from './errors.js';
import { which } from './nspawn-args.js';
import { loadSyscallTable } from './options.js';
import { loadEtcOptions } from './mutable.js';
import { runningPodInit, runningRunProcess } from './pod-process.js';
import { removeAppFiles, STAGE1, writeAddedApp } from './pod-units.js';
import { removeAppIoFiles, waitForRelay } from './app-io-files.js';
import { isAttachable } from '../src/appc/app-streams.js';
import { seccompPlan } from './seccomp.js';

// The app entrypoints of the nspawn flavor (rkt's app/add, app/start,
// app/stop, app/rm), for a pod started with --mutable. An app is a unit of
// the pod's systemd, as at boot: app/add assembles its root filesystem in
// the run entrypoint's mount namespace (from where it propagates into the
// container, see mutable.ts) and writes its units with the same generator
// and isolators as at boot; app/start and app/stop start and stop the unit
// through the pod's systemctl; app/rm removes the unit, the mounts and the
// files. stage0 keeps the pod manifest and refuses what makes no sense
// (an app name twice, rm of a running app); these check the pod itself.

const SYSTEMCTL_TIMEOUT_MS = 120_000;
/** How long app/add waits for the run entrypoint to relay an added app's streams (it polls the manifest every 100 ms at most). */
const RELAY_WAIT_MS = 30_000;

interface RunningPod {
  paths: PodPaths;
  uuid: string;
  init: number;
  nsenter: string;
}

/** The entrypoint's flags, and the running mutable pod it acts on. */
function openApp(argv: string[], which: 'add' | 'start' | 'stop' | 'rm'): { args: AppEntryArgs; pod: RunningPod } {
  const args = parseAppArgs(argv, which);
  enableDebug(args.debug);
  return { args, pod: runningPod(args) };
}

function runningPod(args: AppEntryArgs): RunningPod {
  const paths = new PodPaths(process.cwd());
  const uuid = path.basename(fs.realpathSync(paths.dir));
  if (args.uuid !== undefined && args.uuid !== uuid) throw new RktError(`--uuid=${args.uuid} is not this pod (${uuid})`);
  if (!fs.existsSync(path.join(paths.stage1Rootfs, STAGE1.mutable))) throw new RktError(`pod ${uuid} is not a mutable pod; only pods started with "rkt app sandbox" take apps`);
  const init = runningPodInit(paths, uuid);
  if (init === undefined) throw new RktError(`pod ${uuid} is not running`);
  const nsenter = which('nsenter');
  if (nsenter === undefined) throw new NspawnHostError('the app entrypoints need nsenter (util-linux) on the host');
  return { paths, uuid, init, nsenter };
}

/** systemctl in the pod, through its init's namespaces and root. */
function systemctl(pod: RunningPod, words: string[]): { ok: boolean; stderr: string } {
  const argv = [`--target=${pod.init}`, '--all', '--root', '--wd', '--', '/usr/bin/systemctl', ...words];
  log().debug({ argv }, 'systemctl in the pod');
  const r = spawnSync(pod.nsenter, argv, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', timeout: SYSTEMCTL_TIMEOUT_MS, env: { ...process.env, SYSTEMD_LOG_LEVEL: 'err' } });
  return { ok: r.status === 0, stderr: r.stderr?.trim() || r.error?.message || `exit status ${r.status}` };
}

function mustSystemctl(pod: RunningPod, words: string[], what: string): void {
  const r = systemctl(pod, words);
  if (!r.ok) throw new RktError(`${what}: the pod's systemd said: ${r.stderr}`);
}

function appSpec(paths: PodPaths, app: string): AppSpec {
  const spec = loadAppSpecs(paths, { container: 'rkt' }).find((s) => s.name === app);
  if (spec === undefined) throw new RktError(`the pod has no app "${app}"`);
  return spec;
}

/** The capability bounding set of the pod's init: what an app in the container can hold at most. */
function containerCapabilities(init: number): bigint {
  const line = fs
    .readFileSync(`/proc/${init}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('CapBnd:'));
  return line === undefined ? 0n : BigInt(`0x${line.slice(7).trim()}`);
}

function checkCapabilities(spec: AppSpec, init: number): void {
  const bound = containerCapabilities(init);
  const missing = spec.isolators.capabilities.filter((c) => {
    const n = capabilityNumber(c);
    return n === undefined || (bound & (1n << BigInt(n))) === 0n;
  });
  if (missing.length > 0) throw new RktError(`app "${spec.name}" retains ${missing.join(', ')}, which this pod's container does not hold (a sandbox's container has systemd-nspawn's default set); retain fewer capabilities, or start the sandbox with --insecure-options=capabilities`);
}

async function undoAdd(pod: RunningPod, spec: AppSpec): Promise<void> {
  removeAppFiles(pod.paths.stage1Rootfs, pod.paths.dir, spec);
  // the run entrypoint lets go of the relay once the app has left the pod manifest; its files go now
  await removeAppIoFiles(pod.paths, spec.name);
  systemctl(pod, ['daemon-reload']);
  // never remove files through a mount: a volume's are the host's
  const left = await unmountAllUnder(pod.paths.appRootfs(spec.name));
  if (left.length > 0) throw new RktError(`cannot unmount ${left.join(', ')} of app ${spec.name}; rkt gc will try again once the pod has ended`);
  fs.rmSync(path.dirname(pod.paths.appRootfs(spec.name)), { recursive: true, force: true });
  fs.rmSync(path.join(pod.paths.dir, 'overlay', spec.name), { recursive: true, force: true });
}

export async function appAdd(argv: string[]): Promise<number> {
  const { args, pod } = openApp(argv, 'add');
  const outer = await inRunNamespace(pod.paths, pod.nsenter, runningRunProcess(pod.paths));
  if (outer !== undefined) return outer;
  let spec = appSpec(pod.paths, args.app);
  checkIsolators([spec], NSPAWN_ISOLATORS, args.disableSeccomp ? SECCOMP_ISOLATORS : undefined);
  if (args.disableCapabilities) spec = withAllCapabilities(spec);
  else checkCapabilities(spec, pod.init);
  if (args.privateUsers !== undefined) throw new RktError('the nspawn stage1 cannot add apps with --private-users');
  const seccomp = seccompPlan(spec.name, spec.isolators.app, loadSyscallTable(pod.paths.stage1Rootfs), { insecure: args.disableSeccomp });
  if (fs.existsSync(path.join(pod.paths.stage1Rootfs, STAGE1.units, appUnitName(spec.name)))) throw new RktError(`the pod already has a unit for app "${spec.name}"`);
  try {
    await prepareUnitRootfs(pod.paths, spec, 'nspawn', loadEtcOptions(pod.paths));
    writeAddedApp(pod.paths.stage1Rootfs, pod.paths.dir, spec, { seccomp, insecurePaths: args.disablePaths });
    mustSystemctl(pod, ['daemon-reload'], `cannot add app ${spec.name}`);
    if (isAttachable(spec.streams)) await waitForRelay(pod.paths, spec.name, RELAY_WAIT_MS, () => runningRunProcess(pod.paths) !== undefined);
  } catch (err) {
    await undoAdd(pod, spec);
    throw err;
  }
  log().debug(`app ${spec.name} added`);
  return 0;
}

export async function appStart(argv: string[]): Promise<number> {
  const { args, pod } = openApp(argv, 'start');
  appSpec(pod.paths, args.app);
  // not waiting for the job: an app that exits at once fails its start job,
  // and its exit status is what tells (the exit hook reports it)
  mustSystemctl(pod, ['start', '--no-block', appUnitName(args.app)], `cannot start app ${args.app}`);
  return 0;
}

export async function appStop(argv: string[]): Promise<number> {
  const { args, pod } = openApp(argv, 'stop');
  appSpec(pod.paths, args.app);
  // stopping waits for the app's exit hook, which reports its status; the host records it a moment later
  mustSystemctl(pod, ['stop', appUnitName(args.app)], `cannot stop app ${args.app}`);
  await waitForRecordedExit(pod.paths, args.app);
  return 0;
}

export async function appRm(argv: string[]): Promise<number> {
  const { args, pod } = openApp(argv, 'rm');
  const outer = await inRunNamespace(pod.paths, pod.nsenter, runningRunProcess(pod.paths));
  if (outer !== undefined) return outer;
  const spec = appSpec(pod.paths, args.app);
  const units = appUnitNames(spec);
  // a unit never started, or already gone, is nothing to stop
  systemctl(pod, ['stop', ...units]);
  systemctl(pod, ['reset-failed', ...units]);
  await undoAdd(pod, spec);
  return 0;
}
