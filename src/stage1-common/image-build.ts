import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { execa } from 'execa';
import { ANNOTATION, EXTENSION_ANNOTATION, type Entrypoint } from '../stage1/contract.js';
import { APPC_VERSION, RKT_VERSION, STAGE1_INTERFACE_VERSION } from '../version.js';

// What every flavor's stage1 ACI recipe shares: bundling entrypoints with
// esbuild, the manifest with its entrypoint annotations, native addons the
// bundles cannot contain, and a deterministic tar (fixed owners, order and
// mtimes) so the same sources always give the same image ID.

// 2000-01-01T00:00:00Z: any fixed instant will do; tools dislike 0.
const MTIME = 946684800;

/** Repository root, found from a build script in dist/ or in the sources alike. */
export function repoRoot(fromUrl: string): string {
  let dir = path.dirname(fileURLToPath(fromUrl));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root (package.json) above the build script');
    dir = up;
  }
  return dir;
}

/** Bundle one TypeScript entrypoint and all it imports into a single ES module. */
export async function bundleEntrypoint(source: string, outfile: string): Promise<void> {
  await build({
    entryPoints: [source],
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
  fs.chmodSync(outfile, 0o644);
}

/** The stage1 image manifest: name, rkt's version, and where each entrypoint is. */
export function stage1Manifest(name: string, entrypoints: Partial<Record<Entrypoint, string>>): object {
  return {
    acKind: 'ImageManifest',
    acVersion: APPC_VERSION,
    name,
    labels: [
      { name: 'version', value: RKT_VERSION },
      { name: 'os', value: 'linux' },
      { name: 'arch', value: 'amd64' },
    ],
    annotations: [
      ...(Object.entries(entrypoints) as [Entrypoint, string][]).map(([e, p]) => ({ name: ANNOTATION[e], value: p })),
      { name: ANNOTATION.interfaceVersion, value: String(STAGE1_INTERFACE_VERSION) },
      { name: EXTENSION_ANNOTATION.hostExitStatus, value: 'true' },
    ],
  };
}

// Native addons cannot be bundled; entrypoints resolve them from a
// node_modules directory next to their bundles. fs-ext is flock(2), which
// the networking library's host lock needs.
const NATIVE_ADDONS: Record<string, string[]> = {
  'fs-ext': ['package.json', 'fs-ext.js', 'LICENSE.txt', 'build/Release/fs_ext.node'],
  // openpty(2) and TIOCSWINSZ for the nspawn relay's terminals (stage1-nspawn/pty.ts); only the addon is loaded
  'node-pty': ['package.json', 'LICENSE', 'build/Release/pty.node'],
};

export function copyNativeAddons(root: string, dir: string): void {
  for (const [pkg, files] of Object.entries(NATIVE_ADDONS)) {
    for (const f of files) {
      const from = path.join(root, 'node_modules', pkg, f);
      if (!fs.existsSync(from)) throw new Error(`${from} is missing: run npm install (stage1 images carry the ${pkg} addon)`);
      const to = path.join(dir, 'node_modules', pkg, f);
      fs.mkdirSync(path.dirname(to), { recursive: true, mode: 0o755 });
      fs.copyFileSync(from, to);
      fs.chmodSync(to, f.endsWith('.node') ? 0o755 : 0o644);
    }
  }
}

/** Write work/{manifest,rootfs} as an uncompressed, reproducible ACI, atomically. */
export async function writeAci(work: string, manifest: object, output: string): Promise<string> {
  fs.writeFileSync(path.join(work, 'manifest'), JSON.stringify(manifest, null, 2) + '\n');
  fs.chmodSync(path.join(work, 'manifest'), 0o644);
  fs.mkdirSync(path.dirname(output), { recursive: true });
  const tmp = `${output}.tmp-${process.pid}`;
  await execa('tar', ['--create', `--file=${tmp}`, '--format=gnu', '--sort=name', `--mtime=@${MTIME}`, '--owner=0', '--group=0', '--numeric-owner', `--directory=${work}`, 'manifest', 'rootfs']);
  fs.renameSync(tmp, output);
  return output;
}

/** Run a recipe when its module is the script node was started with: `node build.js [OUTPUT.aci]`. */
export function runAsBuildScript(moduleUrl: string, defaultFile: string, recipe: (output: string) => Promise<string>): void {
  if (process.argv[1] === undefined || path.resolve(process.argv[1]) !== fileURLToPath(moduleUrl)) return;
  const out = process.argv[2] !== undefined ? path.resolve(process.argv[2]) : path.join(repoRoot(moduleUrl), 'build', defaultFile);
  recipe(out).then(
    (p) => process.stdout.write(p + '\n'),
    (err: unknown) => {
      process.stderr.write(`build: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}

/** Give every entry a fixed mode (the umask must not leak into the image ID). */
export function normalizeModes(dir: string): void {
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
