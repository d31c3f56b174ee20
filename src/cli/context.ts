import type { Command } from 'commander';
import { DEFAULT_DIR, DEFAULT_LOCAL_CONFIG, DEFAULT_SYSTEM_CONFIG, defaultUserConfig, type GlobalOptions } from '../config/global.js';
import { parseInsecureOptions } from '../config/insecure.js';

interface RawGlobals {
  dir?: string;
  localConfig?: string;
  systemConfig?: string;
  userConfig?: string;
  insecureOptions?: string;
  debug?: boolean;
  trustKeysFromHttps?: boolean;
}

/** The global flags, wherever on the command line they were given. */
export function globalsOf(cmd: Command): GlobalOptions {
  const raw = cmd.optsWithGlobals<RawGlobals>();
  return {
    dir: raw.dir ?? DEFAULT_DIR,
    localConfig: raw.localConfig ?? DEFAULT_LOCAL_CONFIG,
    systemConfig: raw.systemConfig ?? DEFAULT_SYSTEM_CONFIG,
    userConfig: raw.userConfig ?? defaultUserConfig(),
    insecureOptions: parseInsecureOptions(raw.insecureOptions),
    debug: raw.debug ?? false,
    trustKeysFromHttps: raw.trustKeysFromHttps ?? false,
  };
}
