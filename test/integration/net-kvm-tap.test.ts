import anyTest from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { execa } from 'execa';
import { setupKvmTaps, qemuNetArgs, teardownKvmTaps } from '../../stage1-kvm/taps.js';
import { setupPodNetwork, teardownPodNetwork } from '../../src/net/pod-network.js';
import { readState } from '../../src/net/state.js';
import { needCommand } from '../helpers/prereqs.js';
import { assertSame, needNetPrereqs, exclusiveHost, freePort, inNs, makePod, snapshot, startServer, tcpRead } from './net-helpers.js';

// The VM flavor's network path without a VM: a tap in the pod namespace
// mirrored to eth0 by tc, and a stand-in for qemu — a small relay that opens
// the tap and passes frames to a veth into a "guest" namespace configured
// from the returned guest configuration, exactly as the guest would be.
// Then the host reaches a server in the guest by the pod IP and through a
// forwarded port on 127.0.0.1.

const test = anyTest.serial;
let python = '';
test.before(() => {
  needNetPrereqs();
  python = needCommand('python3', 'python3');
});

// qemu's part: open the tap by name (TUNSETIFF), copy frames both ways.
const RELAY = `
import fcntl, os, select, socket, struct, sys
TUNSETIFF = 0x400454ca; IFF_TAP = 0x0002; IFF_NO_PI = 0x1000; PACKET_OUTGOING = 4
fd = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH', sys.argv[1].encode(), IFF_TAP | IFF_NO_PI))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[2], 0))
print('ready', flush=True)
while True:
    r, _, _ = select.select([fd, s], [], [])
    if fd in r:
        s.send(os.read(fd, 65536))
    if s in r:
        data, addr = s.recvfrom(65536)
        if addr[2] != PACKET_OUTGOING:
            os.write(fd, data)
`;
// A veth leaves checksums to "hardware"; frames copied by the relay need them done: ethtool -K eth0 tx off.
const TX_CSUM_OFF = `
import ctypes, fcntl, socket, struct, sys
ev = ctypes.create_string_buffer(struct.pack('II', 0x17, 0))
fcntl.ioctl(socket.socket(), 0x8946, struct.pack('16sP', sys.argv[1].encode(), ctypes.addressof(ev)) + bytes(16))
`;

test('tap mirrored to the CNI interface carries the pod traffic to and from a guest', async (t) => {
  await exclusiveHost(t);
  const before = await snapshot();
  const pod = makePod(t);
  const hostPort = await freePort();
  const r = await setupPodNetwork(pod.dir, pod.uuid, ['default'], { ports: [{ name: 'http', protocol: 'tcp', hostPort, podPort: 80 }] });
  const [g, ...more] = await setupKvmTaps(pod.dir);
  t.is(more.length, 0);
  t.like(g, { network: 'default', ifName: 'eth0', tapName: 'tap0', ip: r.networks[0]!.ip, prefixLength: 24, mask: '255.255.255.0', gateway: '172.16.28.1', mac: r.networks[0]!.mac });
  t.deepEqual(g!.routes, [
    { dst: '172.16.28.1', scope: 'link' },
    { dst: 'default', gw: '172.16.28.1' },
    { dst: '172.16.28.0/24', gw: '172.16.28.1' },
  ]);
  t.deepEqual(qemuNetArgs([g!]), ['-netdev', 'tap,id=net0,ifname=tap0,script=no,downscript=no', '-device', `virtio-net-pci,netdev=net0,mac=${g!.mac}`]);
  const netns = r.netnsPath!;
  t.regex(await inNs(netns, ['tc', 'filter', 'show', 'dev', 'eth0', 'ingress']), /mirred \(Egress Redirect to device tap0\)/);
  t.regex(await inNs(netns, ['tc', 'filter', 'show', 'dev', 'tap0', 'ingress']), /mirred \(Egress Redirect to device eth0\)/);
  t.deepEqual(readState(pod.dir)!.taps, [{ name: 'tap0', ifName: 'eth0' }]);

  // the stand-in guest
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'net-tap-'));
  const guest = `guest-${crypto.randomBytes(4).toString('hex')}`;
  const guestNs = `/run/netns/${guest}`;
  t.teardown(async () => {
    await execa('ip', ['netns', 'delete', guest], { reject: false });
    fs.rmSync(work, { recursive: true, force: true });
  });
  fs.writeFileSync(path.join(work, 'relay.py'), RELAY);
  fs.writeFileSync(path.join(work, 'txcsum.py'), TX_CSUM_OFF);
  await execa('ip', ['netns', 'add', guest]);
  await execa('ip', ['-n', guest, 'link', 'set', 'lo', 'up']);
  await inNs(netns, ['ip', 'link', 'add', 'vg0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', guestNs]);
  await inNs(netns, ['ip', 'link', 'set', 'vg0', 'up']);
  await execa('ip', ['-n', guest, 'link', 'set', 'eth0', 'address', g!.mac, 'mtu', String(g!.mtu), 'up']);
  await inNs(guestNs, [python, path.join(work, 'txcsum.py'), 'eth0']);
  for (const a of g!.addresses) await execa('ip', ['-n', guest, 'addr', 'add', `${a.address}/${a.prefixLength}`, 'dev', 'eth0']);
  for (const rt of g!.routes) {
    await execa('ip', ['-n', guest, 'route', 'replace', rt.dst, ...(rt.gw ? ['via', rt.gw] : []), ...(rt.scope ? ['scope', rt.scope] : []), 'dev', 'eth0']);
  }
  const relay = spawn('nsenter', [`--net=${netns}`, '--', python, path.join(work, 'relay.py'), g!.tapName, 'vg0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    relay.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    relay.stdout.once('data', () => resolve());
    relay.once('exit', (code) => reject(new Error(`relay exited ${code}`)));
  });
  await startServer(t, guestNs, 80, 'hello-from-guest');
  t.is(await tcpRead(g!.ip!, 80), 'hello-from-guest');
  t.is(await tcpRead('127.0.0.1', hostPort), 'hello-from-guest');
  relay.kill('SIGKILL');

  await teardownKvmTaps(pod.dir);
  t.is(await inNs(netns, ['ip', '-o', 'link', 'show', 'tap0']).catch(() => 'gone'), 'gone');
  t.is((await inNs(netns, ['tc', 'qdisc', 'show', 'dev', 'eth0', 'ingress'])).trim(), '');
  // taps set up again are removed by the pod teardown too
  await setupKvmTaps(pod.dir);
  await execa('ip', ['netns', 'delete', guest]);
  await teardownPodNetwork(pod.dir);
  assertSame(t, before, await snapshot(), 'after teardown');
});

test('taps need a contained pod network', async (t) => {
  await exclusiveHost(t);
  const pod = makePod(t);
  await t.throwsAsync(setupKvmTaps(pod.dir), { message: /is not set up; call setupPodNetwork first/ });
  await setupPodNetwork(pod.dir, pod.uuid, ['host'], {});
  await t.throwsAsync(setupKvmTaps(pod.dir), { message: /--net=host cannot be used with a VM/ });
});
