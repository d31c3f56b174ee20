import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { LINUX_CAPABILITIES } from '../../src/appc/capabilities.js';
import { FIRST_ID, SLOT_IDS, SLOTS } from '../../src/stage1-common/pod-ids.js';
import { KVM, podDir, setup } from './kvm-common.js';

// A root app holding every capability plays the compromised guest over
// virtio-fs (the default share): whatever it creates on the share, in a
// host volume, an empty volume or its own rootfs, must never be owned by
// host root, never be set-id to a privileged host id, never be a device
// node; it cannot change the stage1 files that the host runs as root. And
// ordinary use still works: the volume's owner reads what the app wrote,
// read-only volumes stay read-only. One VM at a time (test.serial).

const ALL_CAPS = `--caps-retain=${LINUX_CAPABILITIES.join(',')}`;
/** The unprivileged host user who owns the writable host volume. */
const OWNER = 4242;
const BLOCK_END = FIRST_ID + SLOTS * SLOT_IDS;

// Every way the app tries to get something privileged onto the host, in each directory given.
const HOSTILE = `
bb=/bin/busybox
for d in "$@"; do
  $bb cp /bin/busybox $d/suid; $bb chown 0:0 $d/suid; $bb chmod 4755 $d/suid
  $bb touch $d/sgid; $bb chown 0:0 $d/sgid; $bb chmod 2755 $d/sgid
  $bb touch $d/rootfile; $bb chown 0:0 $d/rootfile
  $bb touch $d/other; $bb chown 1:1 $d/other
  $bb mknod $d/blk b 254 0 && echo "mknod-block-ok $d"
  $bb mknod $d/chr c 1 3 && echo "mknod-char-ok $d"
  $bb mkdir $d/dir; $bb chmod 6777 $d/dir
done
# the guest's root, through PID 1 (CAP_SYS_PTRACE): the host runs /kvm/* as root
echo pwned >> /proc/1/root/kvm/stop.mjs && echo kvm-write-ok
$bb mv /proc/1/root/kvm /proc/1/root/kvm.old && echo kvm-rename-ok
$bb touch /proc/1/root/kvm/new && echo kvm-create-ok
$bb cp /bin/busybox /proc/1/root/rkt/suid && $bb chmod 4755 /proc/1/root/rkt/suid && echo rkt-suid-made
echo done
`;

const NAMES = ['suid', 'sgid', 'rootfile', 'other', 'blk', 'chr', 'dir'];

interface Found {
  file: string;
  uid: number;
  gid: number;
  mode: number;
  kind: string;
}

function look(dir: string): Found[] {
  const out: Found[] = [];
  for (const n of NAMES) {
    const file = path.join(dir, n);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(file);
    } catch {
      // not created: refused in the guest
      continue;
    }
    const kind = st.isBlockDevice() ? 'block' : st.isCharacterDevice() ? 'char' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
    out.push({ file, uid: st.uid, gid: st.gid, mode: st.mode, kind });
  }
  return out;
}

function inBlock(id: number): boolean {
  return id >= FIRST_ID && id < BLOCK_END;
}

test.serial('a root app with every capability gets nothing privileged onto the host through virtio-fs', async (t) => {
  const { env, image } = await setup(t);
  fs.chmodSync(env.root, 0o711);
  const vol = env.file('vol');
  const tmpvol = env.file('tmpvol');
  fs.mkdirSync(vol, { mode: 0o755 });
  fs.chownSync(vol, OWNER, OWNER);
  // a host directory owned by root that anyone may write, like /tmp
  fs.mkdirSync(tmpvol);
  fs.chmodSync(tmpvol, 0o1777);
  const uuidFile = env.file('uuid');
  const r = await env.run([
    'run',
    ...KVM,
    `--uuid-file-save=${uuidFile}`,
    `--volume=vol,kind=host,source=${vol}`,
    `--volume=tmpvol,kind=host,source=${tmpvol}`,
    '--volume=scratch,kind=empty',
    image,
    ALL_CAPS,
    '--mount=volume=vol,target=/vol',
    '--mount=volume=tmpvol,target=/tmpvol',
    '--mount=volume=scratch,target=/scratch',
    '--exec=/bin/sh',
    '--',
    '-c',
    HOSTILE,
    'sh',
    '/vol',
    '/tmpvol',
    '/scratch',
    '',
  ]);
  const out = String(r.stdout);
  t.regex(out, /^done$/m, `the script ran to its end: ${out} ${String(r.stderr)}`);
  t.notRegex(out, /mknod-(block|char)-ok/, 'mknod of a device is refused');
  for (const w of ['kvm-write-ok', 'kvm-rename-ok', 'kvm-create-ok']) t.notRegex(out, new RegExp(`^${w}$`, 'm'));
  const dir = podDir(env, fs.readFileSync(uuidFile, 'utf8').trim())!;
  t.truthy(dir);
  const stage1 = path.join(dir, 'stage1', 'rootfs');
  t.false(fs.readFileSync(path.join(stage1, 'kvm', 'stop.mjs'), 'utf8').includes('pwned'), 'the entrypoints stage0 runs are untouched');
  t.false(fs.existsSync(path.join(stage1, 'kvm.old')));
  t.false(fs.existsSync(path.join(stage1, 'kvm', 'new')));

  const places: Record<string, string> = {
    'host volume owned by a user': vol,
    'host volume owned by root, mode 1777': tmpvol,
    'empty volume': path.join(dir, 'volumes', 'scratch'),
    "the app's rootfs (upper layer)": path.join(dir, 'overlay', 'busybox', 'upper'),
  };
  let seen = 0;
  for (const [what, d] of Object.entries(places)) {
    const found = look(d);
    t.true(found.length >= 4, `${what}: the app could create files in ${d} (${found.map((f) => path.basename(f.file)).join(' ')})`);
    for (const f of found) {
      seen++;
      const name = `${what}: ${path.basename(f.file)} (${f.kind} ${f.uid}:${f.gid} ${(f.mode & 0o7777).toString(8)})`;
      t.not(f.kind, 'block', name);
      t.not(f.kind, 'char', name);
      t.not(f.uid, 0, name);
      t.not(f.gid, 0, name);
      // the only owners: the volume's owner, or the pod's own block of ids
      t.true(d === vol ? f.uid === OWNER && f.gid === OWNER : inBlock(f.uid) && inBlock(f.gid), name);
    }
  }
  // the guest's /rkt is writable, but what it makes there is the block's too
  const rktSuid = path.join(stage1, 'rkt', 'suid');
  if (fs.existsSync(rktSuid)) t.true(inBlock(fs.statSync(rktSuid).uid), 'a set-uid file in /rkt belongs to the pod block');
  t.log(`${seen} files the app made on the share: none is root's, none is a device`);
});

test.serial("ordinary use: a non-root app writes into a user's volume, its owner reads it; read-only and empty volumes", async (t) => {
  const { env, image } = await setup(t);
  fs.chmodSync(env.root, 0o711);
  const vol = env.file('vol');
  const ro = env.file('ro');
  fs.mkdirSync(vol, { mode: 0o755 });
  fs.mkdirSync(ro, { mode: 0o755 });
  fs.writeFileSync(path.join(vol, 'in'), 'from the host\n');
  fs.writeFileSync(path.join(ro, 'in'), 'read only\n');
  for (const p of [vol, path.join(vol, 'in')]) fs.chownSync(p, OWNER, OWNER);
  const script = [
    'echo "vol $(stat -c %u:%g /vol) in $(stat -c %u:%g /vol/in)"',
    'cat /vol/in /ro/in',
    'echo written > /vol/out && echo rw-ok',
    'echo more >> /vol/in && echo append-ok',
    'echo nope > /ro/out 2>/dev/null || echo ro-refused',
    'echo x > /scratch/x && echo empty-ok',
    'echo "scratch $(stat -c %u:%g /scratch)"',
    'echo x > /rootfile 2>/dev/null || echo root-refused',
  ].join('; ');
  const uuidFile = env.file('uuid');
  const r = await env.run([
    'run',
    ...KVM,
    `--uuid-file-save=${uuidFile}`,
    `--volume=vol,kind=host,source=${vol}`,
    `--volume=ro,kind=host,source=${ro},readOnly=true`,
    '--volume=scratch,kind=empty,uid=1000,gid=1000,mode=0750',
    image,
    '--user=1000',
    '--group=1000',
    '--readonly-rootfs=true',
    '--mount=volume=vol,target=/vol',
    '--mount=volume=ro,target=/ro',
    '--mount=volume=scratch,target=/scratch',
    '--exec=/bin/sh',
    '--',
    '-c',
    script,
  ]);
  t.is(r.exitCode, 0, String(r.stderr));
  const out = String(r.stdout);
  t.regex(out, /^vol 1000:1000 in 1000:1000$/m, "the volume's owner is the app's user in the guest");
  t.regex(out, /from the host\nread only\n/);
  for (const w of ['rw-ok', 'append-ok', 'ro-refused', 'empty-ok', 'root-refused']) t.regex(out, new RegExp(`^${w}$`, 'm'));
  t.regex(out, /^scratch 1000:1000$/m);
  // on the host, the volume's owner reads what the app wrote, as that user
  const asOwner = await execa('setpriv', [`--reuid=${OWNER}`, `--regid=${OWNER}`, '--clear-groups', 'cat', path.join(vol, 'out'), path.join(vol, 'in')], { reject: false });
  t.is(asOwner.exitCode, 0, String(asOwner.stderr));
  t.is(String(asOwner.stdout), 'written\nfrom the host\nmore');
  const st = fs.statSync(path.join(vol, 'out'));
  t.deepEqual([st.uid, st.gid], [OWNER, OWNER]);
  t.false(fs.existsSync(path.join(ro, 'out')));
  const dir = podDir(env, fs.readFileSync(uuidFile, 'utf8').trim())!;
  const scratch = fs.statSync(path.join(dir, 'volumes', 'scratch', 'x'));
  t.true(inBlock(scratch.uid) && scratch.uid === fs.statSync(path.join(dir, 'volumes', 'scratch')).uid, 'the empty volume is the app user\'s, shifted into the pod block');
  t.false(fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(env.dir), 'no pod mount is left on the host');
});
