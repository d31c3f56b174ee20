import { UsageError } from '../errors.js';

// rkt's --insecure-options: each word switches off one safety check.
export const INSECURE_WORDS = ['none', 'image', 'tls', 'ondisk', 'http', 'pubkey', 'capabilities', 'paths', 'seccomp', 'run-all', 'all-fetch', 'all-run', 'all'] as const;
export type InsecureWord = (typeof INSECURE_WORDS)[number];

export interface InsecureOptions {
  image: boolean;
  tls: boolean;
  ondisk: boolean;
  http: boolean;
  pubkey: boolean;
  capabilities: boolean;
  paths: boolean;
  seccomp: boolean;
  runAll: boolean;
}

const FETCH: (keyof InsecureOptions)[] = ['image', 'tls', 'http', 'pubkey'];
const RUN: (keyof InsecureOptions)[] = ['ondisk', 'capabilities', 'paths', 'seccomp', 'runAll'];

export function parseInsecureOptions(value: string | undefined): InsecureOptions {
  const opts: InsecureOptions = { image: false, tls: false, ondisk: false, http: false, pubkey: false, capabilities: false, paths: false, seccomp: false, runAll: false };
  if (!value) return opts;
  for (const raw of value.split(',')) {
    const word = raw.trim();
    if (word === '') continue;
    if (!(INSECURE_WORDS as readonly string[]).includes(word)) {
      throw new UsageError(`unknown --insecure-options value "${word}"; use one or more of: ${INSECURE_WORDS.join(', ')}`);
    }
    switch (word as InsecureWord) {
      case 'none':
        break;
      case 'all-fetch':
        for (const k of FETCH) opts[k] = true;
        break;
      case 'all-run':
        for (const k of RUN) opts[k] = true;
        break;
      case 'all':
        for (const k of [...FETCH, ...RUN]) opts[k] = true;
        break;
      case 'run-all':
        opts.runAll = true;
        break;
      default:
        opts[word as keyof InsecureOptions] = true;
    }
  }
  return opts;
}
