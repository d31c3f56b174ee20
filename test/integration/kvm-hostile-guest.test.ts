import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { LINUX_CAPABILITIES } from '../../src/appc/capabilities.js';
import { FrameType, encodeFrame } from '../../stage1-kvm/agent-protocol.js';
import { buildAci } from '../helpers/aci.js';
import { listPods, podStatus, waitFor } from '../helpers/pods.js';
import type { RktEnv } from '../helpers/rkt.js';
import { KVM, runInBackground, setup, stderrOf, waitReady } from './kvm-common.js';

// A root app that keeps every capability plays the compromised guest
// (guest/README.md, "Apps against the agent"). Its /dev is private: the
// usual pseudo-devices, nothing else, and even with CAP_SYS_ADMIN a device
// node it makes elsewhere cannot be opened from the app's cgroup. It can
// still kill the agent, and having left its cgroup, take the agent's port
// and answer `rkt enter` itself: then every answer is garbage to the host,
// which fails each session with one line, in bounded time, while status,
// list and gc go on as usual. One VM at a time in this file (test.serial).

const ALL_CAPS = `--caps-retain=${LINUX_CAPABILITIES.join(',')}`;
/** What PrivateDevices=yes gives an app (systemd 252), and nothing else. */
const USUAL_DEV = ['char', 'fd', 'full', 'hugepages', 'log', 'mqueue', 'null', 'ptmx', 'pts', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'tty', 'urandom', 'zero'];
/** The whole of an enter'd command's or a hostile step's limit: well under the 15 s asked for. */
const ENTER_LIMIT_MS = 15_000;
/** status, list and gc take about a second here; a hostile guest must not change that much. */
const USUAL_LIMIT_MS = 10_000;

/** printf(1) format for exactly these bytes. */
function octal(bytes: Buffer): string {
  return [...bytes].map((b) => `\\${b.toString(8).padStart(3, '0')}`).join('');
}

// Runs in the app. Finds the rkt.agent port's device; reports what the
// private /dev and the app's limits allow; then, given "hostile", leaves its
// cgroup, mounts a devtmpfs (CAP_SYS_ADMIN) for a node of the port, kills
// the agent until systemd gives up on it, answers each host session with
// the next of the scenarios (files /scenarios/N, printf formats; "-" first:
// no SESSION frame before it), and then leaves the port to nobody.
// (Nothing tells the guest when the host is ready: the host waits for the
// app's log lines, and qemu keeps what a host sends until the port opens.)
const APP_SCRIPT = `
out=/out/log
log() { echo "$*" >> $out; }
bb=/bin/busybox
for d in /sys/class/virtio-ports/*; do [ "$(cat $d/name)" = rkt.agent ] && dev=\${d##*/}; done
log "port $dev $(cat /sys/class/virtio-ports/$dev/dev)"
log "dev $(ls -A /dev | $bb tr '\\n' ' ')"
log "$(grep CapBnd /proc/self/status)"
mkdir -p /t /m
$bb mknod /t/port c $(cat /sys/class/virtio-ports/$dev/dev | $bb tr : ' ') 2>/t/err && log mknod-made || log "mknod-refused: $(cat /t/err)"
if mount -t devtmpfs devtmpfs /m 2>>$out; then
  if { :; } 2>/t/err 3<>/m/$dev; then log open-in-cgroup-ok; else log "open-in-cgroup-refused: $(cat /t/err)"; fi
fi
[ "$1" = hostile ] || { log ready; exec sleep 1000; }

echo $$ > /sys/fs/cgroup/cgroup.procs && log "left the cgroup: $(cat /proc/self/cgroup)"
kills=0 quiet=0
while :; do
  if $bb killall -q -9 rkt-agent; then kills=$((kills + 1)); quiet=0; else quiet=$((quiet + 1)); fi
  # systemd restarts it 100 ms after each death, 5 starts in 10 s at most: 2 s without one is
  # for good; on a loaded host the restarts may never hit that limit, so after 5 kills the
  # killing simply goes on, and the port is taken between two restarts
  [ $kills -ge 1 ] && { [ $quiet -eq 10 ] || { [ $kills -eq 5 ] && [ $quiet -eq 0 ]; }; } && log "agent gone after $kills kills"
  sleep 0.2
done &
while ! grep -q '^agent gone' $out; do sleep 0.2; done
n=0
while [ -e /scenarios/$n ]; do
  # the port is busy while an agent systemd restarted still holds it
  until { serve /scenarios/$n; } 3<>/m/$dev 2>/dev/null; do sleep 0.2; done
  n=$((n + 1))
done
log done
exec sleep 1000
`;

// One host session on fd 3: wait for the first 11 bytes of its EXEC frame
// (read() gives nothing until a host is connected), answer, then read
// until the host hangs up.
const SERVE = `
serve() {
  : > /t/h
  while got=$(wc -c < /t/h); [ $got -lt 11 ]; do
    head -c $((11 - got)) <&3 >> /t/h
    [ "$(wc -c < /t/h)" = $got ] && sleep 0.1
  done
  fmt=$(cat "$1")
  case "$fmt" in
  -*) printf "\${fmt#-}" >&3 ;;
  *) { printf '${octal(Buffer.from([FrameType.Session, 0, 0, 0, 4]))}'; /bin/busybox tail -c 4 /t/h; printf "$fmt"; } >&3 ;;
  esac
  log "served $1"
  cat <&3 > /dev/null
}
`;

interface Scenario {
  name: string;
  /** Bytes after our SESSION frame, or instead of it (noSession). */
  answer: Buffer;
  noSession?: boolean;
  /** rkt enter's exit status and its one stderr line. */
  exitCode: number;
  line: RegExp;
  stdout?: string;
}

const SCENARIOS: Scenario[] = [
  {
    name: 'garbage and another session, never ours',
    answer: Buffer.concat([Buffer.from('not a frame at all'), Buffer.from([0x80, 0, 0, 0, 4, 1, 2, 3, 4]), Buffer.alloc(16, 0xff)]),
    noSession: true,
    exitCode: 254,
    line: /^stage1: rkt enter: the pod's guest agent did not answer within 10 s; it is not running/,
  },
  {
    name: 'an oversized frame',
    answer: Buffer.from([FrameType.Stdout, 0xff, 0xff, 0xff, 0xff]),
    exitCode: 254,
    line: /^stage1: rkt enter: the pod's guest agent broke the protocol: frame of 4294967295 bytes exceeds 1048576$/,
  },
  {
    name: 'a truncated frame, then silence',
    answer: Buffer.concat([Buffer.from([FrameType.Stdout, 0, 0, 0x03, 0xe8]), Buffer.from('only ten b')]),
    exitCode: 254,
    line: /^stage1: rkt enter: the pod's guest agent sent part of a frame and nothing for 10 s; giving up$/,
  },
  {
    name: 'an exit status that would read as success',
    answer: encodeFrame(FrameType.Exit, Buffer.from([0, 0, 1, 0])),
    exitCode: 254,
    line: /^stage1: rkt enter: the pod's guest agent broke the protocol: EXIT status 256 is not an exit status/,
  },
  {
    name: 'an error message with terminal escapes and a forged line',
    answer: encodeFrame(FrameType.Error, Buffer.concat([Buffer.from([0, 0, 0, 125]), Buffer.from('\x1b[2J\nrkt: all is well')])),
    exitCode: 125,
    line: /^stage1: rkt enter: \\x1b\[2J\\x0arkt: all is well$/,
  },
  {
    name: 'a well-formed answer: an impostor speaks for its own guest, no more',
    answer: Buffer.concat([encodeFrame(FrameType.Stdout, Buffer.from('from the impostor\n')), encodeFrame(FrameType.Exit, Buffer.from([0, 0, 0, 7]))]),
    exitCode: 7,
    line: /^$/,
    stdout: 'from the impostor',
  },
];

async function hostileImage(env: RktEnv): Promise<string> {
  const files: Record<string, string> = { 'app.sh': `${SERVE}\n${APP_SCRIPT}` };
  SCENARIOS.forEach((s, i) => (files[`scenarios/${i}`] = `${s.noSession ? '-' : ''}${octal(s.answer)}`));
  return buildAci(env.root, { name: 'example.com/hostile', files, app: { exec: ['/bin/sh', '/app.sh'], user: '0', group: '0' } });
}

function outVolume(env: RktEnv): { dir: string; args: string[]; log: () => string } {
  const dir = env.file('out');
  fs.mkdirSync(dir);
  // owned by an unprivileged user: over virtio-fs a guest cannot write a volume as host root
  fs.chownSync(dir, 4242, 4242);
  const log = (): string => (fs.existsSync(path.join(dir, 'log')) ? fs.readFileSync(path.join(dir, 'log'), 'utf8') : '');
  return { dir, args: [`--volume=out,kind=host,source=${dir}`], log };
}

async function timedRun(env: RktEnv, args: string[]): Promise<{ ms: number; exitCode: number; stdout: string; stderr: string }> {
  const t0 = Date.now();
  const r = await env.run(args, { timeout: 60_000 });
  return { ms: Date.now() - t0, exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: stderrOf(r) };
}

function waitLog(t: ExecutionContext, log: () => string, re: RegExp, ms: number): Promise<void> {
  return waitFor(`${re} in the app's log`, async () => re.test(log()), ms).catch((err: Error) => {
    t.log(log());
    throw err;
  });
}

test.serial('a root app with every capability has the usual devices only, and rkt enter gets the same /dev, /proc, cgroup and limits', async (t) => {
  const { env } = await setup(t);
  const image = await hostileImage(env);
  const out = outVolume(env);
  const { uuid } = await runInBackground(t, env, [...out.args, image, ALL_CAPS, '--mount=volume=out,target=/out']);
  await waitReady(t, env, uuid);
  await waitLog(t, out.log, /^ready$/m, 60_000);
  const log = out.log();
  t.log(log);
  const devs = /^dev (.*)$/m.exec(log)![1]!.trim().split(' ');
  t.deepEqual(devs.filter((d) => !USUAL_DEV.includes(d)), [], 'no device beyond the usual ones (no vport*, virtio-ports, ttyS*, kmsg, mem, vd*, console)');
  for (const d of ['null', 'zero', 'full', 'random', 'urandom', 'tty', 'ptmx', 'pts', 'shm']) t.true(devs.includes(d), `/dev/${d}`);
  // all retained, yet PrivateDevices= takes CAP_MKNOD (27) and CAP_SYS_RAWIO (17) out of the bounding set
  const bnd = BigInt(`0x${/^CapBnd:\s+([0-9a-f]+)$/m.exec(log)![1]}`);
  t.is(bnd & (1n << 27n), 0n, 'no CAP_MKNOD');
  t.is(bnd & (1n << 17n), 0n, 'no CAP_SYS_RAWIO');
  t.not(bnd & (1n << 21n), 0n, 'CAP_SYS_ADMIN retained');
  t.regex(log, /^mknod-refused: .*Operation not permitted$/m);
  // a devtmpfs mounted with CAP_SYS_ADMIN has the port's node, but the app's cgroup may not open it
  t.regex(log, /^open-in-cgroup-refused: .*Operation not permitted$/m);

  const r = await timedRun(env, ['enter', uuid, '/bin/sh', '-c', 'ls -A /dev | /bin/busybox tr "\\n" " "; echo; grep CapBnd /proc/self/status; cat /proc/self/cgroup; mkdir -p /t2; /bin/busybox mknod /t2/n c 1 3 2>&1; exit 3']);
  t.is(r.exitCode, 3, r.stderr);
  const [enterDevs, enterBnd, cgroup, mknod] = r.stdout.split('\n');
  t.deepEqual(enterDevs!.trim().split(' '), devs, "the app's /dev");
  t.is(enterBnd, /^CapBnd:.*$/m.exec(log)![0], "the app's bounding set");
  t.is(cgroup, '0::/system.slice/hostile.service', "the app's cgroup (its device policy)");
  t.regex(mknod ?? '', /Operation not permitted/);
  t.true(r.ms < ENTER_LIMIT_MS, `${r.ms} ms`);
  await env.run(['stop', '--force', uuid]);
});

test.serial('a root app kills the agent and takes its port: rkt enter fails cleanly and quickly; status, list and gc of it and another pod work as usual', async (t) => {
  const { env, image: plain } = await setup(t);
  // another pod, exited, for gc
  const other = await env.run(['run', ...KVM, `--uuid-file-save=${env.file('other-uuid')}`, plain, '--exec=/bin/true']);
  t.is(other.exitCode, 0, String(other.stderr));
  const otherUuid = fs.readFileSync(env.file('other-uuid'), 'utf8').trim();

  const image = await hostileImage(env);
  const out = outVolume(env);
  const { uuid } = await runInBackground(t, env, [...out.args, image, ALL_CAPS, '--mount=volume=out,target=/out', '--exec=/bin/sh', '--', '/app.sh', 'hostile']);
  await waitReady(t, env, uuid);
  const usual = { status: (await timedRun(env, ['status', uuid])).ms, list: (await timedRun(env, ['list'])).ms };

  // the agent is dead for good: from now on the app answers on its port
  await waitLog(t, out.log, /^agent gone after \d+ kills$/m, 60_000);
  const timings: Record<string, number> = { usualStatus: usual.status, usualList: usual.list };
  for (const [i, s] of SCENARIOS.entries()) {
    const enter = timedRun(env, ['enter', uuid, '/bin/true']);
    if (i === 0) {
      // while rkt enter waits on a guest that sends garbage: the rest of rkt is not held up
      const st = await timedRun(env, ['status', uuid]);
      t.is(st.exitCode, 0, st.stderr);
      t.regex(st.stdout, /state=running/);
      const ls = await timedRun(env, ['list', '--no-legend']);
      t.is(ls.exitCode, 0, ls.stderr);
      t.true(ls.stdout.includes(uuid.slice(0, 8)));
      const gc = await timedRun(env, ['gc', '--grace-period=0s']);
      t.is(gc.exitCode, 0, gc.stderr);
      Object.assign(timings, { statusDuringAttack: st.ms, listDuringAttack: ls.ms, gcDuringAttack: gc.ms });
      t.false((await listPods(env)).some((p) => p.name === otherUuid), 'gc removed the other, exited pod');
    }
    const r = await enter;
    timings[s.name] = r.ms;
    if (!s.line.test(r.stderr)) t.log(`the app's log:\n${out.log()}`);
    t.is(r.exitCode, s.exitCode, `${s.name}: ${r.stderr}`);
    t.regex(r.stderr, s.line, s.name);
    t.true(r.stderr.split('\n').length === 1, `${s.name}: one line: ${r.stderr}`);
    if (s.stdout !== undefined) t.is(r.stdout.trim(), s.stdout);
    t.true(r.ms < ENTER_LIMIT_MS, `${s.name}: ${r.ms} ms`);
  }
  await waitLog(t, out.log, /^done$/m, 30_000);

  // the agent gone and nobody on its port
  const gone = await timedRun(env, ['enter', uuid, '/bin/true']);
  t.is(gone.exitCode, 254);
  t.regex(gone.stderr, /^stage1: rkt enter: the pod's guest agent did not answer within 10 s; it is not running \(an app may have killed it\) or the VM is stuck$/);
  t.is(gone.stderr.split('\n').length, 1, gone.stderr);
  t.true(gone.ms < ENTER_LIMIT_MS, `enter with the agent gone: ${gone.ms} ms`);
  timings.agentGone = gone.ms;
  t.log(JSON.stringify(timings));
  t.regex(out.log(), /^mknod-refused: .*Operation not permitted$/m);
  t.regex(out.log(), /^left the cgroup: 0::\/$/m);
  for (const k of ['statusDuringAttack', 'listDuringAttack', 'gcDuringAttack']) t.true(timings[k]! < USUAL_LIMIT_MS, `${k}: ${timings[k]} ms`);

  t.is((await podStatus(env, uuid)).state, 'running');
  t.is((await env.run(['stop', '--force', uuid])).exitCode, 0);
  await waitFor('the hostile pod to exit', async () => (await podStatus(env, uuid)).state === 'exited', 30_000);
  const gc = await timedRun(env, ['gc', '--grace-period=0s']);
  t.is(gc.exitCode, 0, gc.stderr);
  t.true(gc.ms < USUAL_LIMIT_MS, `gc of the hostile pod: ${gc.ms} ms`);
  t.deepEqual(await listPods(env), []);
});
