import fs from 'node:fs';
import os from 'node:os';
import type { Command } from 'commander';
import type { GlobalOptions } from '../config/global.js';
import { parseInsecureOptions } from '../config/insecure.js';
import { UsageError } from '../errors.js';
import { say, setDebug } from '../log.js';
import { runFlagsHelp, type RunArgs } from '../pod/run-args.js';
import type { PreparedPod } from '../pod/prepare.js';
import type { StartOptions } from '../pod/run.js';
import { writeFileAtomic } from '../util/atomic.js';
import { phase } from '../util/phase-trace.js';
import { globalsOf } from './context.js';

const RUN_HELP = `
${runFlagsHelp()}
Arguments after "--" go to the preceding app; "---" ends them.`;

/** Parse run/prepare words and fold any global flags among them into the globals. */
export async function parseRunCommand(words: string[], cmd: Command): Promise<{ args: RunArgs; globals: GlobalOptions }> {
  const { parseRunArgs } = await import('../pod/run-args.js');
  const args = parseRunArgs(words, cmd.name() === 'prepare' ? 'prepare' : 'run');
  for (const d of args.deprecated) say(`Flag --${d.flag} has been deprecated, use --${d.use} instead`);
  const globals = globalsOf(cmd);
  const g = args.globals;
  if (g.dir) globals.dir = g.dir;
  if (g.localConfig) globals.localConfig = g.localConfig;
  if (g.systemConfig) globals.systemConfig = g.systemConfig;
  if (g.userConfig) globals.userConfig = g.userConfig;
  if (g.insecureOptions) globals.insecureOptions = parseInsecureOptions(g.insecureOptions);
  if (g.trustKeysFromHttps) globals.trustKeysFromHttps = true;
  if (g.debug) {
    globals.debug = true;
    setDebug(true);
  }
  return { args, globals };
}

/** --mds-register is refused where it cannot work, and when no service answers, before any pod exists (rkt's checks). */
async function checkMdsRegister(net: string[]): Promise<void> {
  if (net.includes('none')) throw new UsageError("--mds-register does not work with --net=none: the apps reach the service over the pod's network; use --net=default, host or a named network");
  const { checkServiceReachable } = await import('../mds/client.js');
  await checkServiceReachable();
}

/**
 * SIGINT, SIGTERM and SIGHUP while a pod is being prepared: noted rather
 * than fatal, so that preparation ends and cleans up as it would on an
 * error instead of dying with a half-made pod directory.
 */
function holdStopSignals(): HeldSignals {
  const sigs = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  const held = {
    caught: undefined as NodeJS.Signals | undefined,
    release: () => {
      for (const s of sigs) process.off(s, note);
    },
  };
  const note = (sig: NodeJS.Signals) => {
    held.caught ??= sig;
  };
  for (const s of sigs) process.on(s, note);
  return held;
}

interface HeldSignals {
  caught: NodeJS.Signals | undefined;
  release(): void;
}

/**
 * Run a pod just prepared, in the foreground, and exit with its status (rkt
 * run, rkt app sandbox). `held`: the stop signals noted while preparing, let
 * go once stage1 hears them (one that came in between is passed on).
 */
export async function runPrepared(prepared: PreparedPod, globals: GlobalOptions, opts: StartOptions, held?: HeldSignals): Promise<void> {
  const { startPod } = await import('../pod/run.js');
  // startPod forwards stop signals to the stage1 run entrypoint from the moment it returns
  const running = startPod(prepared.pod, prepared.lock, globals, { ...opts, holding: prepared.treeLocks });
  if (held !== undefined) {
    held.release();
    const late = held.caught as NodeJS.Signals | undefined;
    if (late !== undefined) process.kill(process.pid, late);
  }
  let code: number;
  try {
    code = await running;
  } catch (err) {
    // a pod `rkt run` could not start (its registration was refused) serves nobody: no leftover
    if (prepared.pod.stateDir === 'prepared') (await import('../pod/remove.js')).removePodDir(prepared.pod.dir);
    throw err;
  }
  prepared.lock.release();
  for (const l of prepared.treeLocks) l.release();
  process.exitCode = code;
}

/** The DNS and hosts flags as stage1 reads them from run-options.json. */
export function dnsOptions(args: RunArgs): { dns: { dns: string[]; dnsSearch: string[]; dnsOpt: string[]; dnsDomain?: string }; hostsEntries: string[]; privateUsers?: string; ipc?: string } {
  const p = args.pod;
  return {
    dns: { dns: p.dns, dnsSearch: p.dnsSearch, dnsOpt: p.dnsOpt, ...(p.dnsDomain ? { dnsDomain: p.dnsDomain } : {}) },
    hostsEntries: p.hostsEntry,
    ...(p.privateUsers !== undefined ? { privateUsers: p.privateUsers } : {}),
    ...(p.ipc !== undefined ? { ipc: p.ipc } : {}),
  };
}

export function register(program: Command): void {
  program
    .command('run')
    .description('run image(s) in a pod')
    .usage('[flags] IMAGE [image flags] [-- image args] [--- IMAGE ...]')
    .argument('[words...]')
    .allowUnknownOption()
    .allowExcessArguments()
    .addHelpText('after', RUN_HELP)
    .action(async (_w: string[], _o: unknown, cmd: Command) => {
      const { args, globals } = await parseRunCommand(cmd.args, cmd);
      phase('stage0-parse');
      if (args.pod.mdsRegister) await checkMdsRegister(args.pod.net);
      const { Store } = await import('../store/store.js');
      const { loadConfig } = await import('../config/loader.js');
      const { preparePod } = await import('../pod/prepare.js');
      const config = loadConfig(globals);
      const store = Store.open(globals.dir);
      const held = holdStopSignals();
      let prepared;
      try {
        prepared = await preparePod(store, globals, config, args);
      } finally {
        store.close();
      }
      if (held.caught !== undefined) {
        held.release();
        // interrupted while preparing: the pod never runs and is not left behind
        const { removePodDir } = await import('../pod/remove.js');
        for (const l of prepared.treeLocks) l.release();
        removePodDir(prepared.pod.dir);
        prepared.lock.release();
        say(`${held.caught} while preparing the pod: not running it`);
        process.exitCode = 128 + (os.constants.signals[held.caught] ?? 0);
        return;
      }
      if (args.pod.uuidFileSave) writeFileAtomic(args.pod.uuidFileSave, prepared.pod.uuid + '\n');
      await runPrepared(prepared, globals, { net: args.pod.net, interactive: args.pod.interactive, hostname: args.pod.hostname, mdsRegister: args.pod.mdsRegister, ...dnsOptions(args) }, held);
    });

  program
    .command('prepare')
    .description('prepare a pod to run later with "rkt run-prepared"; prints its UUID')
    .usage('[flags] IMAGE [image flags] [-- image args] [--- IMAGE ...]')
    .argument('[words...]')
    .allowUnknownOption()
    .allowExcessArguments()
    .option('--quiet', 'print only the UUID', false)
    .addHelpText('after', RUN_HELP)
    .action(async (_w: string[], _o: unknown, cmd: Command) => {
      const words = cmd.args.filter((w) => w !== '--quiet');
      const { args, globals } = await parseRunCommand(words, cmd);
      if (args.pod.mdsRegister) throw new UsageError('--mds-register takes effect when the pod runs: give it to "rkt run-prepared"');
      const { Store } = await import('../store/store.js');
      const { loadConfig } = await import('../config/loader.js');
      const { preparePod, writeRunOptions } = await import('../pod/prepare.js');
      const store = Store.open(globals.dir);
      try {
        const prepared = await preparePod(store, globals, loadConfig(globals), args);
        // the flags stage1 needs later are remembered for run-prepared
        writeRunOptions(prepared.pod, {
          uuid: prepared.pod.uuid,
          net: args.pod.net,
          debug: false,
          interactive: args.pod.interactive,
          hostname: args.pod.hostname,
          dataDir: fs.realpathSync(globals.dir),
          localConfig: globals.localConfig,
          systemConfig: globals.systemConfig,
          insecureOptions: [],
          ...dnsOptions(args),
        });
        if (args.pod.uuidFileSave) writeFileAtomic(args.pod.uuidFileSave, prepared.pod.uuid + '\n');
        prepared.lock.release();
        for (const l of prepared.treeLocks) l.release();
        process.stdout.write(prepared.pod.uuid + '\n');
      } finally {
        store.close();
      }
    });

  program
    .command('run-prepared')
    .description('run a prepared pod')
    .argument('<uuid>', 'UUID (or unique prefix) of a prepared pod')
    .option('--net [networks]', 'networks to join, overriding what prepare was given')
    .option('--interactive', 'run the pod interactively', false)
    .option('--hostname <name>', "pod's hostname")
    .option('--mds-register', 'register the pod with the metadata service', false)
    .action(async (uuid: string, opts: { net?: string | boolean; interactive: boolean; hostname?: string; mdsRegister: boolean }, cmd: Command) => {
      const globals = globalsOf(cmd);
      phase('stage0-parse');
      const { Pod } = await import('../pod/pod.js');
      const { startPod } = await import('../pod/run.js');
      const { RktError } = await import('../errors.js');
      const { readRunOptions } = await import('../stage1/contract.js');
      const pod = Pod.find(globals.dir, uuid);
      if (pod.stateDir !== 'prepared') throw new RktError(`pod ${pod.uuid} is ${pod.state()}, not prepared; only prepared pods can run`);
      const lock = pod.lock('exclusive', false);
      // none when prepared by another rkt: use the flags given now
      const saved = (readRunOptions(pod.paths) ?? {}) as { net?: string[]; interactive?: boolean; hostname?: string; dns?: { dns: string[]; dnsSearch: string[]; dnsOpt: string[]; dnsDomain?: string }; hostsEntries?: string[] };
      const net = typeof opts.net === 'string' ? opts.net.split(',') : opts.net === true ? ['default'] : (saved.net ?? []);
      if (opts.mdsRegister) await checkMdsRegister(net);
      const { checkPodCanStart } = await import('../pod/precheck.js');
      const { stage1Manifest } = await import('../stage1/invoke.js');
      try {
        checkPodCanStart(pod.manifest(), stage1Manifest(pod.paths).name, { net, dns: saved.dns, hostsEntries: saved.hostsEntries, localConfig: globals.localConfig, systemConfig: globals.systemConfig });
      } catch (err) {
        lock.release();
        throw err;
      }
      const code = await startPod(pod, lock, globals, { net, interactive: opts.interactive || (saved.interactive ?? false), hostname: opts.hostname ?? saved.hostname, dns: saved.dns, hostsEntries: saved.hostsEntries, privateUsers: (saved as { privateUsers?: string }).privateUsers, ipc: (saved as { ipc?: string }).ipc, mdsRegister: opts.mdsRegister });
      lock.release();
      process.exitCode = code;
    });
}
