// Types of the appc schema (spec/aci.md, spec/pods.md, spec/types.md), as
// they appear in JSON. The parse functions beside them are the only way a
// value of these types should come into being from outside data: they check
// every rule and return fresh objects holding only the fields named here.

export interface Label {
  name: string;
  value: string;
}

export interface Annotation {
  name: string;
  value: string;
}

export interface EnvironmentVariable {
  name: string;
  value: string;
}

/** `value` is arbitrary JSON; isolators.ts knows the shape of each well-known name. */
export interface Isolator {
  name: string;
  value: unknown;
}

export type EventHandlerName = 'pre-start' | 'post-stop';

export interface EventHandler {
  name: EventHandlerName;
  exec: string[];
}

export interface MountPoint {
  name: string;
  path: string;
  readOnly?: boolean;
}

export interface Port {
  name: string;
  protocol: string;
  port: number;
  /** Size of the range starting at `port`; absent means 1. */
  count?: number;
  socketActivated?: boolean;
}

export interface App {
  /**
   * Absent or empty only in images that expect the executor to be told what
   * to run (docker2aci writes such images for Docker images without CMD).
   */
  exec?: string[];
  user: string;
  group: string;
  supplementaryGIDs?: number[];
  eventHandlers?: EventHandler[];
  workingDirectory?: string;
  environment?: EnvironmentVariable[];
  isolators?: Isolator[];
  mountPoints?: MountPoint[];
  ports?: Port[];
  /** Free-form key/values for the end user (appc 0.8.8), never interpreted. */
  userAnnotations?: Record<string, string>;
  userLabels?: Record<string, string>;
}

export interface Dependency {
  imageName: string;
  imageID?: string;
  labels?: Label[];
  size?: number;
}

export interface ImageManifest {
  acKind: 'ImageManifest';
  acVersion: string;
  name: string;
  labels?: Label[];
  app?: App;
  dependencies?: Dependency[];
  pathWhitelist?: string[];
  annotations?: Annotation[];
}

// ---- pod manifest ----

export interface RuntimeImage {
  name?: string;
  id: string;
  labels?: Label[];
}

export type VolumeKind = 'host' | 'empty';

export interface Volume {
  name: string;
  kind: VolumeKind;
  /** host volumes only: absolute path on the host. */
  source?: string;
  readOnly?: boolean;
  recursive?: boolean;
  /** empty volumes only; the parser fills in the spec defaults (0755, 0, 0). */
  mode?: string;
  uid?: number;
  gid?: number;
}

export interface Mount {
  volume: string;
  path: string;
  /** A volume private to this mount, instead of the pod-level volume of the same name. */
  appVolume?: Volume;
}

export interface RuntimeApp {
  name: string;
  image: RuntimeImage;
  /** Replaces the image manifest's app section when present. */
  app?: App;
  readOnlyRootFS?: boolean;
  mounts?: Mount[];
  annotations?: Annotation[];
}

export interface ExposedPort {
  name: string;
  hostPort: number;
  hostIP?: string;
  /** The app port itself, for ports no image manifest declares. */
  podPort?: Port;
}

export interface PodManifest {
  acVersion: string;
  acKind: 'PodManifest';
  apps: RuntimeApp[];
  volumes?: Volume[];
  isolators?: Isolator[];
  annotations?: Annotation[];
  ports?: ExposedPort[];
  userAnnotations?: Record<string, string>;
  userLabels?: Record<string, string>;
}
