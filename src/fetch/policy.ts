import { UsageError } from '../errors.js';

// rkt's --pull-policy, and the two flags it replaced: --store-only (now
// "never") and --no-store (now "update"), still accepted, as in rkt, with a
// deprecation warning. fetch defaults to "update", run and prepare to "new".

export type PullPolicy = 'never' | 'new' | 'update';

export interface PullFlags {
  pullPolicy?: string;
  storeOnly?: boolean;
  noStore?: boolean;
}

export function parsePullPolicy(value: string | undefined, fallback: PullPolicy = 'new'): PullPolicy {
  if (value === undefined) return fallback;
  if (value === 'new' || value === 'never' || value === 'update') return value;
  throw new UsageError(`unknown --pull-policy "${value}"; use never, new or update`);
}

/** The pull policy the flags ask for; `warn` is told about the deprecated ones. */
export function pullPolicyOf(flags: PullFlags, fallback: PullPolicy, warn: (line: string) => void): PullPolicy {
  if (flags.storeOnly && flags.noStore) throw new UsageError('both --store-only and --no-store given; use --pull-policy=never or --pull-policy=update');
  if (flags.storeOnly) {
    warn('--store-only is deprecated; use --pull-policy=never');
    return 'never';
  }
  if (flags.noStore) {
    warn('--no-store is deprecated; use --pull-policy=update');
    return 'update';
  }
  return parsePullPolicy(flags.pullPolicy, fallback);
}
