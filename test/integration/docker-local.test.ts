import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { execa } from 'execa';
import { RktEnv, REPO } from '../helpers/rkt.js';
import { needCommand, needFile } from '../helpers/prereqs.js';
import { buildImage, dockerSaveArchive, writeOciLayout } from '../helpers/oci.js';
import { reapPods } from '../helpers/pods.js';
import { threeLayers } from './docker-common.js';

// Local images: an OCI image layout directory (oci:PATH[:REF]) and a
// `docker save` archive (docker-archive:PATH[:REPO:TAG]), converted like
// registry images and run with the fly stage1.

const FLY_ACI = path.join(REPO, 'build/stage1-fly.aci');
const SHOW = 'echo "user=$(id -u):$(id -g) pwd=$(pwd)"; ls /opt/dir; test -e /etc/removed.conf || echo removed-gone; test -e /var/old || echo old-gone; cat /app/data.txt';

function setup(t: ExecutionContext): RktEnv {
  const env = new RktEnv('rkt-docker-local-');
  t.teardown(async () => {
    await reapPods(env);
    env.cleanup();
  });
  return env;
}

async function image() {
  return buildImage({ layers: threeLayers(), config: { Entrypoint: ['/bin/sh', '-c', SHOW], User: 'app', WorkingDir: '/opt' } });
}

function checkRun(t: ExecutionContext, out: string): void {
  t.regex(out, /^user=1000:1000 pwd=\/opt$/m);
  t.regex(out, /^c$/m);
  t.notRegex(out, /^a$/m);
  t.regex(out, /^removed-gone$/m);
  t.regex(out, /^old-gone$/m);
  t.regex(out, /^layer three data$/m);
}

test('oci:PATH:REF fetches a named image of an OCI layout; a layout with several images needs the REF', async (t) => {
  needFile(FLY_ACI, 'build it with "node dist/stage1-fly/build.js build/stage1-fly.aci"');
  const env = setup(t);
  const layout = env.file('myimage');
  const base = await buildImage({ layers: threeLayers().slice(0, 1) });
  writeOciLayout(layout, { v1: await image(), other: await buildImage({ layers: [[{ name: 'x', data: 'x' }]] }), base });
  const ambiguous = await env.run(['--insecure-options=image', 'fetch', `oci:${layout}`]);
  t.is(ambiguous.exitCode, 254);
  t.regex(String(ambiguous.stderr), /holds 3 images; name one with oci:.*:REF/);
  const missing = await env.run(['--insecure-options=image', 'fetch', `oci:${layout}:v9`]);
  t.is(missing.exitCode, 254);
  t.regex(String(missing.stderr), /no image named "v9" \(it has: "v1", "other", "base"\)/);
  // the lowest layer comes from the store below, and the whiteouts above it still delete
  t.is((await env.run(['--insecure-options=image', 'fetch', `oci:${layout}:base`])).exitCode, 0);
  const r = await env.run(['--insecure-options=image', 'run', `--stage1-path=${FLY_ACI}`, `oci:${layout}:v1`], { timeout: 180_000 });
  t.is(r.exitCode, 0, String(r.stderr));
  checkRun(t, String(r.stdout));
  const names = String((await env.run(['image', 'list', '--no-legend', '--fields=name'])).stdout);
  t.regex(names, /^myimage:v1$/m);
});

test('docker-archive:PATH fetches a docker save tarball, and reuses the layers an OCI fetch stored', async (t) => {
  needFile(FLY_ACI, 'build it with "node dist/stage1-fly/build.js build/stage1-fly.aci"');
  const env = setup(t);
  const img = await image();
  const archive = env.file('saved.tar');
  await dockerSaveArchive(archive, img, 'example.org/team/app:2.0');
  const r = await env.run(['--insecure-options=image', 'run', `--stage1-path=${FLY_ACI}`, `docker-archive:${archive}`], { timeout: 180_000 });
  t.is(r.exitCode, 0, String(r.stderr));
  checkRun(t, String(r.stdout));
  const names = String((await env.run(['image', 'list', '--no-legend', '--fields=name'])).stdout);
  t.regex(names, /^example\.org\/team\/app:2\.0$/m);
  // the same layers from an OCI layout (gzip-compressed there) are the same ACIs
  const layout = env.file('layout');
  writeOciLayout(layout, { v1: img });
  const before = fs.readdirSync(path.join(env.dir, 'cas/blob/sha512'), { recursive: true }).length;
  const f = await env.run(['--insecure-options=image', 'fetch', `oci:${layout}:v1`]);
  t.is(f.exitCode, 0, String(f.stderr));
  const after = fs.readdirSync(path.join(env.dir, 'cas/blob/sha512'), { recursive: true }).length;
  t.true(after - before <= 2, `only the top image may be new (${before} -> ${after})`);
  const gz = env.file('saved.tar.gz');
  fs.writeFileSync(gz, zlib.gzipSync(fs.readFileSync(archive)));
  const compressed = await env.run(['--insecure-options=image', 'fetch', `docker-archive:${gz}`]);
  t.is(compressed.exitCode, 254);
  t.regex(String(compressed.stderr), /is compressed; decompress it first/);
  const tagged = await env.run(['--insecure-options=image', 'fetch', `docker-archive:${archive}:example.org/team/app:3.0`]);
  t.is(tagged.exitCode, 254);
  t.regex(String(tagged.stderr), /no image tagged "example.org\/team\/app:3.0"/);
});

test('a layout written by umoci converts too', async (t) => {
  needCommand('umoci', 'umoci');
  const env = setup(t);
  const layout = env.file('umoci-layout');
  await execa('umoci', ['init', '--layout', layout]);
  await execa('umoci', ['new', '--image', `${layout}:latest`]);
  const bundle = env.file('bundle');
  await execa('umoci', ['unpack', '--image', `${layout}:latest`, bundle]);
  fs.mkdirSync(path.join(bundle, 'rootfs/srv'), { recursive: true });
  fs.writeFileSync(path.join(bundle, 'rootfs/srv/hello'), 'hi from umoci\n');
  await execa('umoci', ['repack', '--image', `${layout}:latest`, bundle]);
  await execa('umoci', ['config', '--image', `${layout}:latest`, '--config.entrypoint=/srv/hello', '--config.env=FOO=bar']);
  const r = await env.run(['--insecure-options=image', 'fetch', `oci:${layout}:latest`]);
  t.is(r.exitCode, 0, String(r.stderr));
  const id = String(r.stdout).trim();
  const dir = env.file('rendered');
  t.is((await env.run(['image', 'render', id, dir])).exitCode, 0);
  t.is(fs.readFileSync(path.join(dir, 'rootfs/srv/hello'), 'utf8'), 'hi from umoci\n');
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest'), 'utf8'));
  t.deepEqual(manifest.app.exec, ['/srv/hello']);
  t.deepEqual(manifest.app.environment.find((e: { name: string }) => e.name === 'FOO'), { name: 'FOO', value: 'bar' });
});
