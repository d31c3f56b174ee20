import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import { checkAciTar } from '../../src/image/tar-check.js';
import { needCommand, needRoot } from '../helpers/prereqs.js';

// The tar check against what GNU tar writes for a file with a capability:
// a POSIX archive whose pax headers carry SCHILY.xattr and time keywords.
// Setting a file capability needs root, so this runs with the integration tests.

const MANIFEST = JSON.stringify({ acKind: 'ImageManifest', acVersion: '0.8.11', name: 'example.com/test' });

test('accepts a POSIX tar archive with pax xattrs (a file capability)', async (t) => {
  needRoot('the pax xattr archive test');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tarcheck-xattr-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const work = path.join(dir, 'w');
  fs.mkdirSync(path.join(work, 'rootfs'), { recursive: true });
  fs.writeFileSync(path.join(work, 'manifest'), MANIFEST);
  fs.writeFileSync(path.join(work, 'rootfs', 'f'), 'x');
  await execa(needCommand('setcap', 'libcap2-bin'), ['cap_net_raw+ep', path.join(work, 'rootfs', 'f')]);
  const posix = path.join(dir, 'posix.aci');
  await execa('tar', ['--format=posix', '--xattrs', '--xattrs-include=*', '-C', work, '-cf', posix, 'manifest', 'rootfs']);
  const buf = fs.readFileSync(posix);
  t.true(buf.includes('SCHILY.xattr.security.capability'), 'the archive carries the xattr');
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += 333) parts.push(buf.subarray(i, i + 333));
  t.is((await checkAciTar(Readable.from(parts), { name: 'posix.aci' })).entries, 3);
});
