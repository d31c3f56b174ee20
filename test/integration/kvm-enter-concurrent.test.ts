import test, { type ExecutionContext } from 'ava';
import { execa, type ResultPromise } from 'execa';
import { RKT } from '../helpers/rkt.js';
import { waitFor } from '../helpers/pods.js';
import type { RktEnv } from '../helpers/rkt.js';
import { runInBackground, setup, stderrOf, waitReady } from './kvm-common.js';

// `rkt enter` on kvm as a user runs it from several shells at once: one
// guest agent serves many sessions side by side, and an enter that waits
// or runs ends at once on SIGINT or SIGTERM, its command killed in the VM.

interface Entered {
  child: ResultPromise<{ reject: false; stdin: 'ignore'; all: true }>;
  /** stdout and stderr so far. */
  output: () => string;
}

/** `rkt enter` in the background, without a terminal. */
function enterInBackground(t: ExecutionContext, env: RktEnv, uuid: string, argv: string[]): Entered {
  const child = execa(RKT, [...env.globals(), 'enter', uuid, ...argv], { reject: false, stdin: 'ignore', all: true });
  t.teardown(() => void child.kill('SIGKILL'));
  let out = '';
  child.all.on('data', (d: Buffer) => (out += d.toString()));
  return { child, output: () => out };
}

/** The processes running in the app, as `ps` in another enter session shows them. */
async function psInPod(env: RktEnv, uuid: string): Promise<string> {
  const r = await env.run(['enter', uuid, '/bin/ps', '-o', 'args']);
  return String(r.stdout);
}

test.serial('a second enter runs while the first one does, and several at once all finish', async (t) => {
  const { env, image } = await setup(t);
  const { uuid, child } = await runInBackground(t, env, [image, '--exec=/bin/sleep', '--', '3600']);
  await waitReady(t, env, uuid);
  const { child: long } = enterInBackground(t, env, uuid, ['/bin/sleep', '3333']);
  await waitFor('the first session to run in the guest', async () => (await psInPod(env, uuid)).includes('sleep 3333'), 120_000);

  const second = await env.run(['enter', uuid, '/bin/echo', 'second']);
  t.is(second.exitCode, 0, stderrOf(second));
  t.is(String(second.stdout).trim(), 'second');
  t.is(long.exitCode ?? null, null, 'the first session is still running');

  const many = await Promise.all(
    [1, 2, 3, 4].map((n) => env.run(['enter', uuid, '/bin/sh', '-c', `sleep 2; echo "session ${n}"; exit ${n}`])),
  );
  for (const [i, r] of many.entries()) {
    t.is(r.exitCode, i + 1, stderrOf(r));
    t.is(String(r.stdout).trim(), `session ${i + 1}`);
  }
  t.is(long.exitCode ?? null, null, 'the first session is still running');

  // SIGTERM ends a running session at once, and its command dies in the VM
  long.kill('SIGTERM');
  const ended = await long;
  t.is(ended.exitCode, 143, ended.all);
  await waitFor('the ended session\'s command to be killed in the guest', async () => !(await psInPod(env, uuid)).includes('sleep 3333'), 60_000);
  await env.run(['stop', '--force', uuid]);
  await child;
});

test.serial('with every agent port busy an enter waits, says so, and stops at once on SIGINT or SIGTERM', async (t) => {
  const { env, image } = await setup(t);
  const { uuid, child } = await runInBackground(t, env, [image, '--exec=/bin/sleep', '--', '3600']);
  await waitReady(t, env, uuid);
  // a shell that ignores SIGTERM and SIGINT, as interactive shells do: only a disconnect ends it
  const busy = Array.from({ length: 8 }, (_, i) => enterInBackground(t, env, uuid, ['/bin/sh', '-c', `trap '' TERM INT; echo started; sleep 40${i}0`]));
  // (ps needs a port of its own: none is free now)
  await waitFor('eight sessions to run in the guest', async () => busy.every((b) => b.output().includes('started')), 180_000);

  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const waiting = enterInBackground(t, env, uuid, ['/bin/echo', 'never']);
    await waitFor('the ninth enter to say it waits', async () => /in use by other rkt enter sessions; waiting/.test(waiting.output()), 60_000);
    t.is(waiting.child.exitCode ?? null, null, 'it waits for a port');
    waiting.child.kill(sig);
    const r = await waiting.child;
    t.is(r.exitCode, sig === 'SIGINT' ? 130 : 143, r.all);
    t.regex(r.all, /every port of the pod's guest agent is in use by other rkt enter sessions; waiting for one to end/);
    t.notRegex(r.all, /never/);
  }

  // a busy session's command ignores SIGTERM, yet SIGTERM to rkt enter ends it and kills it in the guest
  busy[0]!.child.kill('SIGTERM');
  t.is((await busy[0]!.child).exitCode, 143);
  await waitFor('its command to be killed in the guest', async () => !(await psInPod(env, uuid)).split('\n').some((l) => l.trim() === 'sleep 4000'), 60_000);
  // which frees its port for the next one
  const next = await env.run(['enter', uuid, '/bin/echo', 'next']);
  t.is(String(next.stdout).trim(), 'next', stderrOf(next));
  for (const b of busy.slice(1)) b.child.kill('SIGTERM');
  for (const b of busy.slice(1)) t.is((await b.child).exitCode, 143);
  await env.run(['stop', '--force', uuid]);
  await child;
});
