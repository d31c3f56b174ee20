import test, { type ExecutionContext } from 'ava';
import path from 'node:path';
import { REPO } from '../helpers/rkt.js';
import { buildAci } from '../helpers/aci.js';
import { podWorld } from '../helpers/pods.js';
import { needFile } from '../helpers/prereqs.js';

// Issue 15, item 14: an app's default environment has HOME, USER, LOGNAME
// and SHELL from the app user's passwd entry in the image, on every flavor.

const FLAVORS = {
  fly: path.join(REPO, 'build', 'stage1-fly.aci'),
  nspawn: path.join(REPO, 'build', 'stage1-coreos.aci'),
  kvm: path.join(REPO, 'build', 'stage1-kvm.aci'),
};

async function appEnv(t: ExecutionContext, aci: string, userFlags: string[]): Promise<Record<string, string>> {
  needFile(aci, 'run scripts/setup.sh, which builds the stage1 images');
  const env = podWorld(t, 'rkt-app-env-');
  const image = await buildAci(env.root, { name: 'example.com/busybox', app: { exec: ['/bin/env'], user: '0', group: '0' } });
  const r = await env.run(['run', '--insecure-options=image', `--stage1-path=${aci}`, ...(aci === FLAVORS.fly ? [] : ['--net=none']), image, ...userFlags], { timeout: 600_000 });
  t.is(r.exitCode, 0, String(r.stderr));
  return Object.fromEntries(
    String(r.stdout)
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

const ACCOUNT = ['HOME', 'USER', 'LOGNAME', 'SHELL'];
const account = (e: Record<string, string>) => Object.fromEntries(ACCOUNT.filter((k) => k in e).map((k) => [k, e[k]]));

for (const [flavor, aci] of Object.entries(FLAVORS)) {
  test(`${flavor}: root gets HOME=/root, USER, LOGNAME and SHELL from /etc/passwd`, async (t) => {
    t.deepEqual(account(await appEnv(t, aci, [])), { HOME: '/root', USER: 'root', LOGNAME: 'root', SHELL: '/bin/sh' });
  });
}

test('nspawn: a numeric --user takes the entry with that id', async (t) => {
  t.deepEqual(account(await appEnv(t, FLAVORS.nspawn, ['--user=1000', '--group=1000'])), { HOME: '/home/user', USER: 'user', LOGNAME: 'user', SHELL: '/bin/sh' });
});
