import anyTest, { type ExecutionContext } from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import type { GuestNetConfig } from '../../stage1-kvm/taps.js';
import { networkScript } from '../../stage1-kvm/guest-net.js';
import { needFile, needRoot } from '../helpers/prereqs.js';

// The guest's network script without a VM: run by the host's busybox (the
// guest's comes from the same Debian package) in a scratch namespace whose
// veths stand in for the VM's NICs, named the other way round from what
// the pod wants, so the script must find them by MAC and swap their names.
// It touches nothing but the namespace it runs in (`ip netns exec` gives
// it that namespace's /sys/class/net).

const BUSYBOX = '/bin/busybox';
const test = anyTest.serial;
test.before(() => {
  needRoot('the guest network script tests');
  needFile(BUSYBOX, 'install the Debian package busybox-static (scripts/setup.sh does)');
});

const NO_DNS = { nameservers: [], search: [], options: [] };
const CFGS: GuestNetConfig[] = [
  {
    network: 'default',
    ifName: 'eth0',
    tapName: 'tap0',
    mac: '0A:58:AC:10:1C:02',
    mtu: 1500,
    addresses: [{ version: 4, address: '172.30.99.2', prefixLength: 24 }],
    routes: [{ dst: '172.30.99.1', scope: 'link' }, { dst: 'default', gw: '172.30.99.1' }, { dst: '172.30.99.0/24', gw: '172.30.99.1' }],
    dns: NO_DNS,
  },
  {
    network: 'second',
    ifName: 'eth1',
    tapName: 'tap1',
    mac: '0a:58:0a:fb:00:05',
    mtu: 1400,
    addresses: [{ version: 4, address: '10.251.0.5', prefixLength: 24 }],
    routes: [{ dst: '10.251.0.1', scope: 'link' }, { dst: '10.251.0.0/24', gw: '10.251.0.1' }],
    dns: NO_DNS,
  },
];

/** A namespace of our own, with a veth per NIC (the NIC end given the MAC), removed at teardown. */
async function scratchNs(t: ExecutionContext, nics: { name: string; mac: string }[]): Promise<{ ns: string; dir: string }> {
  const ns = `kvmnet-${crypto.randomBytes(4).toString('hex')}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-net-guest-'));
  t.teardown(async () => {
    await execa('ip', ['netns', 'delete', ns], { reject: false });
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await execa('ip', ['netns', 'add', ns]);
  for (const [i, n] of nics.entries()) {
    await execa('ip', ['-n', ns, 'link', 'add', n.name, 'address', n.mac, 'type', 'veth', 'peer', 'name', `peer${i}`]);
    await execa('ip', ['-n', ns, 'link', 'set', `peer${i}`, 'up']);
  }
  return { ns, dir };
}

/** The script with the guest's paths moved into `dir` and the host's busybox. */
function localScript(cfgs: GuestNetConfig[], dir: string): string {
  return networkScript(cfgs)
    .replaceAll('/rkt/bin/busybox', BUSYBOX)
    .replace(/^PATH=.*$/m, 'PATH=/bin')
    .replaceAll('/run/rkt-network.log', path.join(dir, 'log'))
    .replaceAll('/rkt/', `${dir}/`)
    .replaceAll('/dev/console', '/dev/null');
}

/** What the script reported on the report channel: a stand-in rkt-report appends to dir/report. */
function reported(dir: string): string {
  return fs.existsSync(path.join(dir, 'report')) ? fs.readFileSync(path.join(dir, 'report'), 'utf8') : '';
}

async function runScript(ns: string, dir: string, cfgs: GuestNetConfig[]): Promise<number> {
  fs.writeFileSync(path.join(dir, 'script'), localScript(cfgs, dir));
  fs.mkdirSync(path.join(dir, 'bin'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'bin/rkt-report'), `#!${BUSYBOX} sh\nprintf '%s\\n' "$*" >> ${dir}/report\n`, { mode: 0o755 });
  const r = await execa('ip', ['netns', 'exec', ns, BUSYBOX, 'sh', path.join(dir, 'script')], { reject: false });
  return r.exitCode ?? -1;
}

test('the guest network script finds the NICs by MAC, names them as the pod has them, adds addresses and routes in order', async (t) => {
  // the kernel named them the other way round
  const { ns, dir } = await scratchNs(t, [
    { name: 'eth0', mac: CFGS[1]!.mac },
    { name: 'eth1', mac: CFGS[0]!.mac.toLowerCase() },
  ]);
  t.is(await runScript(ns, dir, CFGS), 0, reported(dir));
  const links = JSON.parse(String((await execa('ip', ['-n', ns, '-j', 'link', 'show'])).stdout)) as { ifname: string; address: string; mtu: number; flags: string[] }[];
  const byName = Object.fromEntries(links.map((l) => [l.ifname, l]));
  t.is(byName.eth0?.address, '0a:58:ac:10:1c:02');
  t.is(byName.eth0?.mtu, 1500);
  t.is(byName.eth1?.address, '0a:58:0a:fb:00:05');
  t.is(byName.eth1?.mtu, 1400);
  t.true(byName.lo?.flags.includes('UP'));
  const addrs = String((await execa('ip', ['-n', ns, '-4', '-o', 'addr', 'show'])).stdout);
  t.regex(addrs, /eth0\s+inet 172\.30\.99\.2\/24/);
  t.regex(addrs, /eth1\s+inet 10\.251\.0\.5\/24/);
  const routes = String((await execa('ip', ['-n', ns, 'route', 'show'])).stdout).trim().split('\n').map((l) => l.trim());
  t.deepEqual(routes.sort(), [
    '10.251.0.0/24 via 10.251.0.1 dev eth1',
    '10.251.0.1 dev eth1 scope link',
    '172.30.99.0/24 via 172.30.99.1 dev eth0',
    '172.30.99.1 dev eth0 scope link',
    'default via 172.30.99.1 dev eth0',
  ]);
  t.is(reported(dir), '', 'nothing reported');
});

test('a NIC that is not there: the script fails within seconds and says which network', async (t) => {
  const { ns, dir } = await scratchNs(t, [{ name: 'eth0', mac: CFGS[0]!.mac }]);
  const t0 = Date.now();
  t.is(await runScript(ns, dir, CFGS), 1);
  t.true(Date.now() - t0 < 10_000);
  t.regex(reported(dir), /^net-error rkt-network: no interface for network "second" \(eth1, MAC 0a:58:0a:fb:00:05\)/);
});
