import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { withNetLock } from '../../src/net/hostlock.js';
import { unexplainedRules } from '../helpers/iptables-state.js';
import { snapshot, type HostSnapshot } from './net-helpers.js';

// What a pod test leaves on the host, judged per pod: other test files run
// pods on the default network at the same time, so a host-wide before and
// after comparison would blame them on us. Shared by the kvm and nspawn
// network tests.

export function quietSnapshot(): Promise<HostSnapshot> {
  return withNetLock(() => snapshot());
}

export function leaseFiles(): string[] {
  const root = '/var/lib/cni/networks';
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root).flatMap((n) => fs.readdirSync(path.join(root, n)).map((f) => path.join(root, n, f)));
}

/** Nothing of the pods is left on the host: namespace, host veth, lease, rule, chain. */
export async function assertNoTrace(t: ExecutionContext, before: HostSnapshot, uuids: string[], veths: string[], chains: Set<string>): Promise<void> {
  const after = await quietSnapshot();
  for (const u of uuids) {
    t.false(after.netns.some((n) => n.includes(u)), `no network namespace of pod ${u}`);
    t.deepEqual(leaseFiles().filter((f) => !/lock|last_reserved/.test(f) && fs.readFileSync(f, 'utf8').includes(u)), [], `no IPAM lease of pod ${u}`);
    t.false(after.iptables.some((l) => l.includes(u)), `no iptables rule tagged with pod ${u}`);
  }
  for (const v of veths) t.false(after.links.includes(v), `host veth ${v} is gone`);
  for (const c of chains) t.false(after.iptables.some((l) => l.includes(c)), `chain ${c} is gone`);
  t.deepEqual(unexplainedRules(before.iptables, after.iptables, uuids), [], 'no new iptables rule or chain, except what other pods own');
}
