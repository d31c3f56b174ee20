import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { call } from './api-client.js';
import type { Containerd, Handler } from './containerd.js';

// CRI calls made the way the kubelet makes them, for the containerd tests
// and the CRI benchmark: a sandbox first, then containers created in it with
// the sandbox's config repeated, then started.

/** The deadline of one CRI call: a kvm pod boots a VM, and tcg on a loaded host is slow. */
export const CRI_DEADLINE = 600_000;

export interface Pod {
  id: string;
  /** The PodSandboxConfig it was made with (CreateContainer repeats it). */
  config: Record<string, unknown>;
  /** The log directory the CRI writes the containers' logs under. */
  logDir: string;
}

export type ContainerState = 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';

export interface ContainerStatus {
  id: string;
  state: ContainerState;
  exit_code: number;
  reason: string;
  message: string;
  log_path: string;
}

export interface SandboxStatus {
  id: string;
  state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
  network: { ip: string } | null;
  runtime_handler: string;
}

/** RunPodSandbox with `handler`, its logs under `logRoot`. */
export async function runPod(cd: Containerd, handler: Handler, name: string, logRoot: string): Promise<Pod> {
  const uid = crypto.randomUUID();
  const logDir = path.join(logRoot, `default_${name}_${uid}`);
  fs.mkdirSync(logDir, { recursive: true });
  const config = {
    metadata: { name, uid, namespace: 'default', attempt: 0 },
    hostname: name,
    log_directory: logDir,
    labels: { app: name },
    annotations: {},
  };
  const { pod_sandbox_id: id } = await call<{ pod_sandbox_id: string }>(cd.runtime(), 'RunPodSandbox', { config, runtime_handler: handler }, CRI_DEADLINE);
  return { id, config, logDir };
}

export interface ContainerSpec {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
}

/** CreateContainer in `pod`, logging to `<name>.log` of the pod's log directory; returns its id. */
export async function createContainer(cd: Containerd, pod: Pod, spec: ContainerSpec): Promise<string> {
  const config = {
    metadata: { name: spec.name, attempt: 0 },
    image: { image: spec.image },
    command: spec.command ?? [],
    args: spec.args ?? [],
    envs: [{ key: 'POD_NAME', value: String((pod.config.metadata as { name: string }).name) }],
    labels: { container: spec.name },
    log_path: `${spec.name}.log`,
  };
  const r = await call<{ container_id: string }>(cd.runtime(), 'CreateContainer', { pod_sandbox_id: pod.id, config, sandbox_config: pod.config }, CRI_DEADLINE);
  return r.container_id;
}

/** CreateContainer then StartContainer; returns the id. */
export async function startContainer(cd: Containerd, pod: Pod, spec: ContainerSpec): Promise<string> {
  const id = await createContainer(cd, pod, spec);
  await call(cd.runtime(), 'StartContainer', { container_id: id }, CRI_DEADLINE);
  return id;
}

export async function containerStatus(cd: Containerd, id: string): Promise<ContainerStatus> {
  return (await call<{ status: ContainerStatus }>(cd.runtime(), 'ContainerStatus', { container_id: id }, CRI_DEADLINE)).status;
}

export async function sandboxStatus(cd: Containerd, id: string): Promise<SandboxStatus> {
  return (await call<{ status: SandboxStatus }>(cd.runtime(), 'PodSandboxStatus', { pod_sandbox_id: id }, CRI_DEADLINE)).status;
}

/** Poll until `probe` returns a value that is not undefined; throws with `what` after timeoutMs. */
export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await sleep(250);
  }
}

/** The container's status once it is in `state`. */
export function waitState(cd: Containerd, id: string, state: ContainerState, timeoutMs = CRI_DEADLINE): Promise<ContainerStatus> {
  return waitFor(`container ${id.slice(0, 12)} ${state}`, timeoutMs, async () => {
    const s = await containerStatus(cd, id);
    return s.state === state ? s : undefined;
  });
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  exit_code: number;
}

export async function execSync(cd: Containerd, id: string, cmd: string[], timeoutSec = 120): Promise<ExecResult> {
  const r = await call<{ stdout: Buffer; stderr: Buffer; exit_code: number }>(cd.runtime(), 'ExecSync', { container_id: id, cmd, timeout: timeoutSec }, CRI_DEADLINE);
  return { stdout: r.stdout.toString(), stderr: r.stderr.toString(), exit_code: r.exit_code };
}

/** StopPodSandbox then RemovePodSandbox, as the kubelet ends a pod. */
export async function removePod(cd: Containerd, pod: Pod): Promise<void> {
  await call(cd.runtime(), 'StopPodSandbox', { pod_sandbox_id: pod.id }, CRI_DEADLINE);
  await call(cd.runtime(), 'RemovePodSandbox', { pod_sandbox_id: pod.id }, CRI_DEADLINE);
}

/** The messages of a CRI container log file (`TIME STREAM TAG MESSAGE` lines), with their stream. */
export function readCriLog(file: string): { stream: string; message: string }[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const m = /^\S+ (stdout|stderr) [FP] (.*)$/.exec(l);
      if (!m) throw new Error(`not a CRI log line: ${l}`);
      return { stream: m[1]!, message: m[2]! };
    });
}
