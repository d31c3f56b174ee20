// Bundle the compiled CLI into a few ES modules with esbuild: one module
// graph to load instead of hundreds of files cuts rkt's start-up time.
// Heavy parts stay in lazily loaded chunks; native addons stay external.
import { build } from 'esbuild';

const common = {
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['better-sqlite3', 'fs-ext', 'node-pty'],
  banner: { js: "import { createRequire as __rktCreateRequire } from 'node:module'; const require = __rktCreateRequire(import.meta.url);" },
  logLevel: 'warning',
};

await build({ ...common, entryPoints: { rkt: 'dist/src/cli/rkt.js' }, outdir: 'dist/cli-bundle' });
// the OCI runtime front (bin/rkt-oci-kvm, bin/rkt-oci-nspawn)
await build({ ...common, entryPoints: { 'rkt-oci': 'dist/src/oci/main.js' }, outdir: 'dist/oci-bundle' });
