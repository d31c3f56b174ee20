import type { Options, Result } from 'execa';

/**
 * execa, loaded when the first command runs. A module that only sometimes
 * runs commands (the pod network's: rkt list and rkt status read its state
 * and run nothing) then does not make every command that imports it load
 * execa's large module graph at start-up.
 */
export async function execa<O extends Options>(file: string, args: readonly string[], options?: O): Promise<Result<O>> {
  const m = await import('execa');
  return (await m.execa(file, args, options)) as unknown as Result<O>;
}
