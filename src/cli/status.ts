import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { RktError } from '../errors.js';
import type { PodInfo } from '../pod/info.js';
import { globalsOf } from './context.js';
import { fullTime, parseFormat, printJson } from './output.js';

function printStatus(p: PodInfo): void {
  const lines = [`state=${p.state}`];
  if (p.created) lines.push(`created=${fullTime(p.created)}`);
  if (p.started) lines.push(`started=${fullTime(p.started)}`);
  lines.push(`networks=${p.networks}`);
  if (p.pid !== undefined && p.state === 'running') lines.push(`pid=${p.pid}`);
  const exited = p.exited !== undefined;
  lines.push(`exited=${exited}`);
  // an app that has exited while its pod runs (a sandbox's) has its status too
  for (const a of p.apps) if (a.exitCode !== undefined) lines.push(`app-${a.name}=${a.exitCode}`);
  if (exited && p.exitCause) lines.push(`exit-cause=${p.exitCause}`);
  process.stdout.write(lines.join('\n') + '\n');
}

export function register(program: Command): void {
  program
    .command('status')
    .description('check the status of a pod')
    .argument('[uuid]', 'pod UUID or unique prefix')
    .option('--wait [timeout]', 'wait for the pod to exit (optionally at most this long, e.g. 10s)')
    .option('--wait-ready [timeout]', 'wait for the pod to be ready (optionally at most this long)')
    .option('--format <format>', 'choose the output format: json, json-pretty', '')
    .option('--uuid-file <file>', 'read the pod UUID from this file')
    .action(async (uuidArg: string | undefined, opts: { wait?: string | boolean; waitReady?: string | boolean; format: string; uuidFile?: string }, cmd: Command) => {
      const globals = globalsOf(cmd);
      const { Pod } = await import('../pod/pod.js');
      // "--wait UUID": the optional value swallowed the UUID, as it is no duration
      let uuid = uuidArg;
      if (opts.uuidFile !== undefined) {
        if (uuid !== undefined) throw new (await import('../errors.js')).UsageError('give the pod UUID or --uuid-file, not both');
        uuid = Pod.readUuidFile(opts.uuidFile);
      }
      for (const key of ['wait', 'waitReady'] as const) {
        // Go's boolean form, as rkt's documentation writes it: --wait=true, --wait=false
        if (opts[key] === 'true') opts[key] = true;
        if (opts[key] === 'false') opts[key] = false;
        const v = opts[key];
        if (uuid === undefined && typeof v === 'string' && !/^[0-9.]+(ns|us|ms|s|m|h)/.test(v)) {
          uuid = v;
          opts[key] = true;
        }
      }
      if (uuid === undefined) throw new (await import('../errors.js')).UsageError('status needs a pod UUID (or --uuid-file)');
      const format = parseFormat(opts.format);
      const { podInfo, podJson } = await import('../pod/info.js');
      const { parseDuration } = await import('../util/duration.js');
      const limit = (v: string | boolean | undefined, flag: string) => (typeof v === 'string' ? parseDuration(v, flag) : Infinity);
      let pod = Pod.find(globals.dir, uuid);
      const deadline = (ms: number) => Date.now() + ms;
      if (opts.waitReady !== undefined && opts.waitReady !== false) {
        const end = deadline(limit(opts.waitReady, '--wait-ready'));
        for (;;) {
          pod = Pod.find(globals.dir, pod.uuid);
          const state = pod.state();
          if (state === 'running' && pod.isReady()) break;
          if (state !== 'running' && state !== 'prepared' && state !== 'preparing' && state !== 'embryo') throw new RktError(`pod ${pod.uuid} is ${state}; it will not become ready`);
          if (Date.now() > end) throw new RktError(`pod ${pod.uuid} did not become ready in time`);
          await sleep(50);
        }
      }
      if (opts.wait !== undefined && opts.wait !== false) {
        const end = deadline(limit(opts.wait, '--wait'));
        for (;;) {
          pod = Pod.find(globals.dir, pod.uuid);
          const state = pod.state();
          if (state !== 'running' && state !== 'preparing' && state !== 'embryo' && state !== 'prepared') break;
          if (Date.now() > end) throw new RktError(`pod ${pod.uuid} did not exit in time`);
          await sleep(50);
        }
      }
      const info = podInfo(pod);
      if (format !== 'tabbed') {
        printJson(podJson(info), format);
        return;
      }
      printStatus(info);
    });
}
