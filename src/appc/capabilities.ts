// Linux capability names, for the os/linux/capabilities-* isolators.

/** Every Linux capability, indexed by its number (CAP_CHOWN is bit 0). */
export const LINUX_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_DAC_READ_SEARCH',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETPCAP',
  'CAP_LINUX_IMMUTABLE',
  'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST',
  'CAP_NET_ADMIN',
  'CAP_NET_RAW',
  'CAP_IPC_LOCK',
  'CAP_IPC_OWNER',
  'CAP_SYS_MODULE',
  'CAP_SYS_RAWIO',
  'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT',
  'CAP_SYS_NICE',
  'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG',
  'CAP_MKNOD',
  'CAP_LEASE',
  'CAP_AUDIT_WRITE',
  'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE',
  'CAP_MAC_ADMIN',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ',
  'CAP_PERFMON',
  'CAP_BPF',
  'CAP_CHECKPOINT_RESTORE',
];

/**
 * The bounding set an app gets when it has no capability isolator
 * (spec/ace.md, os/linux/capabilities-remove-set).
 */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_AUDIT_WRITE',
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_KILL',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_NET_BIND_SERVICE',
  'CAP_SETUID',
  'CAP_SETGID',
  'CAP_SETPCAP',
  'CAP_SETFCAP',
  'CAP_SYS_CHROOT',
];

const KNOWN = new Set(LINUX_CAPABILITIES);

/**
 * The canonical name of a capability, or undefined if there is no such
 * capability. rkt compared names case-insensitively and with or without the
 * CAP_ prefix ("net_admin" works), so images written for it may do the same.
 */
export function normalizeCapability(name: string): string | undefined {
  const upper = name.toUpperCase();
  const canonical = upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
  return KNOWN.has(canonical) ? canonical : undefined;
}

/** The capability's bit number, or undefined for an unknown name. */
export function capabilityNumber(name: string): number | undefined {
  const canonical = normalizeCapability(name);
  return canonical === undefined ? undefined : LINUX_CAPABILITIES.indexOf(canonical);
}
