// Walking a plain tar file header by header, seeking over the data: for
// indexing a `docker save` archive and for listing what a stored layer ACI
// holds, without reading the files' contents. Headers are decoded by the
// same strict rules as at import (src/image/tar-header.ts).

import fs from 'node:fs';
import { quote } from '../errors.js';
import { BLOCK, TarHeaderError, isZeroBlock, padded, parseHeaderBlock, parsePax } from '../image/tar-header.js';
import { ImageDocumentError } from './manifest.js';

const MAX_META = 1024 * 1024;

export function readAt(fd: number, pos: number, len: number, file: string): Buffer {
  const buf = Buffer.alloc(len);
  let off = 0;
  while (off < len) {
    const n = fs.readSync(fd, buf, off, len - off, pos + off);
    if (n === 0) throw new ImageDocumentError(`${file} ends in the middle of an entry; the archive is truncated`);
    off += n;
  }
  return buf;
}

export interface WalkedEntry {
  /** Normalized: no leading "./", no empty or "." components. */
  name: string;
  typeflag: string;
  dataAt: number;
  size: number;
}

/** Call `onEntry` for every entry of the tar open on `fd`, in order. */
export function walkTar(fd: number, file: string, onEntry: (e: WalkedEntry) => void): void {
  const total = fs.fstatSync(fd).size;
  let pos = 0;
  let longName: string | undefined;
  let paxPath: string | undefined;
  try {
    while (pos + BLOCK <= total) {
      const block = readAt(fd, pos, BLOCK, file);
      if (isZeroBlock(block)) break;
      const h = parseHeaderBlock(block);
      const dataAt = pos + BLOCK;
      if (h.typeflag === 'x' || h.typeflag === 'L' || h.typeflag === 'g') {
        if (h.size > MAX_META) throw new TarHeaderError('extended header larger than 1 MiB');
        const data = readAt(fd, dataAt, h.size, file);
        if (h.typeflag === 'x') paxPath = parsePax(data, false).get('path');
        else if (h.typeflag === 'L') longName = data.toString('utf8').replace(/\0.*$/s, '');
      } else {
        const name = (paxPath ?? longName ?? h.name).split('/').filter((c) => c !== '' && c !== '.').join('/');
        const size = h.typeflag === '0' || h.typeflag === '\0' || h.typeflag === '7' ? h.size : 0;
        if (dataAt + size > total) throw new ImageDocumentError(`${file} is truncated: ${quote(name)} runs past its end`);
        onEntry({ name, typeflag: h.typeflag, dataAt, size });
        paxPath = undefined;
        longName = undefined;
      }
      pos = dataAt + padded(h.size);
    }
  } catch (err) {
    if (err instanceof TarHeaderError) throw new ImageDocumentError(`${file} is not a valid tar archive: ${err.message}`);
    throw err;
  }
}
