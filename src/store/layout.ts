import path from 'node:path';

// rkt's on-disk layout of the content-addressed store under the data dir.
export class StoreLayout {
  readonly cas: string;
  constructor(readonly dataDir: string) {
    this.cas = path.join(dataDir, 'cas');
  }
  get blobDir(): string {
    return path.join(this.cas, 'blob', 'sha512');
  }
  /** Blobs fan out by the first two hex digits, as rkt does. */
  blob(id: string): string {
    const hex = id.slice('sha512-'.length);
    return path.join(this.blobDir, hex.slice(0, 2), id);
  }
  get tmpDir(): string {
    return path.join(this.cas, 'tmp');
  }
  get dbDir(): string {
    return path.join(this.cas, 'db');
  }
  get dbFile(): string {
    return path.join(this.dbDir, 'index.sqlite');
  }
  get treeDir(): string {
    return path.join(this.cas, 'tree');
  }
  tree(treeId: string): string {
    return path.join(this.treeDir, treeId);
  }
  get imageLockDir(): string {
    return path.join(this.cas, 'imagelocks');
  }
  imageLock(id: string): string {
    return path.join(this.imageLockDir, id);
  }
  get treeLockDir(): string {
    return path.join(this.cas, 'treestorelocks');
  }
  treeLock(treeId: string): string {
    return path.join(this.treeLockDir, treeId);
  }
}
