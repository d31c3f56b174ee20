import fs from 'node:fs';
import path from 'node:path';
import type { Accel } from './accel.js';
import type { Env } from '../src/stage1-common/env-config.js';
import { hostTscOverride, kernelOverride, KVM_ENV } from './config.js';
import { KvmHostError } from './errors.js';

// The guest kernel and its command line.
//
// The kernel is the one shipped in the stage1 image (/kernel/bzImage,
// built by kernel-config/build.sh), unless RKT_KVM_KERNEL names
// another. Its command line tells it where its root filesystem is (the
// pod's stage1 rootfs, shared by virtio-fs), starts systemd with the
// pod's target, and, under tcg, gives it the host's TSC rate: microvm has
// no PIT (we turn it off, it costs boot time), HPET or PM timer, so a tcg
// guest cannot calibrate its TSC by itself and hangs now and then in early
// boot (kernel-config/README.md). kvm guests get the rate from kvm-clock.

/** Where build.ts puts the kernel inside the stage1 rootfs. */
export const STAGE1_KERNEL = '/kernel/bzImage';
/** CONFIG_HZ of the stage1's own kernel (tinyconfig's default; kernel-config/). */
export const STAGE1_KERNEL_HZ = 250;
/** The virtio-fs tag of the guest's root filesystem. */
export const ROOT_TAG = 'rktroot';

/** Whether the kernel to boot is another than the stage1's own. */
export function customKernel(env: Env = process.env): boolean {
  return kernelOverride(env) !== undefined;
}

/** The kernel to boot: the user's choice, else the stage1's own; readable, or a clear error. */
export function kernelPath(stage1Rootfs: string, env: Env = process.env): string {
  const given = kernelOverride(env);
  const file = given ? path.resolve(given) : path.join(stage1Rootfs, STAGE1_KERNEL);
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new Error('not a regular file');
    fs.accessSync(file, fs.constants.R_OK);
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `cannot be read (${(err as Error).message})`;
    if (given) throw new KvmHostError(`guest kernel ${file} (from ${KVM_ENV.kernel}) ${why}; point ${KVM_ENV.kernel} at a bzImage or unset it`);
    throw new KvmHostError(`the stage1 image has no guest kernel: ${file} ${why}; rebuild the stage1 image (kernel-config/build.sh, then node dist/stage1-kvm/build.js)`);
  }
  return file;
}

const plausibleKhz = (n: number): boolean => Number.isInteger(n) && n >= 100_000 && n <= 20_000_000;

/** "2596.122" MHz -> 2596122 kHz, without floating-point rounding. */
export function mhzToKhz(mhz: string): number | undefined {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(mhz.trim());
  if (!m) return undefined;
  return Number(m[1]) * 1000 + Number(((m[2] ?? '') + '000').slice(0, 3));
}

/** The TSC rate in a kernel log: the refined calibration if there is one, else the detected rate. */
export function tscKhzFromKernelLog(log: string): number | undefined {
  const refined = [...log.matchAll(/tsc: Refined TSC clocksource calibration: ([\d.]+) MHz/g)].at(-1);
  const detected = [...log.matchAll(/tsc: Detected ([\d.]+) MHz/g)].at(-1);
  const mhz = refined?.[1] ?? detected?.[1];
  return mhz === undefined ? undefined : mhzToKhz(mhz);
}

export interface TscSources {
  sysfs: () => string | undefined;
  kernelLog: () => string | undefined;
  cpuinfo: () => string | undefined;
}

function readOr(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    // not on this host: that source simply says nothing
    return undefined;
  }
}

/** The text of one /dev/kmsg record: "PRIORITY,SEQ,USEC,FLAGS;TEXT\n", then continuation lines (" KEY=VALUE"). */
export function kmsgText(record: string): string {
  return record.slice(record.indexOf(';') + 1).split('\n', 1)[0]!;
}

/**
 * The kernel's log, one record's text per line, read from /dev/kmsg in this
 * process: spawning dmesg(1) cost every tcg pod 10-40 ms before its VM started.
 * A record overwritten while we read (EPIPE) is skipped; undefined when the
 * log cannot be read at all.
 */
export function readKernelLog(): string | undefined {
  let fd: number;
  try {
    fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch {
    // no /dev/kmsg, or not allowed to read it: the other sources decide
    return undefined;
  }
  // one record per read(2); a record is at most 8 KiB (the kernel's own limit for a line)
  const buf = Buffer.alloc(8192);
  const lines: string[] = [];
  try {
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EPIPE') continue;
        if (code === 'EAGAIN') break;
        return undefined;
      }
      if (n === 0) break;
      lines.push(kmsgText(buf.toString('utf8', 0, n)));
    }
  } finally {
    fs.closeSync(fd);
  }
  return lines.join('\n');
}

export const hostTscSources: TscSources = {
  sysfs: () => readOr('/sys/devices/system/cpu/cpu0/tsc_freq_khz'),
  kernelLog: readKernelLog,
  cpuinfo: () => readOr('/proc/cpuinfo'),
};

/**
 * The host's TSC rate in kHz (what kernel-config/host-tsc-khz.sh computes),
 * from the most exact source that has it; undefined if none does.
 */
export function hostTscKhz(env: Env = process.env, src: TscSources = hostTscSources): number | undefined {
  const forced = hostTscOverride(env);
  if (forced) {
    const n = Number(forced);
    if (!plausibleKhz(n)) throw new KvmHostError(`${KVM_ENV.hostTscKhz}=${forced} is not a TSC rate in kHz (e.g. 2596122)`);
    return n;
  }
  const sys = Number(src.sysfs()?.trim() ?? NaN);
  if (plausibleKhz(sys)) return sys;
  const cpuinfo = src.cpuinfo() ?? '';
  // No TSC, no rate to give (and nothing that would hang on its calibration).
  if (!/^flags\s*:.*\btsc\b/m.test(cpuinfo)) return undefined;
  const fromLog = tscKhzFromKernelLog(src.kernelLog() ?? '');
  if (fromLog !== undefined && plausibleKhz(fromLog)) return fromLog;
  const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1];
  const k = mhz === undefined ? undefined : mhzToKhz(mhz);
  return k !== undefined && plausibleKhz(k) ? k : undefined;
}

export interface CmdlineOptions {
  accel: Accel;
  /** The pod UUID: systemd's machine ID, as rkt's nspawn flavor does it. */
  uuid: string;
  hostname: string;
  debug: boolean;
  /** The console is the app's terminal (--interactive): keep the kernel's errors off it. */
  interactive?: boolean;
  /** Host TSC rate; tcg only. */
  tscKhz?: number;
  /**
   * The kernel's timer frequency, when known (the stage1's own kernel):
   * with it, loops-per-jiffy follows from the TSC rate, and secondary
   * vCPUs skip their delay calibration, slow and erratic under tcg.
   */
  kernelHz?: number;
  /**
   * --insecure-options=seccomp: the guest's systemd takes seccomp for
   * unavailable and applies no filter, not even those its settings imply
   * (PrivateDevices= removes @raw-io with one).
   */
  noSeccomp?: boolean;
  /** RKT_HYPERVISOR_EXTRA_KERNEL_PARAMS, appended last so it can override. */
  extra?: string;
}


/** A hostname that can go on the kernel command line and into the UTS namespace. */
export function checkHostname(h: string): string {
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/.test(h)) {
    throw new KvmHostError(`hostname "${h}" is not valid: use up to 63 letters, digits, dots and dashes, starting with a letter or digit`);
  }
  return h;
}

export function kernelCmdline(o: CmdlineOptions): string {
  const p: string[] = [
    'console=ttyS0',
    // microvm has no PCI; saying so saves a probe and a scary message
    'pci=off',
    // a panicking guest reboots at once, which -no-reboot turns into qemu's exit
    'panic=-1',
    // virtio-fs caching is virtiofsd's choice (its -o cache=)
    `root=${ROOT_TAG}`,
    'rootfstype=virtiofs',
    'rw',
    'init=/usr/lib/systemd/systemd',
    'systemd.unit=rkt-pod.target',
    `systemd.machine_id=${o.uuid.replace(/-/g, '')}`,
    `systemd.hostname=${checkHostname(o.hostname)}`,
  ];
  if (o.debug) p.push('earlycon=uart8250,io,0x3f8', 'systemd.show_status=1', 'systemd.log_level=info');
  else p.push('quiet', `loglevel=${o.interactive ? 3 : 4}`, 'systemd.show_status=0');
  if (o.accel === 'tcg' && o.tscKhz !== undefined) {
    p.push(`tsc_early_khz=${o.tscKhz}`);
    if (o.kernelHz !== undefined) p.push(`lpj=${Math.round((o.tscKhz * 1000) / o.kernelHz)}`);
  }
  // a parameter with "=" and no "." goes into init's environment
  if (o.noSeccomp) p.push('SYSTEMD_SECCOMP=0');
  const extra = o.extra?.trim();
  if (extra) p.push(extra);
  return p.join(' ');
}
