import path from 'node:path';

// rkt's pod directories: a pod's state is the directory it sits in, plus
// whether its lock is held.
export const POD_STATE_DIRS = ['embryo', 'prepare', 'prepared', 'run', 'exited-garbage', 'garbage'] as const;
export type PodStateDir = (typeof POD_STATE_DIRS)[number];

export function podsDir(dataDir: string): string {
  return path.join(dataDir, 'pods');
}

export function podDir(dataDir: string, state: PodStateDir, uuid: string): string {
  return path.join(dataDir, 'pods', state, uuid);
}
