import type { Command } from 'commander';
import { RktError } from '../errors.js';
import { say } from '../log.js';
import { globalsOf } from './context.js';

export function register(program: Command): void {
  program
    .command('gc')
    .description('garbage collect pods that have exited, and stale preparations')
    .option('--grace-period <duration>', 'duration to wait before discarding inactive pods from garbage', '30m0s')
    .option('--expire-prepared <duration>', 'duration to wait before expiring prepared pods', '24h0m0s')
    .option('--mark-only', 'move exited pods to exited-garbage without deleting them', false)
    .action(async (opts: { gracePeriod: string; expirePrepared: string; markOnly: boolean }, cmd: Command) => {
      const globals = globalsOf(cmd);
      const { parseDuration } = await import('../util/duration.js');
      const { gcPods } = await import('../pod/gc.js');
      const grace = opts.markOnly ? Infinity : parseDuration(opts.gracePeriod, '--grace-period');
      const report = await gcPods(globals.dir, { gracePeriodMs: grace, expirePreparedMs: parseDuration(opts.expirePrepared, '--expire-prepared'), debug: globals.debug, localConfig: globals.localConfig });
      for (const uuid of report.marked) process.stdout.write(`moving pod "${uuid}" to garbage\n`);
      for (const uuid of report.removed) process.stdout.write(`Garbage collecting pod "${uuid}"\n`);
      for (const f of report.failed) say(`cannot collect pod ${f.uuid}: ${f.reason}`);
      if (report.failed.length > 0) throw new RktError(`gc: ${report.failed.length} pod(s) could not be collected`);
    });
}
