import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { execa } from 'execa';
import { RktEnv } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';

const INSECURE = '--insecure-options=image';

function setup(t: { teardown(fn: () => void): void }): RktEnv {
  const env = new RktEnv();
  t.teardown(() => env.cleanup());
  return env;
}

async function uncompressedSha512(file: string): Promise<string> {
  const { stdout } = await execa('sh', ['-c', 'case "$(head -c 3 "$1" | od -An -tx1 | tr -d " ")" in 1f8b*) gzip -dc "$1";; 425a68) bzip2 -dc "$1";; fd377a) xz -dc "$1";; *) cat "$1";; esac | sha512sum', 'sh', file]);
  return 'sha512-' + stdout.split(' ')[0];
}

for (const compression of ['none', 'gzip', 'bzip2', 'xz'] as const) {
  test(`fetch stores a ${compression} ACI under the sha512 of its tar and prints the ID`, async (t) => {
    const env = setup(t);
    const aci = await buildAci(env.root, { name: `example.com/c-${compression}`, compression });
    const r = await env.run([INSECURE, 'fetch', aci]);
    t.is(r.exitCode, 0, String(r.stderr));
    t.is(String(r.stdout).trim(), await uncompressedSha512(aci));
    t.regex(String(r.stderr), /signature verification has been disabled/);
  });
}

test('fetching the same image twice stores it once', async (t) => {
  const env = setup(t);
  const aci = await buildAci(env.root, { name: 'example.com/twice' });
  const a = await env.run([INSECURE, 'fetch', aci]);
  const b = await env.run(['fetch', '--insecure-options=image', aci]);
  t.is(a.stdout, b.stdout);
  const list = await env.run(['image', 'list', '--format=json']);
  t.is(JSON.parse(String(list.stdout)).length, 1);
  const blobs = (await execa('find', [path.join(env.dir, 'cas/blob'), '-type', 'f'])).stdout.trim().split('\n');
  t.is(blobs.length, 1);
});

test('an unsigned image is refused by default and nothing is stored', async (t) => {
  const env = setup(t);
  const aci = await buildAci(env.root, { name: 'example.com/unsigned' });
  const r = await env.run(['fetch', aci]);
  t.not(r.exitCode, 0);
  t.regex(String(r.stderr), /\.asc/);
  t.is(String(r.stderr).trim().split('\n').length, 1);
  const list = await env.run(['image', 'list', '--format=json']);
  t.deepEqual(JSON.parse(String(list.stdout)), []);
  t.deepEqual(fs.readdirSync(path.join(env.dir, 'cas/tmp')), []);
});

test('image list prints a table with a legend, or without, or JSON', async (t) => {
  const env = setup(t);
  const aci = await buildAci(env.root, { name: 'example.com/listed', labels: [{ name: 'version', value: '2.1' }] });
  const id = String((await env.run([INSECURE, 'fetch', aci])).stdout).trim();
  const table = String((await env.run(['image', 'list'])).stdout);
  const lines = table.trim().split('\n');
  t.regex(lines[0]!, /^ID\s+NAME\s+SIZE\s+IMPORT TIME\s+LAST USED$/);
  t.true(lines[1]!.startsWith(id.slice(0, 19)));
  t.regex(lines[1]!, /example\.com\/listed:2\.1/);
  const bare = String((await env.run(['image', 'list', '--no-legend', '--full'])).stdout).trim().split('\n');
  t.is(bare.length, 1);
  t.true(bare[0]!.startsWith(id));
  const json = JSON.parse(String((await env.run(['image', 'list', '--format=json'])).stdout));
  t.is(json[0].id, id);
  t.is(json[0].name, 'example.com/listed:2.1');
  t.true(json[0].size > 0);
});

test('cat-manifest, export and extract give back what was fetched', async (t) => {
  const env = setup(t);
  const aci = await buildAci(env.root, { name: 'example.com/roundtrip', files: { 'etc/motd': 'hi\n' }, app: { exec: ['/bin/sh'], user: '0', group: '0' } });
  const id = String((await env.run([INSECURE, 'fetch', aci])).stdout).trim();
  const manifest = JSON.parse(String((await env.run(['image', 'cat-manifest', id.slice(0, 20)])).stdout));
  t.is(manifest.name, 'example.com/roundtrip');
  t.deepEqual(manifest.app.exec, ['/bin/sh']);

  const out = env.file('exported.aci');
  t.is((await env.run(['image', 'export', 'example.com/roundtrip', out])).exitCode, 0);
  t.is('sha512-' + crypto.createHash('sha512').update(fs.readFileSync(out)).digest('hex'), id);
  const again = await env.run(['image', 'export', id, out]);
  t.not(again.exitCode, 0);
  t.regex(String(again.stderr), /--overwrite/);

  const dir = env.file('extracted');
  const ex = await env.run(['image', 'extract', '--rootfs-only', id, dir]);
  t.is(ex.exitCode, 0, String(ex.stderr));
  t.is(fs.readFileSync(path.join(dir, 'etc/motd'), 'utf8'), 'hi\n');
  t.false(fs.existsSync(path.join(dir, 'manifest')));
});

test('render composes dependencies in order, honours pathWhitelist, and caches the tree', async (t) => {
  const env = setup(t);
  const base = await buildAci(env.root, { name: 'example.com/base', files: { 'etc/base': 'base\n', 'etc/shadowed': 'from base\n', 'opt/dropped': 'x' } });
  const app = await buildAci(env.root, {
    name: 'example.com/app',
    busybox: false,
    files: { 'etc/shadowed': 'from app\n', 'app/run': 'run\n' },
    manifest: {
      dependencies: [{ imageName: 'example.com/base', labels: [{ name: 'version', value: '1.0.0' }] }],
      pathWhitelist: ['/etc/base', '/etc/shadowed', '/app/run', '/bin/busybox', '/bin/sh'],
    },
  });
  t.is((await env.run([INSECURE, 'fetch', base])).exitCode, 0);
  const id = String((await env.run([INSECURE, 'fetch', app])).stdout).trim();
  const dir = env.file('rendered');
  const r = await env.run(['image', 'render', id, dir]);
  t.is(r.exitCode, 0, String(r.stderr));
  t.is(fs.readFileSync(path.join(dir, 'rootfs/etc/base'), 'utf8'), 'base\n');
  t.is(fs.readFileSync(path.join(dir, 'rootfs/etc/shadowed'), 'utf8'), 'from app\n');
  t.true(fs.existsSync(path.join(dir, 'rootfs/app/run')));
  t.false(fs.existsSync(path.join(dir, 'rootfs/opt/dropped')));
  t.false(fs.existsSync(path.join(dir, 'rootfs/bin/ls')));
  t.is(JSON.parse(fs.readFileSync(path.join(dir, 'manifest'), 'utf8')).name, 'example.com/app');
  const trees = fs.readdirSync(path.join(env.dir, 'cas/tree'));
  t.is(trees.length, 1);
  t.regex(trees[0]!, /^deps-sha512-[0-9a-f]{128}$/);
  // a second render reuses the cached tree
  const r2 = await env.run(['image', 'render', '--rootfs-only', id, env.file('rendered2')]);
  t.is(r2.exitCode, 0, String(r2.stderr));
  t.deepEqual(fs.readdirSync(path.join(env.dir, 'cas/tree')), trees);
});

test('render of an image whose dependency is missing says which one', async (t) => {
  const env = setup(t);
  const app = await buildAci(env.root, { name: 'example.com/orphan', manifest: { dependencies: [{ imageName: 'example.com/nowhere' }] } });
  const id = String((await env.run([INSECURE, 'fetch', app])).stdout).trim();
  const r = await env.run(['image', 'render', id, env.file('out')]);
  t.not(r.exitCode, 0);
  t.regex(String(r.stderr), /example\.com\/nowhere.*not in the store/);
  t.false(fs.existsSync(env.file('out')));
});

test('a dependency whose size the manifest gives must have that size (spec/aci.md)', async (t) => {
  const env = setup(t);
  const base = await buildAci(env.root, { name: 'example.com/base', files: { 'etc/base': 'base\n' } });
  t.is((await env.run([INSECURE, 'fetch', base])).exitCode, 0);
  const size = fs.statSync(base).size;
  for (const [given, ok] of [[size, true], [size + 1, false]] as const) {
    const app = await buildAci(env.root, { name: `example.com/sized-${given}`, busybox: false, manifest: { dependencies: [{ imageName: 'example.com/base', size: given }] } });
    const id = String((await env.run([INSECURE, 'fetch', app])).stdout).trim();
    const r = await env.run(['image', 'render', id, env.file(`out-${given}`)]);
    if (ok) t.is(r.exitCode, 0, String(r.stderr));
    else t.regex(String(r.stderr), new RegExp(`dependency example\\.com/base of example\\.com/sized-${given}: the image in the store .* is ${size} bytes, but the manifest's dependencies\\[\\]\\.size says ${given}`));
  }
});

test('image rm removes by ID prefix and by name; an ambiguous or unknown ID is an error', async (t) => {
  const env = setup(t);
  const a = String((await env.run([INSECURE, 'fetch', await buildAci(env.root, { name: 'example.com/rm-a' })])).stdout).trim();
  const b = String((await env.run([INSECURE, 'fetch', await buildAci(env.root, { name: 'example.com/rm-b' })])).stdout).trim();
  const amb = await env.run(['image', 'rm', 'sha512-']);
  t.not(amb.exitCode, 0);
  t.regex(String(amb.stderr), /ambiguous/);
  const unknown = await env.run(['image', 'rm', 'sha512-' + '0'.repeat(128)]);
  t.not(unknown.exitCode, 0);
  const r1 = await env.run(['image', 'rm', a.slice(0, 25)]);
  t.is(r1.exitCode, 0, String(r1.stderr));
  t.regex(String(r1.stdout), new RegExp(a));
  const r2 = await env.run(['image', 'rm', 'example.com/rm-b']);
  t.is(r2.exitCode, 0, String(r2.stderr));
  t.regex(String(r2.stdout), new RegExp(b));
  t.deepEqual(JSON.parse(String((await env.run(['image', 'list', '--format=json'])).stdout)), []);
  t.deepEqual((await execa('find', [path.join(env.dir, 'cas/blob'), '-type', 'f'])).stdout.trim(), '');
});

test('image gc removes images unused for the grace period and keeps recent ones', async (t) => {
  const env = setup(t);
  const id = String((await env.run([INSECURE, 'fetch', await buildAci(env.root, { name: 'example.com/gc' })])).stdout).trim();
  const keep = await env.run(['image', 'gc', '--grace-period=1h']);
  t.is(keep.exitCode, 0, String(keep.stderr));
  t.is(JSON.parse(String((await env.run(['image', 'list', '--format=json'])).stdout)).length, 1);
  const drop = await env.run(['image', 'gc', '--grace-period=0s']);
  t.is(drop.exitCode, 0, String(drop.stderr));
  t.regex(String(drop.stdout), new RegExp(id));
  t.deepEqual(JSON.parse(String((await env.run(['image', 'list', '--format=json'])).stdout)), []);
  const bad = await env.run(['image', 'gc', '--grace-period=soon']);
  t.is(bad.exitCode, 254);
});

test('many processes fetching the same and different images at once all succeed', async (t) => {
  const env = setup(t);
  const images = await Promise.all([0, 1, 2].map((i) => buildAci(env.root, { name: `example.com/conc-${i}`, compression: 'gzip' })));
  const runs = await Promise.all(Array.from({ length: 12 }, (_, i) => env.run([INSECURE, 'fetch', images[i % 3]!])));
  for (const r of runs) t.is(r.exitCode, 0, String(r.stderr));
  const ids = new Set(runs.map((r) => String(r.stdout).trim()));
  t.is(ids.size, 3);
  t.is(JSON.parse(String((await env.run(['image', 'list', '--format=json'])).stdout)).length, 3);
});

test('kill -9 in the middle of a fetch leaves no half image and the next command works', async (t) => {
  const env = setup(t);
  // a large image so that the kill lands while it is being stored
  const big = env.file('big');
  fs.mkdirSync(big);
  await execa('sh', ['-c', `head -c 150000000 /dev/urandom > "${big}/blob"`]);
  const aci = await buildAci(env.root, { name: 'example.com/big', busybox: false, files: {} });
  await execa('sh', ['-c', `mkdir -p "$1/x/rootfs" && tar -C "$1/x" -xf "$2" && cp "$1/blob" "$1/x/rootfs/blob" && tar -C "$1/x" -cf "$2" manifest rootfs`, 'sh', big, aci]);
  const child = execa('bin/rkt', [...env.globals(), INSECURE, 'fetch', aci], { reject: false });
  await new Promise((r) => setTimeout(r, 400));
  child.kill('SIGKILL');
  await child;
  const list = await env.run(['image', 'list', '--format=json']);
  t.is(list.exitCode, 0, String(list.stderr));
  const listed = JSON.parse(String(list.stdout));
  // either the fetch finished before the kill, or nothing is listed
  for (const img of listed) t.is(img.name, 'example.com/big');
  const again = await env.run([INSECURE, 'fetch', aci]);
  t.is(again.exitCode, 0, String(again.stderr));
  const gc = await env.run(['image', 'gc', '--grace-period=1h']);
  t.is(gc.exitCode, 0);
  t.deepEqual(fs.readdirSync(path.join(env.dir, 'cas/tmp')), []);
});

for (const [what, spec, rule] of [
  ['a missing rootfs', { noRootfs: true }, /rootfs/],
  ['a manifest that is not JSON', { manifestRaw: '{not json' }, /manifest/],
  ['a manifest with a bad name', { manifest: { name: 'Not A Valid Name!' } }, /name/],
] as const) {
  test(`fetch refuses ${what} with a one-line error and stores nothing`, async (t) => {
    const env = setup(t);
    let aci = await buildAci(env.root, { name: 'example.com/bad', ...('noRootfs' in spec ? { noRootfs: true } : {}), ...('manifest' in spec ? { manifest: spec.manifest } : {}) });
    if ('manifestRaw' in spec) {
      const w = env.file('raw');
      fs.mkdirSync(path.join(w, 'rootfs'), { recursive: true });
      fs.writeFileSync(path.join(w, 'manifest'), spec.manifestRaw);
      aci = env.file('raw.aci');
      await execa('tar', ['-C', w, '-cf', aci, 'manifest', 'rootfs']);
    }
    const r = await env.run([INSECURE, 'fetch', aci]);
    t.not(r.exitCode, 0);
    t.regex(String(r.stderr), rule);
    t.false(/\n\s+at /.test(String(r.stderr)), 'no stack trace');
    t.deepEqual(JSON.parse(String((await env.run(['image', 'list', '--format=json'])).stdout)), []);
  });
}

test('a truncated compressed image is refused', async (t) => {
  const env = setup(t);
  const aci = await buildAci(env.root, { name: 'example.com/trunc', compression: 'xz' });
  const data = fs.readFileSync(aci);
  fs.writeFileSync(aci, data.subarray(0, Math.floor(data.length / 2)));
  const r = await env.run([INSECURE, 'fetch', aci]);
  t.not(r.exitCode, 0);
  t.deepEqual(JSON.parse(String((await env.run(['image', 'list', '--format=json'])).stdout)), []);
  t.deepEqual(fs.readdirSync(path.join(env.dir, 'cas/tmp')), []);
});

test('an image larger than the disk allows is refused cleanly', async (t) => {
  const env = setup(t);
  const small = env.file('small-disk');
  fs.mkdirSync(small);
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', small]);
  t.teardown(() => void execa('umount', ['-l', small], { reject: false }));
  const big = env.file('bigfile');
  await execa('sh', ['-c', `head -c 20000000 /dev/urandom > "${big}"`]);
  const aci = await buildAci(env.root, { name: 'example.com/toobig', busybox: false });
  await execa('sh', ['-c', `d=$(mktemp -d) && tar -C "$d" -xf "$1" && cp "$2" "$d/rootfs/big" && tar -C "$d" -cf "$1" manifest rootfs && rm -rf "$d"`, 'sh', aci, big]);
  const r = await execa('bin/rkt', [`--dir=${small}/data`, `--local-config=${env.localConfig}`, `--system-config=${env.systemConfig}`, INSECURE, 'fetch', aci], { reject: false });
  t.not(r.exitCode, 0);
  t.regex(String(r.stderr), /space/);
  const list = await execa('bin/rkt', [`--dir=${small}/data`, 'image', 'list', '--format=json'], { reject: false });
  t.deepEqual(JSON.parse(String(list.stdout)), []);
  t.deepEqual(fs.readdirSync(path.join(small, 'data/cas/tmp')), []);
});

test('rkt config prints the merged configuration as JSON', async (t) => {
  const env = setup(t);
  fs.mkdirSync(path.join(env.systemConfig, 'paths.d'), { recursive: true });
  fs.writeFileSync(path.join(env.systemConfig, 'paths.d/paths.json'), JSON.stringify({ rktKind: 'paths', rktVersion: 'v1', data: '/srv/rkt', 'stage1-images': '/usr/lib/rkt' }));
  fs.mkdirSync(path.join(env.localConfig, 'paths.d'), { recursive: true });
  fs.writeFileSync(path.join(env.localConfig, 'paths.d/paths.json'), JSON.stringify({ rktKind: 'paths', rktVersion: 'v1', data: '/var/lib/other' }));
  const r = await env.run(['config']);
  t.is(r.exitCode, 0, String(r.stderr));
  const cfg = JSON.parse(String(r.stdout));
  const paths = cfg.stage0.find((e: { rktKind: string }) => e.rktKind === 'paths');
  t.is(paths.data, '/var/lib/other');
  t.is(paths['stage1-images'], '/usr/lib/rkt');
  fs.writeFileSync(path.join(env.localConfig, 'paths.d/broken.json'), '{');
  const bad = await env.run(['config']);
  t.not(bad.exitCode, 0);
  t.regex(String(bad.stderr), /broken\.json/);
});

test('rkt version answers quickly and unknown commands fail with status 2', async (t) => {
  const env = setup(t);
  const v = await env.run(['version']);
  t.is(v.exitCode, 0);
  t.regex(String(v.stdout), /^rkt Version: /);
  const u = await env.run(['frobnicate']);
  t.is(u.exitCode, 254);
});
