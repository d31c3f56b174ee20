import { UsageError } from '../errors.js';
import type { AppSpec } from './app-spec.js';

// What an entered command runs as, when the caller asks for something other
// than its app's: the enter entrypoint's --working-dir, --user, --group,
// --supplementary-gids and --environment options (docs/stage1-interface.md).
// The OCI front's exec passes them (a process.json names its own env, cwd and
// user); `rkt enter` does not. The environment comes through the
// entrypoint's own environment, not its command line, which every host user
// can read.

export const ENTER_ENV_VAR = 'RKT_STAGE1_ENTER_ENVIRONMENT';

export interface EnterProcess {
  env?: { name: string; value: string }[];
  workingDirectory?: string;
  uid?: number;
  gid?: number;
  supplementaryGids?: number[];
}

export const ENTER_PROCESS_FLAGS = ['working-dir', 'user', 'group', 'supplementary-gids'];

function id(text: string, flag: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 0xfffffffe) throw new UsageError(`--${flag}=${text} is not a numeric id`);
  return n;
}

/** The options of an enter entrypoint's command line (and, with --environment, its environment variable). */
export function parseEnterProcess(values: ReadonlyMap<string, string>, environment: boolean, env: NodeJS.ProcessEnv = process.env): EnterProcess {
  const out: EnterProcess = {};
  const cwd = values.get('working-dir');
  if (cwd !== undefined) {
    if (!cwd.startsWith('/')) throw new UsageError(`--working-dir=${cwd} must be an absolute path`);
    out.workingDirectory = cwd;
  }
  if (values.has('user')) out.uid = id(values.get('user')!, 'user');
  if (values.has('group')) out.gid = id(values.get('group')!, 'group');
  const gids = values.get('supplementary-gids');
  if (gids !== undefined) out.supplementaryGids = gids === '' ? [] : gids.split(',').map((g) => id(g, 'supplementary-gids'));
  if (environment) {
    const text = env[ENTER_ENV_VAR];
    if (text === undefined) throw new UsageError(`--environment: ${ENTER_ENV_VAR} is not set`);
    let list: unknown;
    try {
      list = JSON.parse(text);
    } catch {
      list = undefined;
    }
    if (!Array.isArray(list) || list.some((e) => typeof e !== 'string' || e.indexOf('=') <= 0)) throw new UsageError(`${ENTER_ENV_VAR} must be a JSON list of "NAME=VALUE" strings`);
    out.env = (list as string[]).map((e) => ({ name: e.slice(0, e.indexOf('=')), value: e.slice(e.indexOf('=') + 1) }));
  }
  return out;
}

/** The app's spec with what the caller asked for in its place. */
export function enteredAs<T extends Pick<AppSpec, 'env' | 'workingDirectory' | 'uid' | 'gid' | 'supplementaryGids'>>(spec: T, p: EnterProcess): T {
  return {
    ...spec,
    ...(p.env && { env: p.env }),
    ...(p.workingDirectory !== undefined && { workingDirectory: p.workingDirectory }),
    ...(p.uid !== undefined && { uid: p.uid }),
    ...(p.gid !== undefined && { gid: p.gid }),
    ...(p.supplementaryGids && { supplementaryGids: p.supplementaryGids }),
  };
}

/** The entrypoint's options for p, and the variable its environment travels in. */
export function enterProcessArgs(p: EnterProcess): { flags: string[]; env: NodeJS.ProcessEnv } {
  const flags = [
    ...(p.workingDirectory !== undefined ? [`--working-dir=${p.workingDirectory}`] : []),
    ...(p.uid !== undefined ? [`--user=${p.uid}`] : []),
    ...(p.gid !== undefined ? [`--group=${p.gid}`] : []),
    ...(p.supplementaryGids ? [`--supplementary-gids=${p.supplementaryGids.join(',')}`] : []),
    ...(p.env ? ['--environment'] : []),
  ];
  return { flags, env: p.env ? { [ENTER_ENV_VAR]: JSON.stringify(p.env.map((e) => `${e.name}=${e.value}`)) } : {} };
}
