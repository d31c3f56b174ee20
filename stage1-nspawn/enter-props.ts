// Turning an app's unit file into systemd-run properties for rkt enter:
// every [Service] setting that shapes the process (root, credentials,
// environment, capabilities, seccomp, masked paths, limits) is kept; what
// only concerns the app's own lifecycle and streams is left out, systemd-run
// sets its own.

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

/** The `KEY=VALUE` properties for systemd-run -p, from the app's unit text. */
export function enterProperties(unit: string, opts: { term?: string | undefined } = {}): string[] {
  const out: string[] = [];
  let section = '';
  let hasTerm = false;
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
    if (NOT_CARRIED.has(key)) continue;
    const value = unescapeSpecifiers(line.slice(eq + 1));
    if (key === 'Environment' && /^"?TERM=/.test(value)) hasTerm = true;
    out.push(`${key}=${value}`);
  }
  // a terminal program needs TERM; the app's own value wins
  if (opts.term && !hasTerm && /^[A-Za-z0-9._+-]+$/.test(opts.term)) out.push(`Environment=TERM=${opts.term}`);
  return out;
}
