import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { execa } from 'execa';
import { ANNOTATION } from '../src/stage1/contract.js';
import { APPC_VERSION, RKT_VERSION } from '../src/version.js';

// Builds stage1-fly.aci: each entrypoint bundled by esbuild into one ESM
// file under /fly, a /bin/sh launcher per entrypoint, and the manifest that
// names them. The tar is uncompressed with fixed owners, modes, order and
// mtimes, so the same sources always give the same image ID.
//
// Usage: node dist/stage1-fly/build.js [OUTPUT.aci]

const ENTRYPOINTS = ['run', 'enter', 'stop', 'gc'] as const;
const IMAGE_NAME = 'coreos.com/rkt/stage1-fly';
// 2000-01-01T00:00:00Z: any fixed instant will do; tools dislike 0.
const MTIME = 946684800;

/** Repository root, from dist/stage1-fly/build.js or stage1-fly/build.ts alike. */
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
  // fly runs on the host, so the host's node (>= 20, on PATH) runs the bundle;
  // `exec` keeps the pid stage0 started, which is the pod's pid for run.
  return `#!/bin/sh\n# rkt stage1-fly ${entry} entrypoint. Requires node >= 20 on the host PATH.\nexec node "\${0%/*}/fly/${entry}.mjs" "$@"\n`;
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
    annotations: [
      ...ENTRYPOINTS.map((e) => ({ name: ANNOTATION[e], value: `/${e}` })),
      { name: ANNOTATION.interfaceVersion, value: '5' },
    ],
  };
}

async function bundle(root: string, entry: string, outfile: string): Promise<void> {
  await build({
    entryPoints: [path.join(root, 'stage1-fly', `${entry}.ts`)],
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

/** Give every entry a fixed mode (umask must not leak into the image ID). */
function normalizeModes(dir: string): void {
  for (const name of fs.readdirSync(dir)) {
    const p = path.join(dir, name);
    const st = fs.lstatSync(p);
    if (st.isDirectory()) {
      fs.chmodSync(p, 0o755);
      normalizeModes(p);
    } else if (st.isFile()) {
      fs.chmodSync(p, st.mode & 0o111 ? 0o755 : 0o644);
    }
  }
}

export async function buildStage1Fly(output: string): Promise<string> {
  const root = repoRoot();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'stage1-fly-'));
  try {
    const rootfs = path.join(work, 'rootfs');
    fs.mkdirSync(path.join(rootfs, 'fly'), { recursive: true });
    // stage0 makes the app mount points here; an empty dir keeps the layout evident
    fs.mkdirSync(path.join(rootfs, 'opt', 'stage2'), { recursive: true });
    for (const e of ENTRYPOINTS) {
      await bundle(root, e, path.join(rootfs, 'fly', `${e}.mjs`));
      fs.writeFileSync(path.join(rootfs, e), launcher(e), { mode: 0o755 });
      fs.chmodSync(path.join(rootfs, e), 0o755);
    }
    fs.writeFileSync(path.join(work, 'manifest'), JSON.stringify(stage1Manifest(), null, 2) + '\n');
    normalizeModes(work);
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

// Run as a script (not when imported by a test).
if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = process.argv[2] !== undefined ? path.resolve(process.argv[2]) : path.join(repoRoot(), 'build', 'stage1-fly.aci');
  buildStage1Fly(out).then(
    (p) => process.stdout.write(p + '\n'),
    (err: unknown) => {
      process.stderr.write(`build: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
