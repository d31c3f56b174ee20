import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import type { Readable } from 'node:stream';
import { ImageNotFoundError, LockBusyError, RktError, TreeInUseError, UsageError, isErrno } from '../errors.js';
import { parseImageManifest } from '../appc/image-manifest.js';
import type { ImageManifest, Label } from '../appc/types.js';
import { log } from '../log.js';
import { fsyncDir } from '../util/atomic.js';
import { FileLock } from '../util/lock.js';
import { StoreDb, type ImageRow, type RemoteRow } from './db.js';
import { StoreLayout } from './layout.js';

export interface ImageInfo extends ImageRow {
  labels: Label[];
  /** Bytes of rendered trees of this image in the tree store. */
  treeSize: number;
}

export interface ImportResult {
  id: string;
  manifest: ImageManifest;
  /** The blob was already in the store; nothing new was written. */
  existed: boolean;
}

export interface StagedImage {
  id: string;
  manifest: ImageManifest;
  manifestJson: Buffer;
  size: number;
  tmp: string;
}

export const ID_PREFIX = 'sha512-';
const FULL_ID = /^sha512-[0-9a-f]{128}$/;

function syncFile(file: string): void {
  const fd = fs.openSync(file, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The content-addressed image store: blobs of uncompressed ACIs named by
 * their sha512, and an SQLite index of what they are. A blob is made durable
 * before its index row exists, so a crash never lists a half image; a blob
 * without a row is an orphan that gc removes.
 */
export class Store {
  readonly layout: StoreLayout;
  readonly db: StoreDb;

  private constructor(dataDir: string, readonly readonly: boolean) {
    this.layout = new StoreLayout(dataDir);
    if (!readonly) {
      // rendered trees keep setuid files and device nodes: only root may reach them
      fs.mkdirSync(this.layout.cas, { recursive: true, mode: 0o700 });
      for (const d of [this.layout.blobDir, this.layout.tmpDir, this.layout.dbDir, this.layout.treeDir, this.layout.imageLockDir, this.layout.treeLockDir]) {
        fs.mkdirSync(d, { recursive: true, mode: 0o700 });
      }
    }
    this.db = new StoreDb(this.layout.dbFile, readonly);
  }

  /** A read-only store does not create the data dir: listing an empty machine writes nothing. */
  static open(dataDir: string, opts: { readonly?: boolean } = {}): Store {
    try {
      return new Store(dataDir, opts.readonly ?? false);
    } catch (err) {
      if (isErrno(err, 'EACCES') || isErrno(err, 'EPERM')) {
        throw new RktError(`cannot open the image store in ${dataDir}: permission denied; run as root or pass --dir`);
      }
      throw err;
    }
  }

  close(): void {
    this.db.close();
  }

  /**
   * First half of an import: hash, validate and spool the uncompressed ACI
   * into the store's temp dir. Nothing is listed until commit(), so the
   * caller can verify the signature against the manifest's name in between.
   */
  async stage(source: Readable): Promise<StagedImage> {
    const tmp = path.join(this.layout.tmpDir, `import-${process.pid}-${crypto.randomBytes(6).toString('hex')}`);
    const sink = fs.createWriteStream(tmp, { flags: 'wx', mode: 0o644 });
    const closed = new Promise<void>((resolve) => sink.once('close', () => resolve()));
    try {
      // the validating importer (tar parsing, hashing) loads only when an image comes in
      const { importAci } = await import('../image/import.js');
      const result = await importAci(source, sink);
      if (!sink.closed) {
        sink.end();
        await closed;
      }
      syncFile(tmp);
      return { ...result, tmp };
    } catch (err) {
      sink.destroy();
      await closed;
      fs.rmSync(tmp, { force: true });
      throw err;
    }
  }

  discard(staged: StagedImage): void {
    fs.rmSync(staged.tmp, { force: true });
  }

  /** Second half: move the blob into place (once, whoever else imports it now) and index it. */
  commit(staged: StagedImage, opts: { latest?: boolean; remote?: Omit<RemoteRow, 'downloadTime'> } = {}): ImportResult {
    const { id, manifest, manifestJson, size, tmp } = staged;
    const blob = this.layout.blob(id);
    const lock = FileLock.acquire(this.layout.imageLock(id), 'exclusive');
    try {
      let existed = false;
      if (fs.existsSync(blob)) {
        existed = this.db.getImage(id) !== undefined;
        fs.rmSync(tmp, { force: true });
      } else {
        fs.mkdirSync(path.dirname(blob), { recursive: true });
        fs.renameSync(tmp, blob);
        fsyncDir(path.dirname(blob));
      }
      const now = Date.now();
      this.db.insertImage(
        { id, name: manifest.name, manifest: manifestJson.toString('utf8'), size, importTime: now, lastUsed: now, latest: opts.latest ?? false },
        manifest.labels ?? [],
        opts.remote && { ...opts.remote, downloadTime: now },
      );
      log().debug({ id, name: manifest.name, existed }, 'image stored');
      return { id, manifest, existed };
    } finally {
      lock.release();
    }
  }

  /** Stage and commit in one go, for images that need no verification. */
  async importAci(source: Readable, opts: { latest?: boolean } = {}): Promise<ImportResult> {
    return this.commit(await this.stage(source), opts);
  }

  /**
   * Renew what the store remembers of a URL whose image it already has (a
   * 304, or a fresh max-age): one statement, under the image's lock so that
   * no removal of the image runs in between. A new image's URL is recorded
   * by commit(), in the same transaction as the image.
   */
  recordRemote(url: string, imageId: string, etag: string | undefined, cacheMaxAge: number | undefined): void {
    const lock = FileLock.acquire(this.layout.imageLock(imageId), 'exclusive');
    try {
      if (this.db.getImage(imageId)) this.db.setRemote(url, imageId, etag, cacheMaxAge, Date.now());
    } finally {
      lock.release();
    }
  }

  getImage(id: string): ImageInfo | undefined {
    const row = this.db.getImage(id);
    return row && this.info(row);
  }

  private info(row: ImageRow): ImageInfo {
    return { ...row, labels: this.db.labels(row.id), treeSize: this.db.treeSizeOf(row.id) };
  }

  listImages(): ImageInfo[] {
    return this.db.listImages().map((r) => this.info(r));
  }

  manifest(id: string): ImageManifest {
    const row = this.db.getImage(id);
    if (!row) throw new ImageNotFoundError(`image ${id} is not in the store`);
    return parseImageManifest(row.manifest);
  }

  blobPath(id: string): string {
    return this.layout.blob(id);
  }

  /** Resolve a full ID or a unique prefix of one ("sha512-0123abcd"). */
  resolveIdPrefix(prefix: string): string {
    if (!prefix.startsWith(ID_PREFIX)) throw new UsageError(`"${prefix}" is not an image ID; IDs start with ${ID_PREFIX}`);
    if (FULL_ID.test(prefix)) {
      if (!this.db.getImage(prefix)) throw new ImageNotFoundError(`image ${prefix} is not in the store; fetch it first`);
      return prefix;
    }
    if (!/^sha512-[0-9a-f]*$/.test(prefix)) throw new UsageError(`"${prefix}" is not a valid image ID: only lowercase hex digits may follow ${ID_PREFIX}`);
    const rows = this.db.imagesWithPrefix(prefix);
    if (rows.length === 0) throw new ImageNotFoundError(`no image with ID ${prefix} in the store; see "rkt image list"`);
    if (rows.length > 1) throw new UsageError(`image ID ${prefix} is ambiguous (${rows.length} images match); give more digits`);
    return rows[0]!.id;
  }

  /** Images of that name whose labels include all the given ones, newest import last. */
  findByName(name: string, labels: Label[] = []): ImageInfo[] {
    return this.db
      .imagesByName(name)
      .map((r) => this.info(r))
      .filter((img) => labels.every((want) => img.labels.some((l) => l.name === want.name && l.value === want.value)));
  }

  touch(id: string): void {
    if (!this.readonly) this.db.touchImage(id, Date.now());
  }

  /**
   * Remove an image, its rendered trees and its blob. Fails if a running pod
   * holds one of its trees (by its lock) or if `pinned` names one: the trees
   * of pods that hold no lock yet still need them (a prepared pod, an exited
   * one that can still be exported), which only the caller can see.
   */
  removeImage(id: string, pinned: ReadonlySet<string> = new Set()): void {
    const lock = FileLock.acquire(this.layout.imageLock(id), 'exclusive', { wait: false, what: `image ${id}` });
    try {
      const trees = this.db.treesOf(id);
      const held = trees.find((t) => pinned.has(t.id));
      if (held) throw new TreeInUseError(held.id);
      for (const tree of trees) this.removeTree(tree.id);
      this.db.deleteImage(id);
      fs.rmSync(this.layout.blob(id), { force: true });
    } finally {
      lock.release();
      fs.rmSync(this.layout.imageLock(id), { force: true });
    }
  }

  /** Remove a rendered tree unless a pod uses it (pods hold its lock shared). */
  removeTree(treeId: string): void {
    let lock: FileLock;
    try {
      lock = FileLock.acquire(this.layout.treeLock(treeId), 'exclusive', { wait: false, what: `rendered image ${treeId}` });
    } catch (err) {
      throw new TreeInUseError(treeId, { cause: err });
    }
    try {
      this.db.deleteTree(treeId);
      fs.rmSync(this.layout.tree(treeId), { recursive: true, force: true });
    } finally {
      lock.release();
    }
  }

  /** Remove temp files of dead imports and blobs that no index row names (left by a crash). */
  removeOrphans(): { tmp: number; blobs: number } {
    let tmp = 0;
    let blobs = 0;
    for (const name of fs.readdirSync(this.layout.tmpDir)) {
      const pid = Number(/^(?:import|render)-(\d+)-/.exec(name)?.[1]);
      if (pid && pid !== process.pid && processAlive(pid)) continue;
      fs.rmSync(path.join(this.layout.tmpDir, name), { recursive: true, force: true });
      tmp++;
    }
    for (const fan of fs.readdirSync(this.layout.blobDir)) {
      for (const id of fs.readdirSync(path.join(this.layout.blobDir, fan))) {
        if (this.db.getImage(id)) continue;
        // an import between rename and index insert holds the image lock
        let lock: FileLock;
        try {
          lock = FileLock.acquire(this.layout.imageLock(id), 'exclusive', { wait: false });
        } catch (err) {
          if (err instanceof LockBusyError) continue;
          throw err;
        }
        try {
          if (!this.db.getImage(id)) {
            fs.rmSync(path.join(this.layout.blobDir, fan, id), { force: true });
            blobs++;
          }
        } finally {
          lock.release();
        }
      }
    }
    return { tmp, blobs };
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return isErrno(err, 'EPERM');
  }
}
