import fs from 'node:fs';
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';
import type { Label } from '../appc/types.js';

const require = createRequire(import.meta.url);

export interface ImageRow {
  id: string;
  name: string;
  manifest: string;
  size: number;
  importTime: number;
  lastUsed: number;
  latest: boolean;
}

/** What the store remembers of a URL: the image it gave, its ETag and Cache-Control max-age. */
export interface RemoteRow {
  url: string;
  etag?: string;
  cacheMaxAge?: number;
  downloadTime: number;
}

export interface TreeRow {
  id: string;
  imageId: string;
  size: number;
  renderedTime: number;
}

const SCHEMA_VERSION = 1;
const SCHEMA = `
CREATE TABLE IF NOT EXISTS images (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  manifest TEXT NOT NULL,
  size INTEGER NOT NULL,
  import_time INTEGER NOT NULL,
  last_used INTEGER NOT NULL,
  latest INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS images_name ON images(name);
CREATE TABLE IF NOT EXISTS labels (
  image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  name TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (image_id, name)
);
CREATE TABLE IF NOT EXISTS trees (
  id TEXT PRIMARY KEY,
  image_id TEXT NOT NULL,
  size INTEGER NOT NULL,
  rendered_time INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS trees_image ON trees(image_id);
CREATE TABLE IF NOT EXISTS remotes (
  url TEXT PRIMARY KEY,
  image_id TEXT NOT NULL,
  etag TEXT,
  cache_max_age INTEGER,
  download_time INTEGER NOT NULL
);
`;

interface RawImage {
  id: string;
  name: string;
  manifest: string;
  size: number;
  import_time: number;
  last_used: number;
  latest: number;
}

function toImage(r: RawImage): ImageRow {
  return { id: r.id, name: r.name, manifest: r.manifest, size: r.size, importTime: r.import_time, lastUsed: r.last_used, latest: r.latest === 1 };
}

/**
 * The store index. SQLite gives atomic, crash-safe transactions across
 * processes; WAL plus a busy timeout lets many rkt processes share it.
 */
export class StoreDb {
  private readonly db: BetterSqlite3.Database;

  constructor(file: string, readonly: boolean) {
    const Database = require('better-sqlite3') as typeof BetterSqlite3;
    if (readonly && !fs.existsSync(file)) {
      this.db = new Database(':memory:');
      this.db.exec(SCHEMA);
      return;
    }
    this.db = new Database(file, { timeout: 30_000 });
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version < SCHEMA_VERSION) {
      this.db.transaction(() => {
        this.db.exec(SCHEMA);
        this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
      }).immediate();
    }
  }

  close(): void {
    this.db.close();
  }

  /** Index an image, and with `remote` the URL it came from (rkt's remote cache), in one transaction. */
  insertImage(row: ImageRow, labels: Label[], remote?: RemoteRow): void {
    this.db.transaction(() => {
      if (remote !== undefined) this.setRemote(remote.url, row.id, remote.etag, remote.cacheMaxAge, remote.downloadTime);
      const existing = this.db.prepare('SELECT id FROM images WHERE id = ?').get(row.id);
      if (existing) {
        this.db.prepare('UPDATE images SET latest = MAX(latest, ?) WHERE id = ?').run(row.latest ? 1 : 0, row.id);
        return;
      }
      this.db
        .prepare('INSERT INTO images (id, name, manifest, size, import_time, last_used, latest) VALUES (?, ?, ?, ?, ?, ?, ?)')
        .run(row.id, row.name, row.manifest, row.size, row.importTime, row.lastUsed, row.latest ? 1 : 0);
      const ins = this.db.prepare('INSERT INTO labels (image_id, name, value) VALUES (?, ?, ?)');
      for (const l of labels) ins.run(row.id, l.name, l.value);
    }).immediate();
  }

  getImage(id: string): ImageRow | undefined {
    const r = this.db.prepare('SELECT * FROM images WHERE id = ?').get(id) as RawImage | undefined;
    return r && toImage(r);
  }

  imagesWithPrefix(prefix: string): ImageRow[] {
    const rows = this.db.prepare("SELECT * FROM images WHERE substr(id, 1, ?) = ? ORDER BY import_time").all(prefix.length, prefix) as RawImage[];
    return rows.map(toImage);
  }

  imagesByName(name: string): ImageRow[] {
    return (this.db.prepare('SELECT * FROM images WHERE name = ? ORDER BY import_time').all(name) as RawImage[]).map(toImage);
  }

  labels(id: string): Label[] {
    return this.db.prepare('SELECT name, value FROM labels WHERE image_id = ? ORDER BY name').all(id) as Label[];
  }

  listImages(): ImageRow[] {
    return (this.db.prepare('SELECT * FROM images ORDER BY import_time').all() as RawImage[]).map(toImage);
  }

  touchImage(id: string, when: number): void {
    this.db.prepare('UPDATE images SET last_used = ? WHERE id = ?').run(when, id);
  }

  deleteImage(id: string): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM labels WHERE image_id = ?').run(id);
      this.db.prepare('DELETE FROM remotes WHERE image_id = ?').run(id);
      this.db.prepare('DELETE FROM images WHERE id = ?').run(id);
    }).immediate();
  }

  upsertTree(row: TreeRow): void {
    this.db
      .prepare('INSERT INTO trees (id, image_id, size, rendered_time) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET size = excluded.size, rendered_time = excluded.rendered_time')
      .run(row.id, row.imageId, row.size, row.renderedTime);
  }

  getTree(id: string): TreeRow | undefined {
    const r = this.db.prepare('SELECT id, image_id AS imageId, size, rendered_time AS renderedTime FROM trees WHERE id = ?').get(id) as TreeRow | undefined;
    return r;
  }

  treesOf(imageId: string): TreeRow[] {
    return this.db.prepare('SELECT id, image_id AS imageId, size, rendered_time AS renderedTime FROM trees WHERE image_id = ?').all(imageId) as TreeRow[];
  }

  allTrees(): TreeRow[] {
    return this.db.prepare('SELECT id, image_id AS imageId, size, rendered_time AS renderedTime FROM trees').all() as TreeRow[];
  }

  deleteTree(id: string): void {
    this.db.prepare('DELETE FROM trees WHERE id = ?').run(id);
  }

  treeSizeOf(imageId: string): number {
    const r = this.db.prepare('SELECT COALESCE(SUM(size), 0) AS s FROM trees WHERE image_id = ?').get(imageId) as { s: number };
    return r.s;
  }

  setRemote(url: string, imageId: string, etag: string | undefined, cacheMaxAge: number | undefined, when: number): void {
    this.db
      .prepare('INSERT INTO remotes (url, image_id, etag, cache_max_age, download_time) VALUES (?, ?, ?, ?, ?) ON CONFLICT(url) DO UPDATE SET image_id = excluded.image_id, etag = excluded.etag, cache_max_age = excluded.cache_max_age, download_time = excluded.download_time')
      .run(url, imageId, etag ?? null, cacheMaxAge ?? null, when);
  }

  getRemote(url: string): { imageId: string; etag?: string; cacheMaxAge?: number; downloadTime: number } | undefined {
    const r = this.db.prepare('SELECT image_id AS imageId, etag, cache_max_age AS cacheMaxAge, download_time AS downloadTime FROM remotes WHERE url = ?').get(url) as
      | { imageId: string; etag: string | null; cacheMaxAge: number | null; downloadTime: number }
      | undefined;
    return r && { imageId: r.imageId, etag: r.etag ?? undefined, cacheMaxAge: r.cacheMaxAge ?? undefined, downloadTime: r.downloadTime };
  }
}
