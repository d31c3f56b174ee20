import fs from 'node:fs';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { withNetLock } from '../../src/net/hostlock.js';
import { snapshot, type HostSnapshot } from './net-helpers.js';

// What a pod test leaves on the host, judged per pod: other test files run
// pods on the default network at the same time, so a host-wide before and
// after comparison would blame them on us. Shared by the kvm and nspawn
// network tests.

const ID_RE = /id: \\"([0-9a-f-]{36})\\"/;

/** CNI chains that rules tagged with one of `ids` jump to or live in (the shared CNI-HOSTPORT-* excepted). */
export function chainsOf(rules: string, ids: (id: string) => boolean): Set<string> {
  const out = new Set<string>();
  for (const l of rules.split('\n')) {
    const id = ID_RE.exec(l)?.[1];
    if (id === undefined || !ids(id)) continue;
    for (const m of l.matchAll(/(?:-A|-j) (CNI-\S+)/g)) if (!m[1]!.startsWith('CNI-HOSTPORT-')) out.add(m[1]!);
  }
  return out;
}

/** New iptables lines that no other pod accounts for: each is a leak of ours. */
function unexplainedRules(before: HostSnapshot, after: HostSnapshot, mine: readonly string[]): string[] {
  const old = new Set(before.iptables.split('\n'));
  const foreign = (id: string): boolean => !mine.includes(id);
  const theirs = chainsOf(after.iptables, foreign);
  const forwarding = after.iptables.split('\n').some((l) => l.includes('CNI-HOSTPORT-DNAT') && foreign(ID_RE.exec(l)?.[1] ?? mine[0]!));
  return after.iptables
    .split('\n')
    .filter((l) => !old.has(l))
    .filter((l) => {
      const id = ID_RE.exec(l)?.[1];
      if (id !== undefined) return !foreign(id);
      const chain = /^(?::|-A )(\S+)/.exec(l)?.[1];
      if (chain !== undefined && theirs.has(chain)) return false;
      return !(forwarding && l.includes('CNI-HOSTPORT-'));
    });
}

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
    t.false(after.iptables.includes(u), `no iptables rule tagged with pod ${u}`);
  }
  for (const v of veths) t.false(after.links.includes(v), `host veth ${v} is gone`);
  for (const c of chains) t.false(after.iptables.includes(c), `chain ${c} is gone`);
  t.deepEqual(unexplainedRules(before, after, uuids), [], 'no new iptables rule, except what other pods own');
}
