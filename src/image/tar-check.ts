// Streaming validation of an (uncompressed) ACI tar.
//
// The checker sees every byte before anything downstream acts on it: callers
// forward bytes to the store or to GNU tar only up to `approved`, the end of
// the last entry whose header passed every rule. So an extracting tar never
// holds a complete header the checker has not accepted, and a refusal can
// stop it before the offending entry touches the disk.
//
// Top-level entries other than `manifest` and `rootfs` are refused, not
// skipped: the spec says such archives are not valid, and a rendered tree
// keeps store metadata beside rootfs/, which a stray top-level file could
// collide with or impersonate.

import tar from 'tar-stream';
import type { ExtractEvents, Header } from 'tar-stream';
import { ImageFormatError, ManifestError, printable, quote } from '../errors.js';
import { parseImageManifest } from '../appc/image-manifest.js';
import type { ImageManifest } from '../appc/types.js';
import { BLOCK, ByteWindow, TarHeaderError, decodeEntry, padded, type DecodedEntry } from './tar-header.js';

export const MAX_MANIFEST_SIZE = 1024 * 1024;

/** Device nodes an image may ship, with the only numbers they may carry. */
export const SAFE_DEVICES: ReadonlyMap<string, readonly [number, number]> = new Map([
  ['rootfs/dev/null', [1, 3]],
  ['rootfs/dev/zero', [1, 5]],
  ['rootfs/dev/full', [1, 7]],
  ['rootfs/dev/random', [1, 8]],
  ['rootfs/dev/urandom', [1, 9]],
  ['rootfs/dev/tty', [5, 0]],
  ['rootfs/dev/console', [5, 1]],
  ['rootfs/dev/ptmx', [5, 2]],
]);

// Pax headers may be up to 4 MiB (tar-stream's own limit); past this much
// unparsed input the archive is either padding zeros or malformed.
const MAX_WINDOW = 64 * 1024 * 1024;

export type EntryType = 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';

export interface CheckedEntry {
  /** Normalized path: no leading "./", no empty or "." components. */
  path: string;
  /** The name as stored in the archive, for messages. */
  name: string;
  type: EntryType;
  linkname: string;
  size: number;
}

/** What the archive has declared so far, for hooks that look at the disk. */
export interface ArchiveView {
  hasDirectoryEntry(path: string): boolean;
}

export interface TarCheckOptions {
  /** How to name the image in messages (a file name or URL). */
  name?: string;
  /** Runs for each accepted entry before its bytes are approved; throw to refuse. */
  onEntry?: (entry: CheckedEntry, archive: ArchiveView) => void;
}

export interface AciCheckResult {
  manifest: ImageManifest;
  manifestJson: Buffer;
  entries: number;
}

type EntryStream = ExtractEvents['entry'][1];

// Per-path bookkeeping packed in one number, to keep a single map lookup per
// path on archives with hundreds of thousands of entries.
const CODES: Record<EntryType, number> = {
  file: 1, directory: 2, symlink: 3, link: 4, 'character-device': 5, 'block-device': 6, fifo: 7,
};
const NAMES = Object.fromEntries(Object.entries(CODES).map(([k, v]) => [v, k])) as Record<number, EntryType>;
const TYPE_MASK = 7;
const PARENT = 8;

const TYPES: Record<string, EntryType> = {
  '0': 'file', '\0': 'file', '7': 'file', '1': 'link', '2': 'symlink',
  '3': 'character-device', '4': 'block-device', '5': 'directory', '6': 'fifo',
};

const DOT_COMPONENT = /(?:^|\/)\.\.?(?:\/|$)/;

/** Normalize an archive path; returns a rule it breaks as a string instead. */
function normalize(name: string): { path: string } | { rule: string } {
  if (name === '') return { rule: 'empty name' };
  // The common case, already clean, without splitting.
  if (name[0] !== '/' && !name.includes('//') && !DOT_COMPONENT.test(name)) {
    return { path: name.endsWith('/') ? name.slice(0, -1) : name };
  }
  if (name.startsWith('/')) return { rule: 'absolute path (entries must be relative)' };
  const parts: string[] = [];
  for (const c of name.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') return { rule: 'path contains a ".." component' };
    parts.push(c);
  }
  return { path: parts.join('/') };
}

/** Lexically resolve a relative symlink target from the link's directory. */
function staysInRootfs(dir: string, target: string): boolean {
  const parts = dir.split('/');
  for (const c of target.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      parts.pop();
      if (parts.length === 0) return false;
    } else parts.push(c);
  }
  return parts[0] === 'rootfs';
}

/**
 * Feed it the uncompressed tar with write(); read `approved` to know how far
 * the bytes are safe to pass on; call finish() at the end of input.
 */
export class AciTarChecker implements ArchiveView {
  private readonly extract = tar.extract();
  private readonly image: string;
  private written = 0;
  private approvedTo = 0;
  private readonly window = new ByteWindow();
  private zerosDropped = 0;
  private failure: Error | undefined;
  private readonly waiters = new Set<(err: Error) => void>();
  private entries = 0;
  /** Every path seen, as an entry (type code) and/or as a parent (PARENT). */
  private readonly paths = new Map<string, number>();
  private manifestData: Promise<Buffer> | undefined;

  constructor(private readonly opts: TarCheckOptions = {}) {
    this.image = opts.name ?? 'image';
    this.extract.on('entry', (header, stream, next) => this.onEntry(header, stream, next));
    this.extract.on('error', (err: Error) => this.fail(this.parseError(err)));
  }

  /** Input offset up to which every byte belongs to an accepted entry. */
  get approved(): number {
    return this.approvedTo;
  }

  hasDirectoryEntry(path: string): boolean {
    return ((this.paths.get(path) ?? 0) & TYPE_MASK) === CODES.directory;
  }

  /** Resolves when the checker can take more input; rejects once the archive is refused. */
  write(chunk: Buffer): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    this.window.append(chunk, this.written);
    this.written += chunk.length;
    if (this.window.length > MAX_WINDOW) {
      // Padding is a record at most; 64 MiB of zeros is a stream that does not end (a hostile server), not an archive.
      if (!this.window.allZero()) this.fail(this.refuse(undefined, 'more than 64 MiB of headers before an entry (malformed archive)'));
      else this.fail(this.refuse(undefined, 'more than 64 MiB of zeros after the last entry (not end-of-archive padding)'));
      this.zerosDropped += this.window.length;
      this.window.discardBefore(this.written);
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.extract.write(chunk)) return this.failure ? Promise.reject(this.failure) : Promise.resolve();
    return this.waitFor('drain');
  }

  /** Call after the last write: checks the end of the archive and the manifest. */
  async finish(): Promise<AciCheckResult> {
    if (this.failure) throw this.failure;
    this.extract.end(undefined);
    await this.waitFor('finish');
    // GNU tar stops at the end-of-archive marker; anything after it would be
    // validated here but never extracted, so only zero padding may follow.
    if (!this.window.allZero()) this.fail(this.refuse(undefined, 'data after the last entry is not end-of-archive padding'));
    else if (this.zerosDropped + this.window.length < 2 * BLOCK) {
      this.fail(this.refuse(undefined, 'the end-of-archive marker is missing (the archive is truncated)'));
    } else if (!this.manifestData) this.fail(this.refuse('manifest', 'missing: an ACI must contain a manifest file'));
    else if (!this.hasDirectoryEntry('rootfs')) this.fail(this.refuse('rootfs', 'missing: an ACI must contain a rootfs/ directory'));
    if (this.failure) throw this.failure;
    const manifestJson = await this.manifestData!;
    let manifest: ImageManifest;
    try {
      manifest = parseImageManifest(manifestJson);
    } catch (err) {
      if (err instanceof ManifestError) throw this.refuse('manifest', err.message, err);
      throw err;
    }
    this.approvedTo = this.written;
    return { manifest, manifestJson, entries: this.entries };
  }

  destroy(err?: Error): void {
    this.fail(err ?? new Error('ACI validation aborted'));
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.extract.destroy(err);
    for (const w of [...this.waiters]) w(err);
  }

  private waitFor(event: 'drain' | 'finish'): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      const done = (err?: Error): void => {
        this.extract.off(event, onEvent);
        this.waiters.delete(done);
        if (err) reject(err);
        else resolve();
      };
      const onEvent = (): void => done();
      this.extract.on(event, onEvent);
      this.waiters.add(done);
    });
  }

  private refuse(entry: string | undefined, rule: string, cause?: unknown): ImageFormatError {
    // names and rules carry the archive's own bytes: shown escaped and cut
    const where = entry === undefined ? '' : `entry ${quote(entry, 200)}: `;
    return new ImageFormatError(`${this.image} is not a valid ACI: ${where}${printable(rule, 600)}`, { cause });
  }

  private parseError(err: Error): Error {
    if (err instanceof ImageFormatError) return err;
    if (/unexpected end of data/i.test(err.message)) return this.refuse(undefined, 'the tar archive is truncated', err);
    return this.refuse(undefined, `malformed tar archive (${err.message})`, err);
  }

  private onEntry(header: Header, stream: EntryStream, next: () => void): void {
    // Destroying the extractor errors the current entry stream; the failure
    // is already reported through fail().
    stream.on('error', () => undefined);
    let entry: CheckedEntry;
    let dataEnd: number;
    try {
      [entry, dataEnd] = this.examine(header);
      this.opts.onEntry?.(entry, this);
    } catch (err) {
      stream.resume();
      this.fail(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    this.record(entry);
    this.approvedTo = dataEnd;
    this.window.discardBefore(dataEnd);
    if (entry.path === 'manifest') {
      const chunks: Buffer[] = [];
      stream.on('data', (c) => {
        chunks.push(c as Buffer);
      });
      this.manifestData = new Promise((resolve, reject) => {
        stream.on('end', () => resolve(Buffer.concat(chunks)));
        stream.on('error', reject);
      });
      this.manifestData.catch(() => undefined);
    } else {
      stream.resume();
    }
    next();
  }

  private examine(header: Header): [CheckedEntry, number] {
    const label = header.name;
    const dataAt = (header as { byteOffset?: unknown }).byteOffset;
    if (typeof dataAt !== 'number') throw new Error('internal: tar-stream did not report entry offsets');
    if (this.zerosDropped > 0) throw this.refuse(label, 'entry found after the end-of-archive marker');
    const gapStart = this.window.base;
    let d: DecodedEntry;
    try {
      d = decodeEntry(this.window.read(gapStart, dataAt));
    } catch (err) {
      if (err instanceof TarHeaderError) throw this.refuse(label, err.message);
      throw err;
    }
    const type = TYPES[d.raw.typeflag];
    if (gapStart + d.headerAt + BLOCK !== dataAt || d.name !== header.name || d.linkname !== (header.linkname ?? '') || d.size !== header.size) {
      throw this.refuse(label, 'tar readers disagree about this header (ambiguous or malformed archive)');
    }
    if (!type) throw this.refuse(label, `unsupported tar entry type ${quote(d.raw.typeflag)}`);
    // Old tars mark directories by a trailing slash on a regular-file entry;
    // readers disagree on that, so it is refused rather than guessed.
    if (type === 'file' && d.name.endsWith('/')) throw this.refuse(label, 'regular file entry with a directory name');
    const expectType = d.raw.typeflag === '7' ? 'contiguous-file' : type;
    if (header.type !== expectType) throw this.refuse(label, 'tar readers disagree about the entry type');
    if (type !== 'file' && d.size !== 0) throw this.refuse(label, `a ${type} entry must not carry data (${d.size} bytes)`);
    const norm = normalize(d.name);
    if ('rule' in norm) throw this.refuse(label, norm.rule);
    const entry: CheckedEntry = { path: norm.path, name: d.name, type, linkname: d.linkname, size: d.size };
    this.checkRules(entry, d);
    return [entry, dataAt + padded(d.size)];
  }

  private checkRules(e: CheckedEntry, d: DecodedEntry): void {
    const { path: p, name, type } = e;
    if (p === '') {
      if (type !== 'directory') throw this.refuse(name, 'the archive root must be a directory');
      return;
    }
    const known = this.paths.get(p) ?? 0;
    if (known & TYPE_MASK) throw this.refuse(name, 'duplicate entry (an ACI must not list a path twice)');
    const top = p.split('/', 1)[0]!;
    if (p === 'manifest') {
      if (type !== 'file') throw this.refuse(name, `the manifest must be a regular file, not a ${type}`);
      if (e.size > MAX_MANIFEST_SIZE) throw this.refuse(name, `the manifest is ${e.size} bytes; the limit is 1 MiB`);
      return;
    }
    if (p === 'rootfs') {
      if (type !== 'directory') throw this.refuse(name, `rootfs must be a directory, not a ${type}`);
      return;
    }
    if (top !== 'rootfs') {
      throw this.refuse(name, `unexpected top-level path ${quote(top)}: an ACI holds only "manifest" and "rootfs/"`);
    }
    // Walk up until a directory already known to be sound.
    for (let q = p, i = q.lastIndexOf('/'); i > 0; i = q.lastIndexOf('/')) {
      q = q.slice(0, i);
      const k = this.paths.get(q) ?? 0;
      if (k & PARENT) break;
      const t = k & TYPE_MASK;
      if (t === CODES.symlink) throw this.refuse(name, `path passes through ${quote(q)}, a symlink earlier in the archive`);
      if (t && t !== CODES.directory) throw this.refuse(name, `parent ${quote(q)} is a ${NAMES[t]}, not a directory`);
    }
    if (type !== 'directory' && known & PARENT) {
      throw this.refuse(name, 'replaces a directory that earlier entries were written into');
    }
    switch (type) {
      case 'symlink':
        if (e.linkname === '') throw this.refuse(name, 'symlink has an empty target');
        // Absolute targets resolve inside the rootfs when the app runs, and
        // nothing is ever written through a symlink while extracting.
        if (!e.linkname.startsWith('/') && !staysInRootfs(p.slice(0, p.lastIndexOf('/')), e.linkname)) {
          throw this.refuse(name, `symlink target ${quote(e.linkname)} resolves outside rootfs/`);
        }
        break;
      case 'link': {
        const t = normalize(e.linkname);
        if ('rule' in t || !t.path.startsWith('rootfs/') || ((this.paths.get(t.path) ?? 0) & TYPE_MASK) !== CODES.file) {
          throw this.refuse(name, `hard link target ${quote(e.linkname)} is not an earlier regular file inside rootfs/`);
        }
        break;
      }
      case 'character-device': {
        const want = SAFE_DEVICES.get(p);
        if (!want || want[0] !== d.raw.devmajor || want[1] !== d.raw.devminor) {
          const allowed = [...SAFE_DEVICES.keys()].map((k) => k.slice('rootfs/dev/'.length)).join(', ');
          throw this.refuse(name, `character device ${d.raw.devmajor}:${d.raw.devminor} is not allowed (only the standard ${allowed} in rootfs/dev/)`);
        }
        break;
      }
      case 'block-device':
        throw this.refuse(name, 'block devices are not allowed in an ACI');
      default:
        break;
    }
  }

  private record(e: CheckedEntry): void {
    this.entries++;
    if (e.path === '') return;
    this.paths.set(e.path, (this.paths.get(e.path) ?? 0) | CODES[e.type]);
    for (let q = e.path, i = q.lastIndexOf('/'); i > 0; i = q.lastIndexOf('/')) {
      q = q.slice(0, i);
      const k = this.paths.get(q) ?? 0;
      if (k & PARENT) break;
      this.paths.set(q, k | PARENT);
    }
  }
}

/** Validate a whole uncompressed ACI tar stream without keeping it. */
export async function checkAciTar(source: AsyncIterable<Buffer>, opts: TarCheckOptions = {}): Promise<AciCheckResult> {
  const checker = new AciTarChecker(opts);
  try {
    for await (const chunk of source) await checker.write(chunk);
    return await checker.finish();
  } catch (err) {
    checker.destroy(err instanceof Error ? err : undefined);
    throw err;
  }
}
