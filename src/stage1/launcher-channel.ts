// The launcher's channel (src/stage1/hand-over.ts), kept in a module of its
// own that imports nothing: every rkt command reads it at start-up.

/** Set by the launcher: its pid and its descriptors of the plan pipe's write end and the answer pipe's read end. */
export const LAUNCHER_ENV = 'RKT_LAUNCHER';

export interface LauncherChannel {
  pid: number;
  plan: number;
  answer: number;
}

let channel: LauncherChannel | undefined;

/**
 * Take the launcher's channel out of the environment, once, at start-up:
 * nothing this process starts should see it.
 */
export function takeLauncherChannel(env: NodeJS.ProcessEnv = process.env): void {
  const m = /^(\d+):(\d+):(\d+)$/.exec(env[LAUNCHER_ENV] ?? '');
  delete env[LAUNCHER_ENV];
  if (m !== null) channel = { pid: Number(m[1]), plan: Number(m[2]), answer: Number(m[3]) };
}

/** The channel, for one use: a second hand-over has nobody to take it. */
export function useLauncherChannel(): LauncherChannel | undefined {
  const c = channel;
  channel = undefined;
  return c;
}
