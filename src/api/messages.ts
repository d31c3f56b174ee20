// The v1alpha messages as this service builds and reads them (field names as
// in api/v1alpha/api.proto; int64 as decimal strings, enums by name).

export interface KeyValue {
  Key: string;
  value: string;
}

export type PodStateName =
  | 'POD_STATE_UNDEFINED'
  | 'POD_STATE_EMBRYO'
  | 'POD_STATE_PREPARING'
  | 'POD_STATE_PREPARED'
  | 'POD_STATE_RUNNING'
  | 'POD_STATE_ABORTED_PREPARE'
  | 'POD_STATE_EXITED'
  | 'POD_STATE_DELETING'
  | 'POD_STATE_GARBAGE';

export type AppStateName = 'APP_STATE_UNDEFINED' | 'APP_STATE_RUNNING' | 'APP_STATE_EXITED';

export type EventTypeName =
  | 'EVENT_TYPE_UNDEFINED'
  | 'EVENT_TYPE_POD_PREPARED'
  | 'EVENT_TYPE_POD_PREPARE_ABORTED'
  | 'EVENT_TYPE_POD_STARTED'
  | 'EVENT_TYPE_POD_EXITED'
  | 'EVENT_TYPE_POD_GARBAGE_COLLECTED'
  | 'EVENT_TYPE_APP_STARTED'
  | 'EVENT_TYPE_APP_EXITED'
  | 'EVENT_TYPE_IMAGE_IMPORTED'
  | 'EVENT_TYPE_IMAGE_REMOVED';

export interface ImageMsg {
  base_format: { type: 'IMAGE_TYPE_APPC'; version: string };
  id: string;
  name: string;
  version: string;
  import_timestamp: string;
  manifest: Buffer;
  size: string;
  annotations: KeyValue[];
  labels: KeyValue[];
}

export interface AppMsg {
  name: string;
  image: Partial<ImageMsg> & { id: string };
  state: AppStateName;
  exit_code: number;
  annotations: KeyValue[];
}

export interface PodMsg {
  id: string;
  pid: number;
  state: PodStateName;
  apps: AppMsg[];
  networks: { name: string; ipv4: string; ipv6: string }[];
  manifest: Buffer;
  annotations: KeyValue[];
  cgroup: string;
  created_at: string;
  started_at: string;
  gc_marked_at: string;
}

export interface PodFilter {
  ids: string[];
  states: PodStateName[];
  app_names: string[];
  image_ids: string[];
  network_names: string[];
  annotations: KeyValue[];
  cgroups: string[];
  pod_sub_cgroups: string[];
}

export interface ImageFilter {
  ids: string[];
  prefixes: string[];
  base_names: string[];
  keywords: string[];
  labels: KeyValue[];
  imported_after: string;
  imported_before: string;
  annotations: KeyValue[];
  full_names: string[];
}

export interface EventMsg {
  type: EventTypeName;
  id: string;
  from: string;
  time: string;
  data: KeyValue[];
}

export interface EventFilter {
  types: EventTypeName[];
  ids: string[];
  names: string[];
  since_time: string;
  until_time: string;
}

export interface GetLogsRequest {
  pod_id: string;
  app_name: string;
  lines: number;
  follow: boolean;
  since_time: string;
  until_time: string;
}

/** Nanoseconds since the epoch, exactly, as the decimal string of an int64. */
export function nanosString(d: Date | undefined): string {
  return d === undefined ? '0' : (BigInt(d.getTime()) * 1_000_000n).toString();
}

/** A request's int64 (a decimal string from the loader) as a number of seconds; 0 when unset. */
export function int64(v: string | number | undefined, field: string): number {
  if (v === undefined || v === '') return 0;
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new RangeError(`${field} ${String(v)} is out of range`);
  return n;
}
