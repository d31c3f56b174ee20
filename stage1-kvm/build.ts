import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { buildKernelOverride } from './config.js';
import { TEMPLATE_INITRD } from './template.js';
import { buildTemplateInitrd } from './template-initrd.js';
import { ALL_ENTRYPOINTS as ENTRYPOINTS, bundleEntrypoint, copyNativeAddons, repoRoot, runAsBuildScript, stage1Manifest, writeAci } from '../src/stage1-common/image-build.js';

// Builds stage1-kvm.aci. Its rootfs is at once the home of the flavor's
// entrypoints (run on the host) and, copied per pod, the guest's root
// filesystem:
//   /                 the guest image of guest/build-image.sh (systemd, units, agent, busybox)
//   /kernel/bzImage   the guest kernel of kernel-config/build.sh
//   /kernel/template-initrd  the template VM's initramfs (guest/template/init.c; template.ts)
//   /kvm/<entry>      a /bin/sh launcher per entrypoint, running /kvm/<entry>.mjs (esbuild bundle)
//   /kvm/bin/rkt-idmap  user namespaces and id-mapped mounts for virtiofsd (stage1-kvm/native/rkt-idmap.c)
// The launchers live under /kvm, not at the root as in other flavors,
// because this rootfs is also the guest's, where /run is a mount point.
// The tar is uncompressed with fixed owners, order and mtimes, so the same
// inputs give the same image ID.
//
// Usage: node dist/stage1-kvm/build.js [OUTPUT.aci]   (as root: the guest's files must be root's)

const IMAGE_NAME = 'coreos.com/rkt/stage1-kvm';

function launcher(entry: string): string {
  // The entrypoints run on the host, with the host's node (>= 20, on PATH);
  // `exec` keeps the pid stage0 started, which is the pod's pid for run; ${0%/*}
  // rather than dirname(1), one program less before node starts (stage0 runs it by its full path).
  return `#!/bin/sh\n# rkt stage1-kvm ${entry} entrypoint. Requires node >= 20 on the host PATH.\nexec node "\${0%/*}/${entry}.main.mjs" "$@"\n`;
}

/**
 * What node runs: a stub importing the bundle. A module that runs as a CLI
 * when it is node's script (as stage1-kvm/agent-cli.ts does) compares its own
 * URL with process.argv[1]; in a bundle its URL is the bundle's, so node must
 * be started on another file.
 */
function stub(entry: string): string {
  return `import './${entry}.mjs';\n`;
}

export function kvmManifest(): object {
  return stage1Manifest(IMAGE_NAME, Object.fromEntries(ENTRYPOINTS.map(([e, file]) => [e, `/kvm/${file}`])));
}

/** The host helper for the guest's ids (guest-ids.ts): static, so that the image runs on any x86-64 host. */
async function buildIdmapHelper(root: string, out: string): Promise<void> {
  fs.mkdirSync(path.dirname(out), { recursive: true, mode: 0o755 });
  const r = await execa('gcc', ['-static', '-O2', '-s', '-std=gnu11', '-Wall', '-Wextra', '-o', out, path.join(root, 'stage1-kvm', 'native', 'rkt-idmap.c')], { reject: false });
  if (r.exitCode !== 0) throw new Error(`cannot build rkt-idmap (gcc and libc6-dev are needed): ${String(r.stderr).trim() || r.message}`);
  fs.chmodSync(out, 0o755);
}

async function kernelImage(root: string): Promise<string> {
  const given = buildKernelOverride();
  if (given) return given;
  const r = await execa(path.join(root, 'kernel-config', 'build.sh'), ['--print-path'], { reject: false });
  if (r.exitCode !== 0) throw new Error('the guest kernel is not built yet: run kernel-config/build.sh first');
  return String(r.stdout).trim();
}

export async function buildStage1Kvm(output: string): Promise<string> {
  const root = repoRoot(import.meta.url);
  const kernel = await kernelImage(root);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'stage1-kvm-'));
  try {
    const rootfs = path.join(work, 'rootfs');
    fs.mkdirSync(rootfs, { mode: 0o755 });
    fs.chmodSync(work, 0o755);
    fs.chmodSync(rootfs, 0o755);
    await execa(path.join(root, 'guest', 'build-image.sh'), [rootfs], { stdio: ['ignore', 'inherit', 'inherit'] });
    fs.mkdirSync(path.join(rootfs, 'kernel'), { mode: 0o755 });
    fs.copyFileSync(kernel, path.join(rootfs, 'kernel', 'bzImage'));
    fs.chmodSync(path.join(rootfs, 'kernel', 'bzImage'), 0o644);
    await buildTemplateInitrd(root, path.join(rootfs, TEMPLATE_INITRD));
    const kvm = path.join(rootfs, 'kvm');
    fs.mkdirSync(kvm, { mode: 0o755 });
    for (const [, e] of ENTRYPOINTS) {
      await bundleEntrypoint(path.join(root, 'stage1-kvm', 'main', `${e}.ts`), path.join(kvm, `${e}.mjs`));
      fs.writeFileSync(path.join(kvm, `${e}.main.mjs`), stub(e));
      fs.chmodSync(path.join(kvm, `${e}.main.mjs`), 0o644);
      fs.writeFileSync(path.join(kvm, e), launcher(e));
      fs.chmodSync(path.join(kvm, e), 0o755);
    }
    copyNativeAddons(root, kvm);
    await buildIdmapHelper(root, path.join(kvm, 'bin', 'rkt-idmap'));
    return await writeAci(work, kvmManifest(), output);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

runAsBuildScript(import.meta.url, 'stage1-kvm.aci', buildStage1Kvm);
