// The host-side C helpers, built with gcc into dist/ (scripts/setup.sh
// installs gcc and libc6-dev): bin/rkt's launcher (src/launcher/rkt-launch.c),
// static so it starts without the dynamic loader, and the OCI front's
// terminal helper (src/oci/native/rkt-oci-console.c: sending a terminal over
// runc's console socket).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const helpers = [
  { src: 'src/launcher/rkt-launch.c', out: 'dist/launcher/rkt-launch', flags: ['-static'] },
  { src: 'src/oci/native/rkt-oci-console.c', out: 'dist/oci/rkt-oci-console', flags: [] },
];
for (const h of helpers) {
  fs.mkdirSync(path.dirname(h.out), { recursive: true });
  try {
    execFileSync('gcc', [...h.flags, '-O2', '-s', '-std=gnu11', '-Wall', '-Wextra', '-Werror', '-o', h.out, h.src], { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (err) {
    console.error(`cannot build ${h.out} (gcc and libc6-dev are needed; scripts/setup.sh installs them): ${err.message}`);
    process.exit(1);
  }
}
