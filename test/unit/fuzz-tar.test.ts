import { Readable } from 'node:stream';
import test from 'ava';
import fc from 'fast-check';
import { execa } from 'execa';
import { ImageFormatError } from '../../src/errors.js';
import { checkAciTar, type CheckedEntry } from '../../src/image/tar-check.js';
import { BLOCK, ByteWindow, TarHeaderError, decodeEntry, parseHeaderBlock, parseNumeric, parsePax } from '../../src/image/tar-header.js';
import { assertTypedError, fuzz, fuzzAsync, fuzzParams, withinMs, withinMsAsync } from '../helpers/fuzz.js';
import { packTar, paxRecords, type Entry } from '../helpers/tar.js';

// Property tests of the tar header decoder and the ACI checker, which read
// image bytes before anything else does.

const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((b) => Buffer.from(b));

/** A header block with random content but a good checksum and magic, so decoding goes past those gates. */
const plausibleBlock = fc
  .tuple(fc.uint8Array({ minLength: BLOCK, maxLength: BLOCK }), fc.constantFrom('ustar\0', 'ustar  \0', 'other'), fc.boolean())
  .map(([raw, magic, fixSum]) => {
    const b = Buffer.from(raw);
    if (magic !== 'other') b.write(magic, 257, 'latin1');
    if (fixSum) {
      b.fill(0x20, 148, 156);
      let sum = 0;
      for (const x of b) sum += x;
      b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    }
    return b;
  });

test('parseNumeric and parseHeaderBlock: any bytes give a value or a TarHeaderError', (t) => {
  fuzz(
    t,
    fc.property(fc.oneof(plausibleBlock, bytes(600)), fc.integer({ min: 1, max: 12 }), (block, len) => {
      try {
        const v = parseNumeric(block, 0, Math.min(len, block.length), 'size');
        if (!Number.isSafeInteger(v) || v < 0) throw new Error(`numeric field read as ${v}`);
      } catch (err) {
        assertTypedError(err, TarHeaderError, block);
      }
      try {
        const h = parseHeaderBlock(block);
        for (const n of [h.mode, h.uid, h.gid, h.size, h.devmajor, h.devminor]) if (!Number.isSafeInteger(n) || n < 0) throw new Error(`field read as ${n}`);
      } catch (err) {
        assertTypedError(err, TarHeaderError, block);
      }
    }),
  );
});

const allowedPaxKey = fc.oneof(
  fc.constantFrom('path', 'linkpath', 'size', 'uid', 'gid', 'uname', 'gname', 'mtime', 'comment', 'SCHILY.dev'),
  fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 10 }).filter((s) => !s.includes('=')).map((s) => `SCHILY.xattr.${s}`),
);

test('parsePax: records round-trip; any other bytes are a TarHeaderError', (t) => {
  fuzz(
    t,
    fc.property(fc.dictionary(allowedPaxKey, fc.string({ unit: 'binary', maxLength: 40 }), { maxKeys: 6 }), bytes(200), (records, junk) => {
      const parsed = parsePax(Buffer.from(paxRecords(records)), false);
      if (JSON.stringify(Object.fromEntries(parsed)) !== JSON.stringify(records)) throw new Error(`round trip gave ${JSON.stringify([...parsed])}`);
      for (const data of [junk, Buffer.concat([Buffer.from(paxRecords(records)), junk])]) {
        try {
          withinMs(1000, 'parsePax', () => parsePax(data, false));
        } catch (err) {
          assertTypedError(err, TarHeaderError, data);
        }
      }
    }),
  );
});

test('ByteWindow keeps exactly the bytes from its base on', (t) => {
  const op = fc.oneof(
    fc.record({ append: fc.uint8Array({ maxLength: 50 }) }),
    fc.record({ discard: fc.nat(60) }),
    fc.record({ read: fc.tuple(fc.nat(60), fc.nat(60)) }),
  );
  fuzz(
    t,
    fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
      const w = new ByteWindow();
      let all = Buffer.alloc(0); // every byte appended, from offset 0
      let base = 0;
      for (const o of ops) {
        if ('append' in o) {
          w.append(Buffer.from(o.append), all.length);
          all = Buffer.concat([all, o.append]);
        } else if ('discard' in o) {
          base = Math.min(all.length, base + o.discard);
          w.discardBefore(base);
        } else {
          const from = base + Math.min(o.read[0], all.length - base);
          const to = from + Math.min(o.read[1], all.length - from);
          if (!w.read(from, to).equals(all.subarray(from, to))) throw new Error(`read ${from}..${to} differs`);
        }
        if (w.base !== base || w.length !== all.length - base) throw new Error(`window ${w.base}+${w.length}, expected ${base}+${all.length - base}`);
      }
    }),
  );
});

// Archives as an attacker writes them: names from a small vocabulary that
// includes every trick, all entry types, pax names, then random damage.
const component = fc.constantFrom('rootfs', 'manifest', 'a', 'b', 'dev', 'null', '..', '.', '', 'é', '\u202e', 'x'.repeat(120));
const archivePath = fc.tuple(fc.constantFrom('', '/', './', 'rootfs/'), fc.array(component, { minLength: 1, maxLength: 4 })).map(([lead, parts]) => lead + parts.join('/'));
const entry: fc.Arbitrary<Entry> = fc.record(
  {
    name: archivePath,
    type: fc.constantFrom('file', 'directory', 'symlink', 'link', 'character-device', 'block-device', 'fifo'),
    data: fc.string({ maxLength: 20 }),
    linkname: archivePath,
    devmajor: fc.nat(6),
    devminor: fc.nat(9),
    pax: fc.record({ path: archivePath }),
  },
  { requiredKeys: ['name', 'type'] },
);
// Mostly acceptable entries, so that many archives get past the checker.
const safePath = fc.array(fc.constantFrom('a', 'b', 'dev', 'null', 'é', '\u202e', 'x'.repeat(120)), { minLength: 1, maxLength: 4 }).map((p) => `rootfs/${p.join('/')}`);
const safeEntry: fc.Arbitrary<Entry> = fc.record(
  {
    name: safePath,
    type: fc.constantFrom('file', 'directory', 'symlink', 'fifo', 'link'),
    data: fc.string({ maxLength: 20 }),
    linkname: fc.oneof(safePath, fc.constantFrom('a', '../a', '/etc/passwd')),
    pax: fc.record({ path: safePath }),
  },
  { requiredKeys: ['name', 'type'] },
);
const MANIFEST = JSON.stringify({ acKind: 'ImageManifest', acVersion: '0.8.11', name: 'example.com/fuzz' });
const manifestData = fc.oneof(fc.constant(MANIFEST), fc.json({ maxDepth: 2 }), fc.string({ maxLength: 30 }));
const edits = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 });

async function archive(manifest: string, entries: Entry[], damage: [number, number][]): Promise<Buffer | undefined> {
  let buf: Buffer;
  try {
    buf = await packTar([{ name: 'manifest', data: manifest }, { name: 'rootfs', type: 'directory' }, ...entries]);
  } catch {
    return undefined; // tar-stream refused to write it: nothing to check
  }
  for (const [at, byte] of damage) buf[at % buf.length] = byte;
  return buf;
}

function chunks(buf: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  for (let at = 0; at < buf.length; i++) {
    const n = Math.max(1, sizes.length === 0 ? buf.length : sizes[i % sizes.length]!);
    out.push(buf.subarray(at, at + n));
    at += n;
  }
  return out;
}

test('decodeEntry: any archive bytes give an entry or a TarHeaderError', async (t) => {
  await fuzzAsync(
    t,
    fc.asyncProperty(fc.array(entry, { maxLength: 3 }), edits, bytes(1200), async (entries, damage, junk) => {
      const buf = await archive(MANIFEST, entries, damage);
      for (const data of buf === undefined ? [junk] : [buf, junk, buf.subarray(junk.length % buf.length)]) {
        try {
          withinMs(1000, 'decodeEntry', () => decodeEntry(data));
        } catch (err) {
          assertTypedError(err, TarHeaderError, data);
        }
      }
    }),
  );
});

test('checkAciTar: any archive is accepted with only safe entries, or refused with an ImageFormatError', async (t) => {
  await fuzzAsync(
    t,
    fc.asyncProperty(manifestData, fc.array(entry, { maxLength: 6 }), edits, fc.array(fc.integer({ min: 1, max: 2000 }), { maxLength: 4 }), async (manifest, entries, damage, sizes) => {
      const buf = await archive(manifest, entries, damage);
      if (buf === undefined) return;
      const seen: CheckedEntry[] = [];
      try {
        await withinMsAsync(5000, 'checkAciTar', () => checkAciTar(Readable.from(chunks(buf, sizes)), { name: 'fuzz.aci', onEntry: (e) => void seen.push(e) }));
      } catch (err) {
        assertTypedError(err, ImageFormatError, buf);
        return;
      }
      for (const e of seen) {
        const top = e.path.split('/')[0];
        if (e.path !== '' && top !== 'manifest' && top !== 'rootfs') throw new Error(`accepted an entry outside the ACI layout: ${e.path}`);
        if (e.path.split('/').includes('..')) throw new Error(`accepted a ".." path: ${e.path}`);
        if (e.type === 'block-device') throw new Error(`accepted a block device: ${e.path}`);
      }
    }),
    fuzzParams(),
  );
});

// The checker's premise: GNU tar, which extracts the image, reads the same
// entries it approved. Checked on whatever archives the checker accepts.
test('checkAciTar: GNU tar lists exactly the entries an accepted archive was checked for', async (t) => {
  let compared = 0;
  await fuzzAsync(
    t,
    fc.asyncProperty(fc.array(fc.oneof(entry, safeEntry, safeEntry), { maxLength: 6 }), fc.oneof(fc.constant<[number, number][]>([]), fc.constant<[number, number][]>([]), edits), async (entries, damage) => {
      const buf = await archive(MANIFEST, entries, damage);
      if (buf === undefined) return;
      const seen: string[] = [];
      try {
        await checkAciTar(Readable.from([buf]), { name: 'fuzz.aci', onEntry: (e) => void seen.push(e.name) });
      } catch {
        return;
      }
      const listed = await execa('tar', ['--quoting-style=literal', '-tf', '-'], { input: buf, stripFinalNewline: false });
      const names = String(listed.stdout).split('\n').slice(0, -1);
      const norm = (n: string): string => n.replace(/^(\.\/)+/, '').replace(/\/$/, '');
      if (JSON.stringify(names.map(norm)) !== JSON.stringify(seen.map(norm))) {
        throw new Error(`GNU tar lists ${JSON.stringify(names)}, the checker approved ${JSON.stringify(seen)}`);
      }
      compared++;
    }),
    fuzzParams(0.5),
  );
  t.log(`${compared} accepted archives compared`);
  t.true(compared > 0, 'no generated archive was accepted, so nothing was compared');
});

test('checkAciTar: random bytes are refused with an ImageFormatError', async (t) => {
  await fuzzAsync(
    t,
    fc.asyncProperty(fc.oneof(bytes(3000), fc.array(plausibleBlock, { maxLength: 4 }).map((b) => Buffer.concat(b))), async (buf) => {
      try {
        await withinMsAsync(5000, 'checkAciTar', () => checkAciTar(Readable.from([buf]), { name: 'fuzz.aci' }));
      } catch (err) {
        assertTypedError(err, ImageFormatError, buf);
        return;
      }
      throw new Error('random bytes were accepted as an ACI');
    }),
  );
});
