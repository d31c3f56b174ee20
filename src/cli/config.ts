import type { Command } from 'commander';
import { globalsOf } from './context.js';
import { printJson, parseFormat } from './output.js';

export function register(program: Command): void {
  program
    .command('config')
    .description('print the merged configuration (system, local and user config dirs) as JSON')
    .option('--pretty-print', 'apply indent to format the output', true)
    .option('--no-pretty-print', 'print on one line')
    .action(async (opts: { prettyPrint: boolean }, cmd: Command) => {
      const { loadConfig, configAsJson } = await import('../config/loader.js');
      printJson(configAsJson(loadConfig(globalsOf(cmd))), parseFormat(opts.prettyPrint ? 'json-pretty' : 'json'));
    });
}
