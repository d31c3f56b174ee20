import fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { log } from '../src/log.js';
import { executable, which } from '../src/stage1-common/host-tools.js';
import { inNetns } from '../src/net/netns.js';
import type { Env } from '../src/stage1-common/env-config.js';
import { KVM_ENV, qemuOverride, type Accel } from './config.js';
import { KvmHostError } from './errors.js';
import { ROOT_TAG, type Share } from './kernel.js';
import { podFile, socketPath, writePidFile } from './pod-files.js';

// qemu for one pod: its command line and how it is started, and how the
// pod's helper processes are started (qemu here, virtiofsd in virtiofsd.ts).
// Both run with the pod directory as working directory (relative
// socket paths resolve there) and under `setpriv --pdeathsig KILL`, so the
// kernel kills them when the run entrypoint dies, however it dies: a pod
// never leaves an orphan VM behind. The pod lock (fd 3 of the run
// entrypoint) is replaced in them (by /dev/null, or qemu's console socket):
// only the run entrypoint may keep the pod "running".


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
  share: Share;
  /** The guest's root filesystem: the pod's stage1 rootfs. */
  rootfs: string;
  /** Keep the PIT when the guest cannot be told the TSC rate (tcg without tsc_early_khz). */
  pit: boolean;
  /** The pod's network namespace: qemu runs in it, where its taps are. */
  netns?: string;
  /** -netdev/-device arguments of the pod's NICs (network.ts). */
  nics?: string[];
}

/** The descriptor on which qemu finds its end of the serial console's socket pair. */
export const QEMU_CONSOLE_FD = 3;

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
  const mem: string[] = [];
  if (c.share === 'virtiofs') {
    // vhost-user needs guest memory qemu can hand to virtiofsd
    machine.push('memory-backend=mem');
    mem.push('-object', `memory-backend-memfd,id=mem,size=${c.memoryMiB}M,share=on`);
  }
  a.push('-M', machine.join(','), '-accel', c.accel, '-cpu', c.accel === 'kvm' ? 'host' : 'max');
  a.push('-smp', String(c.cpus), '-m', `${c.memoryMiB}M`, ...mem);
  a.push('-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot');
  // virtio 1.0 over MMIO: vhost-user-fs refuses legacy devices
  a.push('-global', 'virtio-mmio.force-legacy=false');
  a.push('-kernel', c.kernel, '-append', c.cmdline);
  // The serial console: one end of a socket pair whose other end the run
  // entrypoint keeps (console-relay.ts), which owns the log and console.sock.
  // No logfile: qemu never writes what the guest prints to a file.
  a.push('-chardev', `socket,id=console,fd=${QEMU_CONSOLE_FD}`);
  a.push('-serial', 'chardev:console');
  a.push('-device', 'virtio-serial-device');
  // App output: FIFOs that keep what the guest writes until the run entrypoint reads it.
  a.push('-chardev', `pipe,id=stdout,path=${file('stdout')}`, '-device', 'virtserialport,chardev=stdout,name=rkt.stdout');
  a.push('-chardev', `pipe,id=stderr,path=${file('stderr')}`, '-device', 'virtserialport,chardev=stderr,name=rkt.stderr');
  a.push('-chardev', `pipe,id=report,path=${file('report')}`, '-device', 'virtserialport,chardev=report,name=rkt.report');
  a.push('-chardev', `socket,id=agent,path=${sock('agent')},server=on,wait=off`, '-device', 'virtserialport,chardev=agent,name=rkt.agent');
  a.push('-device', 'virtio-rng-device');
  // pvpanic (ISA port 0x505, in microvm's ACPI tables): the guest kernel's
  // panic becomes QMP's GUEST_PANICKED, and qemu powers the VM off. The host
  // says "guest panicked" on that signal only, never on console text.
  a.push('-device', 'pvpanic', '-action', 'panic=shutdown');
  a.push(...(c.nics ?? []));
  if (c.share === 'virtiofs') {
    a.push('-chardev', `socket,id=vfs,path=${sock('virtiofsSocket')}`, '-device', `vhost-user-fs-device,chardev=vfs,tag=${ROOT_TAG}`);
  } else {
    // passthrough: the guest's root creates files with their real owners; remap: the
    // app rootfs overlays and volumes are other filesystems, keep their inodes apart
    a.push('-fsdev', `local,id=root,path=${optValue(c.rootfs)},security_model=passthrough,multidevs=remap`);
    a.push('-device', `virtio-9p-device,fsdev=root,mount_tag=${ROOT_TAG}`);
  }
  // Two monitors: qemu serves one client per socket, and the run entrypoint keeps the first.
  a.push('-qmp', `unix:${sock('qmp')},server=on,wait=off`);
  a.push('-qmp', `unix:${sock('qmpCtl')},server=on,wait=off`);
  return a;
}

/** Create the FIFOs of qemu's pipe chardevs (<name>.in, <name>.out) in the pod directory, outside the guest's share; stale ones are replaced. */
export function makeOutputFifos(podDir: string, mkfifo: (p: string) => void): void {
  for (const f of ['stdout', 'stderr', 'report'] as const) {
    for (const end of ['in', 'out']) {
      const p = `${podFile(podDir, f)}.${end}`;
      fs.rmSync(p, { force: true });
      mkfifo(p);
    }
  }
}

export interface Helper {
  child: ChildProcess;
  pid: number;
  /** Resolves with how the helper ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface QemuHelper extends Helper {
  /** Our end of the serial console's socket pair (none if the spawn failed). */
  console: Duplex | undefined;
}

/** `fd3`: what the helper gets as descriptor 3, /dev/null unless said (never the pod lock we hold there). */
export function spawnHelper(podDir: string, argv: string[], logFile: string, name: string, fd3: 'pipe' | 'null' = 'null'): Helper {
  const setpriv = findSetpriv();
  const out = fs.openSync(logFile, 'a');
  const devNull = fs.openSync('/dev/null', 'r+');
  log().debug({ argv }, `starting ${name}`);
  let child: ChildProcess;
  try {
    child = spawn(setpriv, ['--pdeathsig', 'KILL', '--', ...argv], { cwd: podDir, stdio: [devNull, out, out, fd3 === 'pipe' ? 'pipe' : devNull] });
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

export function startQemu(qemu: string, c: VmConfig): QemuHelper {
  // nsenter execs qemu in place: the pid, the parent-death signal set by setpriv and the console's descriptor stay qemu's
  const argv = [...(c.netns !== undefined ? inNetns(c.netns, [qemu]) : [qemu]), ...qemuArgs(c)];
  // node makes a 'pipe' a socket pair: qemu's socket chardev takes its end as a connected client
  const h = spawnHelper(c.podDir, argv, podFile(c.podDir, 'qemuLog'), 'qemu', 'pipe');
  if (h.pid > 0) writePidFile(c.podDir, 'qemuPid', h.pid);
  return { ...h, console: (h.child.stdio[QEMU_CONSOLE_FD] as Duplex | null) ?? undefined };
}
