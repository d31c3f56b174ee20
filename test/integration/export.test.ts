import fs from 'node:fs';
import path from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { execa } from 'execa';
import { buildAci } from '../helpers/aci.js';
import { FLY, needFlyStage1, uuidOf } from '../helpers/api-client.js';
import { podStatus, reapPods, waitFor } from '../helpers/pods.js';
import { needFile, needRoot } from '../helpers/prereqs.js';
import { REPO, RktEnv } from '../helpers/rkt.js';

// rkt export as a user runs it: a fly pod's app changes its rootfs and
// exits, the app is exported, the ACI is fetched back and run, and what the
// app left behind is there (and what it deleted is not).

async function setup(t: ExecutionContext, prefix = 'rkt-export-'): Promise<{ env: RktEnv; image: string }> {
  needRoot('rkt export tests run pods');
  needFlyStage1();
  const env = new RktEnv(prefix);
  t.teardown(async () => {
    await reapPods(env);
    env.cleanup();
  });
  const image = await buildAci(env.root, {
    name: 'example.com/exporter',
    app: { exec: ['/bin/sh', '-c', 'exit 0'], user: '0', group: '0' },
    files: { 'etc/motd': 'welcome\n', 'data/keep': 'kept\n', 'data/drop': 'dropped\n' },
  });
  return { env, image };
}

async function runPod(env: RktEnv, args: string[], name = 'uuid'): Promise<string> {
  const r = await env.run(['run', ...FLY, `--uuid-file-save=${env.file(name)}`, ...args]);
  if (r.exitCode !== 0) throw new Error(`rkt run failed (${r.exitCode}): ${r.stderr}`);
  return uuidOf(env.file(name));
}

test.serial('an exited app exports as an ACI that fetches and runs with the files the app wrote', async (t) => {
  const { env, image } = await setup(t);
  const uuid = await runPod(env, [image, '--exec=/bin/sh', '--', '-c', 'echo "made by the app" > /made; rm /etc/motd; rm -r /data; mkdir /data; echo new > /data/fresh; chmod 4711 /made']);
  const out = env.file('exported.aci');
  const r = await env.run(['export', uuid, out]);
  t.is(r.exitCode, 0, String(r.stderr));
  t.true(fs.statSync(out).size > 0);
  t.deepEqual(fs.readdirSync(env.root).filter((f) => f.startsWith('.exported.aci')), [], 'no temporary file left');
  t.false(fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(env.dir), 'no mount left on the host');

  const listing = String((await execa('tar', ['-tzvf', out])).stdout);
  t.regex(listing, /^-rw-r--r-- 0\/0 .* manifest$/m);
  t.regex(listing, /^-rws--x--x 0\/0 .* rootfs\/made$/m, 'mode and owner kept');
  t.notRegex(listing, /rootfs\/etc\/motd/, 'a file the app deleted is gone');
  t.notRegex(listing, /rootfs\/data\/(keep|drop)/, 'a directory the app replaced is opaque');

  const f = await env.run(['fetch', '--insecure-options=image', out]);
  t.is(f.exitCode, 0, String(f.stderr));
  const id = String(f.stdout).trim().split('\n').at(-1)!;
  t.regex(id, /^sha512-[0-9a-f]{128}$/);
  const manifest = JSON.parse(String((await env.run(['image', 'cat-manifest', id])).stdout)) as { name: string };
  t.is(manifest.name, 'example.com/exporter', "the app's image manifest");

  const again = await env.run(['run', ...FLY, id, '--exec=/bin/sh', '--', '-c', 'cat /made /data/fresh; ls /etc/motd /data/keep 2>&1; true']);
  t.is(again.exitCode, 0, String(again.stderr));
  t.regex(String(again.stdout), /made by the app\nnew\n/);
  t.regex(String(again.stdout), /motd.*No such file/);
  t.regex(String(again.stdout), /keep.*No such file/);
});

test.serial('export picks the app with --app when the pod has several, and refuses what it cannot export', async (t) => {
  const { env, image } = await setup(t);
  const uuid = await runPod(env, [image, '--name=first', '--exec=/bin/sh', '--', '-c', 'echo one > /who', '---', image, '--name=second', '--exec=/bin/sh', '--', '-c', 'echo two > /who']);
  const out = env.file('second.aci');
  const several = await env.run(['export', uuid, out]);
  t.is(several.exitCode, 254);
  t.regex(String(several.stderr), /several apps \(first, second\); choose one with --app/);
  const missing = await env.run(['export', '--app=third', uuid, out]);
  t.is(missing.exitCode, 254);
  t.regex(String(missing.stderr), /no app named "third"/);
  const second = await env.run(['export', '--app=second', uuid, out]);
  t.is(second.exitCode, 0, String(second.stderr));
  t.regex(String((await execa('tar', ['-xzOf', out, 'rootfs/who'])).stdout), /^two$/);

  const exists = await env.run(['export', '--app=first', uuid, out]);
  t.is(exists.exitCode, 254);
  t.regex(String(exists.stderr), /already exists; choose another file or pass --overwrite/);
  t.regex(String((await execa('tar', ['-xzOf', out, 'rootfs/who'])).stdout), /^two$/, 'the existing file is untouched');
  const over = await env.run(['export', '--app=first', '--overwrite', uuid, out]);
  t.is(over.exitCode, 0, String(over.stderr));
  t.regex(String((await execa('tar', ['-xzOf', out, 'rootfs/who'])).stdout), /^one$/);

  const ext = await env.run(['export', '--app=first', uuid, env.file('first.tar')]);
  t.is(ext.exitCode, 254);
  t.regex(String(ext.stderr), /must end in \.aci/);
  t.false(fs.existsSync(env.file('first.tar')));

  const prep = await env.run(['prepare', ...FLY, image]);
  t.is(prep.exitCode, 0, String(prep.stderr));
  const notExited = await env.run(['export', String(prep.stdout).trim(), env.file('prepared.aci')]);
  t.is(notExited.exitCode, 254);
  t.regex(String(notExited.stderr), /is prepared; only exited pods can be exported/);
  t.false(fs.existsSync(env.file('prepared.aci')));

  const noDir = await env.run(['export', '--app=first', uuid, env.file('no/such/dir/x.aci')]);
  t.is(noDir.exitCode, 254);
  t.regex(String(noDir.stderr), /its directory .*no\/such\/dir does not exist/);

  const unknown = await env.run(['export', '00000000-0000-0000-0000-000000000000', env.file('none.aci')]);
  t.is(unknown.exitCode, 254);
  t.regex(String(unknown.stderr), /no pod with UUID/);
  t.deepEqual(fs.readdirSync(env.root).filter((f) => f.startsWith('.')), [], 'no temporary files left');
});

test.serial('a running pod is not exported', async (t) => {
  const { env, image } = await setup(t);
  const child = env.run(['run', ...FLY, `--uuid-file-save=${env.file('uuid')}`, image, '--exec=/bin/sh', '--', '-c', `sleep 60`], { timeout: 120_000 });
  const end = Date.now() + 60_000;
  while (!fs.existsSync(env.file('uuid')) || fs.readFileSync(env.file('uuid'), 'utf8').trim() === '') {
    if (Date.now() > end) throw new Error('the pod did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
  const uuid = uuidOf(env.file('uuid'));
  await waitFor('the pod to run', async () => (await podStatus(env, uuid)).state === 'running', 60_000);
  const r = await env.run(['export', uuid, env.file('running.aci')]);
  t.is(r.exitCode, 254);
  t.regex(String(r.stderr), /is running; only exited pods can be exported/);
  t.false(fs.existsSync(env.file('running.aci')));
  await env.run(['stop', '--force', uuid]);
  await child;
});

test.serial('an nspawn pod exports the same way', async (t) => {
  const { env, image } = await setup(t);
  const nspawnAci = path.join(REPO, 'build', 'stage1-coreos.aci');
  needFile(nspawnAci, 'build it with "node dist/stage1-nspawn/build.js build/stage1-coreos.aci"');
  const r = await env.run(['run', '--insecure-options=image', `--stage1-path=${nspawnAci}`, `--uuid-file-save=${env.file('uuid')}`, image, '--exec=/bin/sh', '--', '-c', 'echo from-nspawn > /made; rm /etc/motd'], { timeout: 300_000 });
  t.is(r.exitCode, 0, String(r.stderr));
  const out = env.file('nspawn.aci');
  const e = await env.run(['export', uuidOf(env.file('uuid')), out]);
  t.is(e.exitCode, 0, String(e.stderr));
  t.is(String((await execa('tar', ['-xzOf', out, 'rootfs/made'])).stdout), 'from-nspawn');
  t.notRegex(String((await execa('tar', ['-tzf', out])).stdout), /rootfs\/etc\/motd/);
});

test.serial('where overlayfs was refused, the private copy the app ran in is exported', async (t) => {
  // a ":" in the data dir's path is one thing overlayfs options cannot carry: the pod gets a private copy
  const { env, image } = await setup(t, 'rkt-export:copy-');
  const uuid = await runPod(env, [image, '--exec=/bin/sh', '--', '-c', 'echo copied > /made; rm /etc/motd']);
  const pod = fs.readdirSync(path.join(env.dir, 'pods', 'run'))[0]!;
  t.false(fs.existsSync(path.join(env.dir, 'pods', 'run', pod, 'overlay', 'busybox', 'work', 'work')), 'the pod ran without overlayfs');
  const out = env.file('copy.aci');
  const e = await env.run(['export', uuid, out]);
  t.is(e.exitCode, 0, String(e.stderr));
  t.is(String((await execa('tar', ['-xzOf', out, 'rootfs/made'])).stdout), 'copied');
  const names = String((await execa('tar', ['-tzf', out])).stdout).split('\n');
  t.true(names.includes('rootfs/bin/busybox'), 'the whole rootfs, not only what the app changed');
  t.false(names.includes('rootfs/etc/motd'));
});
