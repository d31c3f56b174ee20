// Bundle the compiled CLI into a few ES modules with esbuild: one module
// graph to load instead of hundreds of files cuts rkt's start-up time.
// Heavy parts stay in lazily loaded chunks; native addons stay external.
import { build } from 'esbuild';

await build({
  entryPoints: { rkt: 'dist/src/cli/rkt.js' },
  outdir: 'dist/cli-bundle',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['better-sqlite3', 'fs-ext', 'node-pty'],
  banner: { js: "import { createRequire as __rktCreateRequire } from 'node:module'; const require = __rktCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
