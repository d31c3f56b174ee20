import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { addNetwork, delNetwork, execPlugin, normalizeResult, pluginConfig, prefixToMask, versionAtLeast, type CniRuntime, type NetworkInvocation } from '../../src/net/cni.js';
import type { JsonObject } from '../../src/net/config.js';
import { CniPluginError } from '../../src/net/errors.js';

// CNI execution against fake plugins: small node scripts that log what they
// were given (environment and stdin) and answer as the configuration asks.

const FAKE = `#!${process.execPath}
const fs = require('fs');
const path = require('path');
const input = fs.readFileSync(0, 'utf8');
const conf = JSON.parse(input);
const me = path.basename(process.argv[1]);
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('CNI_') || k === 'PATH'));
fs.appendFileSync(path.join(path.dirname(process.argv[1]), 'calls.jsonl'), JSON.stringify({ plugin: me, env, conf }) + '\\n');
if (conf.failWith) {
  process.stdout.write(JSON.stringify({ cniVersion: conf.cniVersion, code: conf.failWith, msg: 'it went wrong', details: 'line one\\nline two' }));
  process.exit(1);
}
if (conf.crash) { process.stderr.write('panic: something\\n'); process.exit(2); }
if (process.env.CNI_COMMAND === 'ADD') {
  const prev = conf.prevResult;
  const out = prev ? { ...prev, seenBy: [...(prev.seenBy || []), me] } : {
    cniVersion: conf.cniVersion,
    interfaces: [{ name: 'veth1234', mac: '00:11:22:33:44:55' }, { name: process.env.CNI_IFNAME, mac: '66:77:88:99:aa:bb', sandbox: process.env.CNI_NETNS }],
    ips: [{ address: '10.7.0.5/24', gateway: '10.7.0.1', interface: 1 }],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: { nameservers: ['10.7.0.1'], search: ['pod.local'] },
    seenBy: [me],
  };
  process.stdout.write(JSON.stringify(out));
}
`;

interface Call {
  plugin: string;
  env: Record<string, string>;
  conf: JsonObject;
}

function fakePlugins(t: ExecutionContext, names: string[]): { dir: string; calls: () => Call[] } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'net-cni-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const n of names) fs.writeFileSync(path.join(dir, n), FAKE, { mode: 0o755 });
  const log = path.join(dir, 'calls.jsonl');
  return {
    dir,
    calls: () =>
      fs.existsSync(log)
        ? fs
            .readFileSync(log, 'utf8')
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l) as Call)
        : [],
  };
}

const rt = (dir: string): CniRuntime => ({ containerId: 'c0ffee-1', netns: '/run/netns/rkt-test', ifName: 'eth1', args: 'IP=10.7.0.5', pluginDirs: ['/nonexistent', dir] });

test('a plugin gets the CNI environment and its configuration on stdin', async (t) => {
  const f = fakePlugins(t, ['alpha']);
  const out = await execPlugin('net1', 'ADD', { cniVersion: '1.0.0', name: 'net1', type: 'alpha' }, rt(f.dir));
  t.deepEqual(out!.seenBy, ['alpha']);
  const [call] = f.calls();
  t.like(call!.env, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c0ffee-1', CNI_NETNS: '/run/netns/rkt-test', CNI_IFNAME: 'eth1', CNI_ARGS: 'IP=10.7.0.5', CNI_PATH: `/nonexistent:${f.dir}` });
  // iptables lives in sbin: the plugins must find it whatever our PATH is
  t.true(call!.env.PATH!.split(':').includes('/usr/sbin'));
  t.deepEqual(call!.conf, { cniVersion: '1.0.0', name: 'net1', type: 'alpha' });
});

test('an error object becomes a one-line error naming network, plugin and command', async (t) => {
  const f = fakePlugins(t, ['alpha']);
  const err = await t.throwsAsync(execPlugin('net1', 'ADD', { cniVersion: '1.0.0', name: 'net1', type: 'alpha', failWith: 7 }, rt(f.dir)), { instanceOf: CniPluginError });
  t.is(err!.message, 'network "net1": CNI plugin alpha failed to ADD: it went wrong; line one; line two (CNI error 7)');
  t.is(err!.code, 7);
  t.is(err!.network, 'net1');
  t.is(err!.plugin, 'alpha');
  t.false(err!.message.includes('\n'));
});

test('a plugin dying without an error object is reported with its stderr', async (t) => {
  const f = fakePlugins(t, ['alpha']);
  await t.throwsAsync(execPlugin('n', 'DEL', { name: 'n', type: 'alpha', crash: true }, rt(f.dir)), { instanceOf: CniPluginError, message: /alpha failed to DEL: panic: something/ });
});

test('a plugin that is not installed is named with the directories searched', async (t) => {
  const f = fakePlugins(t, []);
  await t.throwsAsync(execPlugin('n', 'ADD', { name: 'n', type: 'nosuch' }, rt(f.dir)), { instanceOf: CniPluginError, message: /CNI plugin "nosuch" is not installed in \/nonexistent, / });
});

test('a configuration list chains prevResult on ADD and runs in reverse on DEL', async (t) => {
  const f = fakePlugins(t, ['first', 'second', 'third']);
  const inv: NetworkInvocation = { name: 'chain', cniVersion: '1.0.0', plugins: [{ type: 'first', a: 1 }, { type: 'second' }, { type: 'third', capabilities: { portMappings: true } }], runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }], bandwidth: {} } };
  const result = await addNetwork(inv, rt(f.dir));
  t.deepEqual(result.seenBy, ['first', 'second', 'third']);
  let calls = f.calls();
  t.deepEqual(calls.map((c) => c.plugin), ['first', 'second', 'third']);
  // the list's name and version are given to every plugin
  t.true(calls.every((c) => c.conf.name === 'chain' && c.conf.cniVersion === '1.0.0'));
  t.false('prevResult' in calls[0]!.conf);
  t.deepEqual((calls[1]!.conf.prevResult as JsonObject).seenBy, ['first']);
  // runtimeConfig only to the plugin declaring the capability, only the capabilities it declares
  t.false('runtimeConfig' in calls[1]!.conf);
  t.deepEqual(calls[2]!.conf.runtimeConfig, { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] });
  fs.rmSync(path.join(f.dir, 'calls.jsonl'));
  await delNetwork(inv, { ...rt(f.dir), netns: '' }, result);
  calls = f.calls();
  t.deepEqual(calls.map((c) => c.plugin), ['third', 'second', 'first']);
  t.true(calls.every((c) => c.env.CNI_COMMAND === 'DEL' && c.env.CNI_NETNS === '' && (c.conf.prevResult as JsonObject).seenBy !== undefined));
});

test('old CNI versions get no prevResult', async (t) => {
  const f = fakePlugins(t, ['first', 'second']);
  const inv: NetworkInvocation = { name: 'old', cniVersion: undefined, plugins: [{ type: 'first' }, { type: 'second' }] };
  const result = await addNetwork(inv, rt(f.dir));
  await delNetwork(inv, rt(f.dir), result);
  for (const c of f.calls()) {
    t.false('prevResult' in c.conf);
    t.false('cniVersion' in c.conf);
  }
});

test('plugin configuration: name forced to the network, version as given', (t) => {
  t.deepEqual(pluginConfig({ name: 'n', cniVersion: '0.4.0', plugins: [] }, { type: 'x', name: 'other', cniVersion: '9.9.9' }, undefined), { type: 'x', name: 'n', cniVersion: '0.4.0' });
  t.true(versionAtLeast('0.4.0', '0.3.0'));
  t.true(versionAtLeast('1.0.0', '0.4.0'));
  t.false(versionAtLeast('0.2.0', '0.3.0'));
  t.false(versionAtLeast(undefined, '0.3.0'));
});

test('results of every CNI version read alike', (t) => {
  const v1 = normalizeResult({
    cniVersion: '1.0.0',
    interfaces: [{ name: 'veth0' }, { name: 'eth0', mac: 'aa:bb:cc:dd:ee:ff', sandbox: '/run/netns/x' }],
    ips: [
      { address: '172.16.28.2/24', gateway: '172.16.28.1', interface: 1 },
      { address: 'fd00::2/64', interface: 1 },
    ],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: { nameservers: ['10.0.0.53'], domain: 'example.org', search: ['a.example'], options: ['ndots:2'] },
  });
  t.deepEqual(v1.ips, [
    { version: 4, address: '172.16.28.2', prefixLength: 24, gateway: '172.16.28.1', interface: 'eth0' },
    { version: 6, address: 'fd00::2', prefixLength: 64, interface: 'eth0' },
  ]);
  t.deepEqual(v1.interfaces[1], { name: 'eth0', mac: 'aa:bb:cc:dd:ee:ff', sandbox: '/run/netns/x' });
  t.deepEqual(v1.dns, { nameservers: ['10.0.0.53'], domain: 'example.org', search: ['a.example'], options: ['ndots:2'] });
  const v04 = normalizeResult({ cniVersion: '0.4.0', ips: [{ version: '4', address: '10.1.0.2/16', gateway: '10.1.0.1' }], dns: {} });
  t.deepEqual(v04.ips, [{ version: 4, address: '10.1.0.2', prefixLength: 16, gateway: '10.1.0.1' }]);
  t.deepEqual(v04.dns, { nameservers: [], search: [], options: [] });
  const v02 = normalizeResult({ cniVersion: '0.2.0', ip4: { ip: '10.2.0.3/24', gateway: '10.2.0.1', routes: [{ dst: '0.0.0.0/0', gw: '10.2.0.1' }] } });
  t.deepEqual(v02.ips, [{ version: 4, address: '10.2.0.3', prefixLength: 24, gateway: '10.2.0.1' }]);
  t.deepEqual(v02.routes, [{ dst: '0.0.0.0/0', gw: '10.2.0.1' }]);
  t.deepEqual(normalizeResult({}), { interfaces: [], ips: [], routes: [], dns: { nameservers: [], search: [], options: [] } });
});

test('netmasks', (t) => {
  t.is(prefixToMask(24), '255.255.255.0');
  t.is(prefixToMask(16), '255.255.0.0');
  t.is(prefixToMask(31), '255.255.255.254');
  t.is(prefixToMask(32), '255.255.255.255');
  t.is(prefixToMask(0), '0.0.0.0');
});
