import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { isErrno } from '../errors.js';
import { OciError } from './errors.js';

// How the OCI front reaches rkt: its command line (bin/rkt of this
// checkout), as a user would run it, with the global flags and sandbox
// flags of the runtime's configuration file. Pods live in rkt's data dir;
// the front keeps only the mapping from container ids to them.

export interface RuntimeConfig {
  /** rkt's global flags (--dir, --local-config, --insecure-options...). */
  rktArgs: string[];
  /** Extra flags of rkt app sandbox (a stage1 choice, --dns...). */
  sandboxArgs: string[];
}

export const CONFIG_ENV = 'RKT_OCI_CONFIG';
export const DEFAULT_CONFIG = '/etc/rkt/oci-runtime.json';

export function loadRuntimeConfig(): RuntimeConfig {
  const file = process.env[CONFIG_ENV] || DEFAULT_CONFIG;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT') && !process.env[CONFIG_ENV]) return { rktArgs: [], sandboxArgs: [] };
    throw new OciError(`cannot read the runtime configuration ${file}: ${(err as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new OciError(`the runtime configuration ${file} is not JSON: ${(err as Error).message}`);
  }
  const o = (typeof v === 'object' && v !== null && !Array.isArray(v) ? v : {}) as Record<string, unknown>;
  const list = (k: string): string[] => {
    const x = o[k] ?? [];
    if (!Array.isArray(x) || x.some((w) => typeof w !== 'string')) throw new OciError(`${file}: "${k}" must be a list of strings`);
    return x as string[];
  };
  for (const k of Object.keys(o)) if (k !== 'rktArgs' && k !== 'sandboxArgs') throw new OciError(`${file}: unknown key "${k}" (rktArgs, sandboxArgs)`);
  return { rktArgs: list('rktArgs'), sandboxArgs: list('sandboxArgs') };
}

export class Rkt {
  readonly dataDir: string;

  constructor(readonly bin: string, readonly flavor: string, readonly config: RuntimeConfig) {
    let dir = '/var/lib/rkt';
    const args = config.rktArgs;
    for (let i = 0; i < args.length; i++) {
      const m = /^--dir(?:=(.*))?$/.exec(args[i]!);
      if (m) dir = m[1] ?? args[++i] ?? dir;
    }
    this.dataDir = path.resolve(dir);
  }

  podDir(uuid: string): string {
    return path.join(this.dataDir, 'pods', 'run', uuid);
  }

  /** The command line of rkt with our global flags. */
  argv(args: string[]): string[] {
    return [this.bin, ...this.config.rktArgs, ...args];
  }

  /** Run rkt to its end; its last stderr line is the error when it fails. */
  async run(args: string[], opts: { allowFail?: boolean } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
    const r = await execa(this.bin, [...this.config.rktArgs, ...args], { reject: false, stdin: 'ignore', timeout: 300_000 });
    const res = { code: r.exitCode ?? 254, stdout: String(r.stdout), stderr: String(r.stderr) };
    if (res.code !== 0 && !opts.allowFail) throw new OciError(`rkt ${args[0]}${args[1] && !args[1].startsWith('-') ? ` ${args[1]}` : ''} failed: ${rktError(res.stderr) || `exit status ${res.code}`}`);
    return res;
  }

  /** The stage1 flags of a sandbox of this flavor, unless the configuration chose one. */
  sandboxFlags(): string[] {
    const own = this.config.sandboxArgs;
    return own.some((a) => a.startsWith('--stage1-')) ? own : [`--stage1-name=${this.flavor}`, ...own];
  }

  /**
   * rkt app sandbox in its own session, its output (and the pod log's) to
   * `log`: it outlives us, and the shim, a subreaper, inherits it. The apps'
   * streams reach the shim through their stand-ins, not through it.
   */
  spawnSandbox(flags: string[], log: string): ChildProcess {
    const fd = fs.openSync(log, 'a', 0o600);
    try {
      const child = spawn(this.bin, [...this.config.rktArgs, 'app', 'sandbox', ...this.sandboxFlags(), ...flags], { detached: true, stdio: ['ignore', fd, fd] });
      child.unref();
      return child;
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** rkt's error in its output: its last "rkt: " line that is not a warning (after the stage1's own, if it said why), else the last line. */
export function rktError(text: string): string {
  const lines = text.split('\n').map((l) => l.trim());
  const said = (who: string) => lines.filter((l) => l.startsWith(`${who}: `) && !l.startsWith(`${who}: warning:`) && !l.startsWith(`${who}: debug:`)).pop();
  const rkt = said('rkt');
  const stage1 = said('stage1');
  if (rkt === undefined) return stage1 ?? crashLine(lines) ?? lastLine(text);
  return stage1 === undefined ? rkt : `${stage1} (${rkt})`;
}

/** Node's report of an uncaught error ends with its version: the error's own line says more. */
function crashLine(lines: string[]): string | undefined {
  if (!/^Node\.js v\d/.test(lines.filter((l) => l !== '').pop() ?? '')) return undefined;
  const error = lines.find((l) => /^[A-Za-z]*Error\b/.test(l));
  return error === undefined ? undefined : `rkt crashed: ${error}`;
}

export function lastLine(text: string): string {
  return text.trim().split('\n').filter((l) => l.trim() !== '').pop()?.trim() ?? '';
}
