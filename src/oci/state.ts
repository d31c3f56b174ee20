import fs from 'node:fs';
import path from 'node:path';
import { isErrno } from '../errors.js';
import { writeFileAtomic } from '../util/atomic.js';
import { FileLock } from '../util/lock.js';
import type { ProcessIdentity, Role } from './config.js';
import { OciError } from './errors.js';

// Each container's record under the --root the shim passes, one directory
// per container id: state.json (rewritten whole, atomically) and a lock
// file taken by every command that changes it. Everything else (the pod,
// its apps) is found from the record, so that state and delete work after
// containerd or the shim restarted.

export const STATE_VERSION = 1;
export const DEFAULT_ROOT = '/run/rkt-oci';

export type Status = 'creating' | 'created' | 'running' | 'stopped';

export interface ContainerState {
  version: number;
  id: string;
  bundle: string;
  role: Role;
  flavor: string;
  podUuid: string;
  /** container and standalone: the app's name in the pod. */
  app?: string;
  sandboxId?: string;
  /** What the last command left; "stopped" is also derived from the pid having gone. */
  status: Status;
  /** The process the shim waits for (the stand-in, or the sandbox's rkt app sandbox). */
  pid: number;
  /** Its start time (field 22 of /proc/PID/stat), so that a reused pid is not taken for it. */
  pidStart: string;
  created: string;
  annotations: Record<string, string>;
  identity: ProcessIdentity;
  hostname?: string;
  /** standalone: the rkt app sandbox process running its pod. */
  sandboxPid?: number;
  sandboxStart?: string;
}

/** runc's rule for container ids. */
export function checkId(id: string): void {
  if (!/^[\w+\-.]+$/.test(id) || id === '.' || id === '..' || id.length > 1024) throw new OciError(`invalid container id "${id}": use letters, digits, _ + - .`);
}

export class StateDir {
  constructor(readonly root: string) {}

  dir(id: string): string {
    checkId(id);
    return path.join(this.root, id);
  }

  file(id: string): string {
    return path.join(this.dir(id), 'state.json');
  }

  /** Make the container's directory, or fail if the id is taken. Returns its lock, held. */
  claim(id: string): FileLock {
    fs.mkdirSync(this.root, { recursive: true, mode: 0o711 });
    try {
      fs.mkdirSync(this.dir(id), { mode: 0o700 });
    } catch (err) {
      if (isErrno(err, 'EEXIST')) throw new OciError(`container with id ${id} already exists`);
      throw err;
    }
    return FileLock.acquire(path.join(this.dir(id), 'lock'), 'exclusive', { what: `container ${id}` });
  }

  /** Lock an existing container's record (waits for another command on it to finish). */
  lock(id: string): FileLock {
    const lockFile = path.join(this.dir(id), 'lock');
    try {
      return FileLock.acquire(lockFile, 'exclusive', { create: false, what: `container ${id}` });
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw notFound(id);
      throw err;
    }
  }

  read(id: string): ContainerState {
    let text: string;
    try {
      text = fs.readFileSync(this.file(id), 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) throw notFound(id);
      throw err;
    }
    let st: ContainerState;
    try {
      st = JSON.parse(text) as ContainerState;
    } catch (err) {
      throw new OciError(`the state of container ${id} (${this.file(id)}) is damaged: ${(err as Error).message}; delete it with --force`);
    }
    if (st.version !== STATE_VERSION || st.id !== id) throw new OciError(`the state of container ${id} (${this.file(id)}) is not this runtime's (version ${st.version})`);
    return st;
  }

  /** undefined for an id with no record (or one half-created, whose directory exists without state.json). */
  tryRead(id: string): ContainerState | undefined {
    try {
      return this.read(id);
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  }

  write(st: ContainerState): void {
    writeFileAtomic(this.file(st.id), JSON.stringify(st, null, 1) + '\n', 0o600);
  }

  remove(id: string): void {
    fs.rmSync(this.dir(id), { recursive: true, force: true });
  }

  ids(): string[] {
    try {
      return fs.readdirSync(this.root).filter((n) => {
        try {
          checkId(n);
          return fs.statSync(path.join(this.root, n)).isDirectory();
        } catch {
          return false;
        }
      });
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return [];
      throw err;
    }
  }
}

export class NotFoundError extends OciError {}

/** containerd's shim recognises "does not exist" (runc's words) as already deleted. */
export function notFound(id: string): NotFoundError {
  return new NotFoundError(`container ${id} does not exist`);
}

/** Start time of a process, or undefined when it is gone (or a zombie nobody reaped: it is over). */
export function processStart(pid: number): string | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
  return fields[19];
}

export function isAlive(st: Pick<ContainerState, 'pid' | 'pidStart'>): boolean {
  return st.pid > 0 && processStart(st.pid) === st.pidStart;
}

/** The status runc would report: a container whose process has ended is stopped, whatever the record says. */
export function currentStatus(st: ContainerState): Status {
  if (st.status === 'stopped' || !isAlive(st)) return 'stopped';
  return st.status;
}
