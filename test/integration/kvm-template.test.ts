import anyTest, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildAci } from '../helpers/aci.js';
import { podStatus, processesWith } from '../helpers/pods.js';
import { KVM_ACI, runInBackground, setup, stderrOf } from './kvm-common.js';
import { exclusiveHost, needNetPrereqs, serverReport } from './net-helpers.js';
import { assertNoTrace, quietSnapshot } from './net-leaks.js';

// The kvm template path (RKT_KVM_TEMPLATE=on, stage1-kvm/template*.ts)
// through the real CLI: pods restored from one saved template VM run their
// apps as cold ones do, each with its own identity, randomness, network and
// volumes; a damaged template or a cache that cannot be used falls back to
// the cold boot with a warning; nothing is left behind. The templates live
// in a directory of this file's own (removed at the end), never in the
// host's cache.

const test = anyTest.serial;
let cache = '';

test.before(() => {
  needNetPrereqs();
  cache = fs.mkdtempSync(path.join(os.tmpdir(), 'rkt-kvm-templates-'));
  fs.chmodSync(cache, 0o700);
});
test.after.always(() => {
  if (cache) fs.rmSync(cache, { recursive: true, force: true });
});

function templateEnv(dir = cache): Record<string, string> {
  return { ...(process.env as Record<string, string>), RKT_KVM_TEMPLATE: 'on', RKT_KVM_TEMPLATE_DIR: dir };
}

// every capability: the app reads PID 1's view of the guest root (systemd's /etc/machine-id)
const KVM_ALLCAPS = ['--insecure-options=image,capabilities', `--stage1-path=${KVM_ACI}`];

const REPORT = [
  'echo "hostname $(hostname)"',
  'echo "machine-id $(cat /proc/1/root/etc/machine-id)"',
  'echo "boot-id $(cat /proc/sys/kernel/random/boot_id)"',
  'echo "random $(head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n")"',
  'ip -o link show eth0 | sed -n "s/.*link\\/ether \\([0-9a-f:]*\\).*/mac \\1/p"',
  'ip -o -4 addr show eth0 | sed -n "s/.* inet \\([0-9.]*\\)\\/.*/ip \\1/p"',
  'cat /vol/in',
  'hostname > "/vol/from-$(hostname)"',
  'exit 3',
].join('\n');

function field(out: string, name: string): string {
  return new RegExp(`^${name} (.+)$`, 'm').exec(out)?.[1] ?? '';
}

/** The template files in a cache: only states, records and locks, nothing half-written. */
function cacheFiles(dir: string): string[] {
  return fs.readdirSync(dir).sort();
}

async function noProcessesOf(t: ExecutionContext, uuids: string[]): Promise<void> {
  for (const u of uuids) t.deepEqual(await processesWith(u), [], `nothing of pod ${u} runs`);
}

test('two pods restored from one template: exit status, output, volumes; each its own machine-id, hostname, MAC, address and random bytes', async (t) => {
  await exclusiveHost(t);
  const before = await quietSnapshot();
  const { env, image } = await setup(t);
  const vol = env.file('vol');
  fs.mkdirSync(vol);
  fs.chownSync(vol, 4242, 4242);
  fs.writeFileSync(path.join(vol, 'in'), 'from the host\n');
  const runs: { out: string; err: string; uuid: string }[] = [];
  for (const i of [1, 2]) {
    const uuidFile = env.file(`uuid${i}`);
    const r = await env.run(['--debug', 'run', ...KVM_ALLCAPS, `--uuid-file-save=${uuidFile}`, `--volume=vol,kind=host,source=${vol}`, image, '--mount=volume=vol,target=/vol', '--exec=/bin/sh', '--', '-c', REPORT], { env: templateEnv(), timeout: 300_000 });
    t.is(r.exitCode, 3, stderrOf(r));
    runs.push({ out: String(r.stdout), err: String(r.stderr), uuid: fs.readFileSync(uuidFile, 'utf8').trim() });
  }
  const [a, b] = runs as [(typeof runs)[0], (typeof runs)[0]];
  t.regex(a.err, /making kvm template/, 'the first pod made the template');
  t.notRegex(b.err, /making kvm template/, 'the second pod found it');
  for (const r of runs) {
    t.regex(r.err, /restoring kvm template/);
    t.notRegex(r.err, /booting cold|template \w+ is unusable/);
    t.regex(r.out, /^from the host$/m, 'the host volume reached the app');
    t.is(field(r.out, 'hostname'), `rkt-${r.uuid}`);
    t.is(field(r.out, 'machine-id'), r.uuid.replace(/-/g, ''), "systemd took the pod's machine id");
    t.regex(field(r.out, 'random'), /^[0-9a-f]{64}$/);
    t.regex(field(r.out, 'mac'), /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    t.regex(field(r.out, 'ip'), /^172\.16\.28\.\d+$/);
    t.is(fs.readFileSync(path.join(vol, `from-rkt-${r.uuid}`), 'utf8'), `rkt-${r.uuid}\n`, 'the app wrote into the volume');
    t.is(fs.statSync(path.join(vol, `from-rkt-${r.uuid}`)).uid, 4242);
    const st = await podStatus(env, r.uuid);
    t.is(st.state, 'exited');
    // what rkt status says is the address the guest has
    t.true(JSON.stringify(st).includes(field(r.out, 'ip')));
  }
  for (const f of ['machine-id', 'hostname', 'boot-id', 'random', 'mac', 'ip']) t.not(field(a.out, f), field(b.out, f), `the two pods differ in ${f}`);
  t.deepEqual(cacheFiles(cache).map((f) => f.replace(/^[0-9a-f]{64}/, 'KEY')), ['KEY.json', 'KEY.lock', 'KEY.state']);
  t.is(fs.statSync(cache).mode & 0o777, 0o700);
  for (const f of fs.readdirSync(cache)) if (!f.endsWith('.lock')) t.is(fs.statSync(path.join(cache, f)).mode & 0o777, 0o600);
  await noProcessesOf(t, [a.uuid, b.uuid]);
  await assertNoTrace(t, before, [a.uuid, b.uuid], [], new Set());
});

test('a server restored from the template answers on its pod IP; rkt stop powers it off', async (t) => {
  await exclusiveHost(t);
  const { env } = await setup(t);
  const image = await buildAci(env.root, { name: 'example.com/tplsrv', app: { exec: ['/bin/sh', '-c', 'exec nc -ll -p 80 -e /bin/sh /report.sh'], user: '0', group: '0' }, files: { 'report.sh': 'echo "hostname $(hostname)"\n' } });
  const srv = await runInBackground(t, env, ['--hostname=tplsrv', image], { env: templateEnv() });
  let ip = '';
  for (let i = 0; i < 240 && !ip; i++) {
    const st = (await podStatus(env, srv.uuid)) as unknown as { networks?: { ip4?: string }[] };
    ip = st.networks?.find((n) => n.ip4)?.ip4 ?? '';
    if (!ip) await new Promise((r) => setTimeout(r, 500));
  }
  t.regex(ip, /^172\.16\.28\.\d+$/);
  t.regex(await serverReport(ip, 80, 120_000), /^hostname tplsrv$/m);
  const stop = await env.run(['stop', srv.uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  const r = await srv.child;
  t.notRegex(String(r.stderr), /booting cold/);
  const st = await podStatus(env, srv.uuid);
  t.is(st.state, 'exited');
  t.is(st.exit_cause, undefined, 'the guest powered off by itself, as asked');
  await noProcessesOf(t, [srv.uuid]);
});

test('a damaged template: a warning, the cold path, and the template made anew', async (t) => {
  const { env, image } = await setup(t, { exec: ['/bin/sh', '-c', 'echo ran; exit 5'], user: '0', group: '0' });
  const states = fs.readdirSync(cache).filter((f) => f.endsWith('.state'));
  t.true(states.length > 0, 'the earlier tests left a template');
  for (const s of states) {
    const fd = fs.openSync(path.join(cache, s), 'r+');
    fs.writeSync(fd, Buffer.from('damaged'), 0, 7, 4096);
    fs.closeSync(fd);
  }
  // --net=none: the damaged template is this machine's (a network changes nothing in it)
  const r = await env.run(['run', ...KVM_ALLCAPS, '--net=none', image], { env: templateEnv() });
  t.is(r.exitCode, 5, stderrOf(r));
  t.regex(String(r.stdout), /^ran$/m);
  t.regex(stderrOf(r), /the kvm template could not be restored \(the template is unusable: its state is damaged .*\); booting cold/);
  // the pod made it anew: the next one restores it without a word
  const again = await env.run(['run', ...KVM_ALLCAPS, '--net=none', image], { env: templateEnv() });
  t.is(again.exitCode, 5, stderrOf(again));
  t.notRegex(stderrOf(again), /template|cold/, 'the template made anew is restored without a word');
  t.false(cacheFiles(cache).some((f) => f.includes('.tmp')), 'no half-written template is left');
});

test('a template cache that cannot be trusted: a warning and the cold path; no template is written', async (t) => {
  const { env, image } = await setup(t, { exec: ['/bin/sh', '-c', 'echo cold; exit 6'], user: '0', group: '0' });
  const open = env.file('open-cache');
  fs.mkdirSync(open);
  fs.chmodSync(open, 0o755);
  const r = await env.run(['run', ...KVM_ALLCAPS, '--net=none', image], { env: templateEnv(open) });
  t.is(r.exitCode, 6, stderrOf(r));
  t.regex(String(r.stdout), /^cold$/m);
  t.regex(stderrOf(r), /cannot use a kvm template \(template directory .* must be a directory owned by root with mode 0700\); booting cold/);
  t.deepEqual(fs.readdirSync(open), []);
  // without the variable nothing of the template path runs
  const off = await env.run(['--debug', 'run', ...KVM_ALLCAPS, '--net=none', image]);
  t.is(off.exitCode, 6, stderrOf(off));
  t.notRegex(String(off.stderr), /template/);
});
