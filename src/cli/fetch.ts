import type { Command } from 'commander';
import { globalsOf } from './context.js';

/**
 * As in rkt, each --signature belongs to the image before it on the command
 * line (one given before any image goes with the first). commander keeps only
 * the last value, so the words are read again in order.
 */
export function signaturesByImage(words: readonly string[], images: readonly string[]): (string | undefined)[] {
  const out: (string | undefined)[] = images.map(() => undefined);
  let current = 0;
  let seen = 0;
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (w === '--') break;
    let sig: string | undefined;
    if (w.startsWith('--signature=')) sig = w.slice('--signature='.length);
    else if (w === '--signature') sig = words[++i];
    else if (!w.startsWith('-') && seen < images.length && w === images[seen]) current = seen++;
    if (sig !== undefined) out[current] = sig;
  }
  return out;
}

export function register(program: Command): void {
  program
    .command('fetch')
    .description('fetch image(s) and store them in the local store')
    .argument('<image...>', 'image file, file:// or https:// URL, image ID, name[:version][,label=value...] (appc discovery), or docker://, oci:, docker-archive: image')
    .option('--signature <file|url>', 'signature (file or URL) to use in validating the preceding image')
    .option('--pull-policy <policy>', 'when to pull an image: never, new or update', 'update')
    .option('--store-only', 'deprecated: use --pull-policy=never', false)
    .option('--no-store', 'deprecated: use --pull-policy=update')
    .option('--full', 'print the full image hash after fetching', true)
    .action(async (images: string[], opts: { signature?: string; pullPolicy: string; storeOnly: boolean; store: boolean }, cmd: Command) => {
      const globals = globalsOf(cmd);
      const { Store } = await import('../store/store.js');
      const { fetchImage } = await import('../fetch/fetch.js');
      const { pullPolicyOf } = await import('../fetch/policy.js');
      const { log } = await import('../log.js');
      const pullPolicy = pullPolicyOf({ pullPolicy: opts.pullPolicy, storeOnly: opts.storeOnly, noStore: opts.store === false }, 'update', (w) => log().warn(w));
      const root = cmd.parent as (Command & { rawArgs?: string[] }) | null;
      const words = root?.rawArgs ?? [];
      const signatures = words.includes('fetch') ? signaturesByImage(words.slice(words.indexOf('fetch') + 1), images) : [opts.signature];
      const store = Store.open(globals.dir);
      try {
        for (const [i, image] of images.entries()) {
          const id = await fetchImage(store, globals, image, { signature: signatures[i], pullPolicy });
          process.stdout.write(`${id}\n`);
        }
      } finally {
        store.close();
      }
    });
}
