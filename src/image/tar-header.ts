// Strict decoding of raw tar header blocks.
//
// Validation parses an archive with tar-stream while GNU tar extracts the same
// bytes. Two parsers reading one byte stream is the classic way to smuggle an
// entry past a validator: a size field one parser reads differently, a header
// type one of them skips, a pax keyword only one of them honours. So every
// header tar-stream reports is decoded again here, from its raw bytes, by
// rules strict enough that GNU tar can only agree; the checker refuses the
// archive when the two readings differ or the bytes are anything but plain.

import { quote } from '../errors.js';

export const BLOCK = 512;

export interface RawHeader {
  /** The typeflag byte as a character ('\0' for old-style regular files). */
  typeflag: string;
  name: string;
  linkname: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  devmajor: number;
  devminor: number;
  /** True for POSIX ustar ("ustar\0"), whose prefix field extends the name. */
  ustar: boolean;
}

/** Why a header block was refused; the checker adds the entry and the image. */
export class TarHeaderError extends Error {}

export function padded(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

export function isZeroBlock(buf: Buffer, start = 0, end = start + BLOCK): boolean {
  for (let i = start; i < end; i++) if (buf[i] !== 0) return false;
  return true;
}

/** A NUL-terminated (or field-filling) string, decoded as UTF-8 like both readers do. */
function cstring(buf: Buffer, start: number, len: number): string {
  let end = start;
  while (end < start + len && buf[end] !== 0) end++;
  return buf.toString('utf8', start, end);
}

function bytesEqual(buf: Buffer, start: number, text: string): boolean {
  for (let i = 0; i < text.length; i++) if (buf[start + i] !== text.charCodeAt(i)) return false;
  return true;
}

/**
 * A numeric header field: octal digits after optional spaces, ended by NUL or
 * space; or GNU base-256 for big values. Anything looser (leading NULs, stray
 * characters) is refused because tar implementations disagree about it.
 */
export function parseNumeric(buf: Buffer, start: number, len: number, field: string): number {
  const first = buf[start]!;
  if (first === 0x80) {
    let v = 0;
    for (let i = start + 1; i < start + len; i++) v = v * 256 + buf[i]!;
    if (!Number.isSafeInteger(v)) throw new TarHeaderError(`${field} field is too large`);
    return v;
  }
  if (first & 0x80) throw new TarHeaderError(`${field} field holds a negative base-256 number`);
  let i = start;
  const end = start + len;
  while (i < end && buf[i] === 0x20) i++;
  let v = 0;
  let digits = 0;
  for (; i < end && buf[i]! >= 0x30 && buf[i]! <= 0x37; i++, digits++) v = v * 8 + (buf[i]! - 0x30);
  for (; i < end; i++) {
    if (buf[i] !== 0 && buf[i] !== 0x20) throw new TarHeaderError(`${field} field is not an octal number`);
  }
  if (digits === 0 && field === 'size' && !isZeroBlock(buf, start, end)) {
    throw new TarHeaderError('size field is blank');
  }
  return v;
}

function checksumOk(block: Buffer): boolean {
  let sum = 8 * 0x20;
  for (let i = 0; i < 148; i++) sum += block[i]!;
  for (let i = 156; i < BLOCK; i++) sum += block[i]!;
  return sum === parseNumeric(block, 148, 8, 'checksum');
}

/**
 * Decode one 512-byte header block. Refuses what either parser might misread.
 * `verifyChecksum` may be off only when tar-stream has verified this very block.
 */
export function parseHeaderBlock(block: Buffer, verifyChecksum = true): RawHeader {
  if (block.length !== BLOCK) throw new TarHeaderError('short header block');
  if (verifyChecksum && !checksumOk(block)) throw new TarHeaderError('header checksum mismatch (corrupt archive)');
  const ustar = bytesEqual(block, 257, 'ustar\0');
  if (!ustar && !bytesEqual(block, 257, 'ustar  \0')) {
    throw new TarHeaderError('header is neither POSIX ustar nor GNU format (old v7 archives are not supported)');
  }
  let name = cstring(block, 0, 100);
  if (ustar && block[345] !== 0) name = `${cstring(block, 345, 155)}/${name}`;
  return {
    typeflag: String.fromCharCode(block[156]!),
    name,
    linkname: cstring(block, 157, 100),
    mode: parseNumeric(block, 100, 8, 'mode'),
    uid: parseNumeric(block, 108, 8, 'uid'),
    gid: parseNumeric(block, 116, 8, 'gid'),
    size: parseNumeric(block, 124, 12, 'size'),
    devmajor: parseNumeric(block, 329, 8, 'devmajor'),
    devminor: parseNumeric(block, 337, 8, 'devminor'),
    ustar,
  };
}

// Keywords GNU tar acts on and tar-stream ignores would let the extracted
// tree differ from the validated one (sparse maps rename and resize files,
// SCHILY.devmajor changes device numbers), so only these are accepted.
const PAX_KEYS = new Set([
  'path', 'linkpath', 'size', 'uid', 'gid', 'uname', 'gname', 'mtime', 'atime', 'ctime',
  'comment', 'charset', 'hdrcharset', 'SCHILY.dev', 'SCHILY.ino', 'SCHILY.nlink', 'SCHILY.fflags',
  'SCHILY.acl.access', 'SCHILY.acl.default', 'SCHILY.acl.ace', 'RHT.security.selinux',
]);
const PAX_PREFIXES = ['SCHILY.xattr.', 'LIBARCHIVE.'];
// A global header changes every later entry for GNU tar but not for
// tar-stream; only a harmless comment (as `git archive` writes) is allowed.
const GLOBAL_KEYS = new Set(['comment']);

/** Parse pax extended header records ("<len> <key>=<value>\n"), strictly. */
export function parsePax(data: Buffer, global: boolean): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    const sp = data.indexOf(0x20, pos);
    const lenText = sp === -1 ? '' : data.subarray(pos, sp).toString('latin1');
    if (!/^[1-9][0-9]{0,8}$/.test(lenText)) throw new TarHeaderError('malformed pax header record length');
    const end = pos + Number(lenText);
    if (end > data.length || data[end - 1] !== 0x0a) throw new TarHeaderError('malformed pax header record');
    const record = data.subarray(sp + 1, end - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq <= 0) throw new TarHeaderError('malformed pax header record (no key)');
    const key = record.slice(0, eq);
    const value = record.slice(eq + 1);
    const allowed = global ? GLOBAL_KEYS.has(key) : PAX_KEYS.has(key) || PAX_PREFIXES.some((p) => key.startsWith(p));
    if (!allowed) throw new TarHeaderError(`unsupported pax ${global ? 'global ' : ''}header keyword ${quote(key)}`);
    if (key === 'hdrcharset' && value !== 'ISO-IR 10646 2000 UTF-8') {
      throw new TarHeaderError(`unsupported pax hdrcharset ${quote(value)} (names must be UTF-8)`);
    }
    if (out.has(key)) throw new TarHeaderError(`pax header keyword ${quote(key)} is repeated`);
    out.set(key, value);
    pos = end;
  }
  return out;
}

/** What the blocks between two entries, plus the entry's own header, say. */
export interface DecodedEntry {
  /** Offset of the entry's own header block, relative to the buffer given. */
  headerAt: number;
  raw: RawHeader;
  name: string;
  linkname: string;
  size: number;
}

/** Header types that carry the name or attributes of the entry that follows. */
const META = new Set(['x', 'g', 'L', 'K']);

/**
 * Walk from the end of the previous entry's data to the next entry header,
 * through any pax ('x', 'g') and GNU long name ('L', 'K') blocks, and work out
 * the entry's effective name, link name and size. `buf` starts at that end.
 * The entry's own checksum is left to the caller, who must confirm that
 * tar-stream (which verified it) read its header from the same offset.
 */
export function decodeEntry(buf: Buffer): DecodedEntry {
  let pos = 0;
  let pax: Map<string, string> | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;
  for (;;) {
    if (pos + BLOCK > buf.length) throw new TarHeaderError('entry header not where expected (malformed archive)');
    if (isZeroBlock(buf, pos)) throw new TarHeaderError('entry found after the end-of-archive marker');
    const meta = String.fromCharCode(buf[pos + 156]!);
    const raw = parseHeaderBlock(buf.subarray(pos, pos + BLOCK), META.has(meta));
    if (!META.has(meta)) {
      const name = pax?.get('path') ?? longName ?? raw.name;
      const linkname = pax?.get('linkpath') ?? longLink ?? raw.linkname;
      let size = raw.size;
      const paxSize = pax?.get('size');
      if (paxSize !== undefined) {
        if (!/^[0-9]{1,15}$/.test(paxSize)) throw new TarHeaderError(`pax size ${quote(paxSize)} is not a number`);
        size = Number(paxSize);
      }
      for (const [what, v] of [['name', name], ['link name', linkname]] as const) {
        if (v.includes('\0')) throw new TarHeaderError(`${what} contains a NUL byte`);
      }
      return { headerAt: pos, raw, name, linkname, size };
    }
    const dataStart = pos + BLOCK;
    const dataEnd = dataStart + raw.size;
    if (dataEnd > buf.length) throw new TarHeaderError('extended header not where expected (malformed archive)');
    const data = buf.subarray(dataStart, dataEnd);
    if (meta === 'x' || meta === 'g') {
      const records = parsePax(data, meta === 'g');
      if (meta === 'x') {
        if (pax) throw new TarHeaderError('two pax headers for one entry');
        pax = records;
      }
    } else {
      // Both parsers read a GNU long name up to its first NUL.
      const value = cstring(data, 0, data.length);
      if (meta === 'L') {
        if (longName !== undefined) throw new TarHeaderError('two GNU long names for one entry');
        longName = value;
      } else {
        if (longLink !== undefined) throw new TarHeaderError('two GNU long link names for one entry');
        longLink = value;
      }
    }
    if ((pax?.has('path') && longName !== undefined) || (pax?.has('linkpath') && longLink !== undefined)) {
      throw new TarHeaderError('entry has both a pax and a GNU long name');
    }
    pos += BLOCK + padded(raw.size);
  }
}

/** Input bytes kept from the end of the last entry's data onwards. */
export class ByteWindow {
  private chunks: Buffer[] = [];
  base = 0;
  length = 0;

  append(chunk: Buffer, offset: number): void {
    if (this.length === 0) {
      if (offset + chunk.length <= this.base) return;
      const skip = Math.max(0, this.base - offset);
      this.base = offset + skip;
      chunk = chunk.subarray(skip);
    }
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  discardBefore(offset: number): void {
    if (offset >= this.base + this.length) {
      this.chunks = [];
      this.base = offset;
      this.length = 0;
      return;
    }
    while (offset > this.base) {
      const first = this.chunks[0]!;
      const drop = Math.min(first.length, offset - this.base);
      if (drop === first.length) this.chunks.shift();
      else this.chunks[0] = first.subarray(drop);
      this.base += drop;
      this.length -= drop;
    }
  }

  read(from: number, to: number): Buffer {
    if (from < this.base || to > this.base + this.length) throw new Error('internal: tar bytes no longer retained');
    // Copy only the range asked for: the window often ends in a large chunk.
    const parts: Buffer[] = [];
    let at = this.base;
    for (const c of this.chunks) {
      const s = Math.max(from, at);
      const e = Math.min(to, at + c.length);
      if (s < e) parts.push(c.subarray(s - at, e - at));
      at += c.length;
      if (at >= to) break;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  allZero(): boolean {
    return this.chunks.every((c) => isZeroBlock(c, 0, c.length));
  }
}
