import net from 'node:net';
import dgram from 'node:dgram';
import { UsageError } from '../errors.js';
import type { ExposedPort, Port } from '../appc/types.js';
import type { JsonObject } from './config.js';
import { PortInUseError } from './errors.js';
import { forwardedHostPorts } from './iptables.js';
import type { PortMapping } from './state.js';

// Forwarded ports (--port, a pod manifest's "ports"): a port an app image
// declares by name is published on a host port through the CNI portmap
// plugin, which also makes it reachable on the host's 127.0.0.1. A name no
// image declares is refused, as is a host port that is already taken.

export type { PortMapping } from './state.js';

function parseHostPort(text: string, flag: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag}: host port "${text}" is not a number`);
  const n = Number(text);
  if (n < 1 || n > 65535) throw new UsageError(`${flag}: host port ${n} is outside 1-65535`);
  return n;
}

/** `--port=NAME:HOSTPORT` or `--port=NAME:HOSTIP:HOSTPORT` (an IPv6 HOSTIP in brackets: `NAME:[::1]:8080`). */
export function parsePortFlag(value: string): ExposedPort {
  const flag = `--port=${value}`;
  const colon = value.indexOf(':');
  if (colon <= 0) throw new UsageError(`${flag}: expected NAME:HOSTPORT or NAME:HOSTIP:HOSTPORT`);
  const name = value.slice(0, colon);
  const rest = value.slice(colon + 1);
  const last = rest.lastIndexOf(':');
  if (last === -1) return { name, hostPort: parseHostPort(rest, flag) };
  let hostIP = rest.slice(0, last);
  if (hostIP.startsWith('[') && hostIP.endsWith(']')) hostIP = hostIP.slice(1, -1);
  if (net.isIP(hostIP) === 0) throw new UsageError(`${flag}: "${hostIP}" is not an IP address`);
  return { name, hostPort: parseHostPort(rest.slice(last + 1), flag), hostIP };
}

export interface AppPorts {
  app: string;
  /** The ports the app's image (or its pod manifest override) declares. */
  ports: readonly Port[];
}

/**
 * Match exposed ports to the ports the apps declare; one mapping per port
 * (a declared range is forwarded port by port from the host port on).
 */
export function resolvePortMappings(exposed: readonly ExposedPort[], apps: readonly AppPorts[]): PortMapping[] {
  // Several apps may declare a port of the same name; forwarding it is then ambiguous (rkt's rule).
  const declared = new Map<string, Port>();
  const owners = new Map<string, string[]>();
  for (const a of apps) {
    for (const p of a.ports) {
      if (!declared.has(p.name)) declared.set(p.name, p);
      owners.set(p.name, [...(owners.get(p.name) ?? []), a.app]);
    }
  }
  const out: PortMapping[] = [];
  const names = new Set<string>();
  for (const e of exposed) {
    if (names.has(e.name)) throw new UsageError(`--port: port "${e.name}" is forwarded more than once`);
    names.add(e.name);
    const by = owners.get(e.name) ?? [];
    if (e.podPort === undefined && by.length > 1) {
      throw new UsageError(`--port=${e.name}:${e.hostPort}: port "${e.name}" is declared by apps ${by.map((a) => `"${a}"`).join(' and ')}, so forwarding it is ambiguous; rename the port in one app's image or run them in separate pods`);
    }
    const p = e.podPort ?? declared.get(e.name);
    if (!p) {
      const known = [...declared.keys()];
      throw new UsageError(
        `--port=${e.name}:${e.hostPort}: no app in the pod declares a port named "${e.name}"` + (known.length > 0 ? ` (declared: ${known.join(', ')})` : ' (the images declare no ports)'),
      );
    }
    const protocol = p.protocol.toLowerCase();
    if (!['tcp', 'udp', 'sctp'].includes(protocol)) throw new UsageError(`port "${e.name}" uses protocol "${p.protocol}", which cannot be forwarded (tcp, udp or sctp)`);
    const count = p.count ?? 1;
    if (e.hostPort + count - 1 > 65535) throw new UsageError(`--port=${e.name}:${e.hostPort}: port "${e.name}" is a range of ${count}, which would end beyond host port 65535`);
    for (let i = 0; i < count; i++) {
      out.push({ name: e.name, protocol, hostPort: e.hostPort + i, podPort: p.port + i, ...(e.hostIP !== undefined && { hostIP: e.hostIP }) });
    }
  }
  const seen = new Map<string, string>();
  for (const m of out) {
    const key = `${m.protocol}/${m.hostPort}`;
    const other = seen.get(key);
    if (other !== undefined) throw new UsageError(`--port: host port ${m.hostPort}/${m.protocol} is given to both "${other}" and "${m.name}"`);
    seen.set(key, m.name);
  }
  return out;
}

function tryBind(m: PortMapping): Promise<NodeJS.ErrnoException | undefined> {
  const host = m.hostIP ?? '0.0.0.0';
  return new Promise((resolve) => {
    if (m.protocol === 'udp') {
      const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
      sock.once('error', (err) => {
        sock.close();
        resolve(err);
      });
      sock.bind({ port: m.hostPort, address: host, exclusive: true }, () => sock.close(() => resolve(undefined)));
      return;
    }
    // sctp cannot be probed from node; its DNAT rules are still checked below
    if (m.protocol !== 'tcp') return resolve(undefined);
    const srv = net.createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => resolve(err));
    srv.listen({ port: m.hostPort, host, exclusive: true }, () => srv.close(() => resolve(undefined)));
  });
}

/** Refuse host ports that a host socket listens on or that the portmap plugin already forwards to another pod. */
export async function checkHostPortsFree(mappings: readonly PortMapping[]): Promise<void> {
  if (mappings.length === 0) return;
  const forwarded = await forwardedHostPorts();
  for (const m of mappings) {
    const f = forwarded.find((x) => x.port === m.hostPort && x.protocol === m.protocol);
    if (f) throw new PortInUseError(`host port ${m.hostPort}/${m.protocol} for port "${m.name}" is already forwarded to another pod (${f.owner}); choose another host port`);
    const err = await tryBind(m);
    if (err?.code === 'EADDRINUSE') {
      throw new PortInUseError(`host port ${m.hostPort}/${m.protocol} for port "${m.name}" is already in use on ${m.hostIP ?? 'the host'}; choose another host port`);
    }
    if (err?.code === 'EADDRNOTAVAIL') throw new PortInUseError(`--port ${m.name}: host address ${m.hostIP} is not an address of this host`);
  }
}

/** The portmap plugin as chained after a network's own plugins. */
export function portmapPluginConf(): JsonObject {
  return { type: 'portmap', capabilities: { portMappings: true }, snat: true };
}

/** The portMappings capability argument (CNI CONVENTIONS.md). */
export function portmapRuntimeConfig(mappings: readonly PortMapping[]): JsonObject {
  return {
    portMappings: mappings.map((m) => ({ hostPort: m.hostPort, containerPort: m.podPort, protocol: m.protocol, ...(m.hostIP !== undefined && { hostIP: m.hostIP }) })),
  };
}
