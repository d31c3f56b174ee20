import fs from 'node:fs';
import { log } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { enableDebug, parseGcArgs } from '../src/stage1-common/entry.js';
import { unmountAllUnder } from '../src/util/mounts.js';

// rkt gc for fly: before stage0 deletes the pod directory, nothing may be
// mounted below it. The run process mounts only inside the pod's private
// mount namespace, so normally there is nothing to do here; this catches
// mounts that leaked into the host namespace some other way (a pod run
// by hand without `unshare --mount`, an older stage1).

export async function gc(argv: string[]): Promise<number> {
  const args = parseGcArgs(argv);
  enableDebug(args.debug);
  const dir = fs.realpathSync(new PodPaths(process.cwd()).dir);
  const left = await unmountAllUnder(dir);
  if (left.length > 0) log().warn(`pod ${args.uuid}: still mounted: ${left.join(', ')}`);
  return 0;
}

