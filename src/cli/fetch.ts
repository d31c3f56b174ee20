import type { Command } from 'commander';
import { globalsOf } from './context.js';

export function register(program: Command): void {
  program
    .command('fetch')
    .description('fetch image(s) and store them in the local store')
    .argument('<image...>', 'image file, file:// URL, image ID, name, or docker://, oci:, docker-archive: image')
    .option('--signature <file>', 'local signature file to use in validating the preceding image')
    .option('--pull-policy <policy>', 'when to pull an image: never, new or update', 'new')
    .option('--full', 'print the full image hash after fetching', true)
    .action(async (images: string[], opts: { signature?: string; pullPolicy: string }, cmd: Command) => {
      const globals = globalsOf(cmd);
      const { Store } = await import('../store/store.js');
      const { fetchImage, parsePullPolicy } = await import('../fetch/fetch.js');
      const pullPolicy = parsePullPolicy(opts.pullPolicy);
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
