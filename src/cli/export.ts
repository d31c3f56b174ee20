import type { Command } from 'commander';
import { globalsOf } from './context.js';

export function register(program: Command): void {
  program
    .command('export')
    .description('export an app from an exited pod to an ACI file')
    .argument('<uuid>', 'UUID (or unique prefix) of an exited pod')
    .argument('<output>', 'ACI file to write (ending in .aci)')
    .option('--app <name>', 'name of the app to export within the specified pod')
    .option('--overwrite', 'overwrite output ACI', false)
    .action(async (uuid: string, output: string, opts: { app?: string; overwrite: boolean }, cmd: Command) => {
      const { exportPodApp } = await import('../pod/export.js');
      await exportPodApp(globalsOf(cmd).dir, uuid, output, opts);
    });
}
