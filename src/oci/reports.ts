import path from 'node:path';
import { LINUX_CAPABILITIES } from '../appc/capabilities.js';
import type { Ctx } from './commands.js';
import { OciError } from './errors.js';
import { currentStatus, isAlive } from './state.js';

// What the runtime reports without changing anything, in runc's shapes:
// `state`, `ps` and `features`.

const OCI_VERSION = '1.0.2';

export function stateJson(ctx: Pick<Ctx, 'states'>, id: string): string {
  const st = ctx.states.read(id);
  const status = currentStatus(st);
  const out = {
    ociVersion: OCI_VERSION,
    id: st.id,
    pid: status === 'stopped' ? 0 : st.pid,
    status,
    bundle: st.bundle,
    rootfs: path.join(st.bundle, 'rootfs'),
    created: st.created,
    owner: '',
    annotations: st.annotations,
  };
  return JSON.stringify(out, null, 2) + '\n';
}

/** runc ps: the pid the shim knows for the container (the sandbox's rkt app sandbox, or the app's stand-in), while it lives. */
export function ps(ctx: Ctx, id: string, format: string): string {
  const st = ctx.states.read(id);
  const pids = isAlive(st) ? [st.pid] : [];
  if (format === 'json') return JSON.stringify(pids) + '\n';
  if (format === 'table') return ['PID', ...pids.map(String)].join('\n') + '\n';
  throw new OciError(`--format ${format}: table or json`);
}

export function features(): string {
  return (
    JSON.stringify(
      {
        ociVersionMin: '1.0.0',
        ociVersionMax: '1.1.0',
        hooks: [],
        mountOptions: ['bind', 'rbind', 'ro', 'rw', 'private', 'rprivate', 'slave', 'rslave', 'shared', 'rshared', 'unbindable', 'runbindable'],
        linux: {
          namespaces: ['cgroup', 'ipc', 'mount', 'network', 'pid', 'uts'],
          capabilities: [...LINUX_CAPABILITIES],
          cgroup: { v1: true, v2: true, systemd: false, systemdUser: false },
          seccomp: { enabled: false },
          apparmor: { enabled: false },
          selinux: { enabled: false },
        },
        annotations: { 'io.github.rkt-ts.runtime': 'rkt' },
      },
      null,
      4,
    ) + '\n'
  );
}
