import fs from 'node:fs';
import { execa } from 'execa';
import { log } from '../src/log.js';
import { PodPaths } from '../src/stage1/contract.js';
import { enableDebug, parseGcArgs, runEntrypoint } from '../src/stage1/entry.js';
import { mountsUnder } from '../src/stage1/rootfs.js';

// rkt gc for fly: before stage0 deletes the pod directory, nothing may be
// mounted below it. The run process mounts only inside the pod's private
// mount namespace, so normally there is nothing to do here; this catches
// mounts that leaked into the host namespace some other way (a pod run
// by hand without `unshare --mount`, an older stage1).

async function gc(argv: string[]): Promise<number> {
  const args = parseGcArgs(argv);
  enableDebug(args.debug);
  const dir = fs.realpathSync(new PodPaths(process.cwd()).dir);
  const points = mountsUnder(dir);
  if (points.length === 0) log().debug(`pod ${args.uuid}: nothing mounted under ${dir}`);
  // deepest first, so a parent is never busy because of its children
  for (const p of points) {
    log().debug(`unmounting ${p}`);
    const r = await execa('umount', [p], { reject: false, stdin: 'ignore' });
    if (r.exitCode === 0) continue;
    // busy (a process still has a file open there): detach now, the kernel frees it later
    const lazy = await execa('umount', ['--lazy', p], { reject: false, stdin: 'ignore' });
    if (lazy.exitCode !== 0) log().warn(`cannot unmount ${p}: ${String(lazy.stderr).trim()}`);
  }
  return 0;
}

runEntrypoint(gc);
