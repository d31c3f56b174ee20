// The pod manifest (spec/pods.md "Pod Manifest Schema"), with the later
// additions rkt's schema carried: volume mode/uid/gid/recursive, per-mount
// appVolume, hostIP/podPort on exposed ports, userAnnotations/userLabels.

import { quote } from '../errors.js';
import { isIP } from 'node:net';
import type { ExposedPort, Mount, PodManifest, RuntimeApp, RuntimeImage, Volume } from './types.js';
import {
  checkUnique,
  expectAbsolutePath,
  expectACIdentifier,
  expectACName,
  expectArray,
  expectBool,
  expectInt,
  expectNonEmptyString,
  expectObject,
  expectString,
  expectStringMap,
  fail,
  present,
  sub,
} from './check.js';
import { parseApp, parsePort } from './app.js';
import { parseIsolators } from './isolators.js';
import { expectImageId, parseAnnotations, parseLabels } from './metadata.js';
import { decodeManifestJSON, expectSemVer } from './image-manifest.js';

export type { ExposedPort, Mount, PodManifest, RuntimeApp, RuntimeImage, Volume, VolumeKind } from './types.js';

/** What an empty volume gets when the manifest leaves these out (appc schema defaults). */
export const EMPTY_VOLUME_DEFAULTS = { mode: '0755', uid: 0, gid: 0 } as const;

const OCTAL_MODE = /^[0-7]{1,5}$/;

function parseVolume(v: unknown, field: string): Volume {
  const o = expectObject(v, field);
  const name = expectACName(o.name, sub(field, 'name'));
  const kind = expectNonEmptyString(o.kind, sub(field, 'kind'));
  if (kind !== 'host' && kind !== 'empty') fail(sub(field, 'kind'), `must be "host" or "empty", not ${quote(kind)}`);
  const vol: Volume = { name, kind };
  if (kind === 'host') {
    vol.source = expectAbsolutePath(o.source, sub(field, 'source'));
    for (const k of ['mode', 'uid', 'gid'] as const) {
      if (present(o[k])) fail(sub(field, k), 'applies only to "empty" volumes; a host volume keeps its owner and mode');
    }
  } else {
    if (present(o.source) && o.source !== '') fail(sub(field, 'source'), 'applies only to "host" volumes');
  }
  if (present(o.readOnly)) vol.readOnly = expectBool(o.readOnly, sub(field, 'readOnly'));
  if (present(o.recursive)) vol.recursive = expectBool(o.recursive, sub(field, 'recursive'));
  if (kind === 'empty') {
    const mode = present(o.mode) ? expectString(o.mode, sub(field, 'mode')) : EMPTY_VOLUME_DEFAULTS.mode;
    if (!OCTAL_MODE.test(mode) || parseInt(mode, 8) > 0o7777) fail(sub(field, 'mode'), `${quote(mode)} is not an octal file mode such as 0755`);
    vol.mode = mode;
    vol.uid = present(o.uid) ? expectInt(o.uid, sub(field, 'uid'), 0, 4294967294) : EMPTY_VOLUME_DEFAULTS.uid;
    vol.gid = present(o.gid) ? expectInt(o.gid, sub(field, 'gid'), 0, 4294967294) : EMPTY_VOLUME_DEFAULTS.gid;
  }
  return vol;
}

function parseMount(v: unknown, field: string): Mount {
  const o = expectObject(v, field);
  const mount: Mount = { volume: expectACName(o.volume, sub(field, 'volume')), path: expectAbsolutePath(o.path, sub(field, 'path')) };
  if (present(o.appVolume)) mount.appVolume = parseVolume(o.appVolume, sub(field, 'appVolume'));
  return mount;
}

function parseRuntimeImage(v: unknown, field: string): RuntimeImage {
  const o = expectObject(v, field);
  const image: RuntimeImage = {
    ...(present(o.name) && { name: expectACIdentifier(o.name, sub(field, 'name')) }),
    id: expectImageId(o.id, sub(field, 'id')),
  };
  if (present(o.labels)) image.labels = parseLabels(o.labels, sub(field, 'labels'));
  return image;
}

export function parseRuntimeApp(v: unknown, field = 'runtime app'): RuntimeApp {
  const o = expectObject(v, field);
  const ra: RuntimeApp = { name: expectACName(o.name, sub(field, 'name')), image: parseRuntimeImage(o.image, sub(field, 'image')) };
  if (present(o.app)) ra.app = parseApp(o.app, sub(field, 'app'));
  if (present(o.readOnlyRootFS)) ra.readOnlyRootFS = expectBool(o.readOnlyRootFS, sub(field, 'readOnlyRootFS'));
  if (present(o.mounts)) {
    const mounts = expectArray(o.mounts, sub(field, 'mounts')).map((m, i) => parseMount(m, sub(sub(field, 'mounts'), i)));
    // Two volumes on one path: the second would silently hide the first.
    checkUnique(mounts, (m) => m.path.replace(/\/+$/, '') || '/', sub(field, 'mounts'), 'path', 'mount path');
    ra.mounts = mounts;
  }
  if (present(o.annotations)) ra.annotations = parseAnnotations(o.annotations, sub(field, 'annotations'));
  return ra;
}

function parseExposedPort(v: unknown, field: string): ExposedPort {
  const o = expectObject(v, field);
  const port: ExposedPort = { name: expectACName(o.name, sub(field, 'name')), hostPort: expectInt(o.hostPort, sub(field, 'hostPort'), 1, 65535) };
  if (present(o.hostIP)) {
    const ip = expectString(o.hostIP, sub(field, 'hostIP'));
    if (isIP(ip) === 0) fail(sub(field, 'hostIP'), `${quote(ip)} is not an IPv4 or IPv6 address`);
    port.hostIP = ip;
  }
  if (present(o.podPort)) port.podPort = parsePort(o.podPort, sub(field, 'podPort'));
  return port;
}

/** Rules that span apps: unique names, mounts naming declared volumes. */
function checkPodWide(pm: PodManifest): void {
  checkUnique(pm.apps, (a) => a.name, 'apps', 'name', 'app name');
  const volumes = new Set((pm.volumes ?? []).map((v) => v.name));
  pm.apps.forEach((app, i) => {
    app.mounts?.forEach((m, j) => {
      if (m.appVolume === undefined && !volumes.has(m.volume)) {
        fail(`apps[${i}].mounts[${j}].volume`, `no volume named ${quote(m.volume)} in the pod's volumes`);
      }
    });
  });
  // Two apps may declare the same port name (as in rkt); only forwarding such
  // a port is ambiguous, which resolvePortMappings refuses.
}

/**
 * Validate a decoded pod manifest and return a clean copy (empty volumes get
 * their default mode and owner). Throws ManifestError naming the field.
 */
export function validatePodManifest(value: unknown): PodManifest {
  const o = expectObject(value, 'manifest');
  const kind = expectNonEmptyString(o.acKind, 'acKind');
  if (kind !== 'PodManifest') fail('acKind', `must be "PodManifest", not ${quote(kind)}`);
  // rkt writes its own version here, not the spec's, so any semantic version goes.
  const acVersion = expectSemVer(o.acVersion, 'acVersion');
  const pm: PodManifest = {
    acVersion,
    acKind: 'PodManifest',
    apps: expectArray(o.apps, 'apps').map((a, i) => parseRuntimeApp(a, sub('apps', i))),
  };
  if (present(o.volumes)) {
    const volumes = expectArray(o.volumes, 'volumes').map((v, i) => parseVolume(v, sub('volumes', i)));
    checkUnique(volumes, (v) => v.name, 'volumes', 'name', 'volume');
    pm.volumes = volumes;
  }
  if (present(o.isolators)) pm.isolators = parseIsolators(o.isolators, 'isolators');
  if (present(o.annotations)) pm.annotations = parseAnnotations(o.annotations, 'annotations');
  if (present(o.ports)) pm.ports = expectArray(o.ports, 'ports').map((p, i) => parseExposedPort(p, sub('ports', i)));
  if (present(o.userAnnotations)) pm.userAnnotations = expectStringMap(o.userAnnotations, 'userAnnotations');
  if (present(o.userLabels)) pm.userLabels = expectStringMap(o.userLabels, 'userLabels');
  checkPodWide(pm);
  return pm;
}

/** Parse and fully validate a pod manifest; throws ManifestError naming the field and rule. */
export function parsePodManifest(data: Buffer | string): PodManifest {
  return validatePodManifest(decodeManifestJSON(data));
}

/** JSON text of a pod manifest, checked as strictly as a parsed one. */
export function serializePodManifest(m: PodManifest): string {
  return JSON.stringify(validatePodManifest(m));
}

/** The app of a pod by name. */
export function podApp(pm: PodManifest, name: string): RuntimeApp | undefined {
  return pm.apps.find((a) => a.name === name);
}
