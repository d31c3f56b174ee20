import { log } from '../log.js';
import { parseImageManifest } from '../appc/image-manifest.js';
import type { ExposedPort } from '../appc/types.js';
import { resolvePortMappings, type AppPorts } from '../net/ports.js';
import { describeNetwork, teardownPodNetwork, type PodNetworkOptions } from '../net/pod-network.js';
import { readState } from '../net/state.js';
import { RktError, UsageError } from '../errors.js';
import { loadPodManifest, readPodFile } from './app-spec.js';
import { readRunOptions, type PodPaths } from '../stage1/contract.js';
import { dnsRequestFor } from '../stage1/dns-conf.js';
import type { RunArgs } from './entry.js';

// What every flavor hands setupPodNetwork, gathered once from the pod:
// the --net list (stage0 always passes one: `default` unless told otherwise), the forwarded
// ports matched to the ports the apps declare, the local config dir
// (--local-config), DNS and hosts (--dns-conf-mode and the files stage0
// wrote for it), and the system config dir, this implementation's
// extension in run-options.json.

/** The system config dir stage0 recorded (its net.d holds more networks); a pod run by hand may have none. */
function systemConfig(paths: PodPaths): string | undefined {
  const stored = readRunOptions(paths);
  if (stored === undefined) log().debug(`${paths.runOptions} does not exist: no system config dir`);
  return typeof stored?.systemConfig === 'string' ? stored.systemConfig : undefined;
}

/** The ports each app declares: the pod manifest's copy of the app section, else its image's. */
function appPorts(paths: PodPaths): { exposed: ExposedPort[]; apps: AppPorts[] } {
  const pm = loadPodManifest(paths);
  const apps = pm.apps.map((ra): AppPorts => {
    if (ra.app?.ports !== undefined) return { app: ra.name, ports: ra.app.ports };
    return { app: ra.name, ports: parseImageManifest(readPodFile(paths.appImageManifest(ra.name), `image manifest of app "${ra.name}"`)).app?.ports ?? [] };
  });
  return { exposed: pm.ports ?? [], apps };
}

export interface PodNetRequest {
  nets: string[];
  options: PodNetworkOptions;
}

/** The arguments of setupPodNetwork for this pod (throws a UsageError for an undeclared --port). */
export function podNetRequest(paths: PodPaths, args: RunArgs, hostname: string): PodNetRequest {
  const system = systemConfig(paths);
  const { exposed, apps } = appPorts(paths);
  const { dns, hostsEntries } = dnsRequestFor(paths, args.dnsConfMode);
  const netns = readRunOptions(paths)?.netns;
  return {
    nets: args.net.length === 0 ? ['default'] : [...args.net],
    options: {
      ...(args.localConfig !== undefined && { localConfig: args.localConfig }),
      ...(system !== undefined && { systemConfig: system }),
      ports: resolvePortMappings(exposed, apps),
      dns,
      hostsEntries,
      hostname,
      ...(typeof netns === 'string' && { existingNetns: netns }),
    },
  };
}

/**
 * Undo the pod's network; never throws (the pod's own outcome matters more
 * to the caller) but says what it could not undo: `rkt gc` tries again.
 * Idempotent: the run entrypoint calls it on every exit it lives to see,
 * the gc entrypoint after a kill -9.
 */
export async function teardownNetwork(podDir: string): Promise<boolean> {
  const t0 = Date.now();
  try {
    await teardownPodNetwork(podDir);
    log().debug(`network torn down in ${Date.now() - t0} ms`);
    return true;
  } catch (err) {
    log().warn(`${(err as Error).message}; rkt gc will try again`);
    return false;
  }
}

/**
 * How the pod reaches the host, for AC_METADATA_URL (metadata.ts): 127.0.0.1
 * on the host network, else the host's end of the pod's first network that
 * has one (ptp's veth, a bridge), whose address is the pod's gateway.
 */
export function hostAddressFromPod(podDir: string, mode: 'host' | 'contained' | 'none'): string {
  if (mode === 'host') return '127.0.0.1';
  if (mode === 'none') throw new UsageError("--mds-register needs a network: the apps reach the metadata service over the pod's network");
  for (const n of readState(podDir)?.networks ?? []) {
    if (n.phase !== 'added') continue;
    const d = describeNetwork(n);
    if (d.hostIfName !== undefined && d.gateway !== undefined && !d.gateway.includes(':')) return d.gateway;
  }
  throw new RktError("none of the pod's networks ends on the host (as ptp's or a bridge's do), so its apps cannot reach the metadata service; run it with --net=default, or without --mds-register");
}
