import fs from 'node:fs';
import os from 'node:os';
import { KvmHostError } from './errors.js';

// How big a pod's VM is, from its apps' isolators, as rkt's kvm flavor
// sized it: memory is the sum of the apps' memory limits (128 MiB for an
// app without one) plus 128 MiB for the guest's kernel and systemd; vCPUs
// are the apps' CPU limits added up and rounded up to whole CPUs, or every
// host CPU as soon as one app has no limit (it may use them all).
//
// Except under tcg: there an app without a CPU limit gets one vCPU, not
// all host CPUs. Each emulated vCPU is a host thread, and bringing up and
// synchronizing a second one costs the pod about a second of boot on a
// two-CPU host (measured: /bin/true pod 1.6 s with one vCPU, 2.8-3.7 s
// with two). Apps that need more say so with CPU limits, which are honored.

export const MiB = 1024 * 1024;
/** An app without a memory limit gets this much of the VM. */
export const DEFAULT_APP_MEMORY = 128 * MiB;
/** The guest's own share: kernel, systemd, agent, page cache. */
export const SYSTEM_MEMORY = 128 * MiB;

export interface AppResources {
  name: string;
  /** Bytes. */
  memoryLimit?: number;
  /** Millicores. */
  cpuLimitMillis?: number;
}

export interface HostResources {
  cpus: number;
  /** Bytes the kernel says can be allocated without swapping (MemAvailable); undefined if unknown. */
  memAvailable?: number;
}

export interface VmSize {
  /** Whole MiB, as qemu's -m takes it. */
  memoryMiB: number;
  cpus: number;
  /** Why the sizes are what they are, for --debug. */
  explain: string;
}

export function hostResources(): HostResources {
  const out: HostResources = { cpus: Math.max(1, os.availableParallelism()) };
  try {
    const m = /^MemAvailable:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    if (m) out.memAvailable = Number(m[1]) * 1024;
  } catch {
    // no /proc/meminfo: no check
  }
  return out;
}

function mib(bytes: number): string {
  return `${Math.ceil(bytes / MiB)} MiB`;
}

export function vmSize(apps: readonly AppResources[], host: HostResources, accel: 'kvm' | 'tcg' = 'kvm'): VmSize {
  if (apps.length === 0) throw new KvmHostError('the pod has no apps; there is nothing to run in a VM');
  let bytes = SYSTEM_MEMORY;
  for (const a of apps) bytes += a.memoryLimit ?? DEFAULT_APP_MEMORY;
  const memoryMiB = Math.ceil(bytes / MiB);
  if (host.memAvailable !== undefined && memoryMiB * MiB > host.memAvailable) {
    const parts = apps.map((a) => `${a.name} ${a.memoryLimit === undefined ? `${mib(DEFAULT_APP_MEMORY)} (default)` : mib(a.memoryLimit)}`);
    throw new KvmHostError(
      `the pod's VM needs ${memoryMiB} MiB (${parts.join(' + ')} + ${mib(SYSTEM_MEMORY)} for the guest system), ` +
        `but the host has only ${mib(host.memAvailable)} available; lower the apps' memory limits or free memory`,
    );
  }

  let cpus: number;
  let cpuWhy: string;
  const unlimited = apps.filter((a) => a.cpuLimitMillis === undefined).map((a) => a.name);
  if (unlimited.length > 0 && accel === 'tcg') {
    cpus = 1;
    cpuWhy = `1 vCPU (no CPU limit on ${unlimited.join(', ')}; under tcg more vCPUs slow the pod down, give CPU limits to get more)`;
  } else if (unlimited.length > 0) {
    cpus = host.cpus;
    cpuWhy = `all ${host.cpus} host CPUs (no CPU limit on ${unlimited.join(', ')})`;
  } else {
    const millis = apps.reduce((s, a) => s + a.cpuLimitMillis!, 0);
    const wanted = Math.max(1, Math.ceil(millis / 1000));
    // More vCPUs than host CPUs buys nothing but contention.
    cpus = Math.min(wanted, host.cpus);
    cpuWhy = `${cpus} vCPU(s) for CPU limits adding up to ${millis}m${wanted > host.cpus ? ` (capped at the host's ${host.cpus})` : ''}`;
  }
  return { memoryMiB, cpus, explain: `${memoryMiB} MiB of memory, ${cpuWhy}` };
}
