import { RktError } from '../errors.js';
import { log } from '../log.js';
import { ISOLATOR } from '../appc/isolators.js';
import type { Isolator } from '../appc/types.js';
import type { AppSpec } from './app-spec.js';

// Which isolators each flavor applies. spec/ace.md lets an executor ignore
// isolators it does not understand as long as it tells the user; a
// well-known isolator a flavor cannot apply is refused instead, naming it,
// so that a pod never runs believing it is bounded when it is not. An
// isolator of a name this implementation does not know at all is ignored
// with a warning that names it. docs/appc-conformance.md has the table.

export class IsolatorUnsupportedError extends RktError {}

const KNOWN: ReadonlySet<string> = new Set(Object.values(ISOLATOR));

export interface IsolatorSupport {
  flavor: string;
  /** Isolators the flavor applies to an app. */
  app: ReadonlySet<string>;
  /** Isolators the flavor applies at pod level (they bound the apps'). */
  pod: ReadonlySet<string>;
  /** What to suggest when one is refused. */
  hint: string;
}

/** The resource limits every flavor whose pod boots systemd applies at app and pod level, and the Linux settings of its units. */
const UNIT_ISOLATORS = [ISOLATOR.cpu, ISOLATOR.cpuShares, ISOLATOR.memory, ISOLATOR.capabilitiesRetain, ISOLATOR.capabilitiesRemove, ISOLATOR.noNewPrivileges, ISOLATOR.oomScoreAdj];

export const KVM_ISOLATORS: IsolatorSupport = {
  flavor: 'kvm',
  app: new Set(UNIT_ISOLATORS),
  pod: new Set([ISOLATOR.cpu, ISOLATOR.memory]),
  hint: 'remove it, or run the pod with --stage1-name=nspawn if that flavor applies it',
};

export const NSPAWN_ISOLATORS: IsolatorSupport = {
  flavor: 'nspawn',
  app: new Set([...UNIT_ISOLATORS, ISOLATOR.seccompRetain, ISOLATOR.seccompRemove]),
  pod: new Set([ISOLATOR.cpu, ISOLATOR.memory]),
  hint: 'remove it from the image or the run flags',
};

export const FLY_ISOLATORS: IsolatorSupport = {
  flavor: 'fly',
  app: new Set([ISOLATOR.noNewPrivileges]),
  pod: new Set(),
  hint: 'fly isolates nothing: remove it, or use --stage1-name=nspawn or kvm',
};

function check(list: readonly Isolator[], supported: ReadonlySet<string>, where: string, s: IsolatorSupport, relaxed: ReadonlySet<string>): void {
  for (const iso of list) {
    if (relaxed.has(iso.name)) continue;
    if (!KNOWN.has(iso.name)) {
      log().warn(`${where}: isolator ${iso.name} is unknown to this rkt and is not applied`);
      continue;
    }
    if (!supported.has(iso.name)) throw new IsolatorUnsupportedError(`${where}: isolator ${iso.name} is not supported by the ${s.flavor} stage1; ${s.hint}`);
  }
}

/**
 * Refuse a pod whose apps or pod ask for a well-known isolator the flavor
 * cannot apply; warn about unknown ones. `relaxed` names isolators the user
 * switched off with --insecure-options (seccomp), which are then not applied.
 */
export function checkIsolators(specs: readonly AppSpec[], s: IsolatorSupport, relaxed: ReadonlySet<string> = new Set()): void {
  const pod = specs[0]?.isolators.pod ?? [];
  check(pod, s.pod, 'the pod', s, relaxed);
  for (const spec of specs) check(spec.isolators.app, s.app, `app ${spec.name}`, s, relaxed);
}

/** The seccomp isolators, which --insecure-options=seccomp switches off. */
export const SECCOMP_ISOLATORS: ReadonlySet<string> = new Set([ISOLATOR.seccompRetain, ISOLATOR.seccompRemove]);
