import { UsageError } from '../errors.js';

// The --net value, as rkt reads it: a comma-separated list of network names,
// each optionally followed by ":" and the CNI_ARGS for that network
// ("K=V;K2=V2"). It may be given several times. Special names: host, none,
// all, default, default-restricted. See rkt's Documentation/networking/
// overview.md and overriding-defaults.md.

export const NET_HOST = 'host';
export const NET_NONE = 'none';
export const NET_ALL = 'all';
export const NET_DEFAULT = 'default';
export const NET_DEFAULT_RESTRICTED = 'default-restricted';

/** CNI network names: a letter or digit, then letters, digits, "_", "." or "-" (CNI SPEC). */
export const NETWORK_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

export interface NetRequestEntry {
  name: string;
  /** The CNI_ARGS string for this network, "" when none were given. */
  args: string;
}

export interface NetRequest {
  /** host: the host's namespace; none: a namespace with loopback only; contained: CNI networks. */
  kind: 'host' | 'none' | 'contained';
  /** --net=all: every configured network (and the default one). */
  all: boolean;
  /** Named networks in the order given, "all" excluded. */
  entries: NetRequestEntry[];
}

/** One CNI_ARGS string: semicolon-separated KEY=VALUE pairs with alphanumeric keys. */
export function validateCniArgs(net: string, args: string): string {
  const pairs = args.split(';').filter((p) => p !== '');
  for (const p of pairs) {
    const eq = p.indexOf('=');
    const key = eq === -1 ? p : p.slice(0, eq);
    if (eq <= 0 || !/^[A-Za-z0-9_]+$/.test(key)) {
      throw new UsageError(`--net: arguments of network "${net}" must be KEY=VALUE pairs separated by ";", not "${p}"`);
    }
  }
  return pairs.join(';');
}

/**
 * Parse every --net value given (each may hold a comma-separated list).
 * Nothing given means the default network, as in rkt.
 */
export function parseNetList(values: readonly string[]): NetRequest {
  const entries: NetRequestEntry[] = [];
  const seen = new Set<string>();
  let all = false;
  for (const value of values) {
    for (const raw of value.split(',')) {
      const item = raw.trim();
      if (item === '') throw new UsageError(`--net="${value}": a network name must not be empty`);
      const colon = item.indexOf(':');
      // split on the first colon only, so IPv6 addresses survive in the arguments
      const name = colon === -1 ? item : item.slice(0, colon);
      const args = colon === -1 ? '' : item.slice(colon + 1);
      if (name === '') throw new UsageError(`--net="${value}": a network name must not be empty`);
      if (!NETWORK_NAME_RE.test(name)) {
        throw new UsageError(`--net: "${name}" is not a valid network name (letters, digits, "_", "." and "-", starting with a letter or digit)`);
      }
      if (seen.has(name)) throw new UsageError(`--net: network "${name}" is given more than once`);
      seen.add(name);
      if ((name === NET_ALL || name === NET_HOST || name === NET_NONE) && colon !== -1) {
        throw new UsageError(`--net: the special network "${name}" takes no arguments`);
      }
      if (name === NET_ALL) {
        all = true;
        continue;
      }
      entries.push({ name, args: colon === -1 ? '' : validateCniArgs(name, args) });
    }
  }
  if (entries.length === 0 && !all) return { kind: 'contained', all: false, entries: [{ name: NET_DEFAULT, args: '' }] };
  for (const special of [NET_HOST, NET_NONE]) {
    if (seen.has(special) && seen.size > 1) {
      throw new UsageError(`--net=${special} cannot be combined with other networks (${[...seen].filter((n) => n !== special).join(', ')})`);
    }
  }
  if (seen.has(NET_HOST)) return { kind: 'host', all: false, entries: [] };
  if (seen.has(NET_NONE)) return { kind: 'none', all: false, entries: [] };
  return { kind: 'contained', all, entries };
}

/**
 * For a flavor with no pod network (fly): only the host network, which
 * "default" (what stage0 says when the user chose nothing) means there too,
 * as in rkt's fly.
 */
export function checkHostOnlyNetList(nets: readonly string[], flavor: string): void {
  const list = nets.length === 0 ? [NET_HOST] : nets;
  if (list.length === 1 && (list[0] === NET_HOST || list[0] === NET_DEFAULT)) return;
  throw new UsageError(`the ${flavor} stage1 shares the host network and supports only --net=host, not --net=${nets.join(',')}`);
}

/** The request back in --net syntax, for passing from stage0 to a stage1 entrypoint. */
export function formatNetList(req: NetRequest): string {
  if (req.kind === 'host') return NET_HOST;
  if (req.kind === 'none') return NET_NONE;
  const items = req.entries.map((e) => (e.args === '' ? e.name : `${e.name}:${e.args}`));
  return (req.all ? [NET_ALL, ...items] : items).join(',');
}
