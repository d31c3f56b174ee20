// The OCI front's small native helper (src/oci/native/rkt-oci-console.c:
// sending a terminal over runc's console socket), built into dist/oci/.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

fs.mkdirSync('dist/oci', { recursive: true });
try {
  execFileSync('gcc', ['-O2', '-s', '-std=gnu11', '-Wall', '-Wextra', '-Werror', '-o', 'dist/oci/rkt-oci-console', 'src/oci/native/rkt-oci-console.c'], { stdio: ['ignore', 'inherit', 'inherit'] });
} catch (err) {
  console.error(`cannot build dist/oci/rkt-oci-console (gcc and libc6-dev are needed): ${err.message}`);
  process.exit(1);
}
