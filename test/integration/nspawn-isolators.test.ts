import test from 'ava';
import fs from 'node:fs';
import { DEFAULT_CAPABILITIES, LINUX_CAPABILITIES } from '../../src/appc/capabilities.js';
import { listPods, podStatus } from '../helpers/pods.js';
import { assertNoLeftovers, buildStage1, capMask, imageWith, SELF_STATUS, setup, statusField } from './nspawn-common.js';

// Each isolator of the nspawn stage1, checked from inside the app: the
// kernel's view (/proc/self/status, cgroup files, failing system calls),
// not the unit file. Through the real CLI; seccomp, no-new-privileges and
// oom-score-adj come from the image manifest (rkt has no run flag for them
// here).

let aci = '';
let buildDir = '';
test.before(async () => {
  ({ aci, dir: buildDir } = await buildStage1());
});
test.after.always(() => fs.rmSync(buildDir, { recursive: true, force: true }));

test('by default an app has rkt default capabilities, a seccomp filter and may gain privileges', async (t) => {
  const ne = await setup(t, aci);
  const r = await ne.env.run(['run', ...ne.flags, ne.image, '--exec=/bin/sh', '--', '-c', SELF_STATUS]);
  t.is(r.exitCode, 0, String(r.stderr));
  const out = String(r.stdout);
  t.is(statusField(out, 'CapBnd'), capMask(DEFAULT_CAPABILITIES));
  t.is(statusField(out, 'CapEff'), capMask(DEFAULT_CAPABILITIES), 'root holds its whole bounding set');
  t.is(statusField(out, 'Seccomp'), '2');
  t.is(statusField(out, 'NoNewPrivs'), '0');
});

test('capability retain and remove sets bound the app; a non-root app holds what it retains', async (t) => {
  const ne = await setup(t, aci);
  const retain = await ne.env.run(['run', ...ne.flags, ne.image, '--caps-retain=CAP_NET_ADMIN,CAP_SYS_TIME,CAP_KILL', '--exec=/bin/sh', '--', '-c', SELF_STATUS]);
  t.is(retain.exitCode, 0, String(retain.stderr));
  t.is(statusField(String(retain.stdout), 'CapBnd'), capMask(['CAP_NET_ADMIN', 'CAP_SYS_TIME', 'CAP_KILL']), 'capabilities beyond the container default are granted too');
  const user = await ne.env.run(['run', ...ne.flags, ne.image, '--user=1000', '--group=1000', '--caps-retain=CAP_NET_BIND_SERVICE', '--exec=/bin/sh', '--', '-c', SELF_STATUS]);
  t.is(user.exitCode, 0, String(user.stderr));
  t.is(statusField(String(user.stdout), 'CapEff'), capMask(['CAP_NET_BIND_SERVICE']));
  t.is(statusField(String(user.stdout), 'CapAmb'), capMask(['CAP_NET_BIND_SERVICE']));
  const remove = await ne.env.run(['run', ...ne.flags, ne.image, '--caps-remove=CAP_CHOWN', '--exec=/bin/sh', '--', '-c', `${SELF_STATUS}; touch /f; chown 1000 /f && echo chowned || echo refused`]);
  t.is(remove.exitCode, 0, String(remove.stderr));
  t.is(statusField(String(remove.stdout), 'CapBnd'), capMask(DEFAULT_CAPABILITIES.filter((c) => c !== 'CAP_CHOWN')));
  t.regex(String(remove.stdout), /^refused$/m);
});

test('an unknown capability is a clear error and no pod runs', async (t) => {
  const ne = await setup(t, aci);
  const r = await ne.env.run(['run', ...ne.flags, ne.image, '--caps-retain=CAP_NO_SUCH_THING', '--exec=/bin/true']);
  t.not(r.exitCode, 0);
  t.regex(String(r.stderr), /CAP_NO_SUCH_THING/);
  t.false((await listPods(ne.env)).some((p) => p.state === 'running'));
});

test('no-new-privileges and oom-score-adj are applied', async (t) => {
  const ne = await setup(t, aci);
  const img = await imageWith(ne, 'example.com/nnp', [
    { name: 'os/linux/no-new-privileges', value: true },
    { name: 'os/linux/oom-score-adj', value: 345 },
  ]);
  const r = await ne.env.run(['run', ...ne.flags, img, '--exec=/bin/sh', '--', '-c', `${SELF_STATUS}; cat /proc/self/oom_score_adj`]);
  t.is(r.exitCode, 0, String(r.stderr));
  t.is(statusField(String(r.stdout), 'NoNewPrivs'), '1');
  t.regex(String(r.stdout), /^345$/m);
});

test('an app that allocates past its memory limit is OOM-killed and rkt status says so', async (t) => {
  const ne = await setup(t, aci);
  const r = await ne.env.run(['run', ...ne.flags, ne.image, '--memory=32M', '--exec=/bin/dd', '--', 'if=/dev/zero', 'of=/dev/null', 'bs=96M', 'count=1']);
  t.is(r.exitCode, 137, String(r.stderr));
  t.regex(String(r.stderr), /app busybox was killed by the kernel's OOM killer/);
  const uuid = ne.uuid();
  const st = await ne.env.run(['status', uuid]);
  t.regex(String(st.stdout), /^app-busybox=137$/m);
  t.regex(String(st.stdout), /^exit-cause=.*OOM killer.*32000000 bytes/m);
  t.regex((await podStatus(ne.env, uuid)).exit_cause ?? '', /OOM/);
  // within its limit the same app runs
  const ok = await ne.env.run(['run', ...ne.flags, ne.image, '--memory=256M', '--exec=/bin/dd', '--', 'if=/dev/zero', 'of=/dev/null', 'bs=96M', 'count=1']);
  t.is(ok.exitCode, 0, String(ok.stderr));
  assertNoLeftovers(t, ne, uuid);
});

test('a CPU limit becomes the CFS quota of the app', async (t) => {
  const ne = await setup(t, aci);
  // the app's cpu cgroup, as it sees it, then the quota there (v1) or cpu.max (v2)
  const script =
    'p=$(grep -E "^[0-9]+:([^:]*,)?cpu(,[^:]*)?:" /proc/self/cgroup | cut -d: -f3); ' +
    'for d in /sys/fs/cgroup/cpu,cpuacct /sys/fs/cgroup/cpu; do [ -r "$d$p/cpu.cfs_quota_us" ] && cat "$d$p/cpu.cfs_quota_us" "$d$p/cpu.cfs_period_us" && exit 0; done; ' +
    'cat /sys/fs/cgroup$(grep "^0::" /proc/self/cgroup | cut -d: -f3)/cpu.max';
  const r = await ne.env.run(['run', ...ne.flags, ne.image, '--cpu=250m', '--exec=/bin/sh', '--', '-c', script]);
  t.is(r.exitCode, 0, String(r.stderr));
  const [quota, period] = String(r.stdout).trim().split(/\s+/).map(Number);
  t.is(quota! / period!, 0.25);
});

test('seccomp: a removed call fails with the errno asked for, or kills the app with SIGSYS, and run says why', async (t) => {
  const ne = await setup(t, aci);
  const eperm = await imageWith(ne, 'example.com/seccomp-errno', [{ name: 'os/linux/seccomp-remove-set', value: { set: ['mkdir', 'mkdirat'], errno: 'EPERM' } }]);
  const r = await ne.env.run(['run', ...ne.flags, eperm, '--exec=/bin/sh', '--', '-c', `mkdir /newdir 2>&1; ${SELF_STATUS}`]);
  t.is(r.exitCode, 0, String(r.stderr));
  t.regex(String(r.stdout), /Operation not permitted/);
  t.is(statusField(String(r.stdout), 'Seccomp'), '2');
  const kill = await imageWith(ne, 'example.com/seccomp-kill', [{ name: 'os/linux/seccomp-remove-set', value: { set: ['mkdir', 'mkdirat'] } }]);
  const k = await ne.env.run(['run', ...ne.flags, kill, '--exec=/bin/mkdir', '--', '/newdir']);
  t.is(k.exitCode, 159, String(k.stderr));
  t.regex(String(k.stderr), /killed by its seccomp filter \(SIGSYS\)/);
});

test('the default seccomp filter forbids what reaches beyond the pod, such as mount(2)', async (t) => {
  const ne = await setup(t, aci);
  // even with CAP_SYS_ADMIN retained, mount(2) is not in the default allow list: SIGSYS (128 + 31)
  const r = await ne.env.run(['run', ...ne.flags, ne.image, '--caps-retain=CAP_SYS_ADMIN', '--exec=/bin/sh', '--', '-c', 'mount -t tmpfs none /mnt; echo status=$?']);
  t.is(r.exitCode, 0, String(r.stderr));
  t.regex(String(r.stdout), /^status=159$/m);
});

test('a seccomp set that forbids the app startup is a clear error at run time', async (t) => {
  const ne = await setup(t, aci);
  const img = await imageWith(ne, 'example.com/seccomp-tight', [{ name: 'os/linux/seccomp-retain-set', value: { set: ['read', 'write'] } }]);
  const r = await ne.env.run(['run', ...ne.flags, img, '--exec=/bin/sh', '--', '-c', 'echo started']);
  t.is(r.exitCode, 159);
  t.is(String(r.stdout), '');
  t.regex(String(r.stderr), /app seccomp-tight was killed by its seccomp filter \(SIGSYS\).*forbids/);
  t.regex((await podStatus(ne.env, ne.uuid())).exit_cause ?? '', /seccomp/);
  assertNoLeftovers(t, ne, ne.uuid());
});

test('an unknown syscall name is a clear error before the pod boots, and nothing is left behind', async (t) => {
  const ne = await setup(t, aci);
  const img = await imageWith(ne, 'example.com/seccomp-typo', [{ name: 'os/linux/seccomp-remove-set', value: { set: ['mkdri'] } }]);
  const r = await ne.env.run(['run', ...ne.flags, img, '--exec=/bin/true']);
  t.is(r.exitCode, 254);
  t.regex(String(r.stderr), /app "seccomp-typo": seccomp isolator names "mkdri", which is not a system call/);
  const uuid = ne.uuid();
  t.regex((await podStatus(ne.env, uuid)).exit_cause ?? '', /mkdri/);
  assertNoLeftovers(t, ne, uuid);
});

test('kernel paths are masked; --insecure-options=paths unmasks them and says so', async (t) => {
  const ne = await setup(t, aci);
  const probe =
    'grep " /proc/sys " /proc/self/mountinfo | cut -d" " -f6 | cut -d, -f1; ' +
    'for f in /proc/sysrq-trigger /proc/kcore; do [ -e $f ] && echo "$f visible" || echo "$f masked"; done; ' +
    'echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-written || echo sysrq-refused';
  const r = await ne.env.run(['run', ...ne.flags, ne.image, '--exec=/bin/sh', '--', '-c', probe]);
  t.is(r.exitCode, 0, String(r.stderr));
  t.deepEqual(String(r.stdout).trim().split('\n'), ['ro', '/proc/sysrq-trigger masked', '/proc/kcore masked', 'sysrq-refused']);
  const flags = ne.flags.map((f) => (f === '--insecure-options=image' ? '--insecure-options=image,paths' : f));
  // only looks: writing to the host's sysrq-trigger is not something to try
  const open = await ne.env.run(['run', ...flags, ne.image, '--exec=/bin/sh', '--', '-c', 'grep -c " /proc/sys " /proc/self/mountinfo; true']);
  t.is(open.exitCode, 0, String(open.stderr));
  t.is(String(open.stdout).trim(), '0', '/proc/sys is no read-only mount of its own');
  t.regex(String(open.stderr), /--insecure-options=paths: \/proc and \/sys paths are not masked/);
});

test('--insecure-options=capabilities,seccomp relax both and say so', async (t) => {
  const ne = await setup(t, aci);
  const flags = ne.flags.map((f) => (f === '--insecure-options=image' ? '--insecure-options=image,capabilities,seccomp,paths' : f));
  const r = await ne.env.run(['run', ...flags, ne.image, '--caps-retain=CAP_KILL', '--exec=/bin/sh', '--', '-c', SELF_STATUS]);
  t.is(r.exitCode, 0, String(r.stderr));
  // every capability this test itself may have (a sandbox may lack some), retain set or not
  const ours = BigInt(`0x${statusField(fs.readFileSync('/proc/self/status', 'utf8'), 'CapBnd')}`);
  t.is(statusField(String(r.stdout), 'CapBnd'), (ours & BigInt(`0x${capMask(LINUX_CAPABILITIES)}`)).toString(16).padStart(16, '0'));
  t.is(statusField(String(r.stdout), 'Seccomp'), '0');
  t.regex(String(r.stderr), /--insecure-options=capabilities: apps keep every capability/);
  t.regex(String(r.stderr), /--insecure-options=seccomp: apps run without seccomp filters/);
});
