import fs from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { status as Status, type ServiceError } from '@grpc/grpc-js';
import { execa } from 'execa';
import { collect, FLY, needFlyStage1, startApiService, uuidOf } from '../helpers/api-client.js';
import { KVM, podDir, runInBackground, setup, waitReady } from './kvm-common.js';

// What a kvm pod leaves for rkt export and GetLogs: its apps wrote as the
// pod's block of host ids, which the exported image must hold as the pod's
// own ids again; and its console log, the only log any flavor keeps.

test('a kvm pod exports with its own ids, and its console log is served by GetLogs', async (t) => {
  needFlyStage1();
  const { env, image } = await setup(t);
  const r = await env.run(
    ['run', ...KVM, `--uuid-file-save=${env.file('uuid')}`, image, '--exec=/bin/sh', '--', '-c', 'echo root > /by-root; mkdir /home; chown 1000:50 /home; echo user > /home/by-user; chown 1000:50 /home/by-user; rm /etc/group'],
    { timeout: 600_000 },
  );
  t.is(r.exitCode, 0, String(r.stderr));
  const uuid = uuidOf(env.file('uuid'));
  const out = env.file('kvm.aci');
  const e = await env.run(['export', uuid, out]);
  t.is(e.exitCode, 0, String(e.stderr));
  const listing = String((await execa('tar', ['-tzvf', out, '--numeric-owner'])).stdout);
  t.regex(listing, /^-rw-r--r-- 0\/0 .* rootfs\/by-root$/m, 'guest root is root in the image, not the pod block');
  t.regex(listing, /^-rw-r--r-- 1000\/50 .* rootfs\/home\/by-user$/m);
  t.notRegex(listing, /rootfs\/etc\/group$/m);
  t.false(/ (1[0-9]{9}|2[0-9]{9})\/\d+ /.test(listing), 'no host block id in the image');

  const f = await env.run(['fetch', '--insecure-options=image', out]);
  t.is(f.exitCode, 0, String(f.stderr));
  const again = await env.run(['run', ...FLY, String(f.stdout).trim().split('\n').at(-1)!, '--exec=/bin/sh', '--', '-c', 'cat /by-root /home/by-user']);
  t.is(again.exitCode, 0, String(again.stderr));
  t.is(String(again.stdout), 'root\nuser');

  const api = await startApiService(env);
  t.teardown(() => api.stop());
  const dir = podDir(env, uuid)!;
  const file = fs.readFileSync(path.join(dir, 'qemu', 'console.log'), 'utf8');
  const expected = file.split('\n').filter((l, i, all) => l !== '' || i < all.length - 1);
  t.true(expected.length > 0, 'the pod kept a console log');
  const all = (await collect<{ lines: string[] }>(api.client, 'GetLogs', { pod_id: uuid })).flatMap((m) => m.lines);
  t.deepEqual(all, expected);
  const last = (await collect<{ lines: string[] }>(api.client, 'GetLogs', { pod_id: uuid, lines: 1 })).flatMap((m) => m.lines);
  t.deepEqual(last, expected.slice(-1));
  const perApp = (await t.throwsAsync(collect(api.client, 'GetLogs', { pod_id: uuid, app_name: 'busybox' }))) as ServiceError;
  t.is(perApp.code, Status.UNIMPLEMENTED);
});

test('GetLogs with follow streams a running kvm pod\'s console until the pod exits', async (t) => {
  const { env, image } = await setup(t);
  const api = await startApiService(env);
  t.teardown(() => api.stop());
  const bg = await runInBackground(t, env, [image, '--exec=/bin/sh', '--', '-c', 'sleep 4']);
  await waitReady(t, env, bg.uuid);
  const followed = collect<{ lines: string[] }>(api.client, 'GetLogs', { pod_id: bg.uuid, follow: true });
  const run = await bg.child;
  t.is(run.exitCode, 0, String(run.stderr));
  const lines = (await followed).flatMap((m) => m.lines);
  const file = fs.readFileSync(path.join(podDir(env, bg.uuid)!, 'qemu', 'console.log'), 'utf8');
  t.true(lines.length > 0);
  t.deepEqual(lines, file.split('\n').filter((l, i, all) => l !== '' || i < all.length - 1), 'the stream ended with the pod, holding the whole log');
});
