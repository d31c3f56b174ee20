import test, { type ImplementationFn } from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { ImageFormatError } from '../../src/errors.js';
import { applyPathWhitelist, CorruptImageError, extractAciTar, renderLayers } from '../../src/image/render.js';
import { needCommand, needRoot } from '../helpers/prereqs.js';
import { ENTRY_MTIME, packTar, type Entry } from '../helpers/tar.js';

// Rendering restores owners and device nodes: these tests need root.
const asRoot = (impl: ImplementationFn<[]>): ImplementationFn<[]> => (t) => {
  needRoot('the image rendering tests');
  return impl(t);
};
const rootTest = (title: string, impl: ImplementationFn<[]>): void => test(title, asRoot(impl));
// Tests that count tar children of this process must not overlap with others.
const serialRootTest = (title: string, impl: ImplementationFn<[]>): void => test.serial(title, asRoot(impl));

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'image-render-'));
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

const manifest = (name: string, extra: Record<string, unknown> = {}): string =>
  JSON.stringify({ acKind: 'ImageManifest', acVersion: '0.8.11', name, ...extra });

/** Write a tar built with tar-stream's pack and return its path and image ID. */
async function writeTar(name: string, entries: Entry[]): Promise<{ tarPath: string; id: string }> {
  const data = await packTar(entries);
  const tarPath = path.join(dir, `${name}-${crypto.randomBytes(4).toString('hex')}.tar`);
  fs.writeFileSync(tarPath, data);
  return { tarPath, id: `sha512-${crypto.createHash('sha512').update(data).digest('hex')}` };
}

const layer = (name: string, files: Entry[], extra: Record<string, unknown> = {}) =>
  writeTar(name, [{ name: 'manifest', data: manifest(`example.com/${name}`, extra) }, { name: 'rootfs/', type: 'directory', mode: 0o755 }, ...files]);

function freshDest(): string {
  return fs.mkdtempSync(path.join(dir, 'dest-'));
}

function tarChildren(): number {
  let n = 0;
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && stat.includes('(tar)')) n++;
    } catch {
      // exited meanwhile
    }
  }
  return n;
}

serialRootTest('extraction preserves owners, modes with setuid, links, devices and mtimes', async (t) => {
  const { tarPath, id } = await writeTar('perms', [
    { name: './', type: 'directory', mode: 0o777 },
    { name: 'manifest', data: manifest('example.com/perms') },
    { name: 'rootfs/', type: 'directory', mode: 0o755 },
    { name: 'rootfs/home/user/', type: 'directory', mode: 0o700, uid: 1000, gid: 1000 },
    { name: 'rootfs/home/user/notes', data: 'hello', mode: 0o640, uid: 1000, gid: 1000 },
    { name: 'rootfs/bin/', type: 'directory', mode: 0o755 },
    { name: 'rootfs/bin/su', data: 'ELF su', mode: 0o4755 },
    { name: 'rootfs/bin/wall', data: 'ELF wall', mode: 0o2755, gid: 5 },
    { name: 'rootfs/bin/su2', type: 'link', linkname: 'rootfs/bin/su' },
    { name: 'rootfs/bin/sh', type: 'symlink', linkname: 'su', uid: 7 },
    { name: 'rootfs/tmp/', type: 'directory', mode: 0o1777 },
    { name: 'rootfs/dev/', type: 'directory', mode: 0o755 },
    { name: 'rootfs/dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
    { name: 'rootfs/run/initctl', type: 'fifo', mode: 0o600 },
  ]);
  const dest = freshDest();
  fs.chmodSync(dest, 0o700);
  await extractAciTar(tarPath, dest, { expectedId: id });
  const r = (p: string): fs.Stats => fs.lstatSync(path.join(dest, 'rootfs', p));
  t.is(fs.statSync(dest).mode & 0o7777, 0o700, 'a "./" entry does not change dest');
  t.is(JSON.parse(fs.readFileSync(path.join(dest, 'manifest'), 'utf8')).name, 'example.com/perms');
  t.like(r('home/user'), { uid: 1000, gid: 1000 });
  t.is(r('home/user').mode & 0o7777, 0o700);
  t.like(r('home/user/notes'), { uid: 1000, gid: 1000, size: 5 });
  t.is(r('home/user/notes').mode & 0o7777, 0o640);
  t.is(r('bin/su').mode & 0o7777, 0o4755, 'setuid kept');
  t.is(r('bin/wall').mode & 0o7777, 0o2755, 'setgid kept');
  t.is(r('bin/wall').gid, 5);
  t.is(r('bin/su2').ino, r('bin/su').ino, 'hard link');
  t.true(r('bin/sh').isSymbolicLink());
  t.is(fs.readlinkSync(path.join(dest, 'rootfs/bin/sh')), 'su');
  t.is(r('bin/sh').uid, 7, 'symlink owner');
  t.is(r('tmp').mode & 0o7777, 0o1777);
  t.true(r('dev/null').isCharacterDevice());
  t.is(r('dev/null').rdev, 0x103);
  t.true(r('run/initctl').isFIFO());
  t.is(r('home/user/notes').mtimeMs, ENTRY_MTIME.getTime());
  t.is(r('home/user').mtimeMs, ENTRY_MTIME.getTime(), 'directory mtimes survive their contents');
  t.is(tarChildren(), 0);
});

rootTest('file capabilities survive extraction', async (t) => {
  const setcap = needCommand('setcap', 'libcap2-bin');
  const getcap = needCommand('getcap', 'libcap2-bin');
  const work = path.join(dir, 'caps');
  fs.mkdirSync(path.join(work, 'rootfs/bin'), { recursive: true });
  fs.writeFileSync(path.join(work, 'manifest'), manifest('example.com/caps'));
  fs.writeFileSync(path.join(work, 'rootfs/bin/ping'), 'ELF');
  await execa(setcap, ['cap_net_raw+ep', path.join(work, 'rootfs/bin/ping')]);
  const tarPath = path.join(dir, 'caps.tar');
  await execa('tar', ['--format=posix', '--xattrs', '--xattrs-include=*', '-C', work, '-cf', tarPath, 'manifest', 'rootfs']);
  const dest = freshDest();
  await extractAciTar(tarPath, dest);
  const { stdout } = await execa(getcap, [path.join(dest, 'rootfs/bin/ping')]);
  t.regex(stdout, /cap_net_raw[=+]ep/);
});

test.serial('a stored image that no longer matches its ID is reported corrupt', async (t) => {
  const { tarPath, id } = await layer('corrupt', [{ name: 'rootfs/a', data: 'original' }]);
  const data = fs.readFileSync(tarPath);
  const i = data.indexOf('original');
  data.write('modified', i);
  fs.writeFileSync(tarPath, data);
  const err = await t.throwsAsync(extractAciTar(tarPath, freshDest(), { expectedId: id }), { instanceOf: CorruptImageError });
  t.regex(err?.message ?? '', /the stored image sha512-[0-9a-f]+ is corrupt: .* now hashes to sha512-/);
  t.is(tarChildren(), 0);
});

serialRootTest('a malicious stored tar is refused and tar is stopped before it writes outside', async (t) => {
  const victim = fs.mkdtempSync(path.join(dir, 'victim-'));
  const cases: [Entry[], RegExp][] = [
    [[{ name: 'rootfs/etc', type: 'symlink', linkname: victim }, { name: 'rootfs/etc/pwned', data: 'x' }], /passes through "rootfs\/etc", a symlink/],
    [[{ name: `rootfs/../../${path.relative('/', victim)}/pwned`, data: 'x' }], /".." component/],
    [[{ name: 'rootfs/h', type: 'link', linkname: `${victim}/pwned` }], /hard link target/],
  ];
  for (const [files, re] of cases) {
    const { tarPath } = await layer('evil', files);
    const dest = freshDest();
    const err = await t.throwsAsync(extractAciTar(tarPath, dest), { instanceOf: ImageFormatError });
    t.regex(err?.message ?? '', re);
    t.deepEqual(fs.readdirSync(victim), []);
    t.is(tarChildren(), 0);
  }
  // tar never sees a header the checker has not approved, even late in a big archive
  const { tarPath } = await layer('late', [
    { name: 'rootfs/big', data: 'x'.repeat(4 << 20) },
    { name: 'rootfs/disk', type: 'block-device', devmajor: 8, devminor: 0, mode: 0o666 },
    { name: 'rootfs/after', data: 'x' },
  ]);
  const dest = freshDest();
  await t.throwsAsync(extractAciTar(tarPath, dest), { instanceOf: ImageFormatError, message: /block devices are not allowed/ });
  t.false(fs.existsSync(path.join(dest, 'rootfs/disk')));
  t.false(fs.existsSync(path.join(dest, 'rootfs/after')));
});

rootTest('upper layers override lower ones and the top manifest wins', async (t) => {
  const base = await layer('base', [
    { name: 'rootfs/etc/', type: 'directory' },
    { name: 'rootfs/etc/a', data: 'lower a' },
    { name: 'rootfs/etc/b', data: 'lower b' },
    { name: 'rootfs/opt/', type: 'directory' },
    { name: 'rootfs/opt/tool/', type: 'directory' },
    { name: 'rootfs/opt/tool/bin', data: 'lower tool' },
    { name: 'rootfs/usr/lib/', type: 'directory' },
    { name: 'rootfs/lib', type: 'symlink', linkname: 'usr/lib' },
    { name: 'rootfs/var', type: 'symlink', linkname: '/somewhere/else' },
  ]);
  const app = await layer('app', [
    { name: 'rootfs/etc/a', data: 'upper a', mode: 0o600 },
    { name: 'rootfs/opt/tool', data: 'now a file' },
    { name: 'rootfs/lib/libapp.so', data: 'so' },
    { name: 'rootfs/var/', type: 'directory', mode: 0o755 },
    { name: 'rootfs/var/log', data: 'log' },
  ]);
  const dest = freshDest();
  await renderLayers([base, app], dest);
  const read = (p: string): string => fs.readFileSync(path.join(dest, 'rootfs', p), 'utf8');
  t.is(read('etc/a'), 'upper a');
  t.is(fs.statSync(path.join(dest, 'rootfs/etc/a')).mode & 0o777, 0o600);
  t.is(read('etc/b'), 'lower b');
  t.is(read('opt/tool'), 'now a file', 'an upper file replaces a lower directory');
  t.is(read('usr/lib/libapp.so'), 'so', 'writes through an in-rootfs symlink of a lower layer land inside');
  t.true(fs.lstatSync(path.join(dest, 'rootfs/var')).isDirectory(), 'an upper directory replaces a lower symlink');
  t.is(read('var/log'), 'log');
  t.is(JSON.parse(fs.readFileSync(path.join(dest, 'manifest'), 'utf8')).name, 'example.com/app');
});

rootTest('an upper layer cannot write through a lower layer symlink that leaves the rootfs', async (t) => {
  const victim = fs.mkdtempSync(path.join(dir, 'victim-'));
  fs.writeFileSync(path.join(victim, 'keep'), 'host file');
  const base = await layer('base', [{ name: 'rootfs/etc', type: 'symlink', linkname: victim }]);
  for (const files of [
    [{ name: 'rootfs/etc/keep', data: 'overwritten' }],
    [{ name: 'rootfs/etc/sub/new', data: 'x' }],
    [{ name: 'rootfs/etc/link', type: 'symlink' as const, linkname: '/x' }],
  ]) {
    const app = await layer('app', files);
    const dest = freshDest();
    const err = await t.throwsAsync(renderLayers([base, app], dest), { instanceOf: ImageFormatError });
    t.regex(err?.message ?? '', /cannot be laid over its dependencies: .*"rootfs\/etc" from a lower layer is a symlink that leads outside the rootfs/);
    t.deepEqual(fs.readdirSync(victim), ['keep']);
    t.is(fs.readFileSync(path.join(victim, 'keep'), 'utf8'), 'host file');
  }
});

rootTest('a lower layer symlink that loops or dangles is named as such', async (t) => {
  const base = await layer('base', [
    { name: 'rootfs/loop', type: 'symlink', linkname: 'loop' },
    { name: 'rootfs/dangling', type: 'symlink', linkname: 'nowhere' },
  ]);
  for (const [dirName, what] of [['loop', 'a symlink loop'], ['dangling', 'a dangling symlink']] as const) {
    const app = await layer('app', [{ name: `rootfs/${dirName}/file`, data: 'x' }]);
    const err = await t.throwsAsync(renderLayers([base, app], freshDest()), { instanceOf: ImageFormatError });
    t.regex(err?.message ?? '', new RegExp(`"rootfs/${dirName}" from a lower layer is ${what}`));
  }
});

rootTest('each layer\'s path whitelist prunes the tree composed so far', async (t) => {
  const base = await layer('base', [
    { name: 'rootfs/etc/', type: 'directory' },
    { name: 'rootfs/etc/keep.conf', data: 'k' },
    { name: 'rootfs/etc/drop.conf', data: 'd' },
    { name: 'rootfs/usr/share/doc/x', data: 'doc' },
    { name: 'rootfs/etc/systemd/system/a.service', data: 'a' },
    { name: 'rootfs/etc/systemd/system/b.service', data: 'b' },
  ]);
  const pathWhitelist = ['/etc/keep.conf', '/etc/systemd/system/', '/bin/app'];
  const mid = await layer('mid', [{ name: 'rootfs/bin/app', data: 'app' }, { name: 'rootfs/bin/extra', data: 'e' }], { pathWhitelist });
  const top = await layer('top', [{ name: 'rootfs/usr/share/doc/y', data: 'added after' }]);
  const dest = freshDest();
  await renderLayers([base, { ...mid, pathWhitelist }, top], dest);
  const files = (await execa('find', ['.', '-type', 'f'], { cwd: path.join(dest, 'rootfs') })).stdout.split('\n').sort();
  t.deepEqual(files, [
    './bin/app',
    './etc/keep.conf',
    './etc/systemd/system/a.service',
    './etc/systemd/system/b.service',
    './usr/share/doc/y',
  ]);
  t.false(fs.existsSync(path.join(dest, 'rootfs/usr/share/doc/x')));
});

test('applyPathWhitelist never follows symlinks out of the rootfs', async (t) => {
  const outside = fs.mkdtempSync(path.join(dir, 'outside-'));
  fs.writeFileSync(path.join(outside, 'precious'), 'p');
  fs.writeFileSync(path.join(outside, 'listed'), 'l');
  const rootfs = path.join(freshDest(), 'rootfs');
  fs.mkdirSync(path.join(rootfs, 'data'), { recursive: true });
  fs.symlinkSync(outside, path.join(rootfs, 'escape'));
  fs.symlinkSync(outside, path.join(rootfs, 'data', 'escape2'));
  fs.writeFileSync(path.join(rootfs, 'data', 'x'), 'x');
  await applyPathWhitelist(rootfs, ['/escape/listed', '/data/x']);
  t.deepEqual(fs.readdirSync(outside).sort(), ['listed', 'precious']);
  t.true(fs.lstatSync(path.join(rootfs, 'escape')).isSymbolicLink(), 'a symlink on the way is kept, not followed');
  t.false(fs.existsSync(path.join(rootfs, 'data', 'escape2')));
  t.deepEqual(fs.readdirSync(rootfs).sort(), ['data', 'escape']);
  await applyPathWhitelist(rootfs, []);
  t.deepEqual(fs.readdirSync(rootfs).sort(), ['data', 'escape'], 'an empty whitelist keeps everything');
  await t.throwsAsync(applyPathWhitelist(rootfs, ['relative/path']), { instanceOf: ImageFormatError });
});
