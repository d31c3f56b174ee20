import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { ImageFormatError } from '../../src/errors.js';
import { checkAciTar, MAX_MANIFEST_SIZE } from '../../src/image/tar-check.js';
import { buildAci } from '../helpers/aci.js';
import { packTar, paxRecords, rawEntry, type Entry } from '../helpers/tar.js';

// ---- archive builders -------------------------------------------------

const MANIFEST = JSON.stringify({ acKind: 'ImageManifest', acVersion: '0.8.11', name: 'example.com/test' });
const BASE: Entry[] = [
  { name: 'manifest', data: MANIFEST },
  { name: 'rootfs/', type: 'directory' },
];

const EOA = Buffer.alloc(1024);
const rawBase = (): Buffer[] => [rawEntry({ name: 'manifest' }, MANIFEST), rawEntry({ name: 'rootfs/', typeflag: '5' })];

/** Feed the archive in chunks of `size` bytes, to exercise every buffer boundary. */
function check(buf: Buffer, size = 64 * 1024) {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) parts.push(buf.subarray(i, i + size));
  return checkAciTar(Readable.from(parts), { name: 'test.aci' });
}

async function refused(t: import('ava').ExecutionContext, buf: Buffer, message: RegExp): Promise<void> {
  const err = await t.throwsAsync(check(buf), { instanceOf: ImageFormatError });
  t.regex(err?.message ?? '', message);
  t.regex(err?.message ?? '', /test\.aci is not a valid ACI/);
}

// ---- valid archives ----------------------------------------------------

const VALID: Entry[] = [
  ...BASE,
  { name: 'rootfs/bin/', type: 'directory' },
  { name: 'rootfs/bin/busybox', data: 'ELF', mode: 0o4755 },
  { name: 'rootfs/bin/sh', type: 'symlink', linkname: 'busybox' },
  { name: 'rootfs/bin/ash', type: 'link', linkname: 'rootfs/bin/busybox' },
  { name: 'rootfs/lib', type: 'symlink', linkname: 'usr/lib' },
  { name: 'rootfs/usr/bin/env', type: 'symlink', linkname: '../../bin/busybox' },
  { name: 'rootfs/etc/mtab', type: 'symlink', linkname: '/proc/self/mounts' },
  { name: 'rootfs/dev/', type: 'directory' },
  { name: 'rootfs/dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
  { name: 'rootfs/dev/ptmx', type: 'character-device', devmajor: 5, devminor: 2 },
  { name: 'rootfs/run/initctl', type: 'fifo' },
  { name: `rootfs/${'deep/'.repeat(40)}file`, data: 'long name via pax' },
];

test('accepts a valid archive, whatever the chunking', async (t) => {
  const buf = await packTar(VALID);
  for (const size of [1, 7, 511, 512, 513, 4096, 1 << 20]) {
    const r = await check(buf, size);
    t.is(r.manifest.name, 'example.com/test', `chunk size ${size}`);
    t.is(r.manifestJson.toString(), MANIFEST);
    t.is(r.entries, VALID.length);
  }
});

test('accepts "./"-prefixed names and a "./" root entry', async (t) => {
  const buf = await packTar([
    { name: './', type: 'directory' },
    { name: './manifest', data: MANIFEST },
    { name: './rootfs/', type: 'directory' },
    { name: './rootfs/a', data: 'x' },
    { name: './rootfs/b', type: 'link', linkname: './rootfs/a' },
  ]);
  t.is((await check(buf)).entries, 5);
});

test('accepts a GNU tar archive with long names and a busybox rootfs', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tarcheck-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const aci = await buildAci(dir, { name: 'example.com/busybox', files: { [`${'long-directory-name/'.repeat(8)}f`]: 'x' } });
  t.is((await check(fs.readFileSync(aci), 10240)).manifest.name, 'example.com/busybox');
});

// ---- paths ------------------------------------------------------------------

test('refuses ".." components and absolute paths', async (t) => {
  await refused(t, await packTar([...BASE, { name: 'rootfs/../../etc/cron.d/x', data: 'x' }]), /entry "rootfs\/..\/..\/etc\/cron.d\/x": path contains a ".." component/);
  await refused(t, await packTar([...BASE, { name: 'rootfs/a/../../../x', data: 'x' }]), /".." component/);
  await refused(t, await packTar([...BASE, { name: '/etc/passwd', data: 'x' }]), /entry "\/etc\/passwd": absolute path/);
});

test('refuses top-level entries other than manifest and rootfs', async (t) => {
  await refused(t, await packTar([...BASE, { name: 'hash', data: 'sha512-forged' }]), /entry "hash": unexpected top-level path "hash"/);
  await refused(t, await packTar([...BASE, { name: 'rootfsx/a', data: 'x' }]), /unexpected top-level path "rootfsx"/);
});

test('refuses duplicates and files over directories already written into', async (t) => {
  await refused(t, await packTar([...BASE, { name: 'rootfs/a', data: '1' }, { name: 'rootfs/a', data: '2' }]), /entry "rootfs\/a": duplicate entry/);
  await refused(t, await packTar([...BASE, { name: 'rootfs/d/x', data: '1' }, { name: 'rootfs/d', type: 'symlink', linkname: '/' }]), /replaces a directory/);
  await refused(t, await packTar([...BASE, { name: 'rootfs/f', data: '1' }, { name: 'rootfs/f/x', data: '2' }]), /parent "rootfs\/f" is a file/);
});

// ---- symlinks -------------------------------------------------------------------

test('refuses relative symlinks that resolve outside rootfs', async (t) => {
  await refused(t, await packTar([...BASE, { name: 'rootfs/a/evil', type: 'symlink', linkname: '../../../etc' }]), /entry "rootfs\/a\/evil": symlink target "..\/..\/..\/etc" resolves outside rootfs/);
  await refused(t, await packTar([...BASE, { name: 'rootfs/up', type: 'symlink', linkname: '..' }]), /resolves outside rootfs/);
  await refused(t, await packTar([...BASE, { name: 'rootfs/m', type: 'symlink', linkname: 'x/../../manifest' }]), /resolves outside rootfs/);
});

test('refuses writing through an earlier symlink', async (t) => {
  await refused(t, await packTar([...BASE, { name: 'rootfs/etc', type: 'symlink', linkname: '/etc' }, { name: 'rootfs/etc/passwd', data: 'root::0:0::/:/bin/sh' }]),
    /entry "rootfs\/etc\/passwd": path passes through "rootfs\/etc", a symlink/);
  await refused(t, await packTar([...BASE, { name: 'rootfs/sub/', type: 'directory' }, { name: 'rootfs/l', type: 'symlink', linkname: 'sub' }, { name: 'rootfs/l/deeper/x', data: 'x' }]),
    /passes through "rootfs\/l"/);
  await refused(t, await packTar([...BASE, { name: 'rootfs/etc', type: 'symlink', linkname: '/etc' }, { name: 'rootfs/etc/sub/', type: 'directory' }]), /passes through/);
});

// ---- hard links -------------------------------------------------------------------

test('refuses hard links that do not point at an earlier regular file in rootfs', async (t) => {
  const cases: [string, RegExp][] = [
    ['../../etc/shadow', /hard link target "..\/..\/etc\/shadow" is not an earlier regular file/],
    ['/etc/shadow', /hard link target/],
    ['rootfs/../manifest', /hard link target/],
    ['manifest', /hard link target/],
    ['rootfs/nope', /hard link target/],
    ['rootfs/sym', /hard link target/],
    ['rootfs/later', /hard link target/],
    ['rootfs/sym/file', /hard link target/],
  ];
  for (const [linkname, re] of cases) {
    const buf = await packTar([
      ...BASE,
      { name: 'rootfs/sym', type: 'symlink', linkname: '/etc' },
      { name: 'rootfs/h', type: 'link', linkname },
      { name: 'rootfs/later', data: 'x' },
    ]);
    await refused(t, buf, re);
  }
});

// ---- devices -------------------------------------------------------------------

test('allows only the standard character devices in rootfs/dev, and fifos anywhere', async (t) => {
  await refused(t, await packTar([...BASE, { name: 'rootfs/dev/sda', type: 'block-device', devmajor: 8, devminor: 0 }]), /entry "rootfs\/dev\/sda": block devices are not allowed/);
  await refused(t, await packTar([...BASE, { name: 'rootfs/dev/mem', type: 'character-device', devmajor: 1, devminor: 1 }]), /character device 1:1 is not allowed/);
  await refused(t, await packTar([...BASE, { name: 'rootfs/dev/null', type: 'character-device', devmajor: 8, devminor: 0 }]), /character device 8:0 is not allowed/);
  await refused(t, await packTar([...BASE, { name: 'rootfs/tmp/null', type: 'character-device', devmajor: 1, devminor: 3 }]), /character device 1:3 is not allowed/);
  await refused(t, await packTar([...BASE, { name: 'manifest2', type: 'fifo' }]), /unexpected top-level path/);
  t.is((await check(await packTar([...BASE, { name: 'rootfs/var/fifo', type: 'fifo' }]))).entries, 3);
});

// ---- manifest and rootfs ------------------------------------------------------------

test('requires a valid manifest of at most 1 MiB and a rootfs directory', async (t) => {
  await refused(t, await packTar([{ name: 'rootfs/', type: 'directory' }, { name: 'rootfs/a', data: 'x' }]), /entry "manifest": missing/);
  await refused(t, await packTar([{ name: 'manifest', data: MANIFEST }]), /entry "rootfs": missing/);
  await refused(t, await packTar([{ name: 'manifest', data: MANIFEST }, { name: 'rootfs/a', data: 'x' }]), /entry "rootfs": missing/);
  await refused(t, await packTar([{ name: 'manifest', data: MANIFEST }, { name: 'rootfs', data: 'x' }]), /rootfs must be a directory/);
  await refused(t, await packTar([{ name: 'manifest', data: '{"acKind": "ImageManifest",' }, BASE[1]!]), /entry "manifest": .*not valid JSON/);
  await refused(t, await packTar([{ name: 'manifest', data: '{"acKind":"PodManifest","acVersion":"0.8.11","name":"x"}' }, BASE[1]!]), /entry "manifest": invalid manifest/);
  await refused(t, await packTar([{ name: 'manifest', data: Buffer.alloc(MAX_MANIFEST_SIZE + 1, 0x20) }, BASE[1]!]), /the manifest is 1048577 bytes; the limit is 1 MiB/);
  await refused(t, await packTar([{ name: 'manifest', type: 'directory' }, BASE[1]!]), /the manifest must be a regular file, not a directory/);
  await refused(t, await packTar([{ name: 'manifest', type: 'symlink', linkname: '/etc/passwd' }, BASE[1]!]), /must be a regular file, not a symlink/);
});

// ---- tricks aimed at the difference between two tar readers ----------------------------

test('refuses non-regular entries that carry data (a way to hide headers from one reader)', async (t) => {
  const hidden = rawEntry({ name: 'rootfs/evil', typeflag: '2', linkname: '../../../../etc' });
  await refused(t, Buffer.concat([...rawBase(), rawEntry({ name: 'rootfs/d/', typeflag: '5' }, hidden), EOA]), /entry "rootfs\/d\/": a directory entry must not carry data/);
});

test('refuses sparse files, unknown entry types and pax keywords only GNU tar acts on', async (t) => {
  await refused(t, Buffer.concat([...rawBase(), rawEntry({ name: 'rootfs/s', typeflag: 'S' }, 'x'), EOA]), /unsupported tar entry type "S"/);
  await refused(t, Buffer.concat([...rawBase(), rawEntry({ name: 'rootfs/v', typeflag: 'V' }), EOA]), /unsupported tar entry type "V"/);
  const sparse = rawEntry({ name: 'PaxHeader', typeflag: 'x' }, paxRecords({ 'GNU.sparse.name': '../../etc/passwd', 'GNU.sparse.major': '1' }));
  await refused(t, Buffer.concat([...rawBase(), sparse, rawEntry({ name: 'rootfs/f' }, 'x'), EOA]), /unsupported pax header keyword "GNU.sparse.name"/);
  const dev = rawEntry({ name: 'PaxHeader', typeflag: 'x' }, paxRecords({ 'SCHILY.devmajor': '8' }));
  await refused(t, Buffer.concat([...rawBase(), dev, rawEntry({ name: 'rootfs/dev/null', typeflag: '3' }), EOA]), /SCHILY.devmajor/);
  const global = rawEntry({ name: 'pax_global_header', typeflag: 'g' }, paxRecords({ path: 'rootfs/../../x' }));
  await refused(t, Buffer.concat([...rawBase(), global, rawEntry({ name: 'rootfs/f' }, 'x'), EOA]), /unsupported pax global header keyword "path"/);
  const comment = rawEntry({ name: 'pax_global_header', typeflag: 'g' }, paxRecords({ comment: 'commit abc' }));
  t.is((await check(Buffer.concat([comment, ...rawBase(), EOA]))).entries, 2);
});

test('refuses malformed pax records, loose numbers, bad checksums and v7 headers', async (t) => {
  const bad = rawEntry({ name: 'PaxHeader', typeflag: 'x' }, '99 path=rootfs/a\n');
  await refused(t, Buffer.concat([...rawBase(), bad, rawEntry({ name: 'rootfs/f' }, 'x'), EOA]), /malformed pax header record|malformed tar archive/);
  await refused(t, Buffer.concat([...rawBase(), rawEntry({ name: 'rootfs/f', sizeField: '0000000001x\0' }, 'x'), EOA]), /size field is not an octal number|disagree|malformed/);
  const corrupt = rawEntry({ name: 'rootfs/f' }, 'x');
  corrupt[10] = 0x41;
  await refused(t, Buffer.concat([...rawBase(), corrupt, EOA]), /malformed tar archive|checksum/);
  await refused(t, Buffer.concat([...rawBase(), rawEntry({ name: 'rootfs/f', magic: 'none' }, 'x'), EOA]), /unknown format|neither POSIX ustar nor GNU/);
});

test('refuses entries hidden after the end-of-archive marker, and trailing garbage', async (t) => {
  const valid = await packTar([...BASE]);
  const extra = await packTar([{ name: 'rootfs/evil', type: 'symlink', linkname: '../..' }]);
  await refused(t, Buffer.concat([valid, extra]), /entry "rootfs\/evil": entry found after the end-of-archive marker/);
  await refused(t, Buffer.concat([valid, Buffer.from('garbage'), Buffer.alloc(505)]), /malformed tar archive|not end-of-archive padding/);
  // lots of zero padding is fine
  t.is((await check(Buffer.concat([valid, Buffer.alloc(3 * 1024 * 1024)]), 1 << 20)).entries, 2);
});

test('refuses truncated archives', async (t) => {
  const buf = await packTar([...BASE, { name: 'rootfs/big', data: Buffer.alloc(100_000, 1) }]);
  await refused(t, buf.subarray(0, 50_000), /truncated/);
  // cut exactly at an entry boundary: only the missing end marker gives it away
  await refused(t, buf.subarray(0, buf.length - 1024), /end-of-archive marker is missing/);
  await refused(t, buf.subarray(0, 700), /truncated/);
});
