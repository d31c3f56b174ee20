import fs from 'node:fs';
import type { Command } from 'commander';
import type { GlobalOptions } from '../config/global.js';
import { parseInsecureOptions } from '../config/insecure.js';
import { UsageError } from '../errors.js';
import { setDebug } from '../log.js';
import type { RunArgs } from '../pod/run-args.js';
import { writeFileAtomic } from '../util/atomic.js';
import { phase } from '../util/phase-trace.js';
import { globalsOf } from './context.js';

const RUN_HELP = `
Pod flags (before the first image): --stage1-name, --stage1-path, --stage1-url, --stage1-hash,
  --stage1-from-dir, --net[=NAME,...], --dns, --dns-search, --dns-opt, --dns-domain, --hosts-entry,
  --hostname, --volume NAME,kind=host|empty,source=PATH[,readOnly=true], --set-env NAME=VALUE,
  --set-env-file FILE, --inherit-env, --interactive, --uuid-file-save FILE, --pod-manifest FILE,
  --pull-policy never|new|update (--store-only, --no-store: deprecated forms), --port NAME:HOSTPORT,
  --mds-register (run only: register the pod with "rkt metadata-service"; apps find it in
  AC_METADATA_URL)
App flags (after the image they apply to): --exec, --user, --group, --supplementary-gids,
  --working-dir, --name, --readonly-rootfs, --caps-retain, --caps-remove, --memory, --cpu,
  --environment NAME=VALUE, --mount volume=NAME,target=PATH, --user-label, --user-annotation,
  --signature FILE|URL, --stdin null|stream|tty, --stdout null|log|stream|tty,
  --stderr null|log|stream|tty (stream and tty: reach the app later with rkt attach; kvm)
Images: a file, a file:// or https:// URL, an image ID, or name[:version][,label=value...] (appc discovery).
Arguments after "--" go to the preceding app; "---" ends them.`;

/** Parse run/prepare words and fold any global flags among them into the globals. */
export async function parseRunCommand(words: string[], cmd: Command): Promise<{ args: RunArgs; globals: GlobalOptions }> {
  const { parseRunArgs } = await import('../pod/run-args.js');
  const args = parseRunArgs(words, cmd.name() === 'prepare' ? 'prepare' : 'run');
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

/** The DNS and hosts flags as stage1 reads them from run-options.json. */
function dnsOptions(args: RunArgs): { dns: { dns: string[]; dnsSearch: string[]; dnsOpt: string[]; dnsDomain?: string }; hostsEntries: string[]; privateUsers?: string; ipc?: string } {
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
      const { startPod } = await import('../pod/run.js');
      const config = loadConfig(globals);
      const store = Store.open(globals.dir);
      let prepared;
      try {
        prepared = await preparePod(store, globals, config, args);
      } finally {
        store.close();
      }
      if (args.pod.uuidFileSave) writeFileAtomic(args.pod.uuidFileSave, prepared.pod.uuid + '\n');
      let code: number;
      try {
        code = await startPod(prepared.pod, prepared.lock, globals, { net: args.pod.net, interactive: args.pod.interactive, hostname: args.pod.hostname, mdsRegister: args.pod.mdsRegister, ...dnsOptions(args) });
      } catch (err) {
        // a pod `rkt run` could not start (its registration was refused) serves nobody: no leftover
        if (prepared.pod.stateDir === 'prepared') (await import('../pod/remove.js')).removePodDir(prepared.pod.dir);
        throw err;
      }
      prepared.lock.release();
      for (const l of prepared.treeLocks) l.release();
      process.exitCode = code;
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
      const code = await startPod(pod, lock, globals, { net, interactive: opts.interactive || (saved.interactive ?? false), hostname: opts.hostname ?? saved.hostname, dns: saved.dns, hostsEntries: saved.hostsEntries, privateUsers: (saved as { privateUsers?: string }).privateUsers, ipc: (saved as { ipc?: string }).ipc, mdsRegister: opts.mdsRegister });
      lock.release();
      process.exitCode = code;
    });
}
