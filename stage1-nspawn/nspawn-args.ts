import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '../src/errors.js';
import { STAGE1 } from './pod-units.js';

// The systemd-nspawn command line for one pod, and the arguments of the
// systemd it boots. Kept free of side effects so that it can be tested.

/** The bounding set systemd-nspawn 252 gives a container; apps that retain more need --capability=. */
export const NSPAWN_DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_AUDIT_CONTROL',
  'CAP_AUDIT_WRITE',
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_IPC_OWNER',
  'CAP_KILL',
  'CAP_LEASE',
  'CAP_LINUX_IMMUTABLE',
  'CAP_MKNOD',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_RAW',
  'CAP_SETFCAP',
  'CAP_SETGID',
  'CAP_SETPCAP',
  'CAP_SETUID',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_CHROOT',
  'CAP_SYS_NICE',
  'CAP_SYS_PTRACE',
  'CAP_SYS_TTY_CONFIG',
];

/** rkt's --ipc: auto and private give the pod its own IPC namespace, parent keeps the host's. */
export type IpcMode = 'auto' | 'private' | 'parent';

export function parseIpcMode(v: string): IpcMode {
  if (v === 'auto' || v === 'private' || v === 'parent') return v;
  throw new UsageError(`--ipc=${v}: use auto, private or parent`);
}

/** --private-users: "pick" lets nspawn choose a free 64K range; a number (or N:COUNT) fixes it. */
export function parsePrivateUsers(v: string): string {
  if (v === '' || v === 'true' || v === 'yes' || v === 'pick') return 'pick';
  if (/^\d+(:\d+)?$/.test(v)) return v;
  throw new UsageError(`--private-users=${v}: give nothing (a free range is picked), UIDBASE or UIDBASE:COUNT`);
}

export interface NspawnOptions {
  nspawn: string;
  uuid: string;
  hostname: string;
  rootfs: string;
  debug: boolean;
  /** --interactive with rkt run's stdin a terminal: nspawn ties the container's console to it. */
  console: 'interactive' | 'read-only' | 'pipe';
  /** Capabilities the apps retain beyond nspawn's default set, or "all". */
  capabilities: string[] | 'all';
  privateUsers?: string;
  ipc: IpcMode;
  /** Register with systemd-machined (it then makes the pod's cgroup scope). */
  register: boolean;
  /**
   * --insecure-options=seccomp: nspawn's own container-wide filter goes too,
   * and the pod's systemd applies none (the filters that its other settings
   * imply, such as ProtectKernelLogs='s, included).
   */
  insecureSeccomp: boolean;
  /** --insecure-options=paths: the container's /proc/sys, /sys and friends stay writable (rkt's way). */
  insecurePaths?: boolean;
  /** The pod's network namespace; absent for the host's network. */
  netnsPath?: string;
}

export function machineName(uuid: string): string {
  return `rkt-${uuid}`;
}

/** Capabilities to add to nspawn's defaults so that every app can hold its bounding set. */
export function extraCapabilities(appCapabilities: readonly (readonly string[])[]): string[] {
  const want = new Set(appCapabilities.flat());
  return [...want].filter((c) => !NSPAWN_DEFAULT_CAPABILITIES.includes(c)).sort();
}

/** The systemd arguments: quiet unless --debug, the pod target as the unit to start. */
export function systemdArgs(debug: boolean, console: NspawnOptions['console']): string[] {
  const args = [`--unit=${STAGE1.podTarget}`];
  if (debug) args.push('--log-target=console', '--log-level=debug', '--show-status=yes');
  // a terminal shared with the app gets only systemd's critical errors (its harmless
  // complaints about cgroup hierarchies nspawn does not mount are errors)
  else if (console === 'interactive') args.push('--log-target=console', '--log-level=crit', '--show-status=no');
  else args.push('--log-target=console', '--log-level=warning', '--show-status=no');
  return args;
}

export function nspawnCommand(o: NspawnOptions): { argv: string[]; env: Record<string, string> } {
  const argv = [
    o.nspawn,
    `--directory=${o.rootfs}`,
    `--machine=${machineName(o.uuid)}`,
    `--uuid=${o.uuid}`,
    `--hostname=${o.hostname}`,
    `--register=${o.register ? 'yes' : 'no'}`,
    // without machined there is no scope to create: stay in the pod's cgroup we made
    ...(o.register ? [] : ['--keep-unit']),
    `--console=${o.console}`,
    // the pod's root is the stage1's, not an OS image to keep in sync with the host
    '--resolv-conf=off',
    '--timezone=off',
    '--link-journal=no',
    // what nspawn sends PID 1 when it is itself told to stop: systemd's power-off
    '--kill-signal=SIGRTMIN+4',
  ];
  if (!o.debug) argv.push('--quiet');
  if (o.capabilities === 'all') argv.push('--capability=all');
  else if (o.capabilities.length > 0) argv.push(`--capability=${o.capabilities.join(',')}`);
  if (o.privateUsers !== undefined) argv.push(`--private-users=${o.privateUsers}`, '--private-users-ownership=chown');
  // systemd takes seccomp for unavailable and skips every filter (its is_seccomp_available())
  if (o.insecureSeccomp) argv.push('--setenv=SYSTEMD_SECCOMP=0');
  // PID 1 is rkt-init, which makes the cgroup controllers usable and becomes systemd
  argv.push('--', STAGE1.init, ...systemdArgs(o.debug, o.console));
  const env: Record<string, string> = {};
  if (o.ipc === 'parent') env.SYSTEMD_NSPAWN_SHARE_NS_IPC = '1';
  if (o.insecureSeccomp) env.SYSTEMD_SECCOMP = '0';
  if (o.insecurePaths) env.SYSTEMD_NSPAWN_API_VFS_WRITABLE = 'yes';
  // nspawn's own warnings are noise to a user; errors still show
  if (!o.debug) env.SYSTEMD_LOG_LEVEL = 'err';
  // nspawn is started inside the pod's namespace rather than told to join it
  // (--network-namespace-path): nspawn joins that late, after mounting the
  // container's /sys, whose sysfs would then list the host's interfaces.
  if (o.netnsPath !== undefined) argv.unshift('nsenter', `--net=${o.netnsPath}`, '--');
  return { argv, env };
}



/**
 * Whether nspawn should register the pod with systemd-machined: only where a
 * host systemd runs (it starts machined on demand over D-Bus). Elsewhere
 * registration would fail, and nspawn with it.
 */
export function machinedAvailable(root = '/'): boolean {
  const has = (p: string): boolean => fs.existsSync(path.join(root, p));
  return (
    has('run/systemd/system') &&
    has('run/dbus/system_bus_socket') &&
    ['usr/lib/systemd/systemd-machined', 'lib/systemd/systemd-machined'].some(has)
  );
}

export { which } from '../src/stage1-common/host-tools.js';
