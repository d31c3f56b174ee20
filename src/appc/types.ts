// Types of the appc schema (spec/aci.md, spec/pods.md, spec/types.md), as
// they appear in JSON. Validation lives in the parse functions beside them.

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

export interface Isolator {
  name: string;
  value: unknown;
}

export interface EventHandler {
  name: 'pre-start' | 'post-stop';
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
  count?: number;
  socketActivated?: boolean;
}

export interface App {
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
  annotations?: Annotation[];
  dependencies?: Dependency[];
  pathWhitelist?: string[];
}
