import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { listPods, podStatus, processesWith, waitFor } from '../helpers/pods.js';
import { podDir, runInBackground, setup, stderrOf, waitReady } from './kvm-common.js';

// Running pods from the outside: stop (graceful and forced), signals to
// rkt run, enter, and the ways a pod can die (qemu or rkt run killed),
// after which status shows the cause, no process is left, and gc cleans up.
// One VM at a time in this file (test.serial).

// Traps SIGTERM so a graceful stop is visible in the exit status.
const SLEEPER = ['--exec=/bin/sh', '--', '-c', 'trap "echo got-term; exit 7" TERM; echo up; while true; do sleep 0.2; done'];

test.serial('stop powers the VM off: the app gets SIGTERM and its status is recorded', async (t) => {
  const { env, image } = await setup(t);
  const { child, uuid } = await runInBackground(t, env, [image, ...SLEEPER]);
  await waitReady(t, env, uuid);
  const st = await podStatus(env, uuid);
  t.true(typeof st.pid === 'number' && st.pid > 0);
  const t0 = Date.now();
  const stop = await env.run(['stop', uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  t.is(String(stop.stdout).trim(), `"${uuid}"`);
  const r = await child;
  t.true(Date.now() - t0 < 10_000, 'a graceful stop does not wait for the force timeout');
  t.is(r.exitCode, 7, String(r.stderr));
  t.regex(String(r.stdout), /^up$/m);
  t.regex(String(r.stdout), /^got-term$/m);
  const after = await podStatus(env, uuid, ['--wait=20s']);
  t.is(after.state, 'exited');
  t.is(after.apps[0]!.exit_code, 7);
  t.is(after.exit_cause, undefined);
  t.deepEqual(await processesWith(uuid), []);
  const again = await env.run(['stop', uuid]);
  t.is(again.exitCode, 0, 'stopping an exited pod is no failure, as in rkt');
  t.regex(String(again.stderr), /already stopped/);
});

test.serial('stop --force ends qemu at once; a stop that times out ends it too; SIGTERM to rkt run stops the pod gracefully', async (t) => {
  const { env, image } = await setup(t);
  // an app that ignores SIGTERM: systemd kills it after its stop timeout, rkt stop's own comes first
  const stubborn = await runInBackground(t, env, [image, '--exec=/bin/sh', '--', '-c', 'trap "" TERM; echo up; while true; do sleep 0.2; done']);
  await waitReady(t, env, stubborn.uuid);
  const slow = await env.run(['stop', stubborn.uuid], { env: { RKT_KVM_STOP_TIMEOUT: '1' } });
  t.is(slow.exitCode, 0, String(slow.stderr));
  await stubborn.child;
  const s0 = await podStatus(env, stubborn.uuid, ['--wait=20s']);
  t.is(s0.state, 'exited');
  t.regex(s0.exit_cause ?? '', /did not power off within 1 s; qemu was told to quit/);

  const forced = await runInBackground(t, env, [image, '--exec=/bin/sh', '--', '-c', 'trap "" TERM; echo up; while true; do sleep 0.2; done']);
  await waitReady(t, env, forced.uuid);
  const stop = await env.run(['stop', '--force', forced.uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  const r = await forced.child;
  t.is(r.exitCode, 137);
  const st = await podStatus(env, forced.uuid, ['--wait=20s']);
  t.is(st.state, 'exited');
  t.is(st.apps[0]!.exit_code, undefined);
  t.is(st.exit_cause, 'rkt stop --force: qemu was told to quit');
  t.deepEqual(await processesWith(forced.uuid), []);

  const termed = await runInBackground(t, env, [image, ...SLEEPER]);
  await waitReady(t, env, termed.uuid);
  termed.child.kill('SIGTERM');
  const r2 = await termed.child;
  t.is(r2.exitCode, 7, String(r2.stderr));
  t.regex(String(r2.stdout), /^got-term$/m);
  t.deepEqual(await processesWith(termed.uuid), []);
});

test.serial('enter runs commands in the app, as its user, with its environment, stdin and exit status', async (t) => {
  const { env, image } = await setup(t);
  const { uuid } = await runInBackground(t, env, [
    image,
    '--name=web',
    '--user=1000',
    '--group=50',
    '--working-dir=/etc',
    '--environment=GREETING=hi there',
    '--exec=/bin/sleep',
    '--',
    '1000',
    '---',
    image,
    '--name=other',
    '--exec=/bin/sleep',
    '--',
    '1000',
  ]);
  await waitReady(t, env, uuid);
  const r = await env.run(['enter', '--app=web', uuid, '/bin/sh', '-c', 'echo "$(id -u):$(id -g) $(pwd) $GREETING $(head -c 4 /etc/group)"; echo oops >&2; exit 5']);
  t.is(r.exitCode, 5, String(r.stderr));
  t.is(String(r.stdout).trim(), '1000:50 /etc hi there root', 'the image\'s own /etc/group, not the guest\'s');
  t.is(stderrOf(r), 'oops');
  const piped = await env.run(['enter', '--app=web', uuid, '/bin/cat'], { input: 'through stdin\n' });
  t.is(piped.exitCode, 0, String(piped.stderr));
  t.is(String(piped.stdout), 'through stdin'); // execa strips the final newline
  const other = await env.run(['enter', '--app=other', uuid, '/bin/id', '-u']);
  t.is(String(other.stdout).trim(), '0');
  const missing = await env.run(['enter', '--app=web', uuid, '/bin/nope']);
  t.is(missing.exitCode, 127);
  const noApp = await env.run(['enter', uuid, '/bin/true']);
  t.not(noApp.exitCode, 0, 'two apps: enter must be told which');
  await env.run(['stop', '--force', uuid]);
});

test.serial('kill -9 of qemu: the pod is exited with the cause, and nothing is left', async (t) => {
  const { env, image } = await setup(t);
  const { child, uuid } = await runInBackground(t, env, [image, ...SLEEPER]);
  await waitReady(t, env, uuid);
  const dir = podDir(env, uuid)!;
  const qemuPid = Number(fs.readFileSync(path.join(dir, 'qemu.pid'), 'utf8'));
  t.true(fs.readFileSync(`/proc/${qemuPid}/cmdline`, 'utf8').includes('qemu-system'));
  process.kill(qemuPid, 'SIGKILL');
  const r = await child;
  t.is(r.exitCode, 137);
  t.regex(String(r.stderr), /qemu killed by signal 9/);
  const st = await podStatus(env, uuid, ['--wait=20s']);
  t.is(st.state, 'exited');
  t.is(st.exit_cause, 'qemu killed by signal 9 (SIGKILL)');
  await waitFor('no process of the pod', async () => (await processesWith(uuid)).length === 0, 10_000);
});

test.serial('kill -9 of rkt run: qemu and virtiofsd die too, status says why, gc removes everything', async (t) => {
  const { env, image } = await setup(t);
  const { child, uuid } = await runInBackground(t, env, [image, ...SLEEPER]);
  await waitReady(t, env, uuid);
  t.true((await processesWith(uuid)).length >= 2, 'the run entrypoint and qemu run with the UUID in their command line');
  child.kill('SIGKILL');
  await child;
  await waitFor('no process of the pod', async () => (await processesWith(uuid)).length === 0, 10_000);
  await waitFor('the pod to read as exited', async () => (await podStatus(env, uuid)).state === 'exited', 10_000);
  const st = await podStatus(env, uuid);
  t.regex(st.exit_cause ?? '', /killed/);
  const dir = podDir(env, uuid)!;
  const gc = await env.run(['gc', '--grace-period=0s']);
  t.is(gc.exitCode, 0, String(gc.stderr));
  t.false(fs.existsSync(dir));
  t.deepEqual(await listPods(env), []);
  t.false(fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(env.dir), 'no pod mount is left on the host');
});
