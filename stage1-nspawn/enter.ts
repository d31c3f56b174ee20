import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { RktError, UsageError, isErrno, whyUnreadable } from '../src/errors.js';
import { log } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { DEFAULT_PATH, loadAppSpecs, type AppSpec, pickApp } from '../src/stage1-common/app-spec.js';
import { ENTER_ENV_VAR, enteredAs } from '../src/stage1-common/enter-process.js';
import { enableDebug, parseEnterArgs } from '../src/stage1-common/entry.js';
import { resolveInRoot } from '../src/stage1-common/rootfs.js';
import { readPinned } from '../src/util/pinned-file.js';
import { exitStatusOf } from '../src/stage1-common/status.js';
import { NspawnHostError } from './errors.js';
import { which } from './nspawn-args.js';
import { isPodInit } from './pod-process.js';
import { addEnteredCredentials, hostUnitCopy } from './pod-units.js';
import { enterProperties, escapeExecArg } from './enter-props.js';

// rkt enter for nspawn: the command runs as a transient unit of the pod's
// systemd, made from the app's own unit: same root, user, groups,
// environment, working directory, capability bounding set, no-new-privs,
// seccomp filter, masked paths and resource limits. Entering hands the
// command exactly what the app has, and no more: the pod's systemd applies
// it all, as it did for the app. systemd-run runs inside the pod (nsenter
// into the namespaces and root of the pod's init) and needs the pod's
// system bus to follow the unit and pass on our terminal or our standard
// streams; the bus is started on first use. The caller may ask for another
// environment, directory or user (enter-process.ts): those settings of the
// unit are replaced, the rest kept.

const DBUS_START_TIMEOUT_S = '10';
/** Far more than any generated app unit. */
const UNIT_MAX_BYTES = 1 << 20;

/**
 * A bare command name, looked up in the app's PATH inside its rootfs, as the
 * app's shell would. The rootfs is mounted only in the pod's namespaces, so
 * it is read through the pod init's root.
 */
function resolveCommand(spec: AppSpec, pid: number, cmd: string): string {
  const rootfs = `/proc/${pid}/root/opt/stage2/${spec.name}/rootfs`;
  if (cmd.includes('/')) return cmd.startsWith('/') ? cmd : path.posix.join(spec.workingDirectory, cmd);
  const dirs = (spec.env.find((e) => e.name === 'PATH')?.value ?? DEFAULT_PATH).split(':').filter((d) => d.startsWith('/'));
  for (const d of dirs) {
    const r = resolveInRoot(rootfs, path.posix.join(d, cmd));
    try {
      // lstat: resolveInRoot followed the links inside the rootfs; one put there since must not lead to the host
      const st = r.exists ? fs.lstatSync(r.host) : undefined;
      if (st?.isFile() && (st.mode & 0o111) !== 0) return path.posix.join(d, cmd);
    } catch {
      // not here
    }
  }
  throw new UsageError(`${cmd}: command not found in app ${spec.name} (searched ${dirs.join(':')})`);
}

function nsenterArgv(nsenter: string, pid: number, argv: string[]): string[] {
  // -a: every namespace of the pod's init, -r -w: its root and working directory
  return [nsenter, `--target=${pid}`, '--all', '--root', '--wd', '--', ...argv];
}

function startBus(nsenter: string, pid: number): void {
  const r = spawnSync(nsenter, nsenterArgv(nsenter, pid, ['/usr/bin/systemctl', 'start', 'dbus.service']).slice(1), {
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
    env: { ...process.env, SYSTEMD_LOG_LEVEL: 'err' },
    timeout: Number(DBUS_START_TIMEOUT_S) * 1000,
  });
  if (r.status !== 0) throw new RktError(`cannot start the pod's system bus for rkt enter: ${r.stderr?.trim() || r.error?.message || `exit status ${r.status}`}`);
}

export async function enter(argv: string[]): Promise<number> {
  const args = parseEnterArgs(argv);
  enableDebug(args.debug);
  const paths = new PodPaths(process.cwd());
  const uuid = path.basename(fs.realpathSync(paths.dir));
  if (!isPodInit(args.pid, uuid)) throw new RktError(`process ${args.pid} is not this pod's container; the pod is not running`);
  const spec = enteredAs(pickApp(loadAppSpecs(paths), args.appName), args.process);
  const nsenter = which('nsenter');
  if (nsenter === undefined) throw new NspawnHostError('rkt enter needs nsenter (util-linux) on the host');
  let unitText: string;
  try {
    // the host's own copy, outside the pod's root: the copy in there is the pod's to change
    unitText = readPinned(hostUnitCopy(paths.dir, spec.name), undefined, UNIT_MAX_BYTES);
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw new RktError(`the unit of app ${spec.name} ${whyUnreadable(err)}`, { cause: err });
    throw new RktError(`app ${spec.name} has no unit in this pod; was the pod started by this stage1?`, { cause: err });
  }
  if (args.process.uid !== undefined || args.process.gid !== undefined || args.process.supplementaryGids) addEnteredCredentials(paths.stage1Rootfs, paths.dir, spec);
  const command = [resolveCommand(spec, args.pid, args.command[0]!), ...args.command.slice(1)];
  const tty = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const unit = `rkt-enter-${spec.name}-${crypto.randomBytes(4).toString('hex')}.service`;
  const props = enterProperties(unitText, { term: process.env.TERM, process: args.process });
  const run = [
    '/usr/bin/systemd-run',
    '--quiet',
    '--wait',
    '--collect',
    '--service-type=exec',
    `--unit=${unit}`,
    tty ? '--pty' : '--pipe',
    ...props.flatMap((p) => ['-p', p]),
    '--',
    ...command.map(escapeExecArg),
  ];
  startBus(nsenter, args.pid);
  const full = nsenterArgv(nsenter, args.pid, run);
  log().debug({ argv: full }, `entering app ${spec.name}`);
  const child = spawn(full[0]!, full.slice(1), { stdio: 'inherit', env: { ...process.env, [ENTER_ENV_VAR]: undefined, SYSTEMD_LOG_LEVEL: args.debug ? 'info' : 'err' } });
  // With a terminal, ^C is a keystroke for the command; without one, the
  // signal reaches systemd-run too, which would stop waiting and leave the
  // unit behind: the unit gets the signal itself.
  const forward = (sig: NodeJS.Signals) => {
    if (tty && sig === 'SIGINT') return;
    spawnSync(nsenter, nsenterArgv(nsenter, args.pid, ['/usr/bin/systemctl', 'kill', `--signal=${sig}`, unit]).slice(1), { stdio: 'ignore' });
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, forward);
  return new Promise((resolve, reject) => {
    child.once('error', (err) => reject(new RktError(`cannot run ${nsenter}: ${err.message}`)));
    child.once('exit', (code, signal) => resolve(exitStatusOf({ code, signal })));
  });
}

