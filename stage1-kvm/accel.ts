import fs from 'node:fs';
import type { Env } from '../src/stage1-common/env-config.js';
import { forcedAccel, KVM_ENV, type Accel } from './config.js';
import { KvmHostError } from './errors.js';

// The accelerator a pod's qemu runs with. kvm needs the CPU to advertise
// hardware virtualization (vmx on Intel, svm on AMD) and /dev/kvm to open
// read-write for us; a nested VM without the flags, a missing module or a
// permission problem all mean tcg, qemu's binary translator. tcg still runs
// the pod in its own VM (the isolation is the same), only slower, so the
// fallback is automatic and announced in one line.
//
// RKT_KVM_ACCEL=kvm|tcg forces one: kvm where it cannot work is an error
// rather than a silent tcg run, because whoever forced it wants to know.

export type { Accel };


export const TCG_WARNING = "hardware virtualization is not available; using qemu's tcg emulation, which runs pods several times slower (the VM boundary is qemu's emulator instead of the CPU's virtualization)";

export interface AccelChoice {
  accel: Accel;
  /** Set when tcg was chosen because kvm is unusable (not when forced): print it. */
  warning?: string;
  /** Why kvm is not usable, when it is not. */
  kvmProblem?: string;
}

/** What the host offers; injectable for tests. */
export interface AccelProbe {
  cpuinfo: () => string;
  /** undefined if /dev/kvm opens read-write, else why not. */
  openKvm: () => string | undefined;
}

export const hostProbe: AccelProbe = {
  cpuinfo: () => {
    try {
      return fs.readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      return '';
    }
  },
  openKvm: () => {
    try {
      fs.closeSync(fs.openSync('/dev/kvm', fs.constants.O_RDWR));
      return undefined;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return '/dev/kvm does not exist (is the kvm kernel module loaded?)';
      if (code === 'EACCES' || code === 'EPERM') return '/dev/kvm cannot be opened read-write (permission denied)';
      return `/dev/kvm cannot be opened: ${(err as Error).message}`;
    }
  },
};

/** Why kvm cannot be used on this host, or undefined if it can. */
export function kvmProblem(probe: AccelProbe = hostProbe): string | undefined {
  const flags = probe
    .cpuinfo()
    .split('\n')
    .filter((l) => /^flags\s*:/.test(l))
    .join(' ');
  if (!/\b(vmx|svm)\b/.test(flags)) return 'the CPU does not advertise hardware virtualization (no vmx or svm flag in /proc/cpuinfo)';
  return probe.openKvm();
}

export function chooseAccel(env: Env = process.env, probe: AccelProbe = hostProbe): AccelChoice {
  const forced = forcedAccel(env);
  if (forced === 'tcg') return { accel: 'tcg' };
  if (forced === 'kvm') {
    const problem = kvmProblem(probe);
    if (problem !== undefined) throw new KvmHostError(`${KVM_ENV.accel}=kvm, but kvm cannot be used here: ${problem}; unset ${KVM_ENV.accel} to fall back to tcg`);
    return { accel: 'kvm' };
  }
  const problem = kvmProblem(probe);
  if (problem === undefined) return { accel: 'kvm' };
  return { accel: 'tcg', warning: TCG_WARNING, kvmProblem: problem };
}
