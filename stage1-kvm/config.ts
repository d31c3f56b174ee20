import { envChoice, envPath, envSeconds, envText, type Env } from '../src/stage1-common/env-config.js';

// Everything that tunes the kvm flavor: the environment variables it reads
// (one naming scheme, RKT_KVM_*, plus rkt's own
// RKT_HYPERVISOR_EXTRA_KERNEL_PARAMS) and its named timeouts. The
// variables are documented for users in docs/configuration.md; a module
// that needs one reads it through this file.

export const KVM_ENV = {
  /** kvm | tcg: force the accelerator instead of choosing by the host. */
  accel: 'RKT_KVM_ACCEL',
  /** virtiofs | 9p: force how the pod is shared into the guest. */
  share: 'RKT_KVM_SHARE',
  /** A guest kernel (bzImage) to boot instead of the stage1's own. */
  kernel: 'RKT_KVM_KERNEL',
  /** Extra guest kernel parameters (rkt's name for it). */
  extraKernelParams: 'RKT_HYPERVISOR_EXTRA_KERNEL_PARAMS',
  /** The host TSC rate in kHz, when it cannot be found (tcg only). */
  hostTscKhz: 'RKT_KVM_HOST_TSC_KHZ',
  qemu: 'RKT_KVM_QEMU',
  virtiofsd: 'RKT_KVM_VIRTIOFSD',
  /** Seconds until every app must have started (default 30 on kvm, 90 on tcg). */
  bootTimeout: 'RKT_KVM_BOOT_TIMEOUT',
  /** Seconds `rkt stop` and a stop signal wait for the guest to power off before qemu is told to quit (default 10). */
  stopTimeout: 'RKT_KVM_STOP_TIMEOUT',
  /** Build time: the bzImage to put into the stage1 image instead of kernel-config/build.sh's. */
  buildKernel: 'RKT_KVM_BUILD_KERNEL',
} as const;

/** Timeouts that are not the user's to tune, each with the reason for its size. */
export const KVM_TIMEOUTS = {
  /** Output still in flight when qemu exits is read within this. */
  drainMs: 3000,
  /** The guest powers off right after the last app's exit; this is for when it does not. */
  endGraceMs: 10_000,
  /** qemu answers QMP quit at once; this bounds a wedged qemu before it is killed. */
  quitMs: 5000,
  /** One QMP command (system_powerdown) of the run entrypoint. */
  commandMs: 2000,
  /** qemu opens its monitor socket within moments of starting; under load it can take seconds. */
  qmpConnectMs: 15_000,
  /** `rkt stop` finds the monitor at once, or the VM is not up (yet). */
  stopConnectMs: 500,
  /** virtiofsd creates its socket within moments. */
  virtiofsdStartMs: 5000,
  /**
   * The guest agent answers an EXEC at once (0.1-0.2 s under tcg); no answer
   * within this means it is not running (a root app can kill it) or is
   * stopped, and `rkt enter` says so instead of waiting.
   */
  agentAnswerMs: 10_000,
  /** The agent writes a frame in one go; one left incomplete this long is a guest that stopped mid-frame. */
  agentFrameMs: 10_000,
} as const;

export type Accel = 'kvm' | 'tcg';
export type Share = '9p' | 'virtiofs';

export function forcedAccel(env: Env = process.env): Accel | undefined {
  return envChoice(env, KVM_ENV.accel, ['kvm', 'tcg'] as const);
}

export function forcedShare(env: Env = process.env): Share | undefined {
  return envChoice(env, KVM_ENV.share, ['9p', 'virtiofs'] as const);
}

export function kernelOverride(env: Env = process.env): string | undefined {
  return envText(env, KVM_ENV.kernel);
}

export function extraKernelParams(env: Env = process.env): string | undefined {
  return envText(env, KVM_ENV.extraKernelParams);
}

export function hostTscOverride(env: Env = process.env): string | undefined {
  return envText(env, KVM_ENV.hostTscKhz);
}

export function qemuOverride(env: Env = process.env): string | undefined {
  return envPath(env, KVM_ENV.qemu);
}

export function virtiofsdOverride(env: Env = process.env): string | undefined {
  return envPath(env, KVM_ENV.virtiofsd);
}

/** Under tcg the guest boots several times slower. */
export function bootTimeoutMs(accel: Accel, env: Env = process.env): number {
  return envSeconds(env, KVM_ENV.bootTimeout, accel === 'kvm' ? 30 : 90);
}

export function stopTimeoutMs(env: Env = process.env): number {
  return envSeconds(env, KVM_ENV.stopTimeout, 10);
}

export function buildKernelOverride(env: Env = process.env): string | undefined {
  return envPath(env, KVM_ENV.buildKernel);
}
