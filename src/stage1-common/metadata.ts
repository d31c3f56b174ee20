import { UsageError } from '../errors.js';
import { log } from '../log.js';
import { DEFAULT_PORT } from '../mds/protocol.js';
import { readRunOptions, type PodPaths } from '../stage1/contract.js';
import type { AppSpec } from './app-spec.js';
import type { RunArgs } from './entry.js';

// AC_METADATA_URL for the apps of a pod registered with the metadata service
// (appc spec/ace.md; rkt's stage1 set it the same way): http://HOST:PORT/TOKEN,
// where HOST is how the pod reaches the host. On the host network (fly,
// nspawn --net=host) that is 127.0.0.1; in a pod network it is the host's
// end of the pod's first network that has one (ptp's veth, a bridge:
// hostAddressFromPod() in pod-net.ts), which is also how a kvm guest
// reaches it: over its own NIC, as any traffic to the host. No flavor hands
// a pod a path on the host for it.

export const METADATA_URL_ENV = 'AC_METADATA_URL';
const URL_SAFE = /^[A-Za-z0-9_-]{1,256}$/;

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
  // how strong a token must be is the service's to say (it refuses weak ones); here it only has to fit in a URL
  if (!URL_SAFE.test(token)) throw new UsageError('the metadata service token must be made of A-Z, a-z, 0-9, "-" and "_"');
  const p = stored?.port;
  const port = typeof p === 'number' && Number.isInteger(p) && p > 0 && p < 65536 ? p : DEFAULT_PORT;
  return { token, port };
}

/**
 * Give every app AC_METADATA_URL when the pod is registered. `hostAddress`
 * says how the pod reaches the host: 127.0.0.1 on the host network,
 * hostAddressFromPod() (pod-net.ts) in a network of its own.
 */
export function addMetadataUrl(paths: PodPaths, args: RunArgs, specs: AppSpec[], hostAddress: () => string): void {
  const access = metadataServiceOf(paths, args);
  if (access === undefined) return;
  const host = hostAddress();
  const url = `http://${host}:${access.port}/${access.token}`;
  log().debug(`apps reach the metadata service at http://${host}:${access.port}/<token>`);
  for (const spec of specs) {
    spec.env = spec.env.filter((e) => e.name !== METADATA_URL_ENV);
    spec.env.push({ name: METADATA_URL_ENV, value: url });
  }
}
