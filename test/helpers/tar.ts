import tar from 'tar-stream';

// Tar archives built byte by byte for tests of the ACI checker, as an
// attacker would build them: with tar-stream's pack, or header by header.

export interface Entry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  data?: string | Buffer;
  linkname?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string>;
}

/** The mtime of every packed entry. */
export const ENTRY_MTIME = new Date(1_500_000_000_000);

/** Build a tar with tar-stream's pack, as an attacker would. */
export async function packTar(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  const out: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack) out.push(c as Buffer);
  })();
  for (const e of entries) {
    const type = e.type ?? 'file';
    const header = {
      name: e.name, type, mode: e.mode, uid: e.uid ?? 0, gid: e.gid ?? 0, linkname: e.linkname, devmajor: e.devmajor, devminor: e.devminor,
      mtime: ENTRY_MTIME, ...(e.pax ? { pax: e.pax } : {}),
    };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (type === 'file') pack.entry(header, e.data ?? '', cb);
      else pack.entry(header, cb);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(out);
}

/** A raw header block, for headers tar-stream's pack refuses to write. */
export function rawHeader(h: { name: string; typeflag?: string; size?: number; sizeField?: string; linkname?: string; magic?: 'ustar' | 'gnu' | 'none' }): Buffer {
  const b = Buffer.alloc(512);
  b.write(h.name, 0, 100, 'utf8');
  b.write('0000644\0', 100);
  b.write('0000000\0', 108);
  b.write('0000000\0', 116);
  b.write(h.sizeField ?? `${(h.size ?? 0).toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  b.write('13000000000\0', 136);
  b.write(h.typeflag ?? '0', 156, 'latin1');
  if (h.linkname) b.write(h.linkname, 157, 100);
  if ((h.magic ?? 'ustar') === 'ustar') b.write('ustar\u000000', 257, 'latin1');
  else if (h.magic === 'gnu') b.write('ustar  \0', 257, 'latin1');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return b;
}

export function rawEntry(h: Parameters<typeof rawHeader>[0], data: Buffer | string = Buffer.alloc(0)): Buffer {
  const d = Buffer.from(data);
  const pad = Buffer.alloc((512 - (d.length % 512)) % 512);
  return Buffer.concat([rawHeader({ size: d.length, ...h }), d, pad]);
}

/** Pax extended header records; each length counts the record's UTF-8 bytes, its own digits included. */
export function paxRecords(records: Record<string, string>): string {
  return Object.entries(records)
    .map(([k, v]) => {
      const body = ` ${k}=${v}\n`;
      const bytes = Buffer.byteLength(body);
      let len = bytes + 1;
      while (String(len).length + bytes !== len) len++;
      return `${len}${body}`;
    })
    .join('');
}

