import fs from 'node:fs';
import { gcArgv } from '../stage1/args.js';
import { unregisterPod } from '../mds/client.js';
import { invokeEntrypoint } from '../stage1/invoke.js';
import { log } from '../log.js';
import { LockBusyError } from '../errors.js';
import { Pod } from './pod.js';
import { removePodDir } from './remove.js';

export interface PodGcReport {
  marked: string[];
  removed: string[];
  failed: { uuid: string; reason: string }[];
}

function mtime(dir: string): number {
  try {
    return fs.statSync(dir).mtimeMs;
  } catch {
    // gone meanwhile: count it as fresh, so no grace period is cut short
    return Date.now();
  }
}

/**
 * Tear down a pod that no process runs any more: let its stage1 release
 * what it holds (gc entrypoint), then remove the directory. The caller
 * holds the pod's lock.
 */
export async function destroyPod(pod: Pod, opts: { debug: boolean; localConfig: string }): Promise<void> {
  const { debug } = opts;
  // a pod whose `rkt run` was killed is still registered
  await unregisterPod(pod.dir, pod.uuid);
  if (fs.existsSync(pod.paths.stage1Manifest)) {
    try {
      const code = await invokeEntrypoint(pod.paths, 'gc', (v) => gcArgv(v, { debug, localConfig: opts.localConfig }, pod.uuid), { stdio: debug ? 'inherit' : 'ignore' });
      if (code !== 0) log().warn({ uuid: pod.uuid, code }, 'stage1 gc entrypoint failed');
    } catch (err) {
      log().warn({ uuid: pod.uuid, err: (err as Error).message }, 'stage1 gc entrypoint could not run');
    }
  }
  removePodDir(pod.dir);
}

/**
 * rkt's pod gc: exited pods move to exited-garbage; aborted preparations
 * and prepared pods older than expirePrepared move to garbage; garbage is
 * removed, exited garbage once it has been there for the grace period.
 */
export async function gcPods(dataDir: string, opts: { gracePeriodMs: number; expirePreparedMs: number; debug: boolean; localConfig: string }, now = Date.now()): Promise<PodGcReport> {
  const report: PodGcReport = { marked: [], removed: [], failed: [] };
  for (const pod of Pod.listAll(dataDir)) {
    let lock;
    try {
      lock = pod.lock('exclusive', false);
    } catch (err) {
      if (err instanceof LockBusyError) continue; // running, preparing, or being removed by someone else
      throw err;
    }
    try {
      if (!fs.existsSync(pod.dir)) continue; // moved or removed since we listed it
      if (pod.stateDir === 'run') {
        pod.moveTo('exited-garbage');
        fs.utimesSync(pod.dir, new Date(now), new Date(now));
        report.marked.push(pod.uuid);
      } else if (pod.stateDir === 'prepare' || pod.stateDir === 'embryo') {
        pod.moveTo('garbage');
      } else if (pod.stateDir === 'prepared' && now - mtime(pod.dir) >= opts.expirePreparedMs) {
        pod.moveTo('garbage');
      }
      if (pod.stateDir === 'garbage' || (pod.stateDir === 'exited-garbage' && now - mtime(pod.dir) >= opts.gracePeriodMs)) {
        await destroyPod(pod, opts);
        report.removed.push(pod.uuid);
      }
    } catch (err) {
      report.failed.push({ uuid: pod.uuid, reason: (err as Error).message });
    } finally {
      lock.release();
    }
  }
  return report;
}
