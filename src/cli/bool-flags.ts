import type { Command, Option } from 'commander';
import { UsageError } from '../errors.js';

// rkt's flags are Go flags: a boolean one takes `--flag`, `--flag=true` or
// `--flag=false`, and rkt's own documentation uses all three. commander
// knows only the bare form (and `--no-flag`), so before parsing, each
// `--flag=true|false` of a boolean option of the command being run (or of
// the program) is rewritten to what commander understands. Flags commander
// does not know (the app flags run and prepare parse themselves) stay as given.

function isBoolean(o: Option): boolean {
  return !o.required && !o.optional;
}

/** The command a word list names: its subcommand words, followed as far as they go. */
function commandChain(program: Command, args: readonly string[]): Command[] {
  const chain: Command[] = [program];
  let cmd = program;
  for (const a of args) {
    if (a === '--') break;
    if (a.startsWith('-')) continue;
    const sub = cmd.commands.find((c) => c.name() === a || c.aliases().includes(a));
    if (sub === undefined) break;
    chain.push(sub);
    cmd = sub;
  }
  return chain;
}

/** argv (node, script, args...) with boolean `--flag=true|false` rewritten for commander. */
export function normalizeBooleanFlags(program: Command, argv: readonly string[]): string[] {
  const head = argv.slice(0, 2);
  const args = argv.slice(2);
  const chain = commandChain(program, args);
  const options = chain.flatMap((c) => c.options as Option[]);
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      out.push(...args.slice(i));
      break;
    }
    const m = /^(--[A-Za-z0-9][A-Za-z0-9-]*)=(true|false)$/.exec(a);
    const positive = m ? options.find((o) => o.long === m[1] && !o.negate && isBoolean(o)) : undefined;
    // rkt's own negative flags (--no-legend) are booleans too: =true is the flag, =false its absence
    const negative = m && positive === undefined ? options.find((o) => o.long === m[1] && o.negate) : undefined;
    if (negative !== undefined) {
      if (m![2] === 'true') out.push(m![1]!);
      continue;
    }
    if (m === null || positive === undefined) {
      out.push(a);
      continue;
    }
    if (m[2] === 'true') {
      out.push(m[1]!);
      continue;
    }
    // false: the negated form where the command has one, else leave it out (the option is then unset)
    const negated = options.find((o) => o.negate && o.long === `--no-${m[1]!.slice(2)}`);
    if (negated !== undefined) out.push(negated.long!);
    else if (positive.defaultValue === true) throw new UsageError(`${m[1]}=false is not supported by this command`);
  }
  return [...head, ...out];
}
