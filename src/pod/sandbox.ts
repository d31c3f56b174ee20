import { ManifestError, UsageError } from '../errors.js';
import { validatePodManifest } from '../appc/pod-manifest.js';
import type { Annotation, PodManifest } from '../appc/types.js';
import path from 'node:path';
import { isNetns } from '../net/netns.js';
import { parseSandboxPortFlag } from '../net/ports.js';
import { APPC_VERSION } from '../version.js';
import { MUTABLE_ANNOTATION } from './mutable.js';
import { newPodArgs, parseRunArgs, type RunArgs } from './run-args.js';

// rkt app sandbox's command line: the pod-level flags of rkt run that make
// sense for a pod without apps (stage1 choice, networks, DNS, hosts
// entries, hostname, the UUID file), rkt's sandbox form of --port (the pod
// port is given: no image declares it yet), and the pod's annotations and
// user labels, and this implementation's --net-namespace (join a network
// namespace made by someone else). What would configure apps is refused: they come later, with
// "rkt app add".

const POD_FLAGS_ALLOWED = new Set(['stage1Name', 'stage1Path', 'stage1Url', 'stage1Hash', 'stage1FromDir', 'net', 'dns', 'dnsSearch', 'dnsOpt', 'dnsDomain', 'hostsEntry', 'hostname', 'uuidFileSave', 'pullPolicy', 'noOverlay', 'ipc']);

export interface SandboxArgs {
  run: RunArgs;
  manifest: PodManifest;
  /** --net-namespace: an existing network namespace for the pod (not rkt's: never deleted by it). */
  netns?: string;
}

/** --net-namespace=PATH: a live network namespace someone else made (a CRI runtime's, say) instead of rkt's networks. */
function checkNetns(p: string, run: RunArgs, ports: number): string {
  if (!path.isAbsolute(p)) throw new UsageError(`--net-namespace=${p}: give the absolute path of a network namespace (/run/netns/NAME or /proc/PID/ns/net)`);
  if (!isNetns(p)) throw new UsageError(`--net-namespace=${p} is not a network namespace; create it first (ip netns add NAME)`);
  if (run.pod.net.length > 0) throw new UsageError('--net-namespace and --net do not go together: the namespace comes with its own interfaces');
  if (ports > 0) throw new UsageError('--net-namespace and --port do not go together: forward ports in the namespace\'s own networks');
  return p;
}

function keyValue(flag: string, text: string): [string, string] {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new UsageError(`--${flag} takes KEY=VALUE, not "${text}"`);
  return [text.slice(0, eq), text.slice(eq + 1)];
}

export function parseSandboxArgs(words: string[]): SandboxArgs {
  const own: Record<'port' | 'annotation' | 'user-annotation' | 'user-label' | 'net-namespace', string[]> = { port: [], annotation: [], 'user-annotation': [], 'user-label': [], 'net-namespace': [] };
  const rest: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    const m = /^--(port|annotation|user-annotation|user-label|net-namespace)(?:=(.*))?$/s.exec(w);
    if (!m) {
      rest.push(w);
      continue;
    }
    const v = m[2] ?? words[++i];
    if (v === undefined) throw new UsageError(`--${m[1]} needs a value`);
    own[m[1] as keyof typeof own].push(v);
  }
  const run = parseRunArgs(rest, 'run');
  if (run.apps.length > 0) throw new UsageError(`rkt app sandbox takes no image ("${run.apps[0]!.image}"); add apps to the running sandbox with "rkt app add UUID IMAGE"`);
  const dflt = newPodArgs() as unknown as Record<string, unknown>;
  for (const [k, v] of Object.entries(run.pod)) {
    if (POD_FLAGS_ALLOWED.has(k) || JSON.stringify(v) === JSON.stringify(dflt[k])) continue;
    throw new UsageError(`rkt app sandbox does not take the ${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} flag; it configures apps, which come with "rkt app add"`);
  }
  const annotations: Annotation[] = [{ name: MUTABLE_ANNOTATION, value: 'true' }];
  for (const a of own.annotation) {
    const [name, value] = keyValue('annotation', a);
    if (name === MUTABLE_ANNOTATION) throw new UsageError(`--annotation cannot set ${MUTABLE_ANNOTATION}: rkt sets it`);
    annotations.push({ name, value });
  }
  const manifest: PodManifest = { acKind: 'PodManifest', acVersion: APPC_VERSION, apps: [], volumes: [], annotations };
  if (own['user-annotation'].length > 0) manifest.userAnnotations = Object.fromEntries(own['user-annotation'].map((a) => keyValue('user-annotation', a)));
  if (own['user-label'].length > 0) manifest.userLabels = Object.fromEntries(own['user-label'].map((a) => keyValue('user-label', a)));
  if (own.port.length > 0) {
    if (run.pod.net.length === 1 && run.pod.net[0] === 'host') throw new UsageError('--port needs a contained network; it cannot be used with --net=host');
    manifest.ports = own.port.map(parseSandboxPortFlag);
  }
  if (own['net-namespace'].length > 1) throw new UsageError('--net-namespace is given more than once');
  const netns = own['net-namespace'][0] === undefined ? undefined : checkNetns(own['net-namespace'][0], run, own.port.length);
  try {
    return { run, manifest: validatePodManifest(JSON.parse(JSON.stringify(manifest))), ...(netns !== undefined && { netns }) };
  } catch (err) {
    if (err instanceof ManifestError) throw new UsageError(`the sandbox these flags describe is not valid: ${err.field}: ${err.rule}`);
    throw err;
  }
}
