import test from 'ava';
import { RKT } from '../helpers/rkt.js';
import { spawnTerm as spawnTermAt, type Term } from '../helpers/term.js';
import { podStatus, processesWith } from '../helpers/pods.js';
import { KVM, runInBackground, setup, waitReady } from './kvm-common.js';

// Terminals as a user meets them, through a pseudo-terminal: `rkt run
// --interactive` gives the app a terminal of its own (the guest agent's,
// not the serial console), and `rkt attach --mode=console` connects an
// operator to a running pod's serial console and detaches on Ctrl-].

function spawnTerm(file: string, args: string[], cwd: string): Term {
  return spawnTermAt(file, args, { cwd, waitMs: 120_000 });
}

test.serial('run --interactive: the app gets the terminal, its status is the exit code', async (t) => {
  const { env, image } = await setup(t);
  const term = spawnTerm(RKT, [...env.globals(), 'run', ...KVM, '--interactive', image, '--exec=/bin/sh'], env.root);
  t.teardown(() => term.write('\x03'));
  // an interactive shell prompts on its terminal (busybox then asks for the cursor position)
  await term.waitFor(/\/ # /);
  term.write('tty; echo "hello-$((6 * 7))"\r');
  await term.waitFor(/hello-42/);
  t.regex(term.output(), /\/dev\/pts\/\d+/);
  t.notRegex(term.output(), /ttyS0/);
  term.write('exit 3\r');
  t.is(await term.exited, 3, term.output());
});

test.serial('attach --mode=console connects to the serial console of a running pod, detaches on Ctrl-] without stopping it, and shows the guest powering off', async (t) => {
  const { env, image } = await setup(t);
  const { child, uuid } = await runInBackground(t, env, [image, '--exec=/bin/sleep', '--', '600']);
  await waitReady(t, env, uuid);
  // plain `rkt attach` of a pod whose apps have no streams of their own is the console too
  const term = spawnTerm(RKT, [...env.globals(), 'attach', uuid.slice(0, 8)], env.root);
  await term.waitFor(/Connected to the pod console; press Ctrl-\] to detach/);
  term.write('\x1d');
  t.is(await term.exited, 0);
  t.regex(term.output(), /Detached; the pod keeps running/);
  t.is((await podStatus(env, uuid)).state, 'running');
  // a second attach works once the first has let go; it sees the guest's last words
  const again = spawnTerm(RKT, [...env.globals(), 'attach', '--mode=console', uuid], env.root);
  await again.waitFor(/Connected to the pod console/);
  await env.run(['stop', uuid]);
  await again.waitFor(/reboot: Power down/);
  t.is(await again.exited, 0);
  t.regex(again.output(), /The pod console closed/);
  await child;
  t.deepEqual(await processesWith(uuid), []);
});
