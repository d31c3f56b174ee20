import test from 'ava';
import fs from 'node:fs';
import { execa } from 'execa';
import { RktEnv, RKT } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { reapPods } from '../helpers/pods.js';

// What an rkt 1.x user runs in the first hour, as they would type it.

const FLY = ['--insecure-options=image', '--stage1-name=fly'];

function world(t: { teardown(fn: () => void | Promise<void>): void }): RktEnv {
  const env = new RktEnv('rkt-cli-');
  t.teardown(async () => {
    await reapPods(env);
    env.cleanup();
  });
  return env;
}

/** `rkt ARGS | head -c 1` in a shell: rkt's own exit status and stderr. */
async function intoHead(env: RktEnv, args: string[]): Promise<{ status: number; stderr: string }> {
  const err = env.file(`stderr-${Math.random().toString(36).slice(2)}`);
  const quoted = [RKT, ...env.globals(), ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = await execa('bash', ['-c', `${quoted} 2>${err} | head -c 1 >/dev/null; echo "\${PIPESTATUS[0]}"`]);
  return { status: Number(String(r.stdout).trim()), stderr: fs.readFileSync(err, 'utf8') };
}

test('a closed stdout ends the command quietly: help, and output past the pipe buffer', async (t) => {
  const env = world(t);
  const help = await intoHead(env, ['help', 'run']);
  t.is(help.status, 0, help.stderr);
  t.is(help.stderr, '');
  // a manifest of about 300 KB: far past the 64 KB a pipe holds
  const annotations = Array.from({ length: 3000 }, (_, i) => ({ name: `example.com/a${i}`, value: 'x'.repeat(80) }));
  const aci = await buildAci(env.root, { name: 'example.com/big', manifest: { annotations } });
  t.is((await env.run(['--insecure-options=image', 'fetch', aci])).exitCode, 0);
  const cat = await intoHead(env, ['image', 'cat-manifest', 'example.com/big']);
  t.is(cat.status, 0, cat.stderr);
  t.is(cat.stderr, '', 'no EPIPE and no stack trace');
});

test('boolean flags take =true and =false, as rkt documents them', async (t) => {
  const env = world(t);
  for (const args of [
    ['list', '--full=true'],
    ['list', '--no-legend=true'],
    ['list', '--full=false', '--no-legend=false'],
    ['gc', '--mark-only=true'],
    ['--debug=true', 'list'],
    ['--debug=false', 'list'],
    ['image', 'list', '--full=true'],
  ]) {
    const r = await env.run(args);
    t.is(r.exitCode, 0, `${args.join(' ')}: ${r.stderr}`);
  }
  const legend = await env.run(['list', '--no-legend=true']);
  t.is(String(legend.stdout), '', 'no legend line');
  const pretty = await env.run(['config', '--pretty-print=false']);
  t.is(pretty.exitCode, 0, String(pretty.stderr));
  t.is(String(pretty.stdout).trim().split('\n').length, 1, 'one line when pretty printing is off');
  t.true(String((await env.run(['config', '--pretty-print=true'])).stdout).trim().split('\n').length > 1);
});

test('status --wait=true waits; --wait=false does not', async (t) => {
  const env = world(t);
  const image = await buildAci(env.root, { name: 'example.com/busybox', app: { exec: ['/bin/sh', '-c', 'sleep 1'], user: '0', group: '0' } });
  const prep = await env.run(['prepare', ...FLY, image]);
  t.is(prep.exitCode, 0, String(prep.stderr));
  const uuid = String(prep.stdout).trim();
  const nowait = await env.run(['status', '--wait=false', uuid]);
  t.is(nowait.exitCode, 0, String(nowait.stderr));
  t.regex(String(nowait.stdout), /state=prepared/);
  const run = env.run(['run-prepared', uuid]);
  const waited = await env.run(['status', '--wait=true', uuid]);
  t.is(waited.exitCode, 0, String(waited.stderr));
  t.regex(String(waited.stdout), /state=exited/);
  t.is((await run).exitCode, 0);
});

test('--set-env-file ignores lines that start with # or ;', async (t) => {
  const env = world(t);
  const image = await buildAci(env.root, { name: 'example.com/busybox', app: { exec: ['/bin/sh', '-c', 'echo "A=$A B=$B"'], user: '0', group: '0' } });
  fs.writeFileSync(env.file('env'), '# a comment\n; another comment\nA=1\n\nB=two words\n');
  const r = await env.run(['run', ...FLY, `--set-env-file=${env.file('env')}`, image]);
  t.is(r.exitCode, 0, String(r.stderr));
  t.regex(String(r.stdout), /A=1 B=two words/);
});

test('rkt stop of an exited pod says it is already stopped and succeeds', async (t) => {
  const env = world(t);
  const image = await buildAci(env.root, { name: 'example.com/busybox', app: { exec: ['/bin/true'], user: '0', group: '0' } });
  const uuidFile = env.file('uuid');
  t.is((await env.run(['run', ...FLY, `--uuid-file-save=${uuidFile}`, image])).exitCode, 0);
  const uuid = fs.readFileSync(uuidFile, 'utf8').trim();
  const r = await env.run(['stop', uuid]);
  t.is(r.exitCode, 0, String(r.stderr));
  t.regex(String(r.stderr), /already stopped/);
});

test('prepare with an unknown flag names prepare, not run', async (t) => {
  const env = world(t);
  const r = await env.run(['prepare', '--no-such-flag', 'example.com/x']);
  t.is(r.exitCode, 254);
  t.regex(String(r.stderr), /unknown flag --no-such-flag for prepare; see "rkt help prepare"/);
});
