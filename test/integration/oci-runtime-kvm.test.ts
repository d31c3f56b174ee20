import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { REPO } from '../helpers/rkt.js';
import { needFile } from '../helpers/prereqs.js';
import { KVM_ACI } from './kvm-common.js';
import { bundle, createLikeShim, needPython, nothingLeft, ociRuntimeTests, spec, world, type World } from './oci-runtime-common.js';

// bin/rkt-oci-kvm as containerd's runc v2 shim drives it (the tests are in
// oci-runtime-common.ts): each pod a VM (tcg here: slow, so no timings).

test.before(async () => {
  await needPython();
  needFile(KVM_ACI, 'run scripts/setup.sh, which builds the stage1 images');
});

ociRuntimeTests(path.join(REPO, 'bin/rkt-oci-kvm'), () => [`--stage1-path=${KVM_ACI}`], { terminal: true });

/** A bundle whose rootfs is an overlay mount, as containerd's snapshotter makes it: busybox in the lower layer, `upper` holding what a test puts there. */
async function overlayBundle(t: ExecutionContext, w: World, name: string, args: string[], fill: (upper: string, lower: string) => Promise<void>): Promise<{ dir: string; upper: string }> {
  const dir = bundle(w, name, () => spec(w, { args, env: ['PATH=/bin'] }));
  const rootfs = path.join(dir, 'rootfs');
  const [lower, upper, work] = ['lower', 'upper', 'work'].map((d) => path.join(dir, d)) as [string, string, string];
  fs.renameSync(rootfs, lower);
  fs.mkdirSync(upper);
  fs.mkdirSync(work);
  fs.mkdirSync(rootfs);
  await fill(upper, lower);
  await execa('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, rootfs]);
  t.teardown(async () => void (await execa('umount', ['--lazy', rootfs], { reject: false })));
  return { dir, upper };
}

test('a bundle root that is an overlay mount: the app sees its merged tree, its writes stay out of the layers and are not host root\'s', async (t) => {
  const w = await world(t);
  const script = 'cat /etc/greeting; test -e /etc/passwd || echo passwd-gone; echo changed > /etc/greeting; echo made > /made; exit 5';
  const { dir, upper } = await overlayBundle(t, w, 'overlay', ['/bin/sh', '-c', script], async (up) => {
    fs.mkdirSync(path.join(up, 'etc'));
    fs.writeFileSync(path.join(up, 'etc/greeting'), 'from the upper layer\n');
    // a whiteout: the lower layer's /etc/passwd is deleted in the merged tree
    await execa('mknod', [path.join(up, 'etc/passwd'), 'c', '0', '0']);
  });
  const out = w.env.file('output');
  const { reaper, pid } = await createLikeShim(w, 'ov1', dir, out);
  t.is((await w.oci(['start', 'ov1'])).code, 0);
  const end = await reaper;
  t.is(new RegExp(`reaped ${pid} (\\d+)`).exec(String(end.stdout))?.[1], '5', "the pid-file process exits with the app's status");
  const output = fs.readFileSync(out, 'utf8');
  t.regex(output, /from the upper layer/, "the overlay's upper layer is seen");
  t.regex(output, /passwd-gone/, "the overlay's whiteout is honoured");
  t.is(fs.readFileSync(path.join(upper, 'etc/greeting'), 'utf8'), 'from the upper layer\n', "the app's write did not reach the snapshot");
  t.false(fs.existsSync(path.join(upper, 'made')), "the app's new file did not reach the snapshot");
  const uuid = fs.readFileSync(path.join(w.root, 'ov1', 'pod-uuid'), 'utf8').trim();
  const found = await execa('find', [path.join(w.env.dir, 'pods'), '-name', 'made', '-path', '*upper*', '-printf', '%U:%G %p\n']);
  const owners = String(found.stdout).split('\n').filter(Boolean);
  t.true(owners.length > 0, "the app's file is in the pod's upper layer");
  for (const o of owners) t.notRegex(o, /^0:|:0 /, `a file the guest made is not host root's: ${o}`);
  t.is((await w.oci(['delete', 'ov1'])).code, 0);
  // the test's own mount goes first, and only if nothing of the pod holds it any more
  const um = await execa('umount', [path.join(dir, 'rootfs')], { reject: false });
  t.is(um.exitCode, 0, `the bundle's overlay is not busy after delete: ${String(um.stderr)}`);
  await nothingLeft(t, w, uuid, dir);
});

test('a bundle root inside an overlay mount, not its root, is refused with a reason', async (t) => {
  const w = await world(t);
  const { dir } = await overlayBundle(t, w, 'inside', ['/bin/true'], async (up, lower) => {
    fs.mkdirSync(path.join(up, 'sub/bin'), { recursive: true });
    fs.copyFileSync(path.join(lower, 'bin/busybox'), path.join(up, 'sub/bin/busybox'));
    fs.symlinkSync('busybox', path.join(up, 'sub/bin/true'));
  });
  // the bundle's root names a directory of the overlay: its layers cannot stand for it
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, root: { path: 'rootfs/sub' } }));
  const r = await w.oci(['create', '--bundle', dir, '--pid-file', w.env.file('x.pid'), 'in1']);
  t.not(r.code, 0);
  t.regex(r.stderr, /inside an overlay mounted at .*rootfs, not its root/);
});
