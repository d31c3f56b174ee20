import test from 'ava';
import { execa } from 'execa';
import { RKT } from '../helpers/rkt.js';
import { resizeAndCheck, spawnTerm as spawnTermAt, type Term } from '../helpers/term.js';
import { podStatus, waitFor } from '../helpers/pods.js';
import { KVM, runInBackground, setup, stderrOf, waitReady } from './kvm-common.js';

// An app's own streams on kvm as a user meets them: `rkt run --interactive`
// with piped input and at a terminal (whose size follows the host's), and
// apps run with --stdin/--stdout/--stderr in stream or tty mode, reached
// later with `rkt attach`. All of it goes through the guest agent; the
// serial console stays reachable with --mode=console.

function spawnTerm(args: string[], cwd: string, size = { cols: 100, rows: 30 }): Term {
  return spawnTermAt(RKT, args, { cwd, size, waitMs: 180_000 });
}

test.serial('run --interactive with piped input: the app reads all of it and its end, prints only its own output, and its status is the exit code', async (t) => {
  const { env, image } = await setup(t);
  const r = await execa(RKT, [...env.globals(), 'run', ...KVM, '--interactive', image, '--exec', '/bin/sh'], {
    input: 'echo hi; exit 5\n',
    reject: false,
    timeout: 300_000,
  });
  t.is(r.exitCode, 5, stderrOf(r));
  t.is(r.stdout, 'hi');
  // and nothing of the console: no cursor query, no kernel or power-off lines
  t.is(stderrOf(r), '');
});

test.serial('run --interactive at a terminal: the app has a terminal whose size follows the host terminal', async (t) => {
  const { env, image } = await setup(t);
  const term = spawnTerm([...env.globals(), 'run', ...KVM, '--interactive', image, '--exec=/bin/sh'], env.root, { cols: 100, rows: 30 });
  t.teardown(() => term.kill());
  await term.waitFor(/\/ # /);
  term.write('[ -t 0 ] && echo "tty-$((6 * 7))"; stty size\r');
  await term.waitFor(/tty-42[\s\S]*30 100/);
  term.resize(120, 40);
  // SIGWINCH reaches rkt run; the agent sets the guest terminal's size
  await new Promise((r) => setTimeout(r, 1000));
  term.write('stty size\r');
  await term.waitFor(/40 120/);
  term.write('exit 3\r');
  t.is(await term.exited, 3, term.output());
  // busybox itself asks a terminal for the cursor position; nothing of the console shows
  t.notRegex(term.output(), /reboot: Power down|systemd|Linux version/);
});

test.serial('an app with stream stdin, stdout and stderr: rkt attach lists them, sends input, gets output, detaches on a signal, and the app keeps running', async (t) => {
  const { env, image } = await setup(t);
  const script = 'while read line; do echo "out:$line"; echo "err:$line" >&2; done; echo "input ended"; sleep 600';
  const { uuid, child } = await runInBackground(t, env, [image, '--exec=/bin/sh', '--stdin=stream', '--stdout=stream', '--stderr=stream', '--', '-c', script]);
  await waitReady(t, env, uuid);

  const list = await env.run(['attach', '--mode=list', uuid]);
  t.is(list.exitCode, 0, stderrOf(list));
  t.deepEqual(JSON.parse(String(list.stdout)), { version: 1, targets: [{ name: 'stdin' }, { name: 'stdout' }, { name: 'stderr' }] });

  // input and its end, and the output it causes; its output does not end with its input, so
  // the attach ends with a signal once it is all there
  const feed = execa(RKT, [...env.globals(), 'attach', '--mode=stdin,stdout,stderr', uuid], { input: 'one\ntwo\n', reject: false });
  t.teardown(() => void feed.kill('SIGKILL'));
  let fed = '';
  feed.stdout?.on('data', (d: Buffer) => (fed += d.toString()));
  await waitFor('the app to answer the input', async () => fed.includes('input ended'), 120_000);
  // one attach at a time: a second one is refused with a clear line
  const second = await env.run(['attach', '--mode=stdout', uuid]);
  t.is(second.exitCode, 254);
  t.regex(String(second.stderr), /app "busybox" is attached to by another session; one at a time/);
  feed.kill('SIGTERM');
  const fedResult = await feed;
  t.is(fedResult.exitCode, 0);
  t.regex(String(fedResult.stdout), /out:one\nout:two\ninput ended/);
  t.regex(String(fedResult.stderr), /err:one\nerr:two/);

  // once it has let go, the next one gets the app (which waits for input no more)
  const watcher = execa(RKT, [...env.globals(), 'attach', '--mode=stdout', uuid], { reject: false, stdin: 'ignore' });
  t.teardown(() => void watcher.kill('SIGKILL'));
  await new Promise((r) => setTimeout(r, 3000));
  watcher.kill('SIGINT');
  const watched = await watcher;
  t.is(watched.exitCode, 0, String(watched.stderr));
  t.is(String(watched.stdout), '', 'no output while the app wrote none');

  // an endpoint the app does not have
  const tty = await env.run(['attach', '--mode=tty', uuid]);
  t.is(tty.exitCode, 254);
  t.regex(String(tty.stderr), /offers stdin, stdout, stderr, not tty-in, tty-out/);
  t.is((await podStatus(env, uuid)).state, 'running');
  await env.run(['stop', '--force', uuid]);
  await child;
});

test.serial('an app with a tty: rkt attach gives the terminal (resizes included) and detaches on Ctrl-]; --mode=console reaches the serial console', async (t) => {
  const { env, image } = await setup(t);
  const { uuid, child } = await runInBackground(t, env, [image, '--exec=/bin/sh', '--stdin=tty', '--stdout=tty', '--stderr=tty']);
  await waitReady(t, env, uuid);
  const term = spawnTerm([...env.globals(), 'attach', uuid], env.root, { cols: 90, rows: 25 });
  t.teardown(() => term.kill());
  await term.waitFor(/Ctrl-\]/);
  term.write('tty; stty size\r');
  await term.waitFor(/\/dev\/pts\/\d+[\s\S]*25 90/);
  await resizeAndCheck(term, 110, 33, 1000);
  term.write('\x1d');
  t.is(await term.exited, 0);
  t.regex(term.output(), /Detached; the app keeps running/);

  // the shell is still there for the next attach
  const again = spawnTerm([...env.globals(), 'attach', '--mode=tty', uuid], env.root);
  t.teardown(() => again.kill());
  await again.waitFor(/Ctrl-\]/);
  again.write('echo "again-$((6 * 7))"\r');
  await again.waitFor(/again-42/);
  again.write('\x1d');
  t.is(await again.exited, 0);

  // the operators' way in is still there
  const console = spawnTerm([...env.globals(), 'attach', '--mode=console', uuid], env.root);
  t.teardown(() => console.kill());
  await console.waitFor(/Connected to the pod console; press Ctrl-\] to detach/);
  console.write('\x1d');
  t.is(await console.exited, 0);
  t.is((await podStatus(env, uuid)).state, 'running');
  await env.run(['stop', '--force', uuid]);
  await child;
});

test.serial('stream modes are checked before the pod exists', async (t) => {
  const { env, image } = await setup(t);
  for (const [flags, re] of [
    [['--stdin=log'], /--stdin=log: the mode of stdin is one of null, stream, tty/],
    [['--stdin=tty'], /--stdin=tty and --stdout=tty go together/],
  ] as const) {
    const r = await env.run(['run', ...KVM, image, ...flags]);
    t.is(r.exitCode, 254);
    t.regex(String(r.stderr), re);
  }
  const both = await env.run(['run', ...KVM, '--interactive', image, '--stdout=stream']);
  t.regex(String(both.stderr), /--stdout cannot be used with --interactive/);
  const list = await env.run(['list', '--no-legend']);
  t.is(String(list.stdout).trim(), '', 'no pod was created');
});
