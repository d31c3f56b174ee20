import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type Result } from 'execa';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const RKT = path.join(REPO, 'bin/rkt');

/** A private rkt world: its own data dir and config dirs, removed by cleanup(). */
export class RktEnv {
  readonly root: string;
  readonly dir: string;
  readonly localConfig: string;
  readonly systemConfig: string;
  readonly userConfig: string;

  constructor(prefix = 'rkt-test-') {
    this.root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    this.dir = path.join(this.root, 'data');
    this.localConfig = path.join(this.root, 'etc');
    this.systemConfig = path.join(this.root, 'lib');
    this.userConfig = path.join(this.root, 'user');
    for (const d of [this.localConfig, this.systemConfig, this.userConfig]) fs.mkdirSync(d, { recursive: true });
  }

  globals(): string[] {
    return [`--dir=${this.dir}`, `--local-config=${this.localConfig}`, `--system-config=${this.systemConfig}`, `--user-config=${this.userConfig}`];
  }

  /** Run the real CLI; never throws on a non-zero exit (tests assert it). */
  run(args: string[], opts: { input?: string; env?: Record<string, string>; timeout?: number } = {}): Promise<Result> {
    return execa(RKT, [...this.globals(), ...args], {
      reject: false,
      input: opts.input ?? '',
      env: opts.env,
      timeout: opts.timeout ?? 120_000,
    }) as unknown as Promise<Result>;
  }

  file(rel: string): string {
    return path.join(this.root, rel);
  }

  cleanup(): void {
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}
