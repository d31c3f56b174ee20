import fs from 'node:fs';
import path from 'node:path';
import { log } from '../src/log.js';
import { KVM_TIMEOUTS, templateDir } from './config.js';
import { qemuArgs, type VmConfig } from './qemu.js';
import { checkTemplate, dropTemplate, installTemplate, lockTemplate, makeTemplateDir, openTemplate, templateFiles, templateKey, type TemplateFiles } from './template-cache.js';
import { saveTemplate, templateCmdline } from './template-vm.js';

// The template path of a kvm pod (RKT_KVM_TEMPLATE=on; docs/configuration.md):
// instead of booting its kernel, the pod's VM is restored from a template VM
// saved once per qemu, kernel and machine (template-cache.ts), then given its
// devices and identity (template-vm.ts, guest/template/init.c) and goes on
// to mount its root and start systemd as a cold boot does. Off by default;
// without a usable template (none can be built, or the saved one is damaged)
// the pod boots cold, with a warning.

/** Where build.ts puts the template's initramfs inside the stage1 rootfs. */
export const TEMPLATE_INITRD = '/kernel/template-initrd';

/** The pod's own paths and names, out of the command line that keys its template. */
function keyArgs(c: VmConfig): string[] {
  return qemuArgs(c).map((a) => a.split(c.podDir).join('@POD').split(c.uuid).join('@UUID'));
}

export class PodTemplate {
  private constructor(
    private readonly files: TemplateFiles,
    /** The saved state, read-only; qemu gets it as its incoming descriptor. */
    readonly fd: number,
    /** Resolves with why the state is not its record's, or undefined: await it before the guest runs. */
    readonly damaged: Promise<string | undefined>,
    /** The pod's VM as a restored template. */
    readonly config: VmConfig,
  ) {}

  /**
   * The template for a pod whose cold VM would be `pod`: the saved one if
   * it checks out, else one made now (under the template's lock, so that
   * pods starting together make it once). Undefined, having said why, when
   * the pod must boot cold.
   */
  static async open(qemu: string, stage1Rootfs: string, pod: VmConfig): Promise<PodTemplate | undefined> {
    const initrd = path.join(stage1Rootfs, TEMPLATE_INITRD);
    if (!fs.existsSync(initrd)) {
      log().warn(`the stage1 image has no template initramfs (${TEMPLATE_INITRD}); booting cold (rebuild the stage1 image)`);
      return undefined;
    }
    const template = { initrd };
    const cmdline = templateCmdline(pod.cmdline);
    const { netns: _netns, nics: _nics, ...rest } = pod;
    const saveConfig: VmConfig = { ...rest, cmdline, template };
    try {
      const dir = templateDir();
      makeTemplateDir(dir);
      const key = templateKey({ qemu, kernel: pod.kernel, initrd, args: keyArgs(saveConfig) });
      const files = templateFiles(dir, key);
      const lock = await lockTemplate(files, KVM_TIMEOUTS.templateLockMs);
      try {
        let opened = openTemplate(files, key);
        if ('invalid' in opened) {
          log().warn(`the kvm template ${key.slice(0, 12)} is unusable (${opened.invalid}); making it again`);
          dropTemplate(files);
          opened = { missing: true };
        }
        if ('missing' in opened) {
          log().debug(`making kvm template ${key.slice(0, 12)}`);
          const tmp = `${files.state}.tmp-${process.pid}`;
          fs.rmSync(tmp, { force: true });
          try {
            await saveTemplate(qemu, saveConfig, tmp, KVM_TIMEOUTS.templateBuildMs);
            installTemplate(files, key, tmp);
          } finally {
            fs.rmSync(tmp, { force: true });
          }
          opened = openTemplate(files, key);
          if (!('fd' in opened)) throw new Error('the template just made does not check out');
        }
        log().debug(`restoring kvm template ${key.slice(0, 12)}`);
        // the check reads the file while qemu does (both from the page cache)
        const damaged = checkTemplate(opened).catch((err: unknown) => `it cannot be read (${(err as Error).message})`);
        return new PodTemplate(files, opened.fd, damaged, { ...pod, cmdline, template: { initrd, incomingFd: opened.fd } });
      } finally {
        lock.release();
      }
    } catch (err) {
      log().warn(`cannot use a kvm template (${(err as Error).message}); booting cold`);
      return undefined;
    }
  }

  /** A restore from it failed: the next pod makes it anew. */
  async drop(): Promise<void> {
    const lock = await lockTemplate(this.files, KVM_TIMEOUTS.templateLockMs);
    try {
      dropTemplate(this.files);
    } finally {
      lock.release();
    }
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
