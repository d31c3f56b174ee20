import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { podStatus, processesWith, waitFor } from '../helpers/pods.js';
import { needCommand } from '../helpers/prereqs.js';
import { QEMU_OVERHEAD_MIB, vmMemoryLimitBytes } from '../../stage1-kvm/vm-cgroup.js';
import { KVM, podDir, runInBackground, setup, waitReady, type Background } from './kvm-common.js';

// qemu as Firecracker's jailer leaves its VMM: seen from the outside while
// a pod runs (ids, capabilities, no_new_privs, seccomp, namespaces, cgroup
// and memory limit), then from the inside: a shell entered into qemu's
// namespaces with qemu's ids plays a qemu that the guest has taken over, and
// finds nothing of the host to read, write, signal or replace. After the pod
// (stopped, or its rkt run killed) and after gc, no cgroup and no process
// of the pod's ids is left. One VM at a time (test.serial).

const SLEEPER = ['--exec=/bin/sh', '--', '-c', 'echo up; while true; do sleep 0.2; done'];

interface ProcStatus {
  uid: number[];
  gid: number[];
  groups: string;
  nspid: number[];
  capEff: string;
  capPrm: string;
  capBnd: string;
  capInh: string;
  capAmb: string;
  noNewPrivs: string;
  seccomp: string;
}

function procStatus(pid: number): ProcStatus {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): string => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(s)?.[1]?.trim() ?? '';
  const nums = (name: string): number[] => field(name).split(/\s+/).filter(Boolean).map(Number);
  return {
    uid: nums('Uid'),
    gid: nums('Gid'),
    groups: field('Groups'),
    nspid: nums('NSpid'),
    capEff: field('CapEff'),
    capPrm: field('CapPrm'),
    capBnd: field('CapBnd'),
    capInh: field('CapInh'),
    capAmb: field('CapAmb'),
    noNewPrivs: field('NoNewPrivs'),
    seccomp: field('Seccomp'),
  };
}

/** Pids of processes running with `uid` (real, effective, saved or fs). */
function processesOfUid(uid: number): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      if (procStatus(Number(p)).uid.includes(uid)) out.push(Number(p));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** The cgroup directories of a process, one per hierarchy, through this host's cgroup mounts. */
function cgroupDirs(pid: number): { memoryLimitFile: string | undefined; dirs: string[] } {
  const mounts = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f.includes('cgroup') || f.includes('cgroup2'))
    .map((f) => ({ mount: f[4]!, v2: f[f.indexOf('-') + 1] === 'cgroup2', opts: (f[f.indexOf('-') + 3] ?? '').split(',') }));
  const dirs: string[] = [];
  let memoryLimitFile: string | undefined;
  for (const line of fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n')) {
    const [, list, p] = /^\d+:([^:]*):(.*)$/.exec(line)!;
    const controllers = list!.split(',').filter(Boolean);
    const m = controllers.length === 0 ? mounts.find((x) => x.v2) : mounts.find((x) => !x.v2 && controllers.every((c) => x.opts.includes(c)));
    if (!m) continue;
    const dir = path.join(m.mount, p!);
    dirs.push(dir);
    if (controllers.includes('memory')) memoryLimitFile = path.join(dir, 'memory.limit_in_bytes');
    else if (m.v2 && fs.existsSync(path.join(dir, 'memory.max'))) memoryLimitFile ??= path.join(dir, 'memory.max');
  }
  return { memoryLimitFile, dirs };
}

function qemuPid(dir: string): number {
  return Number(fs.readFileSync(path.join(dir, 'qemu.pid'), 'utf8').trim());
}

function argvOf(pid: number): string[] {
  return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
}

/** A shell in qemu's namespaces (mount, pid, net, ipc, uts) with qemu's ids: what a qemu the guest took over could do, less qemu's seccomp filter. */
async function asQemu(pid: number, uid: number, gid: number, script: string): Promise<string> {
  const nsenter = needCommand('nsenter', 'util-linux');
  const r = await execa(nsenter, [`--target=${pid}`, '--mount', '--pid', '--net', '--ipc', '--uts', `--setuid=${uid}`, `--setgid=${gid}`, '--', '/usr/bin/busybox', 'sh', '-c', script], { reject: false });
  return `${String(r.stdout)}\n${String(r.stderr)}`;
}

async function startPod(t: ExecutionContext): Promise<{ bg: Background; dir: string; env: Awaited<ReturnType<typeof setup>>['env'] }> {
  const { env, image } = await setup(t);
  const bg = await runInBackground(t, env, [image, ...SLEEPER]);
  await waitReady(t, env, bg.uuid);
  return { bg, dir: podDir(env, bg.uuid)!, env };
}

test.serial('qemu runs unprivileged, without capabilities, under seccomp, in its own namespaces and the pod\'s memory-limited cgroup', async (t) => {
  needCommand('busybox', 'busybox');
  const { bg, dir, env } = await startPod(t);
  const pid = qemuPid(dir);
  t.regex(argvOf(pid)[0]!, /qemu-system-x86_64$/, 'qemu.pid is qemu itself');
  const st = procStatus(pid);
  const uid = st.uid[0]!;
  const gid = st.gid[0]!;
  t.true(uid > 0 && st.uid.every((u) => u === uid), `uid ${st.uid.join(' ')}`);
  t.true(gid > 0 && st.gid.every((g) => g === gid), `gid ${st.gid.join(' ')}`);
  t.is(st.groups, '', 'no supplementary groups');
  for (const [name, v] of Object.entries({ CapEff: st.capEff, CapPrm: st.capPrm, CapBnd: st.capBnd, CapInh: st.capInh, CapAmb: st.capAmb })) t.is(v, '0000000000000000', name);
  t.is(st.noNewPrivs, '1');
  t.is(st.seccomp, '2', 'seccomp filter mode');
  t.true(argvOf(pid).includes('on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny'));
  for (const ns of ['mnt', 'pid', 'ipc', 'uts', 'net']) t.not(fs.readlinkSync(`/proc/${pid}/ns/${ns}`), fs.readlinkSync(`/proc/self/ns/${ns}`), `${ns} namespace`);
  t.deepEqual(st.nspid.slice(1), [1], 'qemu is PID 1 of its own pid namespace');

  // its mount namespace holds its jail and nothing else of the host
  const mounts = fs
    .readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.split(' ')[4]!);
  t.is(mounts[0], '/');
  // on the template path (RKT_KVM_TEMPLATE=on) also the template's initramfs, read-only like the kernel
  const template = process.env.RKT_KVM_TEMPLATE === 'on' ? [path.join(dir, 'stage1/rootfs/kernel/template-initrd')] : [];
  t.deepEqual(mounts.slice(1).sort(), ['/dev', '/usr', path.join(dir, 'qemu'), path.join(dir, 'stage1/rootfs/kernel/bzImage'), path.join(dir, 'virtiofs.sock'), ...template].sort());

  // the pod's cgroup, with the stated limit: the guest's RAM plus qemu's overhead
  const cg = cgroupDirs(pid);
  t.true(cg.dirs.length > 0 && cg.dirs.every((d) => path.basename(d) === `rkt-${bg.uuid}`), cg.dirs.join(', '));
  t.truthy(cg.memoryLimitFile, 'a memory cgroup');
  const argv = argvOf(pid);
  const guestMiB = Number(/^(\d+)M$/.exec(argv[argv.indexOf('-m') + 1]!)![1]);
  const accel = argv[argv.indexOf('-accel') + 1]!.startsWith('kvm') ? 'kvm' : 'tcg';
  t.is(Number(fs.readFileSync(cg.memoryLimitFile!, 'utf8').trim()), vmMemoryLimitBytes(guestMiB, accel));
  t.is(vmMemoryLimitBytes(guestMiB, accel), (guestMiB + QEMU_OVERHEAD_MIB[accel]) * 2 ** 20);

  // its directory is closed to it once the guest runs; its taps are its own
  const qdir = fs.statSync(path.join(dir, 'qemu'));
  t.is(qdir.uid, 0);
  t.is(qdir.mode & 0o022, 0, 'qemu/ is writable by root alone');
  const tap = JSON.parse((await execa('nsenter', [`--target=${pid}`, '--net', '--', 'ip', '-d', '-j', 'link', 'show', 'tap0'])).stdout)[0];
  t.is(tap.linkinfo.info_data.user, uid);
  t.is(tap.linkinfo.info_data.group, gid);

  // a qemu the guest took over: nothing of the host to read, write, signal or replace
  const inside = await asQemu(
    pid,
    uid,
    gid,
    [
      'echo "id $(id -u) $(id -g)"',
      'echo "root $(ls -A / | tr "\\n" " ")"',
      'for f in /etc/shadow /etc/passwd /proc/1/environ /proc/self /sys/kernel /root /home; do [ -e "$f" ] && echo "sees $f"; done',
      'for d in /proc /.old; do [ -z "$(ls -A $d)" ] || echo "sees in $d"; done',
      `cat ${dir}/pod >/dev/null 2>&1 && echo "reads the pod manifest"`,
      `touch ${dir}/qemu/new 2>/dev/null && echo "creates in qemu/"`,
      `rm -f ${dir}/qemu/qmp.sock 2>/dev/null; [ -S ${dir}/qemu/qmp.sock ] || echo "removed qmp.sock"`,
      `ln -sf /etc/shadow ${dir}/qemu/console.log 2>/dev/null && echo "replaced console.log"`,
      `(echo x > ${dir}/stage1/rootfs/kernel/bzImage) 2>/dev/null && echo "writes the kernel"`,
      'mount -t tmpfs x /usr 2>/dev/null && echo "mounts"',
      'echo "dev $(ls /dev | tr "\\n" " ")"',
      'echo "tun $(stat -c "%u %a %t:%T" /dev/net/tun)"',
      'echo done',
    ].join('\n'),
  );
  t.regex(inside, new RegExp(`^id ${uid} ${gid}$`, 'm'));
  // the root: /usr, the host's links into it (/bin -> usr/bin...), /dev, the way to the pod
  // directory, and the empty mount points the launcher used on its way in
  const links = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'].filter((d) => fs.lstatSync(`/${d}`, { throwIfNoEntry: false })?.isSymbolicLink());
  const expected = [...new Set(['.old', 'proc', 'dev', 'usr', dir.split('/')[1]!, ...links])].sort();
  t.deepEqual(/^root (.*)$/m.exec(inside)?.[1]?.trim().split(' ').sort(), expected);
  t.notRegex(inside, /^(sees|reads|creates|removed|replaced|writes|mounts)\b/m);
  t.regex(inside, /^dev net null urandom ?$/m, 'devices: null, urandom, and net/tun for the NIC (tcg: no kvm)');
  t.regex(inside, new RegExp(`^tun ${uid} 600 a:c8$`, 'm'), 'the pod\'s own tun node, 10:200');
  t.regex(inside, /^done$/m);
  t.true(fs.lstatSync(path.join(dir, 'qemu/console.log')).isFile());

  // the end: no cgroup, no process of the pod's uid
  const stop = await env.run(['stop', bg.uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  await bg.child;
  t.is((await podStatus(env, bg.uuid, ['--wait=20s'])).state, 'exited');
  t.deepEqual(cg.dirs.filter((d) => fs.existsSync(d)), [], 'the pod\'s cgroups are gone with it');
  t.deepEqual(processesOfUid(uid), []);
  const gc = await env.run(['gc', '--grace-period=0s']);
  t.is(gc.exitCode, 0, String(gc.stderr));
  t.deepEqual(processesOfUid(uid), []);
  t.deepEqual(await processesWith(bg.uuid), []);
});

test.serial('rkt run killed: qemu dies with it, and gc removes the pod\'s cgroup', async (t) => {
  const { bg, dir, env } = await startPod(t);
  const pid = qemuPid(dir);
  const uid = procStatus(pid).uid[0]!;
  const cg = cgroupDirs(pid);
  t.true(cg.dirs.length > 0);
  bg.child.kill('SIGKILL');
  await bg.child;
  await waitFor('qemu to die with rkt run', async () => processesOfUid(uid).length === 0, 20_000);
  await waitFor('the pod to be exited', async () => (await podStatus(env, bg.uuid)).state === 'exited', 20_000);
  const gc = await env.run(['gc', '--grace-period=0s']);
  t.is(gc.exitCode, 0, String(gc.stderr));
  t.deepEqual(cg.dirs.filter((d) => fs.existsSync(d)), [], 'gc removed the cgroups');
  t.deepEqual(processesOfUid(uid), []);
  t.deepEqual(await processesWith(bg.uuid), []);
});

test.serial('9p is refused before anything is set up, with what to do', async (t) => {
  const { env, image } = await setup(t);
  const r = await env.run(['run', ...KVM, image, '--exec=/bin/true'], { env: { RKT_KVM_SHARE: '9p' } });
  t.not(r.exitCode, 0);
  t.regex(String(r.stderr), /RKT_KVM_SHARE=9p is not supported: qemu's 9p server cannot be confined .*; unset RKT_KVM_SHARE and install virtiofsd/);
});

/** A process and all its descendants. */
function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      const kids = fs.readFileSync(`/proc/${out[i]}/task/${out[i]}/children`, 'utf8').trim();
      if (kids !== '') out.push(...kids.split(/\s+/).map(Number));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

// What virtiofsd may keep, in its own user namespace (stage1-kvm/virtiofsd.ts):
// CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_SETGID, CAP_SETUID, to act for
// the guest's users on what the pod's block of ids owns, and nothing else.
const VIRTIOFSD_CAPS = (1n << 0n) | (1n << 1n) | (1n << 3n) | (1n << 6n) | (1n << 7n);

test.serial('virtiofsd runs as the pod\'s ids, with its documented capabilities only, under seccomp, in its own namespaces and the pod\'s cgroup', async (t) => {
  const { bg, dir } = await startPod(t);
  const helper = Number(fs.readFileSync(path.join(dir, 'virtiofsd.pid'), 'utf8').trim());
  const procs = processTree(helper).filter((p) => argvOf(p)[0]!.endsWith('virtiofsd'));
  t.true(procs.length > 0, 'virtiofsd runs');
  let filtered = 0;
  for (const p of procs) {
    const st = procStatus(p);
    t.true(st.uid.every((u) => u >= 0x70000000) && st.gid.every((g) => g >= 0x70000000), `pid ${p}: uid ${st.uid.join(' ')}, gid ${st.gid.join(' ')}`);
    for (const [name, v] of Object.entries({ CapEff: st.capEff, CapPrm: st.capPrm })) t.is(BigInt(`0x${v}`) & ~VIRTIOFSD_CAPS, 0n, `pid ${p} ${name} ${v}`);
    t.not(fs.readlinkSync(`/proc/${p}/ns/mnt`), fs.readlinkSync('/proc/self/ns/mnt'), `pid ${p}: own mount namespace`);
    t.not(fs.readlinkSync(`/proc/${p}/ns/user`), fs.readlinkSync('/proc/self/ns/user'), `pid ${p}: own user namespace`);
    if (st.seccomp === '2') filtered++;
    // the pod's cgroup on the unified (v2) hierarchy, which virtiofsd's launcher joins before exec
    const v2 = fs.readFileSync(`/proc/${p}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
    t.true(v2 !== undefined && v2.endsWith(`/rkt-${bg.uuid}`), `pid ${p} in the pod's cgroup: ${v2}`);
  }
  t.true(filtered > 0, 'the process that serves the guest runs under its seccomp filter');
});
