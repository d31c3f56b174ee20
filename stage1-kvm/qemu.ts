import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { log } from '../src/log.js';
import { mkfifo } from '../src/util/fifo.js';
import { executable, which } from '../src/stage1-common/host-tools.js';
import { inNetns } from '../src/net/netns.js';
import type { Env } from '../src/stage1-common/env-config.js';
import { KVM_ENV, qemuOverride, type Accel } from './config.js';
import { KvmHostError } from './errors.js';
import { hostDevice, isUnder, JAIL_ROOT, jailArgv, PID_FD, prepareJailRoot, systemTree, type JailDevice, type JailSpec } from './jail.js';
import { ROOT_TAG } from './kernel.js';
import type { HostIds } from '../src/stage1-common/pod-ids.js';
import { agentPortName, agentSocketPaths, podFile, QEMU_DIR, socketPath, type PodFile } from './pod-files.js';

// qemu for one pod: its command line and how it is started, and how the
// pod's helper processes are started (qemu here, virtiofsd in virtiofsd.ts).
// Both run with the pod directory as working directory (relative
// socket paths resolve there) and under `setpriv --pdeathsig KILL`, so the
// kernel kills them when the run entrypoint dies, however it dies: a pod
// never leaves an orphan VM behind. The pod lock (fd 3 of the run
// entrypoint) is replaced in them (by /dev/null, or qemu's console socket):
// only the run entrypoint may keep the pod "running". qemu runs in its jail
// (jail.ts), unprivileged, under its own seccomp filter, and starts paused:
// the run entrypoint closes qemu's directory to it before the guest runs a
// single instruction (vm.ts).


/** A value inside a qemu option list, where "," separates options and ",," is a literal comma. */
export function optValue(v: string): string {
  return v.replace(/,/g, ',,');
}

export function findQemu(env: Env = process.env): string {
  const given = qemuOverride(env);
  if (given) {
    if (!executable(given)) throw new KvmHostError(`${KVM_ENV.qemu}=${given} is not an executable file`);
    return given;
  }
  const q = which('qemu-system-x86_64');
  if (!q) throw new KvmHostError('qemu-system-x86_64 is not installed; the kvm stage1 needs it (apt-get install qemu-system-x86)');
  return q;
}

export function findSetpriv(): string {
  const s = which('setpriv');
  if (!s) throw new KvmHostError('setpriv (util-linux) is not installed; the kvm stage1 needs it');
  return s;
}

export interface VmConfig {
  podDir: string;
  uuid: string;
  accel: Accel;
  memoryMiB: number;
  cpus: number;
  kernel: string;
  cmdline: string;
  /** Keep the PIT when the guest cannot be told the TSC rate (tcg without tsc_early_khz). */
  pit: boolean;
  /** The pod's network namespace: qemu runs in it, where its taps are. */
  netns?: string;
  /** -netdev/-device arguments of the pod's NICs (network.ts). */
  nics?: string[];
  /** The pod's own uid and gid, which qemu runs as (pod-ids.ts). */
  ids: HostIds;
  /** The cgroup.procs files of the pod's cgroups (vm-cgroup.ts). */
  cgroupProcs: string[];
  /** The template machine (template-qemu.ts): booted once and saved, or restored from its saved state. */
  template?: TemplateMachine;
}

export interface TemplateMachine {
  /** The template's initramfs (guest/template/), which waits on the port rkt.template. */
  initrd: string;
  /** Restore: our descriptor of the saved state (read-only), which qemu gets as INCOMING_FD. */
  incomingFd?: number;
}

/**
 * The template machine: a PC (i440fx) rather than a microvm, whose
 * virtio-mmio bus takes no hotplugged device. qemu 7.2 refuses to save or
 * restore a VM with a vhost-user-fs device, so the template has none: the
 * pod's virtio-fs root and its NICs are added to the restored VM over QMP,
 * on the PCI bus, where the guest finds them by a rescan.
 */
export const TEMPLATE_MACHINE = ['pc', 'memory-backend=mem'] as const;
/** The virtio-serial port on which a template guest waits for its pod (guest/template/init.c). */
export const TEMPLATE_PORT = 'rkt.template';

/** The descriptor on which a restored qemu reads its template's saved state. */
export const INCOMING_FD = 5;

/** The descriptor on which qemu finds its end of the serial console's socket pair. */
export const QEMU_CONSOLE_FD = 3;

/**
 * qemu's seccomp filter: its default deny list (reboot, swapon, kexec,
 * module loading, ptrace...) plus obsolete system calls, any change of
 * credentials, fork and exec, and scheduler and resource-limit changes.
 */
export const QEMU_SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

/**
 * tcg's translation cache, in MiB. qemu's own default is 1 GiB on a host
 * with 8 GiB or more: the cgroup's memory limit would have to leave room
 * for all of it (vm-cgroup.ts). A pod's boot and a busy shell loop fill
 * about 53 MiB; when the cache is full, qemu flushes it and translates again.
 */
export const TCG_TB_MIB = 256;

/** qemu's command line for the pod (without the binary). */
export function qemuArgs(c: VmConfig): string[] {
  const sock = (f: Parameters<typeof socketPath>[1]): string => optValue(socketPath(c.podDir, f));
  const file = (f: Parameters<typeof podFile>[1]): string => optValue(podFile(c.podDir, f));
  const machine = [
    'microvm',
    // no firmware option ROMs to load; no legacy PIC; the RTC is the tcg guest's only wall clock
    'x-option-roms=off',
    `pit=${c.pit ? 'on' : 'off'}`,
    'pic=off',
    'rtc=on',
    'isa-serial=on',
    // ACPI describes the virtio-mmio devices and carries the power button
    'acpi=on',
  ];
  const a: string[] = ['-name', `rkt-${c.uuid},process=rkt-${c.uuid}`];
  // vhost-user needs guest memory qemu can hand to virtiofsd
  machine.push('memory-backend=mem');
  // the template machine is a PC: its devices are virtio-pci, so that the pod's own can be hotplugged after a restore
  const t = c.template;
  if (t) machine.splice(0, machine.length, ...TEMPLATE_MACHINE);
  const virtio = (d: string): string => (t ? `${d}-pci` : `${d}-device`);
  const mem = ['-object', `memory-backend-memfd,id=mem,size=${c.memoryMiB}M,share=on`];
  a.push('-M', machine.join(','), '-accel', c.accel === 'kvm' ? 'kvm' : `tcg,tb-size=${TCG_TB_MIB}`, '-cpu', c.accel === 'kvm' ? 'host' : 'max');
  a.push('-smp', String(c.cpus), '-m', `${c.memoryMiB}M`, ...mem);
  a.push('-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot');
  a.push('-sandbox', QEMU_SANDBOX);
  // paused until the run entrypoint has closed qemu's directory to it (vm.ts)
  a.push('-S');
  // virtio 1.0 over MMIO: vhost-user-fs refuses legacy devices
  if (!t) a.push('-global', 'virtio-mmio.force-legacy=false');
  a.push('-kernel', c.kernel, '-append', c.cmdline);
  if (t) a.push('-initrd', t.initrd);
  // The serial console: one end of a socket pair whose other end the run
  // entrypoint keeps (console-relay.ts), which owns the log and console.sock.
  // No logfile: qemu never writes what the guest prints to a file.
  a.push('-chardev', `socket,id=console,fd=${QEMU_CONSOLE_FD}`);
  a.push('-serial', 'chardev:console');
  a.push('-device', virtio('virtio-serial'));
  // App output: FIFOs that keep what the guest writes until the run entrypoint reads it.
  a.push('-chardev', `pipe,id=stdout,path=${file('stdout')}`, '-device', 'virtserialport,chardev=stdout,name=rkt.stdout');
  a.push('-chardev', `pipe,id=stderr,path=${file('stderr')}`, '-device', 'virtserialport,chardev=stderr,name=rkt.stderr');
  a.push('-chardev', `pipe,id=report,path=${file('report')}`, '-device', 'virtserialport,chardev=report,name=rkt.report');
  // The guest agent's ports: qemu serves one client per socket, so each port carries one `rkt enter` session.
  agentSocketPaths(c.podDir).forEach((p, i) => {
    a.push('-chardev', `socket,id=agent${i === 0 ? '' : i},path=${optValue(p)},server=on,wait=off`, '-device', `virtserialport,chardev=agent${i === 0 ? '' : i},name=${agentPortName(i)}`);
  });
  if (t) a.push('-chardev', `pipe,id=template,path=${file('template')}`, '-device', `virtserialport,chardev=template,name=${TEMPLATE_PORT}`);
  a.push('-device', virtio('virtio-rng'));
  // pvpanic (ISA port 0x505, in microvm's ACPI tables): the guest kernel's
  // panic becomes QMP's GUEST_PANICKED, and qemu powers the VM off. The host
  // says "guest panicked" on that signal only, never on console text.
  a.push('-device', 'pvpanic', '-action', 'panic=shutdown');
  // a template has neither: they are the pod's own, hotplugged after the restore (template-vm.ts)
  if (!t) {
    a.push(...(c.nics ?? []));
    // the pod's files, served by virtiofsd (there is no 9p: config.ts, checkShare)
    a.push('-chardev', `socket,id=vfs,path=${sock('virtiofsSocket')}`, '-device', `vhost-user-fs-device,chardev=vfs,tag=${ROOT_TAG}`);
  }
  if (t?.incomingFd !== undefined) a.push('-incoming', `fd:${INCOMING_FD}`);
  // Two monitors: qemu serves one client per socket, and the run entrypoint keeps the first.
  a.push('-qmp', `unix:${sock('qmp')},server=on,wait=off`);
  a.push('-qmp', `unix:${sock('qmpCtl')},server=on,wait=off`);
  return a;
}

/**
 * qemu's directory in the pod (pod-files.ts): root's, but writable by the
 * pod's group until closeQemuDir, so that qemu can create its sockets; in
 * it the FIFOs of qemu's pipe chardevs (<name>.in, <name>.out), owned by
 * the pod's ids. Stale ones are replaced.
 */
export function makeQemuDir(podDir: string, ids: HostIds, template = false): void {
  const dir = path.join(podDir, QEMU_DIR);
  fs.mkdirSync(dir, { recursive: true });
  fs.chownSync(dir, 0, ids.gid);
  fs.chmodSync(dir, 0o770);
  const fifos: PodFile[] = ['stdout', 'stderr', 'report', ...(template ? (['template'] as const) : [])];
  // one mkfifo(1) for all of them: each exec cost about 4 ms before the VM could start
  const paths = fifos.flatMap((f) => ['in', 'out'].map((end) => `${podFile(podDir, f)}.${end}`));
  mkfifo(...paths);
  for (const p of paths) fs.chownSync(p, ids.uid, ids.gid);
}

/**
 * Once qemu has made its files, and before the guest runs: its directory
 * becomes root's alone. A qemu taken over by the guest can then replace
 * none of them, say by a symlink to a host file that the run entrypoint,
 * `rkt enter` or `rkt attach` would open as root.
 */
export function closeQemuDir(podDir: string): void {
  const dir = path.join(podDir, QEMU_DIR);
  fs.chmodSync(dir, 0o755);
  fs.chownSync(dir, 0, 0);
}

export interface Helper {
  child: ChildProcess;
  pid: number;
  /** Resolves with how the helper ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** What a helper gets as descriptors 3 and up: /dev/null at 3 (never the pod lock we hold there) unless `consoleFd3`, qemu's console socket; a pid pipe at 4. */
export function spawnHelper(podDir: string, argv: string[], logFile: string, name: string, opts: { consoleFd3?: boolean; pidPipe?: boolean; incomingFd?: number } = {}): Helper {
  const setpriv = findSetpriv();
  const out = fs.openSync(logFile, 'a');
  const devNull = fs.openSync('/dev/null', 'r+');
  log().debug({ argv }, `starting ${name}`);
  let child: ChildProcess;
  try {
    // node makes a 'pipe' a socket pair: qemu's socket chardev takes its end (fd 3) as a connected client
    const stdio: StdioOptions = [devNull, out, out, opts.consoleFd3 ? 'pipe' : devNull, ...(opts.pidPipe ? (['pipe'] as const) : [])];
    // a template's saved state, read-only: at INCOMING_FD (the pid pipe is always there for qemu)
    if (opts.incomingFd !== undefined) stdio.push(opts.incomingFd);
    // its own process group: a ^C at rkt's terminal is a stop request for the supervisor, not a kill for qemu
    child = spawn(setpriv, ['--pdeathsig', 'KILL', '--', ...argv], { cwd: podDir, stdio, detached: true });
  } finally {
    fs.closeSync(out);
    fs.closeSync(devNull);
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (err) => {
      log().debug(`${name}: ${err.message}`);
      resolve({ code: 127, signal: null });
    });
  });
  if (child.pid === undefined) return { child, pid: -1, exited };
  return { child, pid: child.pid, exited };
}

/** What qemu's jail holds for this pod. */
export function qemuJail(qemu: string, c: VmConfig, host: { devices: (p: string, isPrivate: boolean) => JailDevice | undefined; system: Pick<JailSpec, 'readOnly' | 'links'> }): JailSpec {
  const readOnly = [...host.system.readOnly];
  for (const f of [qemu, c.kernel, ...(c.template ? [c.template.initrd] : [])]) if (!readOnly.some((d) => isUnder(f, d))) readOnly.push(f);
  const devices = [host.devices('/dev/null', false), host.devices('/dev/urandom', false)];
  if (c.accel === 'kvm') devices.push(host.devices('/dev/kvm', true));
  if ((c.nics ?? []).length > 0) devices.push(host.devices('/dev/net/tun', true));
  return {
    root: path.join(c.podDir, JAIL_ROOT),
    ids: c.ids,
    cwd: c.podDir,
    readOnly,
    writable: [path.join(c.podDir, QEMU_DIR), podFile(c.podDir, 'virtiofsSocket')],
    links: host.system.links,
    devices: devices.filter((d): d is JailDevice => d !== undefined),
    cgroupProcs: c.cgroupProcs,
  };
}

export interface QemuProcess extends Helper {
  /** qemu's own pid (the helper's is its launcher's), once the jail has started it. */
  qemuPid: Promise<number | undefined>;
  /** Our end of the serial console's socket pair (none if the spawn failed). */
  console: Duplex | undefined;
}

export function startQemu(qemu: string, c: VmConfig): QemuProcess {
  const spec = qemuJail(qemu, c, { devices: hostDevice, system: systemTree() });
  prepareJailRoot(spec);
  const jail = jailArgv(spec, [qemu, ...qemuArgs(c)]);
  // nsenter execs the jail's launcher in place, which keeps the parent-death signal set by setpriv
  const argv = c.netns !== undefined ? inNetns(c.netns, jail) : jail;
  const h = spawnHelper(c.podDir, argv, podFile(c.podDir, 'qemuLog'), 'qemu', { consoleFd3: true, pidPipe: true, ...(c.template?.incomingFd !== undefined && { incomingFd: c.template.incomingFd }) });
  return { ...h, qemuPid: readPid(h.child), console: (h.child.stdio[QEMU_CONSOLE_FD] as Duplex | null) ?? undefined };
}

/** The pid the launcher writes on its pid pipe; undefined if it ends first. */
function readPid(child: ChildProcess): Promise<number | undefined> {
  const pipe = child.stdio[PID_FD] as NodeJS.ReadableStream | null | undefined;
  if (!pipe) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    let text = '';
    pipe.setEncoding('utf8');
    pipe.on('data', (d: string) => (text += d));
    pipe.on('error', () => resolve(undefined));
    pipe.on('end', () => {
      const n = Number(text.trim());
      resolve(Number.isInteger(n) && n > 0 ? n : undefined);
    });
  });
}
