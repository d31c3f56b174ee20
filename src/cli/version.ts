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

// Global flags that `rkt version` ignores (it reads no config and logs nothing), as rkt's
// parser accepts them; any other flag (--insecure-options is checked) takes the common path.
const IGNORED_VALUE_FLAGS = ['--dir', '--local-config', '--system-config', '--user-config'];
const IGNORED_BOOL_FLAGS = ['--debug', '--trust-keys-from-https'];

/** Whether the command line is `rkt [ignored global flags] version` and nothing else. */
export function isPlainVersion(args: readonly string[]): boolean {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === 'version') return i === args.length - 1;
    const name = a.split('=', 1)[0]!;
    if (IGNORED_VALUE_FLAGS.includes(name)) {
      if (a === name) i++; // the value is the next word
      if (i >= args.length || (a !== name ? a.length === name.length + 1 : false)) return false;
    } else if (!(IGNORED_BOOL_FLAGS.includes(name) && (a === name || a === `${name}=true` || a === `${name}=false`))) {
      return false;
    }
  }
  return false;
}

export function register(program: Command): void {
  program
    .command('version')
    .description('print the version and exit')
    .action(() => {
      process.stdout.write(versionText());
    });
}
