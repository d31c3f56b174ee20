import { Command, CommanderError, Option } from 'commander';
import { EXIT, RktError } from '../errors.js';
import { DEFAULT_DIR, DEFAULT_LOCAL_CONFIG, DEFAULT_SYSTEM_CONFIG, defaultUserConfig } from '../config/global.js';
import { INSECURE_WORDS } from '../config/insecure.js';
import { isDebug, reportFailure, say, setDebug } from '../log.js';
import { normalizeBooleanFlags } from './bool-flags.js';
import { COMMANDS } from './commands.js';

/** commander's "error: unknown option '--x'" in rkt's format. */
function sayCommanderError(str: string): void {
  say(str.replace(/^error: /, ''));
}

function buildProgram(): Command {
  const program = new Command('rkt');
  program
    .description('rkt, the application container runner: a virtualization-first implementation of the App Container specification')
    .option('--dir <dir>', 'rkt data directory', DEFAULT_DIR)
    .option('--local-config <dir>', 'local configuration directory', DEFAULT_LOCAL_CONFIG)
    .option('--system-config <dir>', 'system configuration directory', DEFAULT_SYSTEM_CONFIG)
    .option('--user-config <dir>', 'user configuration directory', defaultUserConfig())
    .addOption(new Option('--insecure-options <opts>', `comma-separated list of security features to disable: ${INSECURE_WORDS.join(', ')}`).default('none'))
    .option('--debug', 'print out more debug information to stderr', false)
    .option('--trust-keys-from-https', 'automatically trust gpg keys fetched from https', false)
    .showHelpAfterError('(run "rkt help" for usage)')
    .exitOverride()
    .configureOutput({ outputError: sayCommanderError });
  program.hook('preAction', (_this, action) => {
    if (action.optsWithGlobals<{ debug?: boolean }>().debug) setDebug(true);
  });
  for (const register of COMMANDS) register(program);
  program
    .command('help [command...]')
    .description('help about any command')
    .action((words: string[]) => {
      let cmd: Command = program;
      for (const w of words) {
        const sub = cmd.commands.find((c) => c.name() === w || c.aliases().includes(w));
        if (!sub) throw new RktError(`unknown command "${words.join(' ')}"; run "rkt help" for the list`);
        cmd = sub;
      }
      cmd.outputHelp();
    });
  program.commands.forEach((c) => c.exitOverride().configureOutput({ outputError: sayCommanderError }));
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  const debug = argv.includes('--debug') || argv.includes('--debug=true');
  try {
    if (argv.length <= 2) {
      program.outputHelp();
      return 0;
    }
    await program.parseAsync(normalizeBooleanFlags(program, argv));
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version displays are not errors
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help' || err.code === 'commander.version') return EXIT.ok;
      return EXIT.usage;
    }
    return reportFailure(err, { debug: debug || isDebug() });
  }
}
