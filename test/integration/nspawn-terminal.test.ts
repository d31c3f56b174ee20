import test from 'ava';
import fs from 'node:fs';
import { RKT } from '../helpers/rkt.js';
import { spawnTerm as spawnTermAt, type Term } from '../helpers/term.js';
import { buildStage1, runInBackground, setup } from './nspawn-common.js';

// The nspawn stage1 as a user at a terminal meets it, through a
// pseudo-terminal: `rkt run --interactive` gives the app the terminal (the
// container's console, which nspawn ties to it), and `rkt enter` gives the
// entered command a terminal of its own in the pod.

let aci = '';
let buildDir = '';
test.before(async () => {
  ({ aci, dir: buildDir } = await buildStage1());
});
test.after.always(() => fs.rmSync(buildDir, { recursive: true, force: true }));

function spawnTerm(file: string, args: string[], cwd: string): Term {
  return spawnTermAt(file, args, { cwd });
}

test('run --interactive: the app gets the terminal, its status is the exit code', async (t) => {
  const ne = await setup(t, aci);
  const term = spawnTerm(RKT, [...ne.env.globals(), 'run', ...ne.flags, '--interactive', ne.image, '--exec=/bin/sh'], ne.env.root);
  t.teardown(() => term.kill());
  // Known issue: now and then (about 1 run in 5 on a loaded host) the shell's
  // first prompt, written before systemd-nspawn has tied the console to this
  // terminal, never shows; a user presses Enter and gets the next one.
  await term.waitFor(/\/ # /, 20_000).catch(async () => {
    term.write('\r');
    await term.waitFor(/\/ # /);
  });
  term.write('tty; [ -t 0 ] && echo "stdin-tty-$((6 * 7))"\r');
  await term.waitFor(/stdin-tty-42/);
  t.regex(term.output(), /\/dev\/(console|pts\/\d+)/);
  term.write('exit 3\r');
  t.is(await term.exited, 3, term.output());
  t.notRegex(term.output(), /Failed|systemd/, "no systemd messages on the user's terminal");
});

test('enter with a terminal gives the command a terminal in the pod', async (t) => {
  const ne = await setup(t, aci);
  const { uuid } = await runInBackground(ne, [ne.image, '--user=1000', '--group=1000', '--exec=/bin/sleep', '--', '600']);
  const term = spawnTerm(RKT, [...ne.env.globals(), 'enter', uuid, '/bin/sh'], ne.env.root);
  t.teardown(() => term.kill());
  await term.waitFor(/\$ /);
  term.write('[ -t 0 ] && echo "tty-$(id -u)-$((6 * 7))"\r');
  await term.waitFor(/tty-1000-42/);
  term.write('exit 4\r');
  t.is(await term.exited, 4, term.output());
});
