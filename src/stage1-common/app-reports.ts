// What a booted pod's init tells the host about its apps: each app's unit
// reports it started once systemd has executed it, and the shared exit hook
// (rkt-app-exited) reports its exit status and whether the OOM killer ended
// it. They travel over the report channel (report-channel.ts), never
// through files the host would read in the pod's root. The paths below are
// the pod's own bookkeeping, inside its root, the same in every flavor
// whose pod boots systemd (the nspawn image is built on the kvm guest
// image).

/** Paths inside the stage1 rootfs, as the pod's init sees them. */
export const POD_ROOT = {
  units: '/etc/systemd/system',
  podTarget: 'rkt-pod.target',
  /** The apps' names, one per line, written by the host before boot: the hook's list of whom to wait for. */
  apps: '/rkt/apps',
  status: '/rkt/status',
  /** Exits of apps with a post-stop handler, noted by their hook until the handler has run (rkt-app-exited --defer). */
  deferred: '/rkt/deferred',
  /** Writes one report line to the host (rkt-report WORDS...): each flavor has its own. */
  report: '/rkt/bin/rkt-report',
  /** nspawn's report channel: a FIFO the host opens before the container starts. */
  reportFifo: '/rkt/report',
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
  /** Apps whose pre-start event handler is running: the pod is up, and their start may take long. */
  preStarting?(): Set<string>;
  /** Apps that never ran because their pre-start event handler failed. */
  preStartFailed?(): Set<string>;
}
