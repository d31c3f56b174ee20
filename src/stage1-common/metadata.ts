import { RktError, UsageError } from '../errors.js';
import { log } from '../log.js';
import { describeNetwork } from '../net/pod-network.js';
import { readState } from '../net/state.js';
import { DEFAULT_PORT, TOKEN_PATTERN } from '../mds/protocol.js';
import { readRunOptions, type PodPaths } from '../stage1/contract.js';
import type { AppSpec } from './app-spec.js';
import type { RunArgs } from './entry.js';

// AC_METADATA_URL for the apps of a pod registered with the metadata service
// (appc spec/ace.md; rkt's stage1 set it the same way): http://HOST:PORT/TOKEN,
// where HOST is how the pod reaches the host. On the host network (fly,
// nspawn --net=host) that is 127.0.0.1; in a pod network it is the host's
// end of the pod's first network that has one (ptp's veth, a bridge), which
// is also how a kvm guest reaches it: over its own NIC, as any traffic to
// the host. No flavor hands a pod a path on the host for it.

export const METADATA_URL_ENV = 'AC_METADATA_URL';

export interface MetadataServiceAccess {
  token: string;
  port: number;
}

/**
 * The pod's metadata token and the service's port, if stage0 registered it.
 * The one place stage1 learns them: rkt's --mds-token when stage0 passes it,
 * else run-options.json (`metadataService`), this stage0's channel today.
 */
export function metadataServiceOf(paths: PodPaths, args: RunArgs): MetadataServiceAccess | undefined {
  const stored = (readRunOptions(paths) ?? {}).metadataService as { token?: unknown; port?: unknown } | undefined;
  const token = args.mdsToken ?? (typeof stored?.token === 'string' ? stored.token : undefined);
  if (token === undefined) return undefined;
  if (!TOKEN_PATTERN.test(token)) throw new UsageError('the metadata service token must be 32 to 128 characters of A-Z, a-z, 0-9, "-" and "_"');
  const p = stored?.port;
  const port = typeof p === 'number' && Number.isInteger(p) && p > 0 && p < 65536 ? p : DEFAULT_PORT;
  return { token, port };
}

/** The host's address as seen from a pod in its own network namespace. */
export function hostAddressFromPod(podDir: string): string {
  const st = readState(podDir);
  for (const n of st?.networks ?? []) {
    if (n.phase !== 'added') continue;
    const d = describeNetwork(n);
    if (d.hostIfName !== undefined && d.gateway !== undefined && !d.gateway.includes(':')) return d.gateway;
  }
  throw new RktError("none of the pod's networks ends on the host (such as ptp's or a bridge's), so its apps cannot reach the metadata service; run it with --net=default, or without --mds-register");
}

/**
 * Give every app AC_METADATA_URL when the pod is registered. `mode` is the
 * pod's network as set up: `host` shares the host's, `contained` has its own.
 */
export function addMetadataUrl(paths: PodPaths, args: RunArgs, specs: AppSpec[], mode: 'host' | 'contained' | 'none'): void {
  const access = metadataServiceOf(paths, args);
  if (access === undefined) return;
  if (mode === 'none') throw new UsageError("--mds-register needs a network: the apps reach the metadata service over the pod's network");
  const host = mode === 'host' ? '127.0.0.1' : hostAddressFromPod(paths.dir);
  const url = `http://${host}:${access.port}/${access.token}`;
  log().debug(`apps reach the metadata service at http://${host}:${access.port}/<token>`);
  for (const spec of specs) {
    spec.env = spec.env.filter((e) => e.name !== METADATA_URL_ENV);
    spec.env.push({ name: METADATA_URL_ENV, value: url });
  }
}
