import type { Command } from 'commander';
import { LockBusyError, RktError, UsageError } from '../errors.js';
import { say } from '../log.js';
import { globalsOf } from './context.js';

async function podsFromArgs(dir: string, uuids: string[], uuidFile?: string) {
  const { Pod } = await import('../pod/pod.js');
  const words = [...uuids];
  if (uuidFile) words.push(Pod.readUuidFile(uuidFile));
  if (words.length === 0) throw new UsageError('give at least one pod UUID (or --uuid-file)');
  return words.map((w) => ({ word: w, find: () => Pod.find(dir, w) }));
}

/** A running pod, one of its apps (the one named, or its only one) and the pid its stage1 gave for entering it. */
async function runningApp(dir: string, uuid: string, wanted: string | undefined, verb: string) {
  const { Pod } = await import('../pod/pod.js');
  const pod = Pod.find(dir, uuid);
  const state = pod.state();
  if (state !== 'running') throw new RktError(`pod ${pod.uuid} is ${state}; only running pods can be ${verb}`);
  const apps = pod.appNames();
  let app = wanted;
  if (app === undefined) {
    if (apps.length !== 1) throw new UsageError(`pod ${pod.uuid} has ${apps.length} apps (${apps.join(', ')}); choose one with --app`);
    app = apps[0]!;
  } else if (!apps.includes(app)) {
    throw new UsageError(`pod ${pod.uuid} has no app "${app}"; its apps are ${apps.join(', ')}`);
  }
  const pid = pod.pid();
  if (pid === undefined) throw new RktError(`pod ${pod.uuid} has not given its pid yet (its stage1 writes a pid file, or a ppid file whose process has one child); wait for it to start (rkt status --wait-ready)`);
  return { pod, app, pid };
}

export function register(program: Command): void {
  program
    .command('cat-manifest')
    .description('inspect and print the pod manifest')
    .argument('<uuid>', 'pod UUID or unique prefix')
    .option('--pretty-print', 'apply indent to format the output', true)
    .option('--no-pretty-print', 'print on one line')
    .action(async (uuid: string, opts: { prettyPrint: boolean }, cmd: Command) => {
      const { Pod } = await import('../pod/pod.js');
      const pod = Pod.find(globalsOf(cmd).dir, uuid);
      const m = pod.manifest();
      process.stdout.write((opts.prettyPrint ? JSON.stringify(m, null, '\t') : JSON.stringify(m)) + '\n');
    });

  program
    .command('stop')
    .description('stop one or more running pods')
    .argument('[uuids...]', 'pod UUIDs or unique prefixes')
    .option('--force', 'forced stopping', false)
    .option('--uuid-file <file>', 'read the pod UUID from this file')
    .action(async (uuids: string[], opts: { force: boolean; uuidFile?: string }, cmd: Command) => {
      const globals = globalsOf(cmd);
      const { invokeEntrypoint } = await import('../stage1/invoke.js');
      const { stopArgv } = await import('../stage1/args.js');
      let failed = 0;
      for (const { word, find } of await podsFromArgs(globals.dir, uuids, opts.uuidFile)) {
        try {
          const pod = find();
          const state = pod.state();
          if (state === 'exited' || state === 'exited garbage' || state === 'garbage') {
            // as rkt: nothing to do is no failure
            say(`pod ${pod.uuid} is already stopped`);
            continue;
          }
          if (state !== 'running') throw new RktError(`pod ${pod.uuid} is ${state}, not running`);
          const code = await invokeEntrypoint(pod.paths, 'stop', () => stopArgv(opts, pod.uuid), { stdio: 'inherit' });
          if (code !== 0) throw new RktError(`stage1 could not stop pod ${pod.uuid} (status ${code}); try --force`);
          process.stdout.write(`"${pod.uuid}"\n`);
        } catch (err) {
          if (!(err instanceof RktError)) throw err;
          say(`error stopping ${word}: ${err.message}`);
          failed++;
        }
      }
      if (failed > 0) process.exitCode = 1;
    });

  program
    .command('rm')
    .description('remove all files and resources associated with exited or prepared pods')
    .argument('[uuids...]', 'pod UUIDs or unique prefixes')
    .option('--uuid-file <file>', 'read the pod UUID from this file')
    .action(async (uuids: string[], opts: { uuidFile?: string }, cmd: Command) => {
      const globals = globalsOf(cmd);
      const { destroyPod } = await import('../pod/gc.js');
      let failed = 0;
      for (const { word, find } of await podsFromArgs(globals.dir, uuids, opts.uuidFile)) {
        try {
          const pod = find();
          let lock;
          try {
            lock = pod.lock('exclusive', false);
          } catch (err) {
            if (!(err instanceof LockBusyError)) throw err;
            throw new RktError(`pod ${pod.uuid} is ${pod.state()}; stop it first ("rkt stop")`, { cause: err });
          }
          try {
            if (pod.stateDir === 'run') pod.moveTo('exited-garbage');
            else if (pod.stateDir !== 'exited-garbage') pod.moveTo('garbage');
            await destroyPod(pod, globals);
          } finally {
            lock.release();
          }
          process.stdout.write(`"${pod.uuid}"\n`);
        } catch (err) {
          if (!(err instanceof RktError)) throw err;
          say(`error removing ${word}: ${err.message}`);
          failed++;
        }
      }
      if (failed > 0) process.exitCode = 1;
    });

  program
    .command('enter')
    .description('enter the namespaces of an app within a running pod')
    .argument('<uuid>', 'pod UUID or unique prefix')
    .argument('[cmd...]', 'command to run (default /bin/sh)')
    .option('--app <name>', 'name of the app to enter within the specified pod')
    .allowUnknownOption()
    .allowExcessArguments()
    .action(async (uuid: string, words: string[], opts: { app?: string }, cmd: Command) => {
      const globals = globalsOf(cmd);
      const { invokeEntrypoint } = await import('../stage1/invoke.js');
      const { enterArgv } = await import('../stage1/args.js');
      const { pod, app, pid } = await runningApp(globals.dir, uuid, opts.app, 'entered');
      const argv = words.length > 0 ? words : ['/bin/sh'];
      process.exitCode = await invokeEntrypoint(pod.paths, 'enter', () => enterArgv({ pid, appName: app }, argv), { forwardSignals: ['SIGINT', 'SIGTERM', 'SIGHUP'] });
    });

  program
    .command('attach')
    .description("attach to an app's streams in a running pod (--mode=console: a kvm pod's serial console)")
    .argument('<uuid>', 'pod UUID or unique prefix')
    .option('--app <name>', 'name of the app to attach to within the specified pod')
    .option('--mode <mode>', 'list, auto, console, or a comma-separated list of tty, tty-in, tty-out, stdin, stdout, stderr', 'auto')
    .action(async (uuid: string, opts: { app?: string; mode: string }, cmd: Command) => {
      const globals = globalsOf(cmd);
      const { invokeEntrypoint, crossingEnv } = await import('../stage1/invoke.js');
      const { attachArgv } = await import('../stage1/args.js');
      const { parseAttachMode } = await import('../appc/app-streams.js');
      const { action, endpoints } = parseAttachMode(opts.mode);
      // the console is the pod's, not an app's: any app names the pod for it
      let wanted = opts.app;
      if (action === 'console' && wanted === undefined) wanted = (await import('../pod/pod.js')).Pod.find(globals.dir, uuid).appNames()[0];
      const { pod, app, pid } = await runningApp(globals.dir, uuid, wanted, 'attached to');
      // a signal detaches: the entrypoint lets go of the app, which keeps running
      process.exitCode = await invokeEntrypoint(pod.paths, 'attach', () => attachArgv({ action, app, debug: globals.debug, ...(endpoints && { endpoints }) }), {
        env: crossingEnv(pod.paths, pid, app),
        forwardSignals: ['SIGINT', 'SIGTERM', 'SIGHUP'],
      });
    });
}
