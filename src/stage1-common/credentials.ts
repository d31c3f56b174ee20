import type { AppSpec } from './app-spec.js';

// The users and groups a pod's own systemd must know to start the apps'
// units (kvm's guest and nspawn's container both boot one).

/** Entries for an /etc/passwd or /etc/group file, one line each. */
export interface CredentialEntries {
  passwd: string[];
  group: string[];
}

function idsIn(file: string): Set<number> {
  const ids = new Set<number>();
  for (const line of file.split('\n')) {
    const f = line.split(':');
    if (f.length >= 3 && /^\d+$/.test(f[2]!)) ids.add(Number(f[2]));
  }
  return ids;
}

/**
 * Lines to add to the passwd and group files of the root systemd runs in,
 * so that it can resolve every app's User=, Group= and SupplementaryGroups=.
 * systemd 252 refuses a numeric id its NSS does not know ("Failed to
 * determine user credentials"), and apps run with the ids of their own
 * image, which the flavor's root knows nothing of. The names (rkt-u<uid>,
 * rkt-g<gid>) are only there to be valid; the app never sees them.
 */
export function credentialEntries(specs: readonly Pick<AppSpec, 'uid' | 'gid' | 'supplementaryGids'>[], passwd: string, group: string): CredentialEntries {
  const users = idsIn(passwd);
  const groups = idsIn(group);
  const out: CredentialEntries = { passwd: [], group: [] };
  for (const s of specs) {
    if (!users.has(s.uid)) {
      users.add(s.uid);
      out.passwd.push(`rkt-u${s.uid}:x:${s.uid}:${s.gid}:rkt app user:/:/nonexistent`);
    }
    for (const gid of [s.gid, ...s.supplementaryGids]) {
      if (groups.has(gid)) continue;
      groups.add(gid);
      out.group.push(`rkt-g${gid}:x:${gid}:`);
    }
  }
  return out;
}
