import { execa } from '../util/lazy-execa.js';
import { log } from '../log.js';
import { NetworkSetupError, oneLine } from './errors.js';

// What the CNI plugins' DEL can leave behind, and how we find it.
//
// - ptp/bridge with ipMasq remove their per-pod masquerade chain only when
//   they still find the pod's interface in its namespace; after a crash the
//   namespace is gone and the rules stay. They are tagged with the comment
//   `name: "<network>" id: "<container id>"`, so we remove them by that tag.
// - portmap keeps shared top-level chains (CNI-HOSTPORT-*) forever; we
//   remove them once no pod forwards any port, so a host without pods has
//   no CNI rules at all.
//
// Work is done with iptables-save / iptables-restore --noflush, whose
// formats match, so a saved rule line becomes a delete line by swapping -A
// for -D, with no re-quoting.

export type Family = 'iptables' | 'ip6tables';
const FAMILIES: Family[] = ['iptables', 'ip6tables'];

export interface SavedRule {
  table: string;
  chain: string;
  /** The line as iptables-save printed it ("-A CHAIN ..."). */
  line: string;
  tokens: string[];
  comment?: string;
  target?: string;
}

export interface SavedTable {
  table: string;
  chains: string[];
  /** Each chain's policy: ACCEPT or DROP for a built-in chain, "-" for one someone created. */
  policies: Record<string, string>;
  rules: SavedRule[];
}

/** Split an iptables-save rule line into arguments: double quotes group, backslash escapes. */
export function tokenizeRule(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inToken = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
      inToken = true;
    } else if (c === '"') {
      quoted = !quoted;
      inToken = true;
    } else if (!quoted && /\s/.test(c)) {
      if (inToken) out.push(cur);
      cur = '';
      inToken = false;
    } else {
      cur += c;
      inToken = true;
    }
  }
  if (inToken) out.push(cur);
  return out;
}

/** Parse iptables-save output into tables of chains and rules. */
export function parseSave(text: string): SavedTable[] {
  const tables: SavedTable[] = [];
  let cur: SavedTable | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) {
      cur = { table: line.slice(1).trim(), chains: [], policies: {}, rules: [] };
      tables.push(cur);
    } else if (line.startsWith(':') && cur) {
      const [chain, policy] = line.slice(1).split(' ');
      cur.chains.push(chain!);
      cur.policies[chain!] = policy ?? '-';
    } else if (line.startsWith('-A ') && cur) {
      const tokens = tokenizeRule(line);
      const ci = tokens.indexOf('--comment');
      const ji = tokens.indexOf('-j');
      cur.rules.push({
        table: cur.table,
        chain: tokens[1]!,
        line,
        tokens,
        ...(ci !== -1 && tokens[ci + 1] !== undefined && { comment: tokens[ci + 1] }),
        ...(ji !== -1 && tokens[ji + 1] !== undefined && { target: tokens[ji + 1] }),
      });
    }
  }
  return tables;
}

async function save(family: Family, table: string): Promise<SavedTable | undefined> {
  const r = await execa(`${family}-save`, ['-t', table], { reject: false });
  // a missing binary or an unavailable table (no IPv6) means nothing of ours can be there
  if (r.failed) return undefined;
  return parseSave(String(r.stdout)).find((t) => t.table === table);
}

async function restore(family: Family, table: string, lines: string[]): Promise<void> {
  if (lines.length === 0) return;
  const input = [`*${table}`, ...lines, 'COMMIT', ''].join('\n');
  log().debug({ family, table, lines }, 'removing iptables rules');
  const r = await execa(`${family}-restore`, ['--noflush'], { input, reject: false });
  if (r.failed) throw new NetworkSetupError(oneLine(`cannot remove ${family} ${table} rules: ${String(r.stderr || r.message).trim()}`));
}

const SHARED = /^CNI-HOSTPORT-/;

/** Lines removing rules, then the per-pod chains they jumped to once nothing else jumps there. */
function removalLines(t: SavedTable, doomed: SavedRule[]): string[] {
  const lines = doomed.map((r) => r.line.replace(/^-A /, '-D '));
  const gone = new Set(doomed.map((r) => r.line));
  const remaining = t.rules.filter((r) => !gone.has(r.line));
  const targets = new Set(doomed.map((r) => r.target).filter((x): x is string => x !== undefined && x.startsWith('CNI-') && !SHARED.test(x)));
  for (const chain of targets) {
    if (!t.chains.includes(chain)) continue;
    if (remaining.some((r) => r.target === chain)) continue;
    lines.push(`-F ${chain}`, `-X ${chain}`);
  }
  return lines;
}

/** Remove every nat/filter rule tagged for this network and container (what a plugin's DEL left behind). */
export async function removeTaggedRules(network: string, containerId: string): Promise<number> {
  const tag = `name: "${network}" id: "${containerId}"`;
  let removed = 0;
  for (const family of FAMILIES) {
    for (const table of ['nat', 'filter']) {
      const t = await save(family, table);
      if (!t) continue;
      const doomed = t.rules.filter((r) => r.comment !== undefined && r.comment.endsWith(tag));
      if (doomed.length === 0) continue;
      await restore(family, table, removalLines(t, doomed));
      removed += doomed.length;
    }
  }
  if (removed > 0) log().debug({ network, containerId, removed }, 'removed iptables rules left by the CNI plugins');
  return removed;
}

/**
 * Remove portmap's shared chains when no pod forwards a port any more
 * (CNI-HOSTPORT-DNAT empty and no per-pod CNI-DN- chain left).
 */
export async function pruneSharedPortmapChains(): Promise<void> {
  for (const family of FAMILIES) {
    const t = await save(family, 'nat');
    if (!t || !t.chains.includes('CNI-HOSTPORT-DNAT')) continue;
    if (t.rules.some((r) => r.chain === 'CNI-HOSTPORT-DNAT') || t.chains.some((c) => c.startsWith('CNI-DN-'))) continue;
    const jumps = t.rules.filter((r) => r.target !== undefined && SHARED.test(r.target) && !SHARED.test(r.chain));
    const lines = jumps.map((r) => r.line.replace(/^-A /, '-D '));
    for (const chain of t.chains.filter((c) => SHARED.test(c))) lines.push(`-F ${chain}`);
    for (const chain of t.chains.filter((c) => SHARED.test(c))) lines.push(`-X ${chain}`);
    await restore(family, 'nat', lines);
  }
}

export interface ForwardedPort {
  protocol: string;
  port: number;
  /** The portmap comment naming the network and pod that forward it. */
  owner: string;
}

/** Host ports already forwarded to pods by the portmap plugin (they hold no socket, so a bind test cannot see them). */
export async function forwardedHostPorts(): Promise<ForwardedPort[]> {
  const out: ForwardedPort[] = [];
  for (const family of FAMILIES) {
    const t = await save(family, 'nat');
    for (const r of t?.rules ?? []) {
      if (r.chain !== 'CNI-HOSTPORT-DNAT') continue;
      const pi = r.tokens.indexOf('-p');
      const di = r.tokens.indexOf('--dports');
      if (pi === -1 || di === -1) continue;
      for (const item of (r.tokens[di + 1] ?? '').split(',')) {
        const [lo, hi] = item.split(':').map(Number);
        if (lo === undefined || !Number.isInteger(lo)) continue;
        for (let p = lo; p <= (hi ?? lo); p++) out.push({ protocol: r.tokens[pi + 1]!, port: p, owner: r.comment ?? '' });
      }
    }
  }
  return out;
}
