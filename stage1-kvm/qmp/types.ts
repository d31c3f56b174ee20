// Wire types of QMP (qemu docs/interop/qmp-spec.rst) and of the few commands
// and events the kvm stage1 relies on (qapi/run-state.json, qapi/control.json).
// Enumerations are open-ended (`| (string & {})`): newer qemu may add values and
// the spec tells clients to accept what they do not know.

type Open<T extends string> = T | (string & {});

export interface QmpVersionTriple {
  major: number;
  minor: number;
  micro: number;
}

export interface QmpVersionInfo {
  qemu: QmpVersionTriple;
  /** Distribution build string, e.g. "Debian 1:7.2+dfsg-7". */
  package: string;
}

/** The first message qemu sends on a fresh connection. */
export interface QmpGreeting {
  version: QmpVersionInfo;
  /** Protocol extensions qemu offers, e.g. "oob". We enable none of them. */
  capabilities: string[];
}

export interface QmpTimestamp {
  /** Seconds since the epoch, or -1 when qemu could not read the clock. */
  seconds: number;
  microseconds: number;
}

export type RunState = Open<
  | 'debug'
  | 'inmigrate'
  | 'internal-error'
  | 'io-error'
  | 'paused'
  | 'postmigrate'
  | 'prelaunch'
  | 'finish-migrate'
  | 'restore-vm'
  | 'running'
  | 'save-vm'
  | 'shutdown'
  | 'suspended'
  | 'watchdog'
  | 'guest-panicked'
  | 'colo'
>;

/** Result of `query-status`. */
export interface QmpStatus {
  /** True when all vCPUs are runnable. */
  running: boolean;
  status: RunState;
}

export type ShutdownCause = Open<
  | 'none'
  | 'host-error'
  | 'host-qmp-quit'
  | 'host-qmp-system-reset'
  | 'host-signal'
  | 'host-ui'
  | 'guest-shutdown'
  | 'guest-reset'
  | 'guest-panic'
  | 'subsystem-reset'
>;

// Event data are type aliases, not interfaces, so that they stay assignable to
// the loose `Record<string, unknown>` of QmpEvent.
export type ShutdownEventData = {
  /** True when the guest asked (ACPI poweroff, reboot turned into shutdown...). */
  guest: boolean;
  reason: ShutdownCause;
};

export type ResetEventData = ShutdownEventData;

export type GuestPanicAction = Open<'pause' | 'poweroff' | 'run'>;

export type GuestPanickedEventData = {
  action: GuestPanicAction;
  /** Hypervisor-specific details (hyper-v, s390); absent on most x86 guests. */
  info?: { type: string } & Record<string, unknown>;
};

/** Data carried by each event this client knows; `undefined` means none. */
export interface QmpEventDataMap {
  SHUTDOWN: ShutdownEventData;
  POWERDOWN: undefined;
  RESET: ResetEventData;
  STOP: undefined;
  RESUME: undefined;
  GUEST_PANICKED: GuestPanickedEventData;
}

export type KnownQmpEventName = keyof QmpEventDataMap;

export interface QmpEventMessage<N extends string, D> {
  event: N;
  data: D;
  timestamp: QmpTimestamp;
}

/** The typed event for a known name, a loosely typed one for any other name. */
export type QmpEventOf<N extends string> = N extends KnownQmpEventName
  ? QmpEventMessage<N, QmpEventDataMap[N]>
  : QmpEventMessage<N, Record<string, unknown> | undefined>;

/** Any event qemu may send. */
export type QmpEvent = QmpEventMessage<string, Record<string, unknown> | undefined>;
