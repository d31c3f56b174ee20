import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { templateDir, templateWanted } from '../../stage1-kvm/config.js';
import { checkTemplate, dropTemplate, installTemplate, makeTemplateDir, openTemplate, templateFiles, templateKey } from '../../stage1-kvm/template-cache.js';
import { newcArchive } from '../../stage1-kvm/template-initrd.js';
import { goLine, SEED_BYTES, templateCmdline } from '../../stage1-kvm/template-vm.js';

// The template path's pure parts (its qemu command line is in kvm-vm.test.ts): the
// kernel command line without the pod's identity, the line each restored
// guest gets, the cache's key and checks, and the initramfs archive.

const UUID = '0c7d4f36-9a52-4a53-b1c5-2b8a3f1e0d11';

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-template-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("a template's kernel command line has no pod identity and no pci=off", (t) => {
  const pod = `console=ttyS0 pci=off panic=-1 systemd.unit=rkt-pod.target systemd.machine_id=${UUID.replace(/-/g, '')} systemd.hostname=rkt-${UUID} quiet tsc_early_khz=2100000`;
  t.is(templateCmdline(pod), 'console=ttyS0 panic=-1 systemd.unit=rkt-pod.target quiet tsc_early_khz=2100000');
});

test("the guest's line: seed, time, machine id, hostname; refuses what the guest would refuse", (t) => {
  const seed = Buffer.alloc(SEED_BYTES, 0xab);
  const line = goLine({ machineId: 'a'.repeat(32), hostname: 'rkt-x', seed, nowNs: 1234n });
  t.is(line, `go ${'ab'.repeat(SEED_BYTES)} 1234 ${'a'.repeat(32)} rkt-x\n`);
  t.throws(() => goLine({ machineId: 'A'.repeat(32), hostname: 'h' }));
  t.throws(() => goLine({ machineId: 'a'.repeat(32), hostname: 'bad host' }));
  t.throws(() => goLine({ machineId: 'a'.repeat(32), hostname: 'h', seed: Buffer.alloc(8) }));
  // two lines never share a seed
  const seedOf = (l: string): string => l.split(' ')[1]!;
  t.not(seedOf(goLine({ machineId: 'a'.repeat(32), hostname: 'h' })), seedOf(goLine({ machineId: 'a'.repeat(32), hostname: 'h' })));
});

test('RKT_KVM_TEMPLATE is off unless it says on; the cache directory defaults under /var/cache/rkt-ts', (t) => {
  t.false(templateWanted({}));
  t.false(templateWanted({ RKT_KVM_TEMPLATE: 'off' }));
  t.true(templateWanted({ RKT_KVM_TEMPLATE: 'on' }));
  t.throws(() => templateWanted({ RKT_KVM_TEMPLATE: 'yes' }), { message: /RKT_KVM_TEMPLATE=yes: use on or off/ });
  t.is(templateDir({}), '/var/cache/rkt-ts/templates');
  t.throws(() => templateDir({ RKT_KVM_TEMPLATE_DIR: 'rel' }), { message: /absolute/ });
});

function keyWorld(t: { teardown(fn: () => void): void }): { dir: string; parts: Parameters<typeof templateKey>[0] } {
  const dir = tmp(t);
  for (const f of ['qemu', 'kernel', 'initrd']) fs.writeFileSync(path.join(dir, f), f);
  return { dir, parts: { qemu: path.join(dir, 'qemu'), kernel: path.join(dir, 'kernel'), initrd: path.join(dir, 'initrd'), args: ['-m', '256M'] } };
}

test('the key changes with the kernel, the initramfs, the machine and the qemu binary', (t) => {
  const { dir, parts } = keyWorld(t);
  const k = templateKey(parts);
  t.regex(k, /^[0-9a-f]{64}$/);
  t.is(templateKey(parts), k);
  t.not(templateKey({ ...parts, args: ['-m', '512M'] }), k);
  fs.writeFileSync(path.join(dir, 'kernel'), 'kernel2');
  const k2 = templateKey(parts);
  t.not(k2, k);
  fs.writeFileSync(path.join(dir, 'initrd'), 'initrd2');
  const k3 = templateKey(parts);
  t.not(k3, k2);
  fs.rmSync(parts.qemu);
  fs.writeFileSync(parts.qemu, 'qemu, reinstalled and longer');
  t.not(templateKey(parts), k3);
});

test('the cache: missing, installed and checked, damaged (fuzzed), foreign record, dropped', async (t) => {
  const dir = path.join(tmp(t), 'templates');
  makeTemplateDir(dir);
  t.is(fs.statSync(dir).mode & 0o777, 0o700);
  const key = 'k'.repeat(64);
  const files = templateFiles(dir, key);
  t.deepEqual(openTemplate(files, key), { missing: true });
  const state = Buffer.alloc(64 * 1024);
  for (let i = 0; i < state.length; i++) state[i] = (i * 31) & 0xff;
  const tmpState = `${files.state}.tmp`;
  fs.writeFileSync(tmpState, state);
  installTemplate(files, key, tmpState);
  t.false(fs.existsSync(tmpState));
  t.is(fs.statSync(files.state).mode & 0o777, 0o600);
  const ok = openTemplate(files, key);
  t.true('fd' in ok);
  if ('fd' in ok) {
    t.is(await checkTemplate(ok), undefined);
    // the check read through the descriptor without moving its offset: qemu reads from the start
    const b = Buffer.alloc(4);
    t.is(fs.readSync(ok.fd, b, 0, 4, null), 4);
    t.deepEqual(b, state.subarray(0, 4));
    fs.closeSync(ok.fd);
  }
  t.true('invalid' in openTemplate(files, 'other'.padEnd(64, '0')));
  // any flipped byte, and any truncation, is caught
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: state.length - 1 }), fc.integer({ min: 1, max: 255 }), fc.boolean(), async (at, x, truncate) => {
      const bad = Buffer.from(state);
      bad[at] ^= x;
      fs.writeFileSync(files.state, truncate ? state.subarray(0, at) : bad);
      const r = openTemplate(files, key);
      if ('invalid' in r) return true;
      if (!('fd' in r)) return false;
      const why = await checkTemplate(r);
      fs.closeSync(r.fd);
      return why !== undefined && /damaged/.test(why);
    }),
    { seed: 14, numRuns: 50 },
  );
  fs.writeFileSync(files.meta, '{not json');
  t.true('invalid' in openTemplate(files, key));
  dropTemplate(files);
  t.false(fs.existsSync(files.state) || fs.existsSync(files.meta));
  t.deepEqual(openTemplate(files, key), { missing: true });
});

test('the cache directory must be root-only', (t) => {
  const dir = path.join(tmp(t), 'open');
  fs.mkdirSync(dir, { mode: 0o755 });
  fs.chmodSync(dir, 0o755);
  t.throws(() => makeTemplateDir(dir), { message: /owned by root with mode 0700/ });
});

test("the initramfs is a newc archive cpio(1) reads back: /init, executable, root's", (t) => {
  const dir = tmp(t);
  const data = Buffer.from('#!/bin/sh\necho hi\n');
  const archive = newcArchive([{ name: 'init', mode: 0o100755, data }]);
  t.is(archive.length % 512, 0);
  fs.writeFileSync(path.join(dir, 'a.cpio'), archive);
  const listing = execFileSync('cpio', ['-itv', '--quiet', '-F', path.join(dir, 'a.cpio')], { encoding: 'utf8' });
  t.regex(listing, /^-rwxr-xr-x +1 root +root +18 .* init$/m);
  execFileSync('cpio', ['-id', '--quiet', '-F', path.join(dir, 'a.cpio')], { cwd: dir });
  t.deepEqual(fs.readFileSync(path.join(dir, 'init')), data);
});
