import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { say } from '../log.js';
import { writeFileAtomic } from '../util/atomic.js';
import { globalsOf } from './context.js';
import { parseFormat, printJson, printTable } from './output.js';
import { dnsOptions, parseRunCommand, runPrepared } from './run.js';

// rkt app: mutable pods (rkt's experimental app commands). A sandbox is a
// running pod started without apps; apps are then added, started, stopped
// and removed one by one through the pod's stage1 (src/pod/mutable.ts).

const SANDBOX_HELP = `
Flags: --stage1-name, --stage1-path, --stage1-url, --stage1-hash, --stage1-from-dir, --net[=NAME,...],
  --dns, --dns-search, --dns-opt, --dns-domain, --hosts-entry IP=HOSTNAME|host, --hostname,
  --port NAME:PROTO:PODPORT:HOSTIP:HOSTPORT, --annotation KEY=VALUE, --user-annotation KEY=VALUE,
  --user-label KEY=VALUE, --uuid-file-save FILE, --net-namespace PATH (an existing network namespace,
  not rkt's: the pod uses its interfaces and rkt never deletes it)
The sandbox runs in the foreground until "rkt stop", like rkt run.`;

const ADD_HELP = `
App flags: --exec, --user, --group, --supplementary-gids, --working-dir, --name, --readonly-rootfs,
  --caps-retain, --caps-remove, --memory, --cpu, --seccomp, --oom-score-adjust,
  --environment NAME=VALUE, --user-label, --user-annotation, --signature FILE
Arguments after "--" go to the app.`;

async function findPod(cmd: Command, uuid: string) {
  const { Pod } = await import('../pod/pod.js');
  return Pod.find(globalsOf(cmd).dir, uuid);
}

/** The words of rkt app sandbox without its own flags (and their separate values), for rkt run's parser. */
function dropOwnFlags(words: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const m = /^--(port|annotation|user-annotation|user-label|net-namespace)(=|$)/.exec(words[i]!);
    if (!m) out.push(words[i]!);
    else if (m[2] === '') i++;
  }
  return out;
}

/**
 * rkt app add UUID --rootfs-dir=DIR --runtime-app=FILE: this
 * implementation's form for an app whose root is a host directory (an OCI
 * bundle's), described by a runtime app entry of the pod manifest (JSON).
 */
async function addFromDirectory(cmd: Command, uuid: string, words: string[]): Promise<void> {
  const flags: Record<string, string> = {};
  for (let i = 0; i < words.length; i++) {
    const m = /^--(rootfs-dir|runtime-app)(?:=(.*))?$/s.exec(words[i]!);
    if (!m) throw new UsageError(`rkt app add --rootfs-dir takes --runtime-app and nothing else, not "${words[i]}"`);
    const v = m[2] ?? words[++i];
    if (v === undefined) throw new UsageError(`--${m[1]} needs a value`);
    flags[m[1]!] = v;
  }
  const dir = flags['rootfs-dir'];
  const file = flags['runtime-app'];
  if (dir === undefined || file === undefined) throw new UsageError('rkt app add needs both --rootfs-dir=DIR and --runtime-app=FILE for an app from a directory');
  const { readFileSync } = await import('node:fs');
  const { parseRuntimeApp } = await import('../appc/pod-manifest.js');
  let ra;
  try {
    ra = parseRuntimeApp(JSON.parse(readFileSync(file, 'utf8')));
  } catch (err) {
    throw new UsageError(`--runtime-app=${file}: ${(err as Error).message}`);
  }
  const { addDirectoryApp } = await import('../pod/mutable.js');
  await addDirectoryApp(await findPod(cmd, uuid), ra, dir, globalsOf(cmd));
}

function needApp(app: string | undefined): string {
  if (app === undefined || app === '') throw new UsageError('choose the app with --app=NAME');
  return app;
}

export function register(program: Command): void {
  const app = program.command('app').description('operate on apps in a mutable pod (experimental, as in rkt)');

  app
    .command('sandbox')
    .description('run a pod without apps in the foreground until "rkt stop"; apps come later with "rkt app add"')
    .argument('[words...]')
    .allowUnknownOption()
    .allowExcessArguments()
    .addHelpText('after', SANDBOX_HELP)
    .action(async (_w: string[], _o: unknown, cmd: Command) => {
      const { parseSandboxArgs } = await import('../pod/sandbox.js');
      const { run, manifest, netns } = parseSandboxArgs(cmd.args);
      // the global flags among the words are taken as rkt run takes them
      const { globals } = await parseRunCommand(dropOwnFlags(cmd.args), cmd);
      const { Store } = await import('../store/store.js');
      const { loadConfig } = await import('../config/loader.js');
      const { preparePod } = await import('../pod/prepare.js');
      const store = Store.open(globals.dir);
      let prepared;
      try {
        prepared = await preparePod(store, globals, loadConfig(globals), run, manifest);
      } finally {
        store.close();
      }
      if (run.pod.uuidFileSave) writeFileAtomic(run.pod.uuidFileSave, prepared.pod.uuid + '\n');
      // the pod-level flags rkt run takes for networks and names, no app's
      await runPrepared(prepared, globals, { net: run.pod.net, interactive: false, hostname: run.pod.hostname, mutable: true, ...dnsOptions(run), ...(netns !== undefined && { netns }) });
    });

  app
    .command('add')
    .description('add an app to a running mutable pod')
    .usage('UUID IMAGE [app flags] [-- app args]')
    .argument('<uuid>', 'pod UUID or unique prefix')
    .argument('[words...]')
    .allowUnknownOption()
    .allowExcessArguments()
    .addHelpText('after', ADD_HELP)
    .action(async (uuid: string, _w: string[], _o: unknown, cmd: Command) => {
      const words = cmd.args.slice(1);
      if (words.some((w) => /^--(rootfs-dir|runtime-app)(=|$)/.test(w))) {
        await addFromDirectory(cmd, uuid, words);
        return;
      }
      const { parseRunArgs } = await import('../pod/run-args.js');
      const parsed = parseRunArgs(words, 'run');
      if (parsed.apps.length !== 1) throw new UsageError(`rkt app add takes exactly one image, got ${parsed.apps.length}; usage: rkt app add UUID IMAGE [app flags]`);
      const { newPodArgs } = await import('../pod/run-args.js');
      if (JSON.stringify(parsed.pod) !== JSON.stringify(newPodArgs())) throw new UsageError('rkt app add takes app flags only (after the image); pod flags belong to "rkt app sandbox"');
      const { globals } = await parseRunCommand(words, cmd);
      const pod = await findPod(cmd, uuid);
      const { Store } = await import('../store/store.js');
      const { addApp } = await import('../pod/mutable.js');
      const store = Store.open(globals.dir);
      try {
        await addApp(pod, store, { app: parsed.apps[0]!, globals });
      } finally {
        store.close();
      }
    });

  for (const [verb, what] of [
    ['start', 'start an app added to a running mutable pod'],
    ['stop', 'stop an app of a running mutable pod'],
    ['rm', 'remove a stopped app from a running mutable pod'],
  ] as const) {
    app
      .command(verb)
      .description(what)
      .argument('<uuid>', 'pod UUID or unique prefix')
      .option('--app <name>', 'the app')
      .action(async (uuid: string, opts: { app?: string }, cmd: Command) => {
        const name = needApp(opts.app);
        const pod = await findPod(cmd, uuid);
        const globals = globalsOf(cmd);
        const m = await import('../pod/mutable.js');
        if (verb === 'start') await m.startApp(pod, name, globals);
        else if (verb === 'rm') await m.removeApp(pod, name, globals);
        else {
          const note = await m.stopApp(pod, name, globals);
          if (note !== undefined) say(note);
        }
      });
  }

  app
    .command('list')
    .description("list a pod's apps and their states")
    .argument('<uuid>', 'pod UUID or unique prefix')
    .option('--no-legend', 'suppress a legend with the list')
    .action(async (uuid: string, opts: { legend: boolean }, cmd: Command) => {
      const { appStatuses } = await import('../pod/mutable.js');
      const apps = appStatuses(await findPod(cmd, uuid));
      printTable(['NAME', 'STATE'], apps.map((a) => [a.name, a.state]), opts.legend);
    });

  app
    .command('status')
    .description('show the status of one app of a pod')
    .argument('<uuid>', 'pod UUID or unique prefix')
    .option('--app <name>', 'the app (required)')
    .option('--format <format>', "json, json-pretty, or leave it out for key=value lines")
    .action(async (uuid: string, opts: { app?: string; format?: string }, cmd: Command) => {
      const name = needApp(opts.app);
      const format = parseFormat(opts.format);
      const { appStatuses } = await import('../pod/mutable.js');
      const pod = await findPod(cmd, uuid);
      const a = appStatuses(pod).find((x) => x.name === name);
      if (a === undefined) throw new UsageError(`pod ${pod.uuid} has no app "${name}"`);
      if (format !== 'tabbed') {
        printJson(a, format);
        return;
      }
      const time = (ns: number | undefined) => (ns === undefined ? undefined : new Date(ns / 1e6).toISOString());
      const lines: [string, string | number | undefined][] = [
        ['name', a.name],
        ['state', a.state],
        ['image_id', a.image_id],
        ['created_at', time(a.created_at)],
        ['started_at', time(a.started_at)],
        ['finished_at', time(a.finished_at)],
        ['exit_code', a.exit_code],
        ['mounts', a.mounts?.map((m) => `${m.name}:${m.container_path}:(read_only:${m.read_only})`).join(',')],
        ['user_annotations', a.user_annotations && Object.entries(a.user_annotations).map(([k, v]) => `${k}:${v}`).join(',')],
        ['user_labels', a.user_labels && Object.entries(a.user_labels).map(([k, v]) => `${k}:${v}`).join(',')],
      ];
      for (const [k, v] of lines) if (v !== undefined && v !== '') process.stdout.write(`${k}=${v}\n`);
    });
}
