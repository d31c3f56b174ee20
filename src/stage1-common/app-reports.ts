import fs from 'node:fs';
import path from 'node:path';
import type { PodPaths } from '../stage1/contract.js';
import { readAppExitStatuses } from './status.js';

// What a booted pod's init tells the host about its apps, in the stage1
// rootfs that both sides see: each app's unit marks it started once
// systemd has executed it, and the shared exit hook (rkt-app-exited)
// records its exit status and whether the OOM killer ended it. The paths
// are the same for every flavor whose pod boots systemd (the nspawn image
// is built on the kvm guest image). The supervisor only reads them through
// AppReports, so a flavor can bring its reports over another channel.

/** Paths inside the stage1 rootfs, as the pod's init sees them. */
export const POD_ROOT = {
  units: '/etc/systemd/system',
  podTarget: 'rkt-pod.target',
  /** The apps' names, one per line, written by the host before boot: the hook's list of whom to wait for. */
  apps: '/rkt/apps',
  status: '/rkt/status',
  /** One empty file per app once systemd has executed it: the host's "ready" signal. */
  started: '/rkt/started',
  /** One empty file per app the OOM killer ended. */
  oom: '/rkt/oom',
  appExited: '/rkt/bin/rkt-app-exited',
  busybox: '/rkt/bin/busybox',
} as const;

export interface AppExit {
  app: string;
  status: number;
}

export interface AppReports {
  /** Apps the pod has started, or that have already exited. */
  started(): Set<string>;
  /** The apps that have exited, in the order they did. */
  exits(): AppExit[];
  /** Apps the kernel's OOM killer ended. */
  oomKilled(): Set<string>;
}

function names(dir: string): string[] {
  try {
    return fs.readdirSync(dir).filter((n) => !n.startsWith('.'));
  } catch {
    // not created yet, or already removed: nothing reported
    return [];
  }
}

/** The reports as the pod's init leaves them in the stage1 rootfs. */
export class RootfsAppReports implements AppReports {
  constructor(private readonly paths: PodPaths) {}

  private at(p: string): string {
    return path.join(this.paths.stage1Rootfs, p);
  }

  started(): Set<string> {
    return new Set([...names(this.at(POD_ROOT.started)), ...names(this.at(POD_ROOT.status))]);
  }

  exits(): AppExit[] {
    const statuses = readAppExitStatuses(this.paths);
    const when = (app: string): number => {
      try {
        return fs.statSync(this.paths.appStatus(app)).mtimeMs;
      } catch {
        return Infinity;
      }
    };
    return Object.entries(statuses)
      .map(([app, status]) => ({ app, status, t: when(app) }))
      .sort((a, b) => a.t - b.t)
      .map(({ app, status }) => ({ app, status }));
  }

  oomKilled(): Set<string> {
    return new Set(names(this.at(POD_ROOT.oom)));
  }
}
