import type { Command } from 'commander';
import { globalsOf } from './context.js';
import { shortImageId } from './output.js';

export function register(program: Command): void {
  program
    .command('fetch')
    .description('fetch image(s) and store them in the local store')
    .argument('<image...>', 'image file, file:// URL, image ID or name')
    .option('--signature <file>', 'local signature file to use in validating the preceding image')
    .option('--pull-policy <policy>', 'when to pull an image: never, new or update', 'new')
    .option('--full', 'print the full image hash after fetching', false)
    .action(async (images: string[], opts: { signature?: string; pullPolicy: string; full: boolean }, cmd: Command) => {
      const globals = globalsOf(cmd);
      const { Store } = await import('../store/store.js');
      const { fetchImage, parsePullPolicy } = await import('../fetch/fetch.js');
      const pullPolicy = parsePullPolicy(opts.pullPolicy);
      const store = Store.open(globals.dir);
      try {
        for (const [i, image] of images.entries()) {
          const id = await fetchImage(store, globals, image, { signature: i === 0 ? opts.signature : undefined, pullPolicy });
          process.stdout.write(`${opts.full ? id : shortImageId(id)}\n`);
        }
      } finally {
        store.close();
      }
    });
}
