import { execa } from 'execa';
import { RktEnv } from './rkt.js';

export interface PodJson {
  name: string;
  state: string;
  app_names: string[];
  apps: { name: string; exit_code?: number }[];
  pid?: number;
}

export async function listPods(env: RktEnv): Promise<PodJson[]> {
  const r = await env.run(['list', '--format=json']);
  if (r.exitCode !== 0) throw new Error(`rkt list failed: ${r.stderr}`);
  return JSON.parse(String(r.stdout)) as PodJson[];
}

export async function podStatus(env: RktEnv, uuid: string, extra: string[] = []): Promise<PodJson & { exited_at?: number; exit_cause?: string }> {
  const r = await env.run(['status', '--format=json', ...extra, uuid]);
  if (r.exitCode !== 0) throw new Error(`rkt status failed: ${r.stderr}`);
  return JSON.parse(String(r.stdout));
}

/** Stop every running pod of the env and collect garbage, so no process outlives a test. */
export async function reapPods(env: RktEnv): Promise<void> {
  try {
    for (const p of await listPods(env)) {
      if (p.state === 'running') await env.run(['stop', '--force', p.name]);
    }
    await env.run(['gc', '--grace-period=0s', '--expire-prepared=0s']);
  } catch {
    // best effort: the env's directory is removed next
  }
}

/** Processes whose command line contains the marker (our own pgrep excluded). */
export async function processesWith(marker: string): Promise<string[]> {
  const r = await execa('pgrep', ['-f', marker], { reject: false });
  return String(r.stdout).split('\n').filter((l) => l.trim() !== '' && Number(l) !== process.pid);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitFor(what: string, fn: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await fn()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A private rkt world for one test, its pods reaped and its directory removed when the test ends. */
export function podWorld(t: { teardown(fn: () => void | Promise<void>): void }, prefix: string): RktEnv {
  const env = new RktEnv(prefix);
  t.teardown(async () => {
    await reapPods(env);
    env.cleanup();
  });
  return env;
}
