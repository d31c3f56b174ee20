import fs from 'node:fs';
import * as commands from './commands.js';
import * as reports from './reports.js';
import { exec } from './exec.js';
import { OciError } from './errors.js';
import { loadRuntimeConfig, Rkt } from './rkt.js';
import { DEFAULT_ROOT, StateDir } from './state.js';

// runc's command line, as containerd's runc v2 shim (go-runc) uses it:
//   rkt-oci-FLAVOR [--root DIR] [--log FILE] [--log-format text|json]
//     [--systemd-cgroup] [--debug] COMMAND [flags] ID ...
// A failure prints one line on stderr, is appended to --log (the shim reads
// the last error from there), and exits 1, as runc does.

interface Globals {
  root: string;
  log?: string;
  logFormat: 'text' | 'json';
  debug: boolean;
}

/** Flags of a command: name -> takes a value? Aliases map to the long name. */
type FlagSpec = Record<string, boolean>;

const COMMAND_FLAGS: Record<string, { flags: FlagSpec; aliases?: Record<string, string>; args: [number, number] }> = {
  create: { flags: { bundle: true, 'pid-file': true, 'console-socket': true, 'no-pivot': false, 'no-new-keyring': false, 'preserve-fds': true }, aliases: { b: 'bundle' }, args: [1, 1] },
  start: { flags: {}, args: [1, 1] },
  state: { flags: {}, args: [1, 1] },
  kill: { flags: { all: false }, aliases: { a: 'all' }, args: [1, 2] },
  delete: { flags: { force: false }, aliases: { f: 'force' }, args: [1, 1] },
  exec: { flags: { process: true, detach: false, 'pid-file': true, 'console-socket': true, tty: false, 'preserve-fds': true }, aliases: { p: 'process', d: 'detach', t: 'tty' }, args: [1, 1] },
  ps: { flags: { format: true }, aliases: { f: 'format' }, args: [1, 1] },
  features: { flags: {}, args: [0, 0] },
};

function parseFlags(words: string[], spec: FlagSpec, aliases: Record<string, string> = {}): { flags: Record<string, string | boolean>; rest: string[] } {
  const flags: Record<string, string | boolean> = {};
  const rest: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (w === '--') {
      rest.push(...words.slice(i + 1));
      break;
    }
    const m = /^--?([a-z][a-z-]*)(?:=(.*))?$/s.exec(w);
    if (!m || rest.length > 0) {
      rest.push(w);
      continue;
    }
    const name = aliases[m[1]!] ?? m[1]!;
    if (!(name in spec)) throw new OciError(`flag provided but not defined: -${m[1]}`);
    if (spec[name]) {
      const v = m[2] ?? words[++i];
      if (v === undefined) throw new OciError(`flag needs an argument: --${name}`);
      flags[name] = v;
    } else flags[name] = m[2] === undefined ? true : m[2] !== 'false';
  }
  return { flags, rest };
}

const GLOBAL_FLAGS: FlagSpec = { root: true, log: true, 'log-format': true, 'systemd-cgroup': false, debug: false, criu: true, rootless: true };

function logLine(g: Globals | undefined, msg: string): void {
  process.stderr.write(`${msg}\n`);
  if (g?.log === undefined) return;
  const time = new Date().toISOString();
  const line = g.logFormat === 'json' ? JSON.stringify({ level: 'error', msg, time }) : `time="${time}" level=error msg=${JSON.stringify(msg)}`;
  try {
    fs.appendFileSync(g.log, line + '\n');
  } catch {
    // the log is the shim's convenience; stderr has the message already
  }
}

export interface Launcher {
  flavor: string;
  /** bin/rkt of this checkout. */
  rkt: string;
  /** dist/oci/rkt-oci-console of this checkout. */
  console: string;
}

export async function run(argv: string[], launcher: Launcher): Promise<number> {
  let g: Globals | undefined;
  try {
    const cmdIndex = argv.findIndex((w, i) => !w.startsWith('-') && !(i > 0 && /^--?(root|log|log-format|criu|rootless)$/.test(argv[i - 1]!)));
    if (cmdIndex === -1) throw new OciError(`usage: rkt-oci-${launcher.flavor} [--root DIR] [--log FILE] [--log-format text|json] COMMAND ... (create, start, state, kill, delete, exec, ps, features)`);
    const { flags: gf } = parseFlags(argv.slice(0, cmdIndex), GLOBAL_FLAGS);
    g = { root: typeof gf.root === 'string' ? gf.root : DEFAULT_ROOT, logFormat: gf['log-format'] === 'json' ? 'json' : 'text', debug: gf.debug === true, ...(typeof gf.log === 'string' && { log: gf.log }) };
    if (gf['log-format'] !== undefined && gf['log-format'] !== 'json' && gf['log-format'] !== 'text') throw new OciError(`--log-format ${gf['log-format']}: text or json`);
    if (typeof gf.rootless === 'string' && gf.rootless === 'true') throw new OciError('--rootless true: this runtime runs as root only');
    const command = argv[cmdIndex]!;
    const def = COMMAND_FLAGS[command];
    if (def === undefined) throw new OciError(`runc command "${command}" is not supported by this runtime (it has ${Object.keys(COMMAND_FLAGS).join(', ')})`);
    const { flags, rest } = parseFlags(argv.slice(cmdIndex + 1), def.flags, def.aliases);
    if (flags['preserve-fds'] !== undefined && flags['preserve-fds'] !== '0') throw new OciError('--preserve-fds is not supported by this runtime');
    const [min, max] = def.args;
    const positional = command === 'exec' ? rest.slice(0, 1) : rest;
    if (positional.length < min || (positional.length > max && command !== 'exec')) throw new OciError(`"${command}" requires ${min === max ? `exactly ${min}` : `${min} to ${max}`} argument(s)`);
    if (command === 'features') {
      process.stdout.write(reports.features());
      return 0;
    }
    const ctx = { states: new StateDir(g.root), rkt: new Rkt(launcher.rkt, launcher.flavor, loadRuntimeConfig()), consoleHelper: launcher.console };
    const id = positional[0]!;
    const str = (k: string) => (typeof flags[k] === 'string' ? (flags[k] as string) : undefined);
    switch (command) {
      case 'create':
        await commands.create(ctx, id, { ...(str('bundle') !== undefined && { bundle: str('bundle')! }), ...(str('pid-file') !== undefined && { pidFile: str('pid-file')! }), ...(str('console-socket') !== undefined && { consoleSocket: str('console-socket')! }) });
        return 0;
      case 'start':
        await commands.start(ctx, id);
        return 0;
      case 'state':
        process.stdout.write(reports.stateJson(ctx, id));
        return 0;
      case 'kill':
        await commands.kill(ctx, id, positional[1] ?? 'SIGTERM', flags.all === true);
        return 0;
      case 'delete':
        await commands.remove(ctx, id, flags.force === true);
        return 0;
      case 'ps':
        process.stdout.write(reports.ps(ctx, id, str('format') ?? 'table'));
        return 0;
      case 'exec': {
        if (rest.length > 1 && str('process') === undefined) throw new OciError('exec: give the process as --process FILE (a command line after the id is not supported)');
        return await exec(ctx, id, { detach: flags.detach === true, tty: flags.tty === true, ...(str('process') !== undefined && { process: str('process')! }), ...(str('pid-file') !== undefined && { pidFile: str('pid-file')! }), ...(str('console-socket') !== undefined && { consoleSocket: str('console-socket')! }) });
      }
    }
    return 0;
  } catch (err) {
    const msg = err instanceof OciError ? err.message : g?.debug ? String((err as Error).stack) : `internal error: ${(err as Error).message}`;
    logLine(g, msg.split('\n')[0]!.slice(0, 2000));
    return 1;
  }
}

export async function main(launcher: Launcher): Promise<void> {
  process.exitCode = await run(process.argv.slice(2), launcher);
}
