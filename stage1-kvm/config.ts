import { envChoice, envPath, envSeconds, envText, type Env } from '../src/stage1-common/env-config.js';
import { KvmHostError } from './errors.js';

// Everything that tunes the kvm flavor: the environment variables it reads
// (one naming scheme, RKT_KVM_*, plus rkt's own
// RKT_HYPERVISOR_EXTRA_KERNEL_PARAMS) and its named timeouts. The
// variables are documented for users in docs/configuration.md; a module
// that needs one reads it through this file.

export const KVM_ENV = {
  /** kvm | tcg: force the accelerator instead of choosing by the host. */
  accel: 'RKT_KVM_ACCEL',
  /** How the pod is shared into the guest: virtiofs, the only way left (9p is refused, see checkShare). */
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
  /** on | off (default): restore each pod from a saved template VM instead of booting its kernel (template.ts). */
  template: 'RKT_KVM_TEMPLATE',
  /** Where templates are kept (default /var/cache/rkt-ts/templates). */
  templateDir: 'RKT_KVM_TEMPLATE_DIR',
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
  /**
   * virtiofsd creates its socket within moments, but a loaded host can take
   * seconds: a virtiofsd that misses this fails the pod (there is no other
   * share to fall back to), so it is as generous as qmpConnectMs.
   */
  virtiofsdStartMs: 15_000,
  /** qemu answers `cont` at once; the bound is qmpConnectMs's, for the same loaded host. */
  contMs: 15_000,
  /**
   * The guest agent answers an EXEC at once (0.1-0.2 s under tcg); no answer
   * within this means it is not running (a root app can kill it) or is
   * stopped, and `rkt enter` says so instead of waiting.
   */
  agentAnswerMs: 10_000,
  /** A template VM boots its kernel to the point where it waits (about 1.5 s under tcg) and is saved within this. */
  templateBuildMs: 60_000,
  /** Waiting for another pod's run entrypoint that builds the same template. */
  templateLockMs: 120_000,
  /** Loading a saved template (tens of MiB from the page cache) takes a fraction of a second. */
  templateLoadMs: 30_000,
  /** The agent writes a frame in one go; one left incomplete this long is a guest that stopped mid-frame. */
  agentFrameMs: 10_000,
} as const;

export type Accel = 'kvm' | 'tcg';

export function forcedAccel(env: Env = process.env): Accel | undefined {
  return envChoice(env, KVM_ENV.accel, ['kvm', 'tcg'] as const);
}

/**
 * RKT_KVM_SHARE may only say virtiofs. 9p was the fallback where virtiofsd
 * was missing, but qemu's 9p server needs root to keep the guest's owners
 * and modes on the host (security_model=passthrough: a file the guest's root
 * makes setuid is a setuid-root file on the host), and its mapped models
 * cannot serve the host's tree as it is (the pod's symlinks, the owners of
 * its files): so 9p is refused rather than run unconfined.
 */
export function checkShare(env: Env = process.env): void {
  if (envChoice(env, KVM_ENV.share, ['9p', 'virtiofs'] as const) === '9p') {
    throw new KvmHostError(`${KVM_ENV.share}=9p is not supported: qemu's 9p server cannot be confined (it needs root to keep the guest's file owners); unset ${KVM_ENV.share} and install virtiofsd`);
  }
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

/** RKT_KVM_TEMPLATE=on: the template path (template.ts); off, the default, boots every pod cold. */
export function templateWanted(env: Env = process.env): boolean {
  return envChoice(env, KVM_ENV.template, ['on', 'off'] as const) === 'on';
}

export function templateDir(env: Env = process.env): string {
  return envPath(env, KVM_ENV.templateDir) ?? '/var/cache/rkt-ts/templates';
}
