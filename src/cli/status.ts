import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { RktError } from '../errors.js';
import type { PodInfo } from '../pod/info.js';
import { globalsOf } from './context.js';
import { parseFormat, printJson } from './output.js';

function printStatus(p: PodInfo): void {
  const lines = [`state=${p.state}`];
  if (p.created) lines.push(`created=${p.created.toISOString()}`);
  if (p.started) lines.push(`started=${p.started.toISOString()}`);
  lines.push(`networks=${p.networks}`);
  if (p.pid !== undefined && p.state === 'running') lines.push(`pid=${p.pid}`);
  const exited = p.exited !== undefined;
  lines.push(`exited=${exited}`);
  if (exited) {
    for (const a of p.apps) if (a.exitCode !== undefined) lines.push(`app-${a.name}=${a.exitCode}`);
    if (p.exitCause) lines.push(`exit-cause=${p.exitCause}`);
  }
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
    .action(async (uuidArg: string | undefined, opts: { wait?: string | boolean; waitReady?: string | boolean; format: string }, cmd: Command) => {
      const globals = globalsOf(cmd);
      // "--wait UUID": the optional value swallowed the UUID, as it is no duration
      let uuid = uuidArg;
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
      if (uuid === undefined) throw new (await import('../errors.js')).UsageError('status needs a pod UUID');
      const format = parseFormat(opts.format);
      const { Pod } = await import('../pod/pod.js');
      const { podInfo, nanos } = await import('../pod/info.js');
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
        printJson(
          {
            name: info.uuid,
            state: info.state,
            networks: info.networkList,
            app_names: info.apps.map((a) => a.name),
            apps: info.apps.map((a) => ({ name: a.name, image_id: a.imageId, image_name: a.image, ...(a.exitCode !== undefined ? { exit_code: a.exitCode } : {}) })),
            pid: info.state === 'running' ? info.pid : undefined,
            created_at: nanos(info.created),
            started_at: nanos(info.started),
            exited_at: nanos(info.exited),
            exit_cause: info.exitCause,
          },
          format,
        );
        return;
      }
      printStatus(info);
    });
}
