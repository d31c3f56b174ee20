// The image config's runtime fields mapped onto an appc app, as docker2aci
// did: Entrypoint+Cmd become exec (a relative command runs through
// /bin/sh -c, since appc wants an absolute path), User "user[:group]"
// becomes user and group (a lone user gets the group of the same name or
// number; none at all means root), Env, WorkingDir, ExposedPorts and
// Volumes become environment, workingDirectory, ports and mount points.

import type { App, EnvironmentVariable, MountPoint, Port } from '../appc/types.js';
import { sanitizeACName } from '../appc/acname.js';
import type { ImageConfig } from './manifest.js';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

export function execOf(config: Pick<ImageConfig, 'entrypoint' | 'cmd'>): string[] {
  const command = [...(config.entrypoint ?? []), ...(config.cmd ?? [])];
  if (command.length > 0 && !command[0]!.startsWith('/')) return ['/bin/sh', '-c', command.map(shellQuote).join(' ')];
  return command;
}

export function userOf(user: string | undefined): { user: string; group: string } {
  if (!user) return { user: '0', group: '0' };
  const colon = user.indexOf(':');
  if (colon < 0) return { user, group: user };
  return { user: user.slice(0, colon) || '0', group: user.slice(colon + 1) || '0' };
}

/** "K=V" entries; later ones win as in docker; names appc cannot carry are dropped. */
export function environmentOf(env: string[] | undefined): EnvironmentVariable[] {
  const out = new Map<string, string>();
  for (const e of env ?? []) {
    const eq = e.indexOf('=');
    const name = eq < 0 ? e : e.slice(0, eq);
    if (!ENV_NAME.test(name)) continue;
    out.set(name, eq < 0 ? '' : e.slice(eq + 1));
  }
  return [...out].map(([name, value]) => ({ name, value }));
}

/** "80/tcp" -> {name: "80-tcp", protocol: "tcp", port: 80}; malformed keys are dropped. */
export function portsOf(exposed: string[] | undefined): Port[] {
  const ports: Port[] = [];
  for (const key of exposed ?? []) {
    const m = /^(\d{1,5})(?:\/(tcp|udp|sctp))?$/i.exec(key);
    if (!m) continue;
    const port = Number(m[1]);
    if (port < 1 || port > 65535) continue;
    const protocol = (m[2] ?? 'tcp').toLowerCase();
    const name = `${port}-${protocol}`;
    if (!ports.some((p) => p.name === name)) ports.push({ name, protocol, port, count: 1, socketActivated: false });
  }
  return ports;
}

/** "/var/lib/data" -> {name: "volume-var-lib-data", path}; each name once. */
export function mountPointsOf(volumes: string[] | undefined): MountPoint[] {
  const mps: MountPoint[] = [];
  for (const p of volumes ?? []) {
    if (!p.startsWith('/') || p.split('/').includes('..')) continue;
    let name: string;
    try {
      name = `volume-${sanitizeACName(p)}`;
    } catch {
      name = 'volume-root';
    }
    if (!mps.some((m) => m.name === name)) mps.push({ name, path: p, readOnly: false });
  }
  return mps;
}

export function appOf(config: ImageConfig): App {
  const app: App = { exec: execOf(config), ...userOf(config.user) };
  const env = environmentOf(config.env);
  if (env.length > 0) app.environment = env;
  if (config.workingDir && config.workingDir.startsWith('/')) app.workingDirectory = config.workingDir;
  const ports = portsOf(config.exposedPorts);
  if (ports.length > 0) app.ports = ports;
  const mps = mountPointsOf(config.volumes);
  if (mps.length > 0) app.mountPoints = mps;
  return app;
}
