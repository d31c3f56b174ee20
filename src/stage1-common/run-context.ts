import { log } from '../log.js';
import { LOCK_FD_ENV } from '../stage1/contract.js';
import type { RunArgs } from './entry.js';

/** Say, with --debug, what a run entrypoint was given that it does not act on. */
export function noteRunContext(_flavor: string, _args: RunArgs): void {
  if (process.env[LOCK_FD_ENV] === undefined) log().debug(`${LOCK_FD_ENV} is not set: the pod directory is not locked by stage0`);
}
