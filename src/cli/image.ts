import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { RktError, TreeInUseError, UsageError } from '../errors.js';
import type { GlobalOptions } from '../config/global.js';
import type { Store } from '../store/store.js';
import { say } from '../log.js';
import { globalsOf } from './context.js';
import { register as registerList } from './image-list.js';

async function withStore<T>(globals: GlobalOptions, fn: (store: Store) => Promise<T> | T, readonly = false): Promise<T> {
  const { Store } = await import('../store/store.js');
  const store = Store.open(globals.dir, { readonly });
  try {
    return await fn(store);
  } finally {
    store.close();
  }
}

function prepareOutputDir(dir: string, overwrite: boolean): void {
  if (fs.existsSync(dir)) {
    if (!overwrite) throw new RktError(`${dir} already exists; choose another directory or pass --overwrite`);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  fs.mkdirSync(path.dirname(path.resolve(dir)), { recursive: true });
}

/** Move a finished staging dir to where the user asked, keeping only rootfs/ if asked. */
function publish(staging: string, dest: string, rootfsOnly: boolean): void {
  if (rootfsOnly) {
    fs.renameSync(path.join(staging, 'rootfs'), dest);
    fs.rmSync(staging, { recursive: true, force: true });
  } else {
    fs.renameSync(staging, dest);
  }
}

function stagingFor(dest: string): string {
  const abs = path.resolve(dest);
  return path.join(path.dirname(abs), `.${path.basename(abs)}.rkt-tmp-${process.pid}`);
}

/** Which image and which pods hold a tree that image rm could not remove. */
async function inUseMessage(dataDir: string, store: Store, arg: string, treeId: string): Promise<string> {
  const { Pod } = await import('../pod/pod.js');
  const { tableImageId } = await import('./output.js');
  const image = store.db.getTree(treeId)?.imageId;
  const what = image ? `image ${tableImageId(image)} (${store.manifest(image).name})` : `image ${arg}`;
  const pods = Pod.listAll(dataDir).filter((p) => p.treeIds().includes(treeId));
  if (pods.length === 0) return `${what} is in use by a pod; remove the pod first ("rkt gc")`;
  const states = pods.map((p) => p.state());
  const names = pods.map((p, i) => `${p.uuid} (${states[i]})`).join(', ');
  if (states.every((s) => s !== 'running')) return `${what} is in use by pod ${names}; remove the pod first ("rkt rm")`;
  return `${what} is in use by pod ${names}; stop and remove the pod first ("rkt stop", then "rkt rm")`;
}

export function register(program: Command): void {
  const image = program.command('image').description('operate on image(s) in the local store');
  registerList(image);

  image
    .command('rm')
    .description('remove one or more images from the local store')
    .argument('<image...>', 'image ID, ID prefix, or name')
    .action(async (args: string[], _o: unknown, cmd: Command) => {
      const globals = globalsOf(cmd);
      const { resolveStoredImages } = await import('../store/resolve.js');
      const { Pod } = await import('../pod/pod.js');
      await withStore(globals, async (store) => {
        const pinned = Pod.treesInUse(globals.dir);
        let ok = 0;
        let failed = 0;
        for (const arg of args) {
          try {
            for (const id of resolveStoredImages(store, arg)) {
              store.removeImage(id, pinned);
              process.stdout.write(`successfully removed aci for image: "${id}"\n`);
              ok++;
            }
          } catch (err) {
            if (!(err instanceof RktError)) throw err;
            say(err instanceof TreeInUseError ? await inUseMessage(globals.dir, store, arg, err.treeId) : err.message);
            failed++;
          }
        }
        if (ok > 0) process.stdout.write(`rm: ${ok} image(s) successfully removed\n`);
        if (failed > 0) throw new RktError(`rm: ${failed} image(s) failed to remove`);
      });
    });

  image
    .command('cat-manifest')
    .description('inspect and print the image manifest')
    .argument('<image>', 'image ID, ID prefix, or name')
    .option('--pretty-print', 'apply indent to format the output', true)
    .option('--no-pretty-print', 'print the manifest on one line')
    .action(async (arg: string, opts: { prettyPrint: boolean }, cmd: Command) => {
      const { resolveStoredImage } = await import('../store/resolve.js');
      await withStore(
        globalsOf(cmd),
        (store) => {
          const m = store.manifest(resolveStoredImage(store, arg));
          process.stdout.write((opts.prettyPrint ? JSON.stringify(m, null, '\t') : JSON.stringify(m)) + '\n');
        },
        true,
      );
    });

  image
    .command('export')
    .description('export a stored image to an ACI file')
    .argument('<image>', 'image ID, ID prefix, or name')
    .argument('<output>', 'ACI file to write')
    .option('--overwrite', 'overwrite the output file if it exists', false)
    .action(async (arg: string, output: string, opts: { overwrite: boolean }, cmd: Command) => {
      const { resolveStoredImage } = await import('../store/resolve.js');
      const { copyFileAtomic } = await import('../util/copy.js');
      await withStore(
        globalsOf(cmd),
        (store) => {
          const id = resolveStoredImage(store, arg);
          if (fs.existsSync(output) && !opts.overwrite) throw new RktError(`${output} already exists; choose another file or pass --overwrite`);
          copyFileAtomic(store.blobPath(id), output);
        },
        true,
      );
    });

  for (const [name, what] of [
    ['extract', 'extract a stored image to a directory'],
    ['render', 'render a stored image, with its dependencies, to a directory'],
  ] as const) {
    image
      .command(name)
      .description(what)
      .argument('<image>', 'image ID, ID prefix, or name')
      .argument('<output-dir>', 'directory to create')
      .option('--overwrite', 'overwrite the output directory if it exists', false)
      .option('--rootfs-only', 'write only the rootfs, without the manifest', false)
      .action(async (arg: string, dest: string, opts: { overwrite: boolean; rootfsOnly: boolean }, cmd: Command) => {
        if (dest === '' || path.resolve(dest) === '/') throw new UsageError('refusing to write an image over /; give an empty directory');
        const { resolveStoredImage } = await import('../store/resolve.js');
        await withStore(globalsOf(cmd), async (store) => {
          const id = resolveStoredImage(store, arg);
          prepareOutputDir(dest, opts.overwrite);
          const staging = stagingFor(dest);
          fs.rmSync(staging, { recursive: true, force: true });
          try {
            if (name === 'extract') {
              const { extractAciTar } = await import('../image/render.js');
              fs.mkdirSync(staging);
              await extractAciTar(store.blobPath(id), staging, { expectedId: id });
            } else {
              const { renderTree } = await import('../store/treestore.js');
              const { copyTree } = await import('../util/copy.js');
              const tree = await renderTree(store, id);
              await copyTree(tree.path, staging);
            }
            publish(staging, dest, opts.rootfsOnly);
          } catch (err) {
            fs.rmSync(staging, { recursive: true, force: true });
            throw err;
          }
        });
      });
  }

  image
    .command('gc')
    .description('garbage collect local store')
    .option('--grace-period <duration>', 'duration to wait since an image was last used before removing it', '24h0m0s')
    .action(async (opts: { gracePeriod: string }, cmd: Command) => {
      const { parseDuration } = await import('../util/duration.js');
      const { gcImages } = await import('../store/gc.js');
      const { Pod } = await import('../pod/pod.js');
      const grace = parseDuration(opts.gracePeriod, '--grace-period');
      const globals = globalsOf(cmd);
      await withStore(globals, (store) => {
        const report = gcImages(store, grace, Pod.treesInUse(globals.dir));
        for (const id of report.removed) process.stdout.write(`successfully removed aci for image: "${id}"\n`);
        for (const s of report.skipped) say(`kept ${s.id}: ${s.reason}`);
        process.stdout.write(`gc: ${report.removed.length} image(s) successfully removed\n`);
      });
    });
}
