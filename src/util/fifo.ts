import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { RktError } from '../errors.js';

/**
 * Make FIFOs, mode 0600 (their readers and writers run as root), replacing
 * whatever was there; node has no mkfifo(). Called before the pod that
 * will use them runs, never on a path the pod can change meanwhile.
 */
export function mkfifo(...files: string[]): void {
  for (const f of files) fs.rmSync(f, { force: true });
  const r = spawnSync('mkfifo', ['-m', '600', ...files], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new RktError(`mkfifo ${files.join(' ')} failed: ${r.stderr?.trim() || r.error?.message || `exit status ${r.status}`}`);
}
