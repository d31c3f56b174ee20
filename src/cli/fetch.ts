import type { Command } from 'commander';
import { globalsOf } from './context.js';

export function register(program: Command): void {
  program
    .command('fetch')
    .description('fetch image(s) and store them in the local store')
    .argument('<image...>', 'image file, file:// or https:// URL, image ID, or name[:version][,label=value...] (appc discovery)')
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
      const store = Store.open(globals.dir);
      try {
        for (const [i, image] of images.entries()) {
          const id = await fetchImage(store, globals, image, { signature: i === 0 ? opts.signature : undefined, pullPolicy });
          process.stdout.write(`${id}\n`);
        }
      } finally {
        store.close();
      }
    });
}
