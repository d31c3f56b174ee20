import anyTest, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { buildAci } from '../helpers/aci.js';
import type { RktEnv } from '../helpers/rkt.js';
import { listPods, podStatus, processesWith, waitFor } from '../helpers/pods.js';
import { chainsOf } from '../helpers/iptables-state.js';
import { needFile } from '../helpers/prereqs.js';
import { KVM, KVM_ACI, podDir, runInBackground, setup, stderrOf, waitReady } from './kvm-common.js';
import { assertNoTrace, leaseFiles, quietSnapshot } from './net-leaks.js';
import { exclusiveHost, iptablesNow, needNetPrereqs, freePort, pushBytes, serverReport, uniqueNet } from './net-helpers.js';

// kvm pods on real CNI networks, through the real CLI: a server app in a VM
// reached from the host by its pod IP and through a forwarded port, DNS
// files and hostname inside, a second VM talking to it over the default
// network while on a named one too, --net=none, refusals, and kill -9 then
// gc. Traffic goes only to loopback and to the pods these tests start.
// Each test holds the networking tests' host lock (net-helpers.ts); other
// kvm tests may still create default networks meanwhile, so leaks are
// judged per pod (its UUID in rules, leases, namespaces; its host veth),
// and the host-wide comparison allows for what other pods own. Snapshots
// are taken under the host network lock, which every CNI ADD and DEL
// holds, so that none is caught half done.

const test = anyTest.serial;
test.before(() => {
  needNetPrereqs();
  needFile(KVM_ACI, 'run scripts/setup.sh, which builds the stage1 images');
});

const REPORT = `echo "hostname $(hostname)"
while IFS= read -r l; do echo "resolv $l"; done < /etc/resolv.conf
while IFS= read -r l; do echo "hosts $l"; done < /etc/hosts
ip -o addr show | while IFS= read -r l; do echo "addr $l"; done
ls /sys/class/net | while IFS= read -r l; do echo "link $l"; done
`;
// the host sends bytes, half-closes, and reads how many full 64 KiB blocks arrived
// (dd, not wc -c: busybox wc counts a byte at a time, which under tcg is the bottleneck)
const SINK = 'exec dd of=/dev/null bs=65536 iflag=fullblock 2>&1\n';
const SERVER = 'nc -ll -p 81 -e /bin/sh /sink.sh & exec nc -ll -p 80 -e /bin/sh /report.sh';
const HTTP = { name: 'http', protocol: 'tcp', port: 80 };

async function serverSetup(t: ExecutionContext): Promise<{ env: RktEnv; image: string }> {
  const { env } = await setup(t);
  const image = await buildAci(env.root, { name: 'example.com/netpod', app: { exec: ['/bin/sh', '-c', SERVER], user: '0', group: '0', ports: [HTTP] }, files: { 'report.sh': REPORT, 'sink.sh': SINK } });
  return { env, image };
}

interface NetJson {
  networks?: { name: string; ip4?: string }[];
}

async function podIPs(env: RktEnv, uuid: string): Promise<Record<string, string>> {
  let out: Record<string, string> = {};
  await waitFor('the pod networks in rkt status', async () => {
    const st = (await podStatus(env, uuid)) as unknown as NetJson;
    out = Object.fromEntries((st.networks ?? []).filter((n) => n.ip4 !== undefined).map((n) => [n.name, n.ip4!]));
    return Object.keys(out).length > 0;
  }, 60_000);
  return out;
}

/** The pod server's report, with this suite's patience. */
function report(host: string, port: number, timeoutMs = 120_000): Promise<string> {
  return serverReport(host, port, timeoutMs);
}


/** What a pod holds on the host, read while it runs: its host veths and the iptables chains its rules use. */
function hostVeths(env: RktEnv, uuid: string): string[] {
  const st = JSON.parse(fs.readFileSync(path.join(podDir(env, uuid)!, 'netinfo', 'netinfo.json'), 'utf8')) as { networks: { result?: { interfaces?: { name: string; sandbox?: string }[] } }[] };
  return st.networks.flatMap((n) => (n.result?.interfaces ?? []).filter((i) => i.sandbox === undefined).map((i) => i.name));
}


test('a server in a kvm pod: pod IP, forwarded port, DNS files, hostname, throughput; a second pod on two networks reaches it', async (t) => {
  await exclusiveHost(t);
  const before = await quietSnapshot();
  const { env, image } = await serverSetup(t);
  const extra = uniqueNet();
  fs.mkdirSync(path.join(env.localConfig, 'net.d'), { recursive: true });
  fs.writeFileSync(path.join(env.localConfig, 'net.d', `${extra.name}.conf`), JSON.stringify({ cniVersion: '0.4.0', name: extra.name, type: 'ptp', ipMasq: false, ipam: { type: 'host-local', subnet: extra.subnet } }));
  const hostPort = await freePort();
  const t0 = Date.now();
  const srv = await runInBackground(t, env, ['--dns=1.2.3.4', '--dns-search=example.com', '--hosts-entry=10.9.8.7=db.example.com', '--hostname=websrv', `--port=http:${hostPort}`, image]);
  const ip = (await podIPs(env, srv.uuid)).default!;
  t.regex(ip, /^172\.16\.28\.\d+$/);
  const out = await report(ip, 80);
  const answered = (Date.now() - t0) / 1000;
  t.log(`rkt run to the server answering on ${ip}: ${answered.toFixed(2)} s`);
  t.regex(out, /^hostname websrv$/m);
  t.regex(out, /^resolv nameserver 1\.2\.3\.4$/m);
  t.regex(out, /^resolv search example\.com$/m);
  t.regex(out, /^hosts 10\.9\.8\.7\tdb\.example\.com$/m);
  t.regex(out, new RegExp(`^hosts ${ip.replace(/\./g, '\\.')}\\twebsrv$`, 'm'));
  t.regex(out, new RegExp(`^addr \\d+: eth0\\s+inet ${ip.replace(/\./g, '\\.')}/24 `, 'm'));
  t.deepEqual(out.split('\n').filter((l) => l.startsWith('link ')), ['link eth0', 'link lo']);
  t.is(await report('127.0.0.1', hostPort, 10_000), out, 'the forwarded port on 127.0.0.1 reaches the same server');

  const veths = hostVeths(env, srv.uuid);
  t.is(veths.length, 1);
  const size = 50 * 1024 * 1024;
  const push = await pushBytes(ip, 81, size);
  t.regex(push.reply, new RegExp(`^${size / 65536}\\+0 records in$`, 'm'), 'every byte arrived');
  t.log(`host -> app in the VM over TCP: ${size / 1024 / 1024} MiB in ${push.seconds.toFixed(2)} s = ${(size / 1024 / 1024 / push.seconds).toFixed(1)} MiB/s`);

  // a second VM, on the default network and a named one with a fixed address, asks the first
  const cuuid = env.file('client-uuid');
  const client = await env.run(['run', ...KVM, `--uuid-file-save=${cuuid}`, `--net=default,${extra.name}:IP=${extra.prefix}.77`, image, '--exec=/bin/sh', '--', '-c', `ip -o addr show; nc -w 10 ${ip} 80 </dev/null`], { timeout: 240_000 });
  t.is(client.exitCode, 0, stderrOf(client));
  const cout = String(client.stdout);
  t.regex(cout, /^hostname websrv$/m, 'the second pod got the answer over the default network');
  // networks come in configuration order (named ones, then the default): one NIC each
  t.regex(cout, new RegExp(`eth\\d\\s+inet ${extra.prefix.replace(/\./g, '\\.')}\\.77/24 `), 'the named network gave the address asked for');
  t.regex(cout, /eth\d\s+inet 172\.16\.28\.\d+\/24 /);
  t.is(cout.split('\n').filter((l) => /^\d+: eth\d\s+inet /.test(l)).length, 2);
  const clientUuid = fs.readFileSync(cuuid, 'utf8').trim();
  const chains = chainsOf(await iptablesNow(), (id) => id === srv.uuid);
  t.true(chains.size > 0, 'the server pod has masquerading and port forwarding chains while it runs');

  const stop = await env.run(['stop', srv.uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  await srv.child;
  t.is((await podStatus(env, srv.uuid)).state, 'exited');
  await assertNoTrace(t, before, [srv.uuid, clientUuid], veths, chains);
});

test('--net=none: loopback only, the image hosts fallback with the hostname', async (t) => {
  await exclusiveHost(t);
  const { env, image } = await serverSetup(t);
  const r = await env.run(['run', ...KVM, '--net=none', image, '--exec=/bin/sh', '--', '-c', 'ls /sys/class/net; ip -o addr show; cat /etc/hosts; hostname']);
  t.is(r.exitCode, 0, stderrOf(r));
  const out = String(r.stdout);
  t.deepEqual(out.split('\n').filter((l) => /^\w+$/.test(l)), ['lo'], out);
  t.notRegex(out, /eth\d/);
  t.regex(out, /^127\.0\.0\.1\tlocalhost/m);
  t.regex(out, /^127\.0\.0\.1\trkt-[0-9a-f-]{36}$/m, 'no pod IP: the hostname resolves to loopback');
});

test('--net=host and an unknown network are refused, leaving nothing configured', async (t) => {
  await exclusiveHost(t);
  const before = await quietSnapshot();
  const { env, image } = await serverSetup(t);
  const uuids: string[] = [];
  for (const [netFlag, message] of [
    ['--net=host', /^rkt: --net=host cannot be used with this stage1: a virtual machine has its own network stack; use --net=default/m],
    ['--net=default,nosuchnet', /^rkt: network not found: nosuchnet/m],
  ] as const) {
    const f = env.file(`uuid-${uuids.length}`);
    const r = await env.run(['run', ...KVM, `--uuid-file-save=${f}`, netFlag, image]);
    t.not(r.exitCode, 0);
    t.regex(stderrOf(r), message);
    t.is(stderrOf(r).split('\n').length, 1, 'one line says it all');
    // refused before the pod exists (issue 15 item 9): no UUID, no pod
    t.false(fs.existsSync(f));
    t.deepEqual(await listPods(env), []);
  }
  await assertNoTrace(t, before, uuids, [], new Set());
});

test('kill -9 of rkt run, then rkt gc: no namespace, veth, lease or rule is left', async (t) => {
  await exclusiveHost(t);
  const before = await quietSnapshot();
  const { env, image } = await serverSetup(t);
  const hostPort = await freePort();
  const { child, uuid } = await runInBackground(t, env, [`--port=http:${hostPort}`, image]);
  await waitReady(t, env, uuid);
  const ip = (await podIPs(env, uuid)).default!;
  t.regex(await report('127.0.0.1', hostPort), /^hostname rkt-/m);
  const veths = hostVeths(env, uuid);
  const chains = chainsOf(await iptablesNow(), (id) => id === uuid);
  t.true(chains.size >= 2, 'masquerading and port forwarding chains');
  child.kill('SIGKILL');
  await child;
  await waitFor('no process of the pod', async () => (await processesWith(uuid)).length === 0, 15_000);
  await waitFor('the pod to read as exited', async () => (await podStatus(env, uuid)).state === 'exited', 10_000);
  // the VM and the namespace died with rkt run; the host still holds the lease and the rules
  t.true(leaseFiles().some((f) => f.endsWith(`/${ip}`)), 'the lease outlives rkt run');
  t.true((await iptablesNow()).some((l) => l.includes(uuid)), 'so do the rules');
  const gc = await env.run(['gc', '--grace-period=0s']);
  t.is(gc.exitCode, 0, String(gc.stderr));
  await assertNoTrace(t, before, [uuid], veths, chains);
});

test('rkt stop --force, and a killed qemu: rkt run tears the network down as it exits', async (t) => {
  await exclusiveHost(t);
  const before = await quietSnapshot();
  const { env, image } = await serverSetup(t);
  const forced = await runInBackground(t, env, [`--port=http:${await freePort()}`, image]);
  const killed = await runInBackground(t, env, [image]);
  const pods = [forced, killed];
  for (const p of pods) await waitReady(t, env, p.uuid);
  const veths = pods.flatMap((p) => hostVeths(env, p.uuid));
  const chains = chainsOf(await iptablesNow(), (id) => pods.some((p) => p.uuid === id));
  t.is(veths.length, 2);
  const stop = await env.run(['stop', '--force', forced.uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  process.kill(Number(fs.readFileSync(path.join(podDir(env, killed.uuid)!, 'qemu.pid'), 'utf8').trim()), 'SIGKILL');
  for (const p of pods) {
    const r = await p.child;
    t.not(r.exitCode, 0);
    t.is((await podStatus(env, p.uuid)).state, 'exited');
  }
  await assertNoTrace(t, before, pods.map((p) => p.uuid), veths, chains);
});
