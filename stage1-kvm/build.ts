import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { execa } from 'execa';
import { ANNOTATION } from '../src/stage1/contract.js';
import { APPC_VERSION, RKT_VERSION } from '../src/version.js';

// Builds stage1-kvm.aci. Its rootfs is at once the home of the flavor's
// entrypoints (run on the host) and, copied per pod, the guest's root
// filesystem:
//   /                 the guest image of guest/build-image.sh (systemd, units, agent, busybox)
//   /kernel/bzImage   the guest kernel of kernel-config/build.sh
//   /kvm/<entry>      a /bin/sh launcher per entrypoint, running /kvm/<entry>.mjs (esbuild bundle)
// The launchers live under /kvm, not at the root as in other flavors,
// because this rootfs is also the guest's, where /run is a mount point.
// The tar is uncompressed with fixed owners, order and mtimes, so the same
// inputs give the same image ID.
//
// Usage: node dist/stage1-kvm/build.js [OUTPUT.aci]   (as root: the guest's files must be root's)

const ENTRYPOINTS = ['run', 'enter', 'stop', 'gc', 'attach'] as const;
const IMAGE_NAME = 'coreos.com/rkt/stage1-kvm';
const MTIME = 946684800; // 2000-01-01T00:00:00Z

function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root (package.json) above the build script');
    dir = up;
  }
  return dir;
}

function launcher(entry: string): string {
  // The entrypoints run on the host, with the host's node (>= 20, on PATH);
  // `exec` keeps the pid stage0 started, which is the pod's pid for run.
  return `#!/bin/sh\n# rkt stage1-kvm ${entry} entrypoint. Requires node >= 20 on the host PATH.\nexec node "$(dirname "$0")/${entry}.main.mjs" "$@"\n`;
}

/**
 * What node runs: a stub importing the bundle. Modules that double as CLIs
 * (guest/agent-client.ts) compare their own URL with process.argv[1]; in a
 * bundle their URL is the bundle's, so node must be started on another file.
 */
function stub(entry: string): string {
  return `import './${entry}.mjs';\n`;
}

export function stage1Manifest(): object {
  return {
    acKind: 'ImageManifest',
    acVersion: APPC_VERSION,
    name: IMAGE_NAME,
    labels: [
      { name: 'version', value: RKT_VERSION },
      { name: 'os', value: 'linux' },
      { name: 'arch', value: 'amd64' },
    ],
    annotations: [...ENTRYPOINTS.map((e) => ({ name: ANNOTATION[e], value: `/kvm/${e}` })), { name: ANNOTATION.interfaceVersion, value: '5' }],
  };
}

async function bundle(root: string, entry: string, outfile: string): Promise<void> {
  await build({
    entryPoints: [path.join(root, 'stage1-kvm', `${entry}.ts`)],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    legalComments: 'none',
    logLevel: 'warning',
    // CommonJS dependencies (pino) call require(); an ESM bundle has none of its own.
    banner: { js: "import { createRequire as __rktCreateRequire } from 'node:module';\nconst require = __rktCreateRequire(import.meta.url);" },
  });
}

// Native addons cannot be bundled; the entrypoints resolve them next to
// their bundles (/kvm/node_modules). fs-ext is flock(2), which the
// networking library's host lock needs (src/util/lock.ts).
const NATIVE_ADDONS: Record<string, string[]> = {
  'fs-ext': ['package.json', 'fs-ext.js', 'LICENSE.txt', 'build/Release/fs_ext.node'],
};

function copyNativeAddons(root: string, kvm: string): void {
  for (const [pkg, files] of Object.entries(NATIVE_ADDONS)) {
    for (const f of files) {
      const from = path.join(root, 'node_modules', pkg, f);
      if (!fs.existsSync(from)) throw new Error(`${from} is missing: run npm install (the kvm stage1 carries the ${pkg} addon)`);
      const to = path.join(kvm, 'node_modules', pkg, f);
      fs.mkdirSync(path.dirname(to), { recursive: true, mode: 0o755 });
      fs.copyFileSync(from, to);
      fs.chmodSync(to, f.endsWith('.node') ? 0o755 : 0o644);
    }
  }
}

async function kernelImage(root: string): Promise<string> {
  const given = process.env.RKT_STAGE1_KVM_BUILD_KERNEL?.trim();
  if (given) return given;
  const r = await execa(path.join(root, 'kernel-config', 'build.sh'), ['--print-path'], { reject: false });
  if (r.exitCode !== 0) throw new Error('the guest kernel is not built yet: run kernel-config/build.sh first');
  return String(r.stdout).trim();
}

export async function buildStage1Kvm(output: string): Promise<string> {
  const root = repoRoot();
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
    const kvm = path.join(rootfs, 'kvm');
    fs.mkdirSync(kvm, { mode: 0o755 });
    for (const e of ENTRYPOINTS) {
      await bundle(root, e, path.join(kvm, `${e}.mjs`));
      fs.chmodSync(path.join(kvm, `${e}.mjs`), 0o644);
      fs.writeFileSync(path.join(kvm, `${e}.main.mjs`), stub(e));
      fs.chmodSync(path.join(kvm, `${e}.main.mjs`), 0o644);
      fs.writeFileSync(path.join(kvm, e), launcher(e));
      fs.chmodSync(path.join(kvm, e), 0o755);
    }
    copyNativeAddons(root, kvm);
    fs.writeFileSync(path.join(work, 'manifest'), JSON.stringify(stage1Manifest(), null, 2) + '\n');
    fs.chmodSync(path.join(work, 'manifest'), 0o644);
    fs.mkdirSync(path.dirname(output), { recursive: true });
    const tmp = `${output}.tmp-${process.pid}`;
    await execa('tar', [
      '--create',
      `--file=${tmp}`,
      '--format=gnu',
      '--sort=name',
      `--mtime=@${MTIME}`,
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      `--directory=${work}`,
      'manifest',
      'rootfs',
    ]);
    fs.renameSync(tmp, output);
    return output;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = process.argv[2] !== undefined ? path.resolve(process.argv[2]) : path.join(repoRoot(), 'build', 'stage1-kvm.aci');
  buildStage1Kvm(out).then(
    (p) => process.stdout.write(p + '\n'),
    (err: unknown) => {
      process.stderr.write(`build: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
