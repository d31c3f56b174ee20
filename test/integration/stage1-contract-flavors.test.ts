import test, { type ExecutionContext } from 'ava';
import path from 'node:path';
import { execa } from 'execa';
import { buildAci } from '../helpers/aci.js';
import { listPods, reapPods } from '../helpers/pods.js';
import { needFile, needRoot } from '../helpers/prereqs.js';
import { RktEnv, REPO } from '../helpers/rkt.js';

// How our flavors take the run flags of rkt's stage1 contract that stage0
// now passes (docs/stage1-interface.md, "run"): each is honoured, or the
// pod is refused before it starts with one line naming the flag.

const KVM_ACI = path.join(REPO, 'build', 'stage1-kvm.aci');
const FLY_ACI = path.join(REPO, 'build', 'stage1-fly.aci');

const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;

async function world(t: ExecutionContext, aci: string) {
  needRoot('stage1 flag tests');
  needFile(aci, 'run scripts/setup.sh, which builds the stage1 images');
  const env = new RktEnv('rkt-flags-');
  t.teardown(async () => {
    await reapPods(env);
    env.cleanup();
  });
  const image = await buildAci(env.root, { name: 'example.com/flags', app: { exec: ['/bin/true'], user: '0', group: '0' } });
  const run = (insecure: string, flags: string[], script: string) => env.run([`--insecure-options=image${insecure}`, 'run', `--stage1-path=${aci}`, ...flags, image, '--exec=/bin/sh', '--', '-c', script], { timeout: 300_000 });
  return { env, run };
}

function capBnd(stdout: string): bigint {
  const m = /^CapBnd:\s*([0-9a-f]+)$/m.exec(stdout);
  if (!m) throw new Error(`no CapBnd in ${stdout}`);
  return BigInt(`0x${m[1]}`);
}

test('kvm: --insecure-options=capabilities gives the apps every capability, seccomp leaves them unfiltered; --private-users is refused by name', async (t) => {
  const { env, run } = await world(t, KVM_ACI);
  const plain = await run('', [], 'grep CapBnd /proc/self/status');
  t.is(plain.exitCode, 0, String(plain.stderr));
  t.is((capBnd(String(plain.stdout)) >> CAP_SYS_ADMIN) & 1n, 0n);
  const all = await run(',capabilities', [], 'grep CapBnd /proc/self/status');
  t.is(all.exitCode, 0, String(all.stderr));
  t.regex(String(all.stderr), /--insecure-options=capabilities: apps keep every capability/);
  for (const bit of [CAP_SYS_ADMIN, CAP_NET_ADMIN]) t.is((capBnd(String(all.stdout)) >> bit) & 1n, 1n);

  const seccomp = await run(',seccomp', [], 'grep Seccomp: /proc/self/status');
  t.is(seccomp.exitCode, 0, String(seccomp.stderr));
  t.regex(String(seccomp.stdout), /^Seccomp:\s+0$/m);
  const users = await run('', ['--private-users'], 'true');
  t.is(users.exitCode, 254);
  t.regex(String(users.stderr), /stage1: the kvm stage1 cannot honour --private-users: /);
  t.deepEqual((await listPods(env)).filter((p) => p.state === 'running'), []);
});

test('fly: the DNS flags reach the app through --dns-conf-mode; the --disable-* flags have nothing to relax; --private-users is refused by name', async (t) => {
  const { env, run } = await world(t, FLY_ACI);
  const dns = await run('', ['--dns=192.0.2.53', '--dns-search=example.com', '--hosts-entry=192.0.2.7=db.example.com'], 'cat /etc/resolv.conf /etc/hosts');
  t.is(dns.exitCode, 0, String(dns.stderr));
  t.regex(String(dns.stdout), /^nameserver 192\.0\.2\.53$/m);
  t.regex(String(dns.stdout), /^search example\.com$/m);
  t.regex(String(dns.stdout), /^192\.0\.2\.7\s+db\.example\.com$/m);
  const relaxed = await run(',all-run', [], 'exit 0');
  t.is(relaxed.exitCode, 0, String(relaxed.stderr));
  const users = await run('', ['--private-users'], 'true');
  t.is(users.exitCode, 254);
  t.regex(String(users.stderr), /stage1: the fly stage1 cannot honour --private-users: /);
  t.deepEqual((await listPods(env)).filter((p) => p.state === 'running'), []);
});

test('every flavor\'s entrypoints refuse a flag outside the contract with a usage error, status 254', async (t) => {
  const flavors = [
    { aci: FLY_ACI, run: '/run', gc: '/gc', mutable: false },
    { aci: path.join(REPO, 'build', 'stage1-coreos.aci'), run: '/nspawn/run', gc: '/nspawn/gc', mutable: true },
    { aci: KVM_ACI, run: '/kvm/run', gc: '/kvm/gc', mutable: true },
  ];
  for (const f of flavors) {
    const { env } = await world(t, f.aci);
    const image = await buildAci(env.root, { name: 'example.com/flags', app: { exec: ['/bin/true'], user: '0', group: '0' } });
    const prepared = await env.run(['--insecure-options=image', 'prepare', '--quiet', `--stage1-path=${f.aci}`, image]);
    t.is(prepared.exitCode, 0, String(prepared.stderr));
    const uuid = String(prepared.stdout).trim();
    const dir = path.join(env.dir, 'pods', 'prepared', uuid);
    // executed by hand, as stage0 would, with the pod directory as working directory
    const entry = (which: string, args: string[]) => execa(path.join(dir, 'stage1', 'rootfs', which), args, { cwd: dir, reject: false });
    for (const [which, args, why] of [
      [f.run, ['--bogus', uuid], /^stage1: unknown flag --bogus$/m],
      // fly runs no mutable pods (rkt app sandbox); nspawn and kvm do
      ...(f.mutable ? [] : ([[f.run, ['--mutable', uuid], /cannot honour --mutable: .*does not run mutable pods/]] as const)),
      [f.run, ['--dns-conf-mode=resolv=somewhere', uuid], /--dns-conf-mode=resolv=somewhere: expected/],
      [f.gc, ['--force', uuid], /^stage1: unknown flag --force$/m],
    ] as const) {
      const r = await entry(which, [...args]);
      t.is(r.exitCode, 254, `${f.aci} ${which} ${args.join(' ')}: ${r.stderr}`);
      t.regex(String(r.stderr), why);
    }
    t.is((await env.run(['rm', uuid])).exitCode, 0);
  }
});
