import type { Command } from 'commander';
import { register as version } from './version.js';

// Every subcommand registers itself here. Subcommand modules keep heavy
// imports (store, openpgp, sqlite) inside their actions so start-up stays fast.
export const COMMANDS: ((program: Command) => void)[] = [version];
