// Turning an app's unit file into systemd-run properties for rkt enter:
// every [Service] setting that shapes the process (root, credentials,
// environment, capabilities, seccomp, masked paths, limits) is kept; what
// only concerns the app's own lifecycle and streams is left out, systemd-run
// sets its own.

import type { EnterProcess } from '../src/stage1-common/enter-process.js';
import { environmentAssignment, MANAGER_ENVIRONMENT, unitPath } from '../src/stage1-common/units.js';

/** Settings of the app unit that do not carry over to an entered command. */
const NOT_CARRIED = new Set([
  'Type',
  'Restart',
  'ExecStart',
  'ExecStartPost',
  'ExecStopPost',
  'StandardInput',
  'StandardOutput',
  'StandardError',
  'TTYPath',
  'TTYReset',
  'TTYRows',
  'TTYColumns',
  'RootDirectoryStartOnly',
]);

/**
 * A unit file undoes "%%" when it expands specifiers; systemd-run's -p does
 * not expand them, so the generator's escaping is undone here, left to right.
 */
export function unescapeSpecifiers(v: string): string {
  return v.replace(/%%/g, '%');
}

/** systemd substitutes $VAR in a transient unit's command too; "$$" is a literal "$". */
export function escapeExecArg(word: string): string {
  return word.replace(/\$/g, '$$$$');
}

/** The unit's settings that each field of an EnterProcess replaces. */
const REPLACED: [keyof EnterProcess, string[]][] = [
  ['env', ['Environment', 'EnvironmentFile', 'UnsetEnvironment']],
  ['workingDirectory', ['WorkingDirectory']],
  ['uid', ['User']],
  ['gid', ['Group']],
  ['supplementaryGids', ['SupplementaryGroups']],
];

/** The settings for what the caller chose in place of the app's own, as the app's unit writes them. */
function processProperties(p: EnterProcess): string[] {
  const out: string[] = [];
  if (p.uid !== undefined) out.push(`User=${p.uid}`);
  if (p.gid !== undefined) out.push(`Group=${p.gid}`);
  if (p.supplementaryGids) out.push(`SupplementaryGroups=${p.supplementaryGids.join(' ')}`);
  if (p.workingDirectory !== undefined) out.push(`WorkingDirectory=${unitPath(p.workingDirectory, 'working directory')}`);
  if (p.env) {
    for (const e of p.env) out.push(`Environment=${environmentAssignment(e.name, e.value)}`);
    const own = new Set(p.env.map((e) => e.name));
    const unset = MANAGER_ENVIRONMENT.filter((n) => !own.has(n));
    if (unset.length > 0) out.push(`UnsetEnvironment=${unset.join(' ')}`);
  }
  return out.map(unescapeSpecifiers);
}

/** The `KEY=VALUE` properties for systemd-run -p, from the app's unit text (and what the caller chose instead). */
export function enterProperties(unit: string, opts: { term?: string | undefined; process?: EnterProcess } = {}): string[] {
  const replaced = new Set(REPLACED.filter(([field]) => opts.process?.[field] !== undefined).flatMap(([, keys]) => keys));
  const out: string[] = [];
  let section = '';
  for (const raw of unit.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    if (line.startsWith('[')) {
      section = line;
      continue;
    }
    if (section !== '[Service]') continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq);
    if (NOT_CARRIED.has(key) || replaced.has(key)) continue;
    out.push(`${key}=${unescapeSpecifiers(line.slice(eq + 1))}`);
  }
  if (opts.process) out.push(...processProperties(opts.process));
  const hasTerm = out.some((p) => /^Environment="?TERM=/.test(p));
  // a terminal program needs TERM; the app's own value wins
  if (opts.term && !hasTerm && /^[A-Za-z0-9._+-]+$/.test(opts.term)) out.push(`Environment=TERM=${opts.term}`);
  return out;
}
