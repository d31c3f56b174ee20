// Bundle the compiled CLI into a few ES modules with esbuild: one module
// graph to load instead of hundreds of files cuts rkt's start-up time.
// Heavy parts stay in lazily loaded chunks; native addons stay external.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';

// chunk names change with their content: no stale chunk stays behind
rmSync('dist/cli-bundle', { recursive: true, force: true });

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

// bin/rkt's launcher (src/launcher/rkt-launch.c): static, so it starts
// without the dynamic loader
const { execFileSync } = await import('node:child_process');
const { mkdirSync } = await import('node:fs');
mkdirSync('dist/launcher', { recursive: true });
try {
  execFileSync('gcc', ['-static', '-O2', '-s', '-std=gnu11', '-Wall', '-Wextra', '-Werror', '-o', 'dist/launcher/rkt-launch', 'src/launcher/rkt-launch.c'], { stdio: 'inherit' });
} catch (err) {
  throw new Error(`cannot build the launcher (gcc and libc6-dev are needed; scripts/setup.sh installs them): ${err.message}`);
}
