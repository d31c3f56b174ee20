import fs from 'node:fs';
import path from 'node:path';
import { isErrno } from '../src/errors.js';
import { writeFileAtomic } from '../src/util/atomic.js';

// What the kvm flavor keeps in a pod directory besides the stage1 contract
// files, shared by its entrypoints: qemu's sockets (console, QMP for the run
// entrypoint, QMP for stop and status tools, the guest agent), the app
// output FIFOs, logs, and the pids of the helper processes so that stop and
// gc can find them even after the run entrypoint is gone.
//
// Every file qemu opens by name lives in QEMU_DIR: the only part of the pod
// directory its jail shows it (jail.ts), and the only one it may write,
// until the VM runs (vm.ts). A new socket or FIFO for qemu goes there too.

export const QEMU_DIR = 'qemu';

export const POD_FILES = {
  /** Guest serial console (server, nowait): rkt attach, --interactive. */
  console: `${QEMU_DIR}/console.sock`,
  /** Everything the guest printed on its console. */
  consoleLog: `${QEMU_DIR}/console.log`,
  /** QMP socket held by the run entrypoint for the VM's events. */
  qmp: `${QEMU_DIR}/qmp.sock`,
  /** Second QMP socket, for stop (qemu serves one client per socket). */
  qmpCtl: `${QEMU_DIR}/qmp-ctl.sock`,
  /** virtio-serial port rkt.agent (rkt enter); the further ports rkt.agent.N are agentSocketPaths(). */
  agent: `${QEMU_DIR}/agent.sock`,
  /** Prefix of qemu's pipe chardevs: <name>.in and <name>.out FIFOs. */
  stdout: `${QEMU_DIR}/stdout`,
  stderr: `${QEMU_DIR}/stderr`,
  /** virtio-serial port rkt.report: what the guest reports about its apps (report-channel.ts), a pipe chardev like the output. */
  report: `${QEMU_DIR}/report`,
  /** virtio-serial port rkt.template of a template VM (template*.ts), a pipe chardev: "ready" out, the pod's "go" in. */
  template: `${QEMU_DIR}/template`,
  /** Where a template VM being saved sends its state (qemu connects; the run entrypoint writes the cache file). */
  migrate: `${QEMU_DIR}/migrate.sock`,
  virtiofsSocket: 'virtiofs.sock',
  qemuPid: 'qemu.pid',
  virtiofsdPid: 'virtiofsd.pid',
  qemuLog: 'qemu.log',
  virtiofsdLog: 'virtiofsd.log',
} as const;

export type PodFile = keyof typeof POD_FILES;

// sun_path holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX = 107;

/** Absolute path of a pod file. */
export function podFile(podDir: string, f: PodFile): string {
  return path.join(podDir, POD_FILES[f]);
}

/**
 * A unix socket's path as qemu and our clients should use it: absolute when
 * it fits in sun_path, else relative to the pod directory, which is the
 * working directory of qemu and of every entrypoint.
 */
export function socketPath(podDir: string, f: PodFile): string {
  const abs = podFile(podDir, f);
  return Buffer.byteLength(abs) <= SUN_PATH_MAX ? abs : POD_FILES[f];
}

export function writePidFile(podDir: string, f: 'qemuPid' | 'virtiofsdPid', pid: number): void {
  writeFileAtomic(podFile(podDir, f), `${pid}\n`);
}

export function readPidFile(podDir: string, f: 'qemuPid' | 'virtiofsdPid'): number | undefined {
  try {
    const n = Number(fs.readFileSync(podFile(podDir, f), 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

/**
 * Whether `pid` is still the helper this pod started: alive, and its command
 * line names this pod's directory, or its working directory is the pod
 * directory (virtiofsd, whose command line names no pod path). Pids are recycled; a stale
 * pid file must never make gc or stop kill a stranger.
 */
export function isPodHelper(podDir: string, pid: number): boolean {
  let cmdline: string;
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    // no such process
    return false;
  }
  const real = (() => {
    try {
      return fs.realpathSync(podDir);
    } catch {
      // moved meanwhile: the UUID still matches
      return podDir;
    }
  })();
  // The pod may have moved (run -> exited-garbage) since the helper started: match on the UUID too.
  const uuid = path.basename(real);
  if (cmdline.includes(real) || cmdline.includes(podDir) || (/^[0-9a-f-]{36}$/.test(uuid) && cmdline.includes(uuid))) return true;
  try {
    const cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
    return cwd === real || (/^[0-9a-f-]{36}$/.test(uuid) && path.basename(cwd) === uuid);
  } catch {
    // gone meanwhile
    return false;
  }
}

/** SIGKILL a helper recorded in a pid file if it is still this pod's; true if one was killed. */
export function killPodHelper(podDir: string, f: 'qemuPid' | 'virtiofsdPid'): boolean {
  const pid = readPidFile(podDir, f);
  if (pid === undefined || !isPodHelper(podDir, pid)) return false;
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    // exited meanwhile
    return false;
  }
}

/**
 * How many virtio-serial ports the guest agent serves, one session each:
 * that many `rkt enter` sessions of a pod run at once, further ones wait.
 */
export const AGENT_PORTS = 8;

/** Port name of agent port i, as the guest agent looks them up: rkt.agent, rkt.agent.1, ... */
export function agentPortName(i: number): string {
  return i === 0 ? 'rkt.agent' : `rkt.agent.${i}`;
}

/** Socket of agent port i, relative to the pod directory. */
export function agentPortFile(i: number): string {
  return i === 0 ? POD_FILES.agent : `${QEMU_DIR}/agent.${i}.sock`;
}

/** The sockets of every agent port, as clients should use them (see socketPath). */
export function agentSocketPaths(podDir: string): string[] {
  return Array.from({ length: AGENT_PORTS }, (_, i) => {
    const abs = path.join(podDir, agentPortFile(i));
    return Buffer.byteLength(abs) <= SUN_PATH_MAX ? abs : agentPortFile(i);
  });
}
