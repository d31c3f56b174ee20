import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { DEFAULT_CAPABILITIES } from '../../src/appc/capabilities.js';
import { podStatus, processesWith, waitFor } from '../helpers/pods.js';
import { assertNoLeftovers, buildStage1, capMask, mountsMentioning, podCgroupsLeft, runInBackground, SELF_STATUS, setup, statusField } from './nspawn-common.js';

// A pod's life with the nspawn stage1 after it has started: stop, enter,
// a crash of rkt run and gc, and the stage1 flags this stage0 does not pass
// yet (--ipc, --private-users), given to the run entrypoint directly.

let aci = '';
let buildDir = '';
test.before(async () => {
  ({ aci, dir: buildDir } = await buildStage1());
});
test.after.always(() => fs.rmSync(buildDir, { recursive: true, force: true }));

/** A sleep duration no other process uses, so that pgrep finds exactly the app. */
function marker(): string {
  return String(100000 + Math.floor(Math.random() * 899999)) + String(process.pid % 1000);
}

test('rkt stop ends the apps with SIGTERM through the pod systemd; their statuses are recorded', async (t) => {
  const ne = await setup(t, aci);
  const { proc, uuid } = await runInBackground(ne, [ne.image, '--exec=/bin/sh', '--', '-c', 'trap "echo got TERM; exit 7" TERM; while true; do sleep 0.1; done']);
  t.is((await podStatus(ne.env, uuid)).state, 'running');
  const stop = await ne.env.run(['stop', uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  const r = await proc;
  t.is(r.exitCode, 7, String(r.stderr));
  t.regex(String(r.stdout), /got TERM/);
  const st = await podStatus(ne.env, uuid);
  t.is(st.state, 'exited');
  t.is(st.apps[0]!.exit_code, 7);
  assertNoLeftovers(t, ne, uuid);
});

test('rkt stop --force kills an app that ignores SIGTERM at once', async (t) => {
  const ne = await setup(t, aci);
  const m = marker();
  const { proc, uuid } = await runInBackground(ne, [ne.image, '--exec=/bin/sh', '--', '-c', `trap "" TERM; sleep ${m}`]);
  const t0 = Date.now();
  const stop = await ne.env.run(['stop', '--force', uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  await proc;
  t.true(Date.now() - t0 < 5000, 'no waiting for the stop timeout');
  t.deepEqual(await processesWith(`sleep ${m}`), []);
  const st = await podStatus(ne.env, uuid);
  t.is(st.state, 'exited');
  t.regex(st.exit_cause ?? '', /--force/);
  assertNoLeftovers(t, ne, uuid);
});

test('rkt enter runs a command in the app with no more privilege than the app has', async (t) => {
  const ne = await setup(t, aci);
  const retained = ['CAP_KILL', 'CAP_CHOWN'];
  const m = marker();
  const { uuid } = await runInBackground(ne, [ne.image, '--user=1000', '--group=50', '--working-dir=/etc', `--caps-retain=${retained.join(',')}`, '--memory=64M', '--exec=/bin/sleep', '--', m]);
  const inside = await ne.env.run(['enter', uuid, '/bin/sh', '-c', `${SELF_STATUS}; id -u; id -g; pwd; echo "$AC_APP_NAME"; ls /proc/sysrq-trigger 2>&1 | grep -c "No such"; mem=$(grep ":memory:" /proc/self/cgroup | cut -d: -f3); echo "$mem"; cat "/sys/fs/cgroup/memory$mem/memory.limit_in_bytes"; exit 5`]);
  t.is(inside.exitCode, 5, String(inside.stderr));
  const out = String(inside.stdout);
  t.is(statusField(out, 'CapBnd'), capMask(retained), 'the bounding set is the app one');
  t.is(statusField(out, 'CapEff'), capMask(retained), 'a non-root app holds what it retains, and no more');
  t.is(statusField(out, 'Seccomp'), '2', 'the app seccomp filter applies');
  const [uid, gid, wd, app, masked, memCgroup, memLimit] = out.trim().split('\n').slice(-7);
  t.deepEqual([uid, gid, wd, app, masked], ['1000', '50', '/etc', 'busybox', '1'], 'credentials, working dir, environment, masked paths');
  t.regex(memCgroup!, /^\/system\.slice\/rkt-enter-busybox-[0-9a-f]+\.service$/, 'a cgroup of the pod');
  t.is(memLimit, '64000000', "the app's memory limit");
  // a root app: enter is root too, but bounded like the app
  const ne2 = await setup(t, aci);
  const { uuid: u2 } = await runInBackground(ne2, [ne2.image, '--caps-remove=CAP_SETUID,CAP_SETGID', '--exec=/bin/sleep', '--', marker()]);
  const root = await ne2.env.run(['enter', u2, '/bin/sh', '-c', SELF_STATUS]);
  t.is(root.exitCode, 0, String(root.stderr));
  t.is(statusField(String(root.stdout), 'CapBnd'), capMask(DEFAULT_CAPABILITIES.filter((c) => c !== 'CAP_SETUID' && c !== 'CAP_SETGID')));
  // a bare command name is found in the app's PATH, arguments are literal
  const bare = await ne2.env.run(['enter', u2, 'echo', '$HOME', '100%']);
  t.is(bare.exitCode, 0, String(bare.stderr));
  t.is(String(bare.stdout), '$HOME 100%');
});

test('kill -9 of rkt run: the pod reads as exited, its processes and cgroups are gone, gc leaves nothing', async (t) => {
  const ne = await setup(t, aci);
  const m = marker();
  const { proc, uuid } = await runInBackground(ne, [ne.image, '--exec=/bin/sleep', '--', m]);
  t.true((await processesWith(`sleep ${m}`)).length > 0);
  proc.kill('SIGKILL');
  await proc;
  await waitFor('the app to be gone', async () => (await processesWith(`sleep ${m}`)).length === 0, 10_000);
  await waitFor('the pod cgroups to be gone', async () => podCgroupsLeft(uuid).length === 0, 10_000);
  const st = await podStatus(ne.env, uuid);
  t.is(st.state, 'exited');
  t.regex(st.exit_cause ?? '', /killed/);
  const gc = await ne.env.run(['gc', '--grace-period=0s']);
  t.is(gc.exitCode, 0, String(gc.stderr));
  t.false(fs.existsSync(path.join(ne.env.dir, 'pods/exited-garbage', uuid)));
  t.false(fs.existsSync(path.join(ne.env.dir, 'pods/run', uuid)));
  t.deepEqual(mountsMentioning(uuid), []);
  t.deepEqual(podCgroupsLeft(uuid), []);
});

test('a host without systemd-nspawn gets a clear error and no pod left behind', async (t) => {
  const ne = await setup(t, aci);
  const r = await ne.env.run(['run', ...ne.flags, ne.image, '--exec=/bin/true'], { env: { RKT_NSPAWN_BINARY: '/nonexistent/systemd-nspawn' } });
  t.is(r.exitCode, 254);
  t.regex(String(r.stderr), /systemd-nspawn is not installed.*apt-get install systemd-container/);
  const uuid = ne.uuid();
  t.regex((await podStatus(ne.env, uuid)).exit_cause ?? '', /systemd-nspawn is not installed/);
  assertNoLeftovers(t, ne, uuid);
});

/** Prepare a pod with rkt, then start its run entrypoint by hand, the way stage0 does. */
async function runDirect(ne: Awaited<ReturnType<typeof setup>>, stage1Flags: string[], app: string[]): Promise<{ code: number; stdout: string; stderr: string; uuid: string }> {
  const p = await ne.env.run(['prepare', '--quiet', ...ne.flags.filter((f) => !f.startsWith('--uuid-file-save')), ne.image, ...app]);
  if (p.exitCode !== 0) throw new Error(`prepare failed: ${p.stderr}`);
  const uuid = String(p.stdout).trim();
  const dir = path.join(ne.env.dir, 'pods/prepared', uuid);
  const r = await execa('setpriv', ['--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--propagation', 'slave', '--', path.join(dir, 'stage1/rootfs/nspawn/run'), '--net=host', ...stage1Flags, uuid], {
    cwd: dir,
    reject: false,
    stdin: 'ignore',
    timeout: 60_000,
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), uuid };
}

test('--ipc=parent keeps the host IPC namespace; by default the pod has its own', async (t) => {
  const ne = await setup(t, aci);
  const hostIpc = fs.readlinkSync('/proc/self/ns/ipc');
  const own = await runDirect(ne, [], ['--exec=/bin/readlink', '--', '/proc/self/ns/ipc']);
  t.is(own.code, 0, own.stderr);
  t.not(own.stdout.trim(), hostIpc);
  const parent = await runDirect(ne, ['--ipc=parent'], ['--exec=/bin/readlink', '--', '/proc/self/ns/ipc']);
  t.is(parent.code, 0, parent.stderr);
  t.is(parent.stdout.trim(), hostIpc);
  t.deepEqual(podCgroupsLeft(parent.uuid), []);
});

test('--private-users runs the pod in a user namespace: root inside is not root outside', async (t) => {
  const ne = await setup(t, aci);
  const r = await runDirect(ne, ['--private-users'], ['--exec=/bin/sh', '--', '-c', 'id -u; cat /proc/self/uid_map']);
  t.is(r.code, 0, r.stderr);
  const [uid, map] = r.stdout.trim().split('\n');
  t.is(uid, '0');
  const [inner, outer, count] = map!.trim().split(/\s+/).map(Number);
  t.is(inner, 0);
  t.true(outer! > 0, 'uid 0 of the pod is an unprivileged uid of the host');
  t.is(count, 65536);
  t.deepEqual(podCgroupsLeft(r.uuid), []);
});
