import anyTest, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { buildAci } from '../helpers/aci.js';
import { listPods, podStatus, processesWith, waitFor } from '../helpers/pods.js';
import { chainsOf } from '../helpers/iptables-state.js';
import { assertNoLeftovers, buildStage1, runInBackground, setup, type NspawnEnv } from './nspawn-common.js';
import { assertNoTrace, leaseFiles, quietSnapshot } from './net-leaks.js';
import { exclusiveHost, iptablesNow, needNetPrereqs, freePort, pushBytes, serverReport, uniqueNet } from './net-helpers.js';

// nspawn pods on real CNI networks, through the real CLI: a server app
// reached from the host by its pod IP and through a forwarded port, DNS
// and hosts files inside, two pods talking over the default network, a
// named network with a fixed address next to the default one, --net=none,
// refusals, and kill -9 then gc. Traffic goes only to loopback and to the
// pods these tests start. Each test holds the networking tests' host lock
// (net-helpers.ts); pods of other test files that do not take it may still
// come and go, so leaks are judged per pod (its UUID in rules, leases and
// namespaces, its host veth, its chains) and the host-wide comparison
// allows for what other pods own. Snapshots are taken under the host
// network lock, which every CNI ADD and DEL holds.

const test = anyTest.serial;

let aci = '';
let buildDir = '';
test.before(async () => {
  needNetPrereqs();
  ({ aci, dir: buildDir } = await buildStage1());
});
test.after.always(() => {
  if (buildDir !== '') fs.rmSync(buildDir, { recursive: true, force: true });
});

const REPORT = `echo "hostname $(hostname)"
while IFS= read -r l; do echo "resolv $l"; done < /etc/resolv.conf
while IFS= read -r l; do echo "hosts $l"; done < /etc/hosts
ip -o addr show | while IFS= read -r l; do echo "addr $l"; done
ls /sys/class/net | while IFS= read -r l; do echo "link $l"; done
`;
// the host sends bytes, half-closes, and reads how many arrived
const SINK = 'exec wc -c\n';
const SERVER = 'nc -ll -p 81 -e /bin/sh /sink.sh & exec nc -ll -p 80 -e /bin/sh /report.sh';
const HTTP = { name: 'http', protocol: 'tcp', port: 80 };

async function serverEnv(t: ExecutionContext): Promise<NspawnEnv> {
  const ne = await setup(t, aci);
  ne.image = await buildAci(ne.env.root, { name: 'example.com/netpod', app: { exec: ['/bin/sh', '-c', SERVER], user: '0', group: '0', ports: [HTTP] }, files: { 'report.sh': REPORT, 'sink.sh': SINK } });
  return ne;
}

function stderrOf(r: { stderr: unknown }): string {
  return String(r.stderr)
    .split('\n')
    .filter((l) => !/signature verification has been disabled/.test(l))
    .join('\n')
    .trim();
}

interface NetJson {
  networks?: { name: string; ip4?: string }[];
}

async function podIPs(ne: NspawnEnv, uuid: string): Promise<Record<string, string>> {
  const st = (await podStatus(ne.env, uuid)) as unknown as NetJson;
  return Object.fromEntries((st.networks ?? []).filter((n) => n.ip4 !== undefined).map((n) => [n.name, n.ip4!]));
}

/** The pod server's report, with this suite's patience. */
function report(host: string, port: number, timeoutMs = 30_000): Promise<string> {
  return serverReport(host, port, timeoutMs);
}


function podDir(ne: NspawnEnv, uuid: string): string {
  return path.join(ne.env.dir, 'pods/run', uuid);
}

/** The pod's host veths, read from its network state while it runs. */
function hostVeths(ne: NspawnEnv, uuid: string): string[] {
  const st = JSON.parse(fs.readFileSync(path.join(podDir(ne, uuid), 'netinfo', 'netinfo.json'), 'utf8')) as { networks: { result?: { interfaces?: { name: string; sandbox?: string }[] } }[] };
  return st.networks.flatMap((n) => (n.result?.interfaces ?? []).filter((i) => i.sandbox === undefined).map((i) => i.name));
}


test('a server in an nspawn pod: pod IP, forwarded port, DNS files, throughput; a second pod reaches it on the default network', async (t) => {
  await exclusiveHost(t);
  const before = await quietSnapshot();
  const ne = await serverEnv(t);
  const hostPort = await freePort();
  const t0 = performance.now();
  const srv = await runInBackground(ne, ['--dns=192.0.2.53', '--dns-search=example.com', '--dns-opt=ndots:2', '--dns-domain=example.com', '--hosts-entry=192.0.2.7=db.example.com', '--hostname=websrv', `--port=http:${hostPort}`, ne.image]);
  const ip = (await podIPs(ne, srv.uuid)).default!;
  t.regex(ip, /^172\.16\.28\.\d+$/);
  const listed = (await listPods(ne.env)).find((p) => p.name === srv.uuid) as unknown as NetJson;
  t.is(listed.networks?.find((n) => n.name === 'default')?.ip4, ip, 'rkt list --format=json shows the same address');
  const out = await report(ip, 80);
  t.log(`rkt run to the server answering on ${ip}: ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  t.regex(out, /^hostname websrv$/m);
  t.regex(out, /^resolv nameserver 192\.0\.2\.53$/m);
  t.regex(out, /^resolv search example\.com$/m);
  t.regex(out, /^resolv options ndots:2$/m);
  t.regex(out, /^resolv domain example\.com$/m);
  t.regex(out, /^hosts 192\.0\.2\.7\tdb\.example\.com$/m);
  t.regex(out, new RegExp(`^hosts ${ip.replace(/\./g, '\\.')}\\twebsrv$`, 'm'));
  t.regex(out, new RegExp(`^addr \\d+: eth0\\s+inet ${ip.replace(/\./g, '\\.')}/24 `, 'm'));
  t.deepEqual(out.split('\n').filter((l) => l.startsWith('link ')), ['link eth0', 'link lo']);
  t.is(await report('127.0.0.1', hostPort, 10_000), out, 'the forwarded port on 127.0.0.1 reaches the same server');

  const veths = hostVeths(ne, srv.uuid);
  t.is(veths.length, 1);
  const size = 200 * 1024 * 1024;
  const push = await pushBytes(ip, 81, size);
  t.is(Number(push.reply.trim()), size);
  t.log(`host -> app in the nspawn pod over TCP: ${size / 1024 / 1024} MiB in ${push.seconds.toFixed(2)} s = ${(size / 1024 / 1024 / push.seconds).toFixed(0)} MiB/s`);

  // a second pod on the default network asks the first
  const cuuid = ne.env.file('client-uuid');
  const client = await ne.env.run(['run', ...ne.flags, `--uuid-file-save=${cuuid}`, ne.image, '--exec=/bin/sh', '--', '-c', `nc -w 10 ${ip} 80 </dev/null`]);
  t.is(client.exitCode, 0, stderrOf(client));
  t.regex(String(client.stdout), /^hostname websrv$/m, 'the second pod got the answer over the default network');
  const clientUuid = fs.readFileSync(cuuid, 'utf8').trim();
  const chains = chainsOf(await iptablesNow(), (id) => id === srv.uuid);
  t.true(chains.size > 0, 'the server pod has masquerading and port forwarding chains while it runs');

  const stop = await ne.env.run(['stop', srv.uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  await srv.proc;
  t.is((await podStatus(ne.env, srv.uuid)).state, 'exited');
  await assertNoTrace(t, before, [srv.uuid, clientUuid], veths, chains);
  assertNoLeftovers(t, ne, srv.uuid);
});

test('a named network from net.d with IP= next to the default one; --net=host keeps the host network', async (t) => {
  await exclusiveHost(t);
  const before = await quietSnapshot();
  const ne = await serverEnv(t);
  const extra = uniqueNet();
  fs.mkdirSync(path.join(ne.env.localConfig, 'net.d'), { recursive: true });
  fs.writeFileSync(path.join(ne.env.localConfig, 'net.d', `${extra.name}.conf`), JSON.stringify({ cniVersion: '0.4.0', name: extra.name, type: 'ptp', ipMasq: false, ipam: { type: 'host-local', subnet: extra.subnet }, dns: { nameservers: ['192.0.2.1'], search: ['pods.test'] } }));
  const r = await ne.env.run(['run', ...ne.flags, `--net=default,${extra.name}:IP=${extra.prefix}.77`, ne.image, '--exec=/bin/sh', '--', '-c', 'ip -o addr show; ls /sys/class/net; cat /etc/resolv.conf']);
  t.is(r.exitCode, 0, stderrOf(r));
  const out = String(r.stdout);
  t.regex(out, /^nameserver 192\.0\.2\.1$/m, "the CNI result's DNS is the pod's resolv.conf");
  t.regex(out, /^search pods\.test$/m);
  t.regex(out, new RegExp(`eth\\d\\s+inet ${extra.prefix.replace(/\./g, '\\.')}\\.77/24 `), 'the named network gave the address asked for');
  t.regex(out, /eth\d\s+inet 172\.16\.28\.\d+\/24 /);
  t.is(out.split('\n').filter((l) => /^\d+: eth\d\s+inet /.test(l)).length, 2);
  const uuid = ne.uuid();
  const st = (await podStatus(ne.env, uuid)) as unknown as NetJson;
  t.deepEqual(st.networks?.map((n) => n.name).sort(), ['default', extra.name].sort(), 'status names both networks');

  const host = await ne.env.run(['run', ...ne.flags, '--net=host', ne.image, '--exec=/bin/sh', '--', '-c', 'readlink /proc/self/ns/net; cat /etc/resolv.conf']);
  t.is(host.exitCode, 0, stderrOf(host));
  t.is(String(host.stdout).split('\n')[0], fs.readlinkSync('/proc/self/ns/net'), '--net=host: the app is in the host network namespace');
  t.is(String(host.stdout).split('\n').slice(1).join('\n').trim(), fs.readFileSync('/etc/resolv.conf', 'utf8').trim(), "--net=host: the host's resolv.conf");
  await assertNoTrace(t, before, [uuid, ne.uuid()], [], new Set());
});

test('--net=none: loopback only, the hosts fallback with the hostname', async (t) => {
  await exclusiveHost(t);
  const ne = await serverEnv(t);
  const r = await ne.env.run(['run', ...ne.flags, '--net=none', ne.image, '--exec=/bin/sh', '--', '-c', 'ls /sys/class/net; ip -o addr show; cat /etc/hosts']);
  t.is(r.exitCode, 0, stderrOf(r));
  const out = String(r.stdout);
  t.deepEqual(out.split('\n').filter((l) => /^\w+$/.test(l)), ['lo'], out);
  t.notRegex(out, /eth\d/);
  t.regex(out, /^127\.0\.0\.1\tlocalhost/m);
  t.regex(out, /^127\.0\.0\.1\trkt-[0-9a-f-]{36}$/m, 'no pod IP: the hostname resolves to loopback');
  t.false(fs.readdirSync('/run/netns').includes(`rkt-${ne.uuid()}`), 'its namespace is gone');
});

test('bad input: unknown network, config not JSON, missing plugin, address outside the range, host port in use', async (t) => {
  await exclusiveHost(t);
  const before = await quietSnapshot();
  const ne = await serverEnv(t);
  const netd = path.join(ne.env.localConfig, 'net.d');
  fs.mkdirSync(netd, { recursive: true });
  const ok = uniqueNet();
  fs.writeFileSync(path.join(netd, `${ok.name}.conf`), JSON.stringify({ cniVersion: '0.4.0', name: ok.name, type: 'ptp', ipam: { type: 'host-local', subnet: ok.subnet } }));
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '0.0.0.0', r));
  t.teardown(() => void busy.close());
  const busyPort = (busy.address() as net.AddressInfo).port;
  const uuids: string[] = [];
  for (const [args, message, file] of [
    [['--net=default,nosuchnet'], /nosuchnet/, ''],
    [[`--net=${ok.name}`], /broken\.conf.*JSON|JSON.*broken\.conf/, 'broken.conf'],
  ] as const) {
    if (file !== '') fs.writeFileSync(path.join(netd, file), '{ "name": "broken", ');
    const r = await ne.env.run(['run', ...ne.flags, ...args, ne.image]);
    t.not(r.exitCode, 0);
    t.regex(stderrOf(r), message);
    t.is(stderrOf(r).split('\n').length, 1, `one line: ${stderrOf(r)}`);
    // refused before the pod exists (issue 15 item 9)
    t.false(fs.existsSync(ne.uuidFile), `${args.join(' ')}: no pod`);
  }
  fs.rmSync(path.join(netd, 'broken.conf'));
  fs.writeFileSync(path.join(netd, 'noplugin.conf'), JSON.stringify({ cniVersion: '0.4.0', name: 'noplugin', type: 'no-such-cni-plugin' }));
  for (const [args, message, beforePod] of [
    [['--net=noplugin'], /no-such-cni-plugin/, true],
    [[`--net=${ok.name}:IP=10.99.99.99`], /10\.99\.99\.99/, false],
    [[`--port=http:${busyPort}`], new RegExp(`${busyPort}.*in use`), false],
  ] as const) {
    fs.rmSync(ne.uuidFile, { force: true });
    const r = await ne.env.run(['run', ...ne.flags, ...args, ne.image]);
    t.not(r.exitCode, 0);
    t.regex(stderrOf(r), message);
    t.is(stderrOf(r).split('\n').length, 1, `one line: ${stderrOf(r)}`);
    if (beforePod) {
      t.false(fs.existsSync(ne.uuidFile), `${args.join(' ')}: refused before the pod exists`);
      continue;
    }
    const uuid = ne.uuid();
    uuids.push(uuid);
    const st = await podStatus(ne.env, uuid);
    t.is(st.state, 'exited');
    t.regex(st.exit_cause ?? '', /stage1 failed/);
    assertNoLeftovers(t, ne, uuid);
  }
  await assertNoTrace(t, before, uuids, [], new Set());
});

test('kill -9 of rkt run, then rkt gc: no namespace, veth, lease or rule is left', async (t) => {
  await exclusiveHost(t);
  const before = await quietSnapshot();
  const ne = await serverEnv(t);
  const hostPort = await freePort();
  const { proc, uuid } = await runInBackground(ne, [`--port=http:${hostPort}`, ne.image]);
  const ip = (await podIPs(ne, uuid)).default!;
  t.regex(await report('127.0.0.1', hostPort), /^hostname rkt-/m);
  const veths = hostVeths(ne, uuid);
  const chains = chainsOf(await iptablesNow(), (id) => id === uuid);
  t.true(chains.size >= 2, 'masquerading and port forwarding chains');
  proc.kill('SIGKILL');
  await proc;
  await waitFor('no process of the pod', async () => (await processesWith(uuid)).length === 0, 15_000);
  await waitFor('the pod to read as exited', async () => (await podStatus(ne.env, uuid)).state === 'exited', 10_000);
  // the container and the namespace died with rkt run; the host still holds the lease and the rules
  t.true(leaseFiles().some((f) => f.endsWith(`/${ip}`)), 'the lease outlives rkt run');
  t.true((await iptablesNow()).some((l) => l.includes(uuid)), 'so do the rules');
  const gc = await ne.env.run(['gc', '--grace-period=0s']);
  t.is(gc.exitCode, 0, String(gc.stderr));
  await assertNoTrace(t, before, [uuid], veths, chains);
  assertNoLeftovers(t, ne, uuid);
});

test('rkt stop --force: rkt run tears the network down as it exits; set-up and tear-down times', async (t) => {
  await exclusiveHost(t);
  const before = await quietSnapshot();
  const ne = await serverEnv(t);
  const forced = await runInBackground(ne, [`--port=http:${await freePort()}`, ne.image]);
  const veths = hostVeths(ne, forced.uuid);
  const chains = chainsOf(await iptablesNow(), (id) => id === forced.uuid);
  const stop = await ne.env.run(['stop', '--force', forced.uuid]);
  t.is(stop.exitCode, 0, String(stop.stderr));
  t.not((await forced.proc).exitCode, 0);
  t.is((await podStatus(ne.env, forced.uuid)).state, 'exited');
  const uuids = [forced.uuid];

  // what the network costs a pod, from the run entrypoint's own measurements
  const setups: number[] = [];
  const teardowns: number[] = [];
  const walls: Record<string, number[]> = { default: [], host: [] };
  for (let i = 0; i < 3; i++) {
    for (const mode of ['default', 'host']) {
      const w0 = performance.now();
      const r = await ne.env.run(['run', '--debug', ...ne.flags, `--net=${mode}`, ne.image, '--exec=/bin/true']);
      walls[mode]!.push(performance.now() - w0);
      t.is(r.exitCode, 0, stderrOf(r).slice(-2000));
      uuids.push(ne.uuid());
      if (mode !== 'default') continue;
      const err = String(r.stderr);
      setups.push(Number(/network set up in (\d+) ms/.exec(err)?.[1]));
      teardowns.push(Number(/network torn down in (\d+) ms/.exec(err)?.[1]));
    }
  }
  const avg = (xs: number[]): string => (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(0);
  t.log(`setupPodNetwork (default net): ${setups.join(', ')} ms (mean ${avg(setups)}); teardownPodNetwork: ${teardowns.join(', ')} ms (mean ${avg(teardowns)})`);
  t.log(`rkt run --exec=/bin/true wall time: --net=default ${walls.default!.map((x) => x.toFixed(0)).join(', ')} ms; --net=host ${walls.host!.map((x) => x.toFixed(0)).join(', ')} ms`);
  t.true(setups.every((x) => Number.isFinite(x)) && teardowns.every((x) => Number.isFinite(x)), 'both were measured');
  await assertNoTrace(t, before, uuids, veths, chains);
});
