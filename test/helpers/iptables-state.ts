import { parseSave } from '../../src/net/iptables.js';

// The host's iptables as the network tests compare it, before and after:
// one line per rule, per chain someone created and per built-in chain
// whose policy is not ACCEPT, each as "<family> <table> <iptables-save line>"
// without counters. A table with only its built-in chains at ACCEPT is no
// state: it filters nothing, and iptables-save prints such a table from the
// first time anything used it (CNI's first NAT rule on a fresh host) until
// reboot, rules or not, so its appearance is not a pod's leftover.

export type Family = 'ip4' | 'ip6';

/** The state lines of one `iptables-save` or `ip6tables-save` output. */
export function iptablesState(family: Family, save: string): string[] {
  const out: string[] = [];
  for (const t of parseSave(save)) {
    for (const chain of t.chains) {
      const policy = t.policies[chain];
      if (policy === '-') out.push(`${family} ${t.table} :${chain}`);
      else if (policy !== 'ACCEPT') out.push(`${family} ${t.table} :${chain} ${policy}`);
    }
    for (const r of t.rules) out.push(`${family} ${t.table} ${r.line}`);
  }
  return out;
}

// CNI plugins tag a pod's rules with `name: "<network>" id: "<container id>"`; rkt's container id is the pod UUID
const ID_RE = /id: \\"([0-9a-f-]{36})\\"/;

/** CNI chains that rules tagged with one of `ids` jump to or live in (the shared CNI-HOSTPORT-* excepted). */
export function chainsOf(state: readonly string[], ids: (id: string) => boolean): Set<string> {
  const out = new Set<string>();
  for (const l of state) {
    const id = ID_RE.exec(l)?.[1];
    if (id === undefined || !ids(id)) continue;
    for (const m of l.matchAll(/(?:-A|-j) (CNI-\S+)/g)) if (!m[1]!.startsWith('CNI-HOSTPORT-')) out.add(m[1]!);
  }
  return out;
}

/**
 * State lines in `after` but not in `before` that no pod other than `mine`
 * accounts for: each is a leak of ours. Other pods may run meanwhile, so
 * their tagged rules, their chains and, while one of them forwards a port,
 * portmap's shared CNI-HOSTPORT-* chains are theirs.
 */
export function unexplainedRules(before: readonly string[], after: readonly string[], mine: readonly string[]): string[] {
  const old = new Set(before);
  const foreign = (id: string): boolean => !mine.includes(id);
  const theirs = chainsOf(after, foreign);
  const forwarding = after.some((l) => l.includes('CNI-HOSTPORT-DNAT') && foreign(ID_RE.exec(l)?.[1] ?? mine[0]!));
  return after
    .filter((l) => !old.has(l))
    .filter((l) => {
      const id = ID_RE.exec(l)?.[1];
      if (id !== undefined) return !foreign(id);
      const chain = /^\S+ \S+ (?::|-A )(\S+)/.exec(l)?.[1];
      if (chain !== undefined && theirs.has(chain)) return false;
      return !(forwarding && l.includes('CNI-HOSTPORT-'));
    });
}
