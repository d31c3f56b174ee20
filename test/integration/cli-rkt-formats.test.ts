import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, type RktEnv } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { podWorld } from '../helpers/pods.js';
import { needFile } from '../helpers/prereqs.js';

// Issue 15, items 13, 15, 16 and status --uuid-file: what rkt prints, as an
// rkt 1.x user reads it. Pods run on the fly stage1 built from this tree.

const FLY_ACI = path.join(REPO, 'build', 'stage1-fly.aci');
const FLY = ['--insecure-options=image', `--stage1-path=${FLY_ACI}`];

function world(t: ExecutionContext): RktEnv {
  needFile(FLY_ACI, 'run scripts/setup.sh, which builds the stage1 images');
  const env = podWorld(t, 'rkt-formats-');
  return env;
}

/** Go's "2006-01-02 15:04:05.999 -0700 MST": trailing zeros of the fraction dropped, the zone named. */
const RKT_TIME = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,3})? [+-]\d{4} [A-Z0-9+-]+$/;

async function runOnce(t: ExecutionContext, env: RktEnv): Promise<{ uuid: string; imageId: string }> {
  const image = await buildAci(env.root, { name: 'example.com/busybox', app: { exec: ['/bin/true'], user: '0', group: '0' } });
  const fetched = await env.run(['--insecure-options=image', 'fetch', '--full', image]);
  t.is(fetched.exitCode, 0, String(fetched.stderr));
  const uuidFile = env.file('uuid');
  const r = await env.run(['run', ...FLY, `--uuid-file-save=${uuidFile}`, 'example.com/busybox']);
  t.is(r.exitCode, 0, String(r.stderr));
  return { uuid: fs.readFileSync(uuidFile, 'utf8').trim(), imageId: String(fetched.stdout).trim() };
}

test('rkt fetch prints the short image ID (sha512- and 32 hex digits) unless --full', async (t) => {
  const env = world(t);
  const image = await buildAci(env.root, { name: 'example.com/fetched' });
  const short = await env.run(['--insecure-options=image', 'fetch', image]);
  t.is(short.exitCode, 0, String(short.stderr));
  t.regex(String(short.stdout), /^sha512-[0-9a-f]{32}$/);
  for (const full of [['--full'], ['--full=true']]) {
    const r = await env.run(['--insecure-options=image', 'fetch', ...full, image]);
    t.regex(String(r.stdout), /^sha512-[0-9a-f]{128}$/);
    t.true(String(r.stdout).startsWith(String(short.stdout).trim()));
  }
  const off = await env.run(['--insecure-options=image', 'fetch', '--full=false', image]);
  t.is(String(off.stdout), String(short.stdout));
  // the short ID is one the other commands take
  t.is((await env.run(['image', 'cat-manifest', String(short.stdout).trim()])).exitCode, 0);
});

test('status and list --full print times in rkt format; list --full shows 19-character image IDs', async (t) => {
  const env = world(t);
  const { uuid, imageId } = await runOnce(t, env);
  const status = await env.run(['status', uuid]);
  t.is(status.exitCode, 0, String(status.stderr));
  const field = (name: string) => String(status.stdout).split('\n').find((l) => l.startsWith(`${name}=`))?.slice(name.length + 1);
  t.regex(field('created') ?? '', RKT_TIME);
  t.regex(field('started') ?? '', RKT_TIME);
  const list = await env.run(['list', '--full', '--no-legend']);
  t.is(list.exitCode, 0, String(list.stderr));
  const cells = String(list.stdout).trim().split(/\t+/);
  t.is(cells[0], uuid);
  t.is(cells[3], imageId.slice(0, 19), 'sha512- and 12 hex digits, as rkt list --full');
  t.regex(cells[5] ?? '', RKT_TIME);
  t.regex(cells[6] ?? '', RKT_TIME);
  t.is(cells[5], field('created') ?? '', 'one format in status and list');
});

test('list --format=json carries exited_at as status --format=json does, in the same shape', async (t) => {
  const env = world(t);
  const { uuid } = await runOnce(t, env);
  const status = JSON.parse(String((await env.run(['status', '--format=json', uuid])).stdout));
  const listed = JSON.parse(String((await env.run(['list', '--format=json'])).stdout)).find((p: { name: string }) => p.name === uuid);
  t.is(typeof status.exited_at, 'number');
  t.deepEqual(listed, status);
  t.true(listed.exited_at >= listed.started_at && listed.started_at >= listed.created_at);
});

test('status --uuid-file reads the UUID that run --uuid-file-save wrote', async (t) => {
  const env = world(t);
  const { uuid } = await runOnce(t, env);
  const r = await env.run(['status', `--uuid-file=${env.file('uuid')}`]);
  t.is(r.exitCode, 0, String(r.stderr));
  t.regex(String(r.stdout), /^state=exited$/m);
  const json = await env.run(['status', '--format=json', '--uuid-file', env.file('uuid')]);
  t.is(JSON.parse(String(json.stdout)).name, uuid);
  const both = await env.run(['status', `--uuid-file=${env.file('uuid')}`, uuid]);
  t.is(both.exitCode, 254);
  t.regex(String(both.stderr), /not both/);
  const missing = await env.run(['status', `--uuid-file=${env.file('nope')}`]);
  t.is(missing.exitCode, 254);
});

test('image rm of an image a pod uses names the image and the pod, not an internal tree', async (t) => {
  const env = world(t);
  const image = await buildAci(env.root, { name: 'example.com/sleeper', app: { exec: ['/bin/sleep', '600'], user: '0', group: '0' } });
  const uuidFile = env.file('uuid');
  const run = env.run(['run', ...FLY, `--uuid-file-save=${uuidFile}`, image], { timeout: 300_000 });
  const end = Date.now() + 60_000;
  let uuid = '';
  while (Date.now() < end) {
    const status = fs.existsSync(uuidFile) ? await env.run(['status', `--uuid-file=${uuidFile}`]) : undefined;
    if (status && /state=running/.test(String(status.stdout))) {
      uuid = fs.readFileSync(uuidFile, 'utf8').trim();
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  t.truthy(uuid, 'the pod runs');
  const rm = await env.run(['image', 'rm', 'example.com/sleeper']);
  t.is(rm.exitCode, 254);
  const err = String(rm.stderr);
  t.notRegex(err, /deps-sha512/);
  t.regex(err, /image sha512-[0-9a-f]{12} \(example\.com\/sleeper\) is in use by pod/);
  t.true(err.includes(uuid), err);
  t.regex(err, /running/);
  t.is((await env.run(['stop', '--force', uuid])).exitCode, 0);
  await run;
});
