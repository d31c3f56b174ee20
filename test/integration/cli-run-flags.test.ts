import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, type RktEnv } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { podWorld } from '../helpers/pods.js';
import { needFile } from '../helpers/prereqs.js';

// Issue 15, item 18: `rkt help run` lists what run takes, and the flags an
// rkt 1.x user brings (pod-wide --mount, --annotation, --cpu-shares,
// --oom-score-adj, the deprecated --cap-retain) work.

const FLY_ACI = path.join(REPO, 'build', 'stage1-fly.aci');
const NSPAWN_ACI = path.join(REPO, 'build', 'stage1-coreos.aci');

function world(t: ExecutionContext, aci: string): RktEnv {
  needFile(aci, 'run scripts/setup.sh, which builds the stage1 images');
  const env = podWorld(t, 'rkt-run-flags-');
  return env;
}

test('rkt help run lists every flag rkt documents for run, the new ones included', async (t) => {
  const env = world(t, FLY_ACI);
  const r = await env.run(['help', 'run']);
  t.is(r.exitCode, 0);
  const help = String(r.stdout);
  const documented = [
    'caps-remove', 'caps-retain', 'cpu', 'dns', 'dns-domain', 'dns-opt', 'dns-search', 'environment', 'exec', 'group', 'hosts-entry', 'hostname',
    'inherit-env', 'interactive', 'ipc', 'mds-register', 'memory', 'mount', 'name', 'net', 'no-overlay', 'oom-score-adj', 'pod-manifest', 'port',
    'private-users', 'pull-policy', 'readonly-rootfs', 'seccomp', 'set-env', 'set-env-file', 'signature', 'stage1-from-dir', 'stage1-hash',
    'stage1-name', 'stage1-path', 'stage1-url', 'supplementary-gids', 'user', 'user-annotation', 'user-label', 'uuid-file-save', 'volume',
    'working-dir', 'cpu-shares', 'annotation', 'cap-retain',
  ];
  for (const flag of documented) t.regex(help, new RegExp(`--${flag}\\b`), `--${flag} is listed`);
  t.is(String((await env.run(['help', 'prepare'])).stdout).includes('--no-overlay'), true);
});

test('--mount before the first image mounts the volume in every app; an app\'s own mount of the path wins', async (t) => {
  const env = world(t, FLY_ACI);
  const shared = env.file('shared');
  const own = env.file('own');
  fs.mkdirSync(shared);
  fs.mkdirSync(own);
  fs.writeFileSync(path.join(shared, 'f'), 'shared\n');
  fs.writeFileSync(path.join(own, 'f'), 'own\n');
  const image = await buildAci(env.root, { name: 'example.com/busybox', app: { exec: ['/bin/cat', '/data/f'], user: '0', group: '0' } });
  const r = await env.run([
    'run', '--insecure-options=image', `--stage1-path=${FLY_ACI}`,
    `--volume=logs,kind=host,source=${shared}`, `--volume=mine,kind=host,source=${own}`,
    '--mount', 'volume=logs,target=/data',
    image, '--name=first',
    image, '--name=second',
    image, '--name=third', '--mount=volume=mine,target=/data',
  ]);
  t.is(r.exitCode, 0, String(r.stderr));
  const lines = String(r.stdout).split('\n').map((l) => l.trim()).filter((l) => l !== '').sort();
  t.deepEqual(lines, ['own', 'shared', 'shared']);
});

test('--annotation puts the annotation on the app in the pod manifest', async (t) => {
  const env = world(t, FLY_ACI);
  const image = await buildAci(env.root, { name: 'example.com/busybox', app: { exec: ['/bin/true'], user: '0', group: '0' } });
  const prep = await env.run(['prepare', '--insecure-options=image', `--stage1-path=${FLY_ACI}`, image, '--annotation=example.com/owner=team a', '--annotation=example.com/tier=2']);
  t.is(prep.exitCode, 0, String(prep.stderr));
  const manifest = JSON.parse(String((await env.run(['cat-manifest', String(prep.stdout).trim()])).stdout));
  t.deepEqual(manifest.apps[0].annotations, [
    { name: 'example.com/owner', value: 'team a' },
    { name: 'example.com/tier', value: '2' },
  ]);
  const bad = await env.run(['prepare', '--insecure-options=image', `--stage1-path=${FLY_ACI}`, image, '--annotation=novalue']);
  t.is(bad.exitCode, 254);
  t.regex(String(bad.stderr), /--annotation "novalue" must be NAME=VALUE/);
});

test('nspawn: --cpu-shares, --oom-score-adj and the deprecated --cap-retain reach the app', async (t) => {
  const env = world(t, NSPAWN_ACI);
  const script = [
    'grep ^CapBnd /proc/self/status',
    'echo "oom $(cat /proc/self/oom_score_adj)"',
    // cgroup v1 (cpu.shares) or v2 (cpu.weight), whichever the host has
    'v1=$(sed -n "s/^[0-9]*:cpu,cpuacct://p;s/^[0-9]*:cpu://p" /proc/self/cgroup | head -1)',
    'if [ -n "$v1" ]; then echo "shares $(cat /sys/fs/cgroup/cpu$v1/cpu.shares)"; else echo "weight $(cat /sys/fs/cgroup$(sed -n "s/^0:://p" /proc/self/cgroup)/cpu.weight)"; fi',
  ].join('\n');
  const image = await buildAci(env.root, { name: 'example.com/busybox', app: { exec: ['/bin/sh', '-c', script], user: '0', group: '0' } });
  const r = await env.run(['run', '--insecure-options=image', `--stage1-path=${NSPAWN_ACI}`, '--net=none', image, '--cpu-shares=2048', '--oom-score-adj=500', '--cap-retain=CAP_NET_BIND_SERVICE']);
  t.is(r.exitCode, 0, String(r.stderr));
  const out = String(r.stdout);
  t.regex(String(r.stderr), /Flag --cap-retain has been deprecated, use --caps-retain instead/);
  // CAP_NET_BIND_SERVICE is bit 10
  t.regex(out, /^CapBnd:\s+0000000000000400\s*$/m);
  t.regex(out, /^oom 500\s*$/m);
  // systemd's v2 weight for 2048 shares is 2048 * 100 / 1024
  t.regex(out, /^(shares 2048|weight 200)\s*$/m);
  const bad = await env.run(['prepare', '--insecure-options=image', `--stage1-path=${NSPAWN_ACI}`, image, '--cpu-shares=1']);
  t.is(bad.exitCode, 254);
  t.regex(String(bad.stderr), /--cpu-shares takes an integer from 2 to 262144/);
});
