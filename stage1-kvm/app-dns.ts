import fs from 'node:fs';
import path from 'node:path';
import { isErrno } from '../src/errors.js';
import { log } from '../src/log.js';
import type { AppSpec } from '../src/stage1-common/app-spec.js';
import { ensureDirInRoot } from '../src/stage1-common/rootfs.js';
import { mountsUnder } from '../src/util/mounts.js';
import type { PodDnsFiles } from '../src/net/dns.js';

// /etc/resolv.conf and /etc/hosts for a kvm pod's apps. The network library
// decides what they hold (--dns*, --hosts-entry, the CNI result's DNS, the
// pod's hostname) and writes them under <pod>/netinfo/; container flavors
// bind-mount them, but an app's rootfs reaches the guest through the share,
// where a host bind mount on a file would be one more submount to carry.
// So they are copied into the app's writable overlay instead, replacing the
// image's (the overlay's upper layer takes the change, the image stays
// untouched). A volume the user mounted on the file, or on /etc, wins.

/** Is `p` (a host path) on a mount inside the rootfs (a volume), rather than on the rootfs itself? */
function onVolume(rootfs: string, p: string): boolean {
  return mountsUnder(rootfs)
    .filter((m) => m !== rootfs)
    .some((m) => p === m || p.startsWith(`${m}/`));
}

function replaceEtcFile(spec: AppSpec, name: string, content: Buffer): void {
  const etc = ensureDirInRoot(spec.rootfs, '/etc');
  const file = path.join(etc, name);
  if (onVolume(spec.rootfs, file)) {
    log().debug(`app ${spec.name}: /etc/${name} is on a volume; leaving it as the volume has it`);
    return;
  }
  try {
    // a symlink (to /run/..., say) is replaced, never followed: it could point anywhere
    const st = fs.lstatSync(file);
    if (st.isDirectory()) {
      log().warn(`app ${spec.name}: /etc/${name} is a directory in its image; not replacing it`);
      return;
    }
    fs.rmSync(file, { force: true });
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  fs.writeFileSync(file, content, { flag: 'wx', mode: 0o644 });
}

/** Copy the pod's generated resolv.conf and hosts (those that replace the image's) into the app's rootfs. */
export function installDnsFiles(spec: AppSpec, files: PodDnsFiles): void {
  for (const [name, plan] of [
    ['resolv.conf', files.resolvConf],
    ['hosts', files.hosts],
  ] as const) {
    if (plan.path === undefined) continue;
    replaceEtcFile(spec, name, fs.readFileSync(plan.path));
    log().debug(`app ${spec.name}: /etc/${name} from ${plan.source}`);
  }
}
