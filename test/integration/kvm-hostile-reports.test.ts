import test, { type ExecutionContext } from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { LINUX_CAPABILITIES } from '../../src/appc/capabilities.js';
import { KVM, setup } from './kvm-common.js';

// A compromised guest (a root app keeping every capability, which reaches
// the guest's root through /proc/1/root) plants symlinks and special files
// at every path in the shared stage1 rootfs that the host once read by
// name: app exit statuses, started marks, OOM marks, the network-error file,
// the app list. The host reads none of them any more: what the apps did
// comes over the report channel, and what rkt status and rkt list show was
// written by the host. Each planted target is a host secret file, a host
// FIFO (reading it would hang), /dev/zero (an endless read) or a directory.

const ALL_CAPS = `--caps-retain=${LINUX_CAPABILITIES.join(',')}`;

/** The guest-side paths the host used to read, as the compromised guest sees them. */
const PLANT_SCRIPT = (target: string): string => `
set -u
R=/proc/1/root/rkt
for d in status started oom; do mkdir -p "$R/$d"; done
for p in "$R/status/evil" "$R/status/other" "$R/started/evil" "$R/oom/evil" "$R/network-error" "$R/apps"; do
  rm -rf "$p"; ln -s '${target}' "$p"
done
ls -l "$R/status/evil" >&2
exit 7
`;

async function plantAndRun(t: ExecutionContext, target: (root: string) => string): Promise<void> {
  const { env, image } = await setup(t);
  const secret = `SECRET-${crypto.randomBytes(8).toString('hex')}`;
  fs.writeFileSync(env.file('secret'), `${secret}\n`);
  fs.mkdirSync(env.file('dir'));
  await execa('mkfifo', [env.file('fifo')]);
  const aim = target(env.root);
  const t0 = Date.now();
  const r = await env.run(['run', ...KVM, image, '--name=evil', ALL_CAPS, '--exec=/bin/sh', '--', '-c', PLANT_SCRIPT(aim)], { timeout: 180_000 });
  const runMs = Date.now() - t0;
  const out = `${r.stdout}\n${r.stderr}`;
  t.is(r.exitCode, 7, out);
  t.regex(String(r.stderr), new RegExp(`evil -> ${aim.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`), 'the guest did plant the link');
  t.false(out.includes(secret), 'the secret never appears in rkt run output');
  t.true(runMs < 120_000);

  const list = await env.run(['list', '--full', '--no-legend'], { timeout: 15_000 });
  t.is(list.exitCode, 0, String(list.stderr));
  const uuid = String(list.stdout).trim().split(/\s+/)[0]!;
  const t1 = Date.now();
  const status = await env.run(['status', uuid], { timeout: 15_000 });
  t.true(Date.now() - t1 < 10_000, 'rkt status finishes in its usual time');
  t.is(status.exitCode, 0, String(status.stderr));
  t.regex(String(status.stdout), /app-evil=7/, 'the status is the one the pod reported, written by the host');
  t.false(`${status.stdout}${status.stderr}${list.stdout}${list.stderr}`.includes(secret));
  const json = await env.run(['list', '--format=json'], { timeout: 15_000 });
  t.false(String(json.stdout).includes(secret));

  const gc = await env.run(['gc', '--grace-period=0s'], { timeout: 60_000 });
  t.is(gc.exitCode, 0, String(gc.stderr));
  t.false(`${gc.stdout}${gc.stderr}`.includes(secret));
  t.is(fs.readFileSync(env.file('secret'), 'utf8'), `${secret}\n`, 'the host file is untouched');
  t.true(fs.statSync(env.file('fifo')).isFIFO(), 'the host FIFO is untouched');
  t.deepEqual(fs.readdirSync(path.join(env.dir, 'pods', 'run')), [], 'no pod left running');
}

test('links to a host secret file: nothing of it reaches any rkt output, status or log', async (t) => {
  await plantAndRun(t, (root) => path.join(root, 'secret'));
});

test('links to a host FIFO: nothing hangs', async (t) => {
  await plantAndRun(t, (root) => path.join(root, 'fifo'));
});

test('links to /dev/zero and to a directory: nothing reads without end or fails', async (t) => {
  await plantAndRun(t, () => '/dev/zero');
  await plantAndRun(t, (root) => path.join(root, 'dir'));
});
