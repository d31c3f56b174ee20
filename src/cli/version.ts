import type { Command } from 'commander';
import { APPC_VERSION, RKT_VERSION, STAGE1_INTERFACE_VERSION } from '../version.js';

/** What `rkt version` prints. */
export function versionText(): string {
  return (
    `rkt Version: ${RKT_VERSION}\n` +
    `appc Version: ${APPC_VERSION}\n` +
    `Node Version: ${process.version}\n` +
    `OS/Arch: ${process.platform}/${process.arch === 'x64' ? 'amd64' : process.arch}\n` +
    `Stage1 Interface Version: ${STAGE1_INTERFACE_VERSION}\n`
  );
}

export function register(program: Command): void {
  program
    .command('version')
    .description('print the version and exit')
    .action(() => {
      process.stdout.write(versionText());
    });
}
