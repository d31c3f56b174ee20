import fs from 'node:fs';
import path from 'node:path';
import { RktError } from '../src/errors.js';
import { log } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { isAttachable } from '../src/appc/app-streams.js';
import { POD_ROOT } from '../src/stage1-common/app-reports.js';
import { loadAppSpecs, type AppSpec } from '../src/stage1-common/app-spec.js';
import { enableDebug, parseAppArgs, type AppEntryArgs } from '../src/stage1-common/entry.js';
import { which } from '../src/stage1-common/host-tools.js';
import { withAllCapabilities } from '../src/stage1-common/insecure.js';
import { checkIsolators, KVM_ISOLATORS, SECCOMP_ISOLATORS } from '../src/stage1-common/isolator-support.js';
import { inRunNamespace, waitForRecordedExit } from '../src/stage1-common/mutable-pod.js';
import { prepareUnitRootfs } from '../src/stage1-common/rootfs.js';
import { isPodProcess, readPid } from '../src/stage1-common/status.js';
import { appUnitNames } from '../src/stage1-common/units.js';
import { unmountAllUnder } from '../src/util/mounts.js';
import { appRequest, parseGuestState } from './agent-app.js';
import { installDnsFiles } from './app-dns.js';
import { stopTimeoutMs } from './config.js';
import { KvmHostError } from './errors.js';
import { addCredentials, effectiveStreams } from './guest-config.js';
import { guestIdShift, idmapHelper } from './guest-ids.js';
import { guestBinds } from './guest-volumes.js';
import { addedAppUnits, guestShareOf, loadMutableState, shareAppRootfs, unshareAppRootfs, type MutableState } from './mutable.js';
import { agentSocketPaths } from './pod-files.js';

// The app entrypoints of the kvm flavor (rkt's app/add, app/start,
// app/stop, app/rm), for a pod started with --mutable (mutable.ts). The
// host assembles an added app's root filesystem as at boot (the shared
// assembly, with the pod's ids), in the run entrypoint's mount namespace,
// and binds it into the tree virtiofsd serves, from where it propagates to
// virtiofsd and appears in the guest. Everything else happens in the guest
// through the agent (APP requests, agent-app.ts): the app's units (the
// same generator and isolators as at boot) written and reloaded, its
// volumes mounted, started, stopped, removed. The guest is told guest
// paths only. stage0 keeps the pod manifest and refuses what makes no
// sense (an app name twice, rm of a running app); these check the pod.

interface RunningPod {
  paths: PodPaths;
  uuid: string;
  /** The run entrypoint, whose mount namespace holds the guest's root. */
  run: number;
  state: MutableState;
  sockets: string[];
}

/** The entrypoint's flags, and the running mutable pod it acts on. */
function openApp(argv: string[], op: 'add' | 'start' | 'stop' | 'rm'): { args: AppEntryArgs; pod: RunningPod } {
  const args = parseAppArgs(argv, op);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  const uuid = path.basename(fs.realpathSync(paths.dir));
  if (args.uuid !== undefined && args.uuid !== uuid) throw new RktError(`--uuid=${args.uuid} is not this pod (${uuid})`);
  if (!fs.existsSync(path.join(paths.stage1Rootfs, POD_ROOT.mutable))) throw new RktError(`pod ${uuid} is not a mutable pod; only pods started with "rkt app sandbox" take apps`);
  const run = readPid(paths);
  if (run === undefined || !isPodProcess(paths, run)) throw new RktError(`pod ${uuid} is not running`);
  return { args, pod: { paths, uuid, run, state: loadMutableState(paths), sockets: agentSocketPaths(paths.dir) } };
}

function appSpec(paths: PodPaths, app: string): AppSpec {
  const spec = loadAppSpecs(paths).find((s) => s.name === app);
  if (spec === undefined) throw new RktError(`the pod has no app "${app}"`);
  return spec;
}

/** Run this entrypoint again in the run entrypoint's mount namespace, unless it is there already; the status if it was run there. */
function reenter(pod: RunningPod): Promise<number | undefined> {
  const nsenter = which('nsenter');
  if (nsenter === undefined) throw new KvmHostError('the app entrypoints need nsenter (util-linux) on the host');
  return inRunNamespace(pod.paths, nsenter, pod.run);
}

/** Take an app's files back on the host: its place in the share, its rootfs's mounts, its directories. */
async function removeOnHost(pod: RunningPod, spec: AppSpec): Promise<void> {
  // never remove files through a mount: a volume's are the host's
  const overlay = path.join(pod.paths.dir, 'overlay', spec.name);
  // the overlay's id-mapped lower layer (guest-ids.ts) is a mount of its own beside the rootfs
  const left = [...(await unshareAppRootfs(pod.paths, spec)), ...(await unmountAllUnder(spec.rootfs)), ...(await unmountAllUnder(overlay))];
  if (left.length > 0) throw new RktError(`cannot unmount ${left.join(', ')} of app ${spec.name}; rkt gc will try again once the pod has ended`);
  fs.rmSync(path.dirname(spec.rootfs), { recursive: true, force: true });
  fs.rmSync(overlay, { recursive: true, force: true });
}

/** The guest's side of rm: units stopped and gone, mounts gone (rkt-app-ctl checks both). */
async function removeInGuest(pod: RunningPod, spec: AppSpec): Promise<void> {
  const units = appUnitNames(spec).map((u): [string, string] => [u, '']);
  const said = await appRequest(pod.sockets, { op: 'rm', app: spec.name, units }, { what: `cannot remove app ${spec.name}`, signal: AbortSignal.timeout(GUEST_OP_MS + stopTimeoutMs()) });
  log().debug({ ...parseGuestState(said) }, `app ${spec.name} removed in the guest`);
}

export async function appAdd(argv: string[]): Promise<number> {
  const { args, pod } = openApp(argv, 'add');
  const outer = await reenter(pod);
  if (outer !== undefined) return outer;
  let spec = appSpec(pod.paths, args.app);
  if (fs.existsSync(guestShareOf(pod.paths, spec)) && fs.readdirSync(guestShareOf(pod.paths, spec)).length > 0) throw new RktError(`the pod already has a root filesystem for app "${spec.name}"`);
  const { state } = pod;
  const helper = idmapHelper(pod.paths.stage1Rootfs);
  let inGuest = false;
  try {
    // refused: then stage0's empty rootfs directory goes too
    checkIsolators([spec], KVM_ISOLATORS, args.disableSeccomp ? SECCOMP_ISOLATORS : undefined);
    if (args.disableCapabilities) spec = withAllCapabilities(spec);
    if (args.privateUsers !== undefined) throw new RktError("the kvm stage1 cannot add apps with --private-users: the guest's ids are never the host's already");
    await prepareUnitRootfs(pod.paths, spec, 'kvm', { hosts: state.dns.hosts.fallback, finish: () => installDnsFiles(spec, state.dns), idShift: guestIdShift(state.base, helper) });
    await shareAppRootfs(pod.paths, spec);
    addCredentials(pod.paths.stage1Rootfs, [spec]);
    const streams = effectiveStreams(spec, {});
    inGuest = true;
    await appRequest(
      pod.sockets,
      {
        op: 'add',
        app: spec.name,
        io: isAttachable(streams) ? `${streams.stdin} ${streams.stdout} ${streams.stderr}` : '',
        units: addedAppUnits(spec, state, args.disablePaths),
        binds: guestBinds([spec], (s) => `/opt/stage2/${s.name}/rootfs`),
      },
      { what: `cannot add app ${spec.name}`, signal: AbortSignal.timeout(GUEST_OP_MS) },
    );
  } catch (err) {
    // undo in the guest first: it lets go of the app's files, so the host can unmount them
    if (inGuest) await removeInGuest(pod, spec).catch((e: Error) => log().warn(e.message));
    await removeOnHost(pod, spec).catch((e: Error) => log().warn(e.message));
    throw err;
  }
  log().debug(`app ${spec.name} added`);
  return 0;
}

export async function appStart(argv: string[]): Promise<number> {
  const { args, pod } = openApp(argv, 'start');
  appSpec(pod.paths, args.app);
  // not waiting for the app: one that exits at once is told by its exit status (its exit hook reports it)
  await appRequest(pod.sockets, { op: 'start', app: args.app }, { what: `cannot start app ${args.app}`, signal: AbortSignal.timeout(GUEST_OP_MS) });
  return 0;
}

/** Bounds on what the guest is asked: adding and removing take a few systemctl calls. */
const GUEST_OP_MS = 120_000;

export async function appStop(argv: string[]): Promise<number> {
  const { args, pod } = openApp(argv, 'stop');
  appSpec(pod.paths, args.app);
  // the guest's systemctl stop returns once the app's exit hook has reported its status
  await appRequest(pod.sockets, { op: 'stop', app: args.app }, { what: `cannot stop app ${args.app}`, signal: AbortSignal.timeout(GUEST_OP_MS + stopTimeoutMs()) });
  await waitForRecordedExit(pod.paths, args.app);
  return 0;
}

export async function appRm(argv: string[]): Promise<number> {
  const { args, pod } = openApp(argv, 'rm');
  const outer = await reenter(pod);
  if (outer !== undefined) return outer;
  const spec = appSpec(pod.paths, args.app);
  // the host's side goes even if the guest's failed, which is then the error
  let guestError: unknown;
  await removeInGuest(pod, spec).catch((err: unknown) => (guestError = err));
  await removeOnHost(pod, spec);
  if (guestError !== undefined) throw guestError;
  return 0;
}
