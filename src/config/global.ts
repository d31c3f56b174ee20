import os from 'node:os';
import path from 'node:path';
import type { InsecureOptions } from './insecure.js';

/** What every subcommand receives from rkt's global flags. */
export interface GlobalOptions {
  dir: string;
  localConfig: string;
  systemConfig: string;
  userConfig: string;
  insecureOptions: InsecureOptions;
  debug: boolean;
  trustKeysFromHttps: boolean;
}

export const DEFAULT_DIR = '/var/lib/rkt';
export const DEFAULT_LOCAL_CONFIG = '/etc/rkt';
export const DEFAULT_SYSTEM_CONFIG = '/usr/lib/rkt';

export function defaultUserConfig(): string {
  const base = process.env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'rkt');
}
