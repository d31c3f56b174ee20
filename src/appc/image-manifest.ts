// The image manifest (spec/aci.md "Image Manifest Schema").
//
// Fields the spec does not define are accepted and dropped, so manifests
// from newer tools still load; everything the spec defines is checked.

import { ManifestError, quote } from '../errors.js';
import type { Dependency, ImageManifest } from './types.js';
import {
  checkUnique,
  expectAbsolutePath,
  expectACIdentifier,
  expectArray,
  expectInt,
  expectNonEmptyString,
  expectObject,
  fail,
  present,
  sub,
} from './check.js';
import { parseApp } from './app.js';
import { expectImageId, parseAnnotations, parseLabels } from './metadata.js';

// SemVer 2.0.0: MAJOR.MINOR.PATCH, optional -prerelease and +build.
const NUM = '(?:0|[1-9]\\d*)';
const PRE_ID = '(?:0|[1-9]\\d*|\\d*[A-Za-z-][0-9A-Za-z-]*)';
const SEMVER = new RegExp(`^${NUM}\\.${NUM}\\.${NUM}(?:-${PRE_ID}(?:\\.${PRE_ID})*)?(?:\\+[0-9A-Za-z-]+(?:\\.[0-9A-Za-z-]+)*)?$`);

export function isSemVer(s: string): boolean {
  return SEMVER.test(s);
}

export function expectSemVer(v: unknown, field: string): string {
  const s = expectNonEmptyString(v, field);
  if (!isSemVer(s)) fail(field, `${quote(s)} is not a semantic version such as 0.8.11`);
  return s;
}

/** Decode JSON text into an object, or say why it is not one. */
export function decodeManifestJSON(data: Buffer | string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
  } catch (err) {
    throw new ManifestError('manifest', `is not valid JSON (${(err as Error).message})`);
  }
  return expectObject(value, 'manifest');
}

function parseDependency(v: unknown, field: string): Dependency {
  const o = expectObject(v, field);
  const dep: Dependency = { imageName: expectACIdentifier(o.imageName, sub(field, 'imageName')) };
  if (present(o.imageID)) dep.imageID = expectImageId(o.imageID, sub(field, 'imageID'));
  if (present(o.labels)) dep.labels = parseLabels(o.labels, sub(field, 'labels'));
  if (present(o.size)) dep.size = expectInt(o.size, sub(field, 'size'), 0);
  return dep;
}

/**
 * Validate a decoded image manifest and return a clean copy holding only the
 * fields of the schema. Throws ManifestError naming the field and the rule.
 */
export function validateImageManifest(value: unknown): ImageManifest {
  const o = expectObject(value, 'manifest');
  const kind = expectNonEmptyString(o.acKind, 'acKind');
  if (kind !== 'ImageManifest') fail('acKind', `must be "ImageManifest", not ${quote(kind)}`);
  const m: ImageManifest = {
    acKind: 'ImageManifest',
    acVersion: expectSemVer(o.acVersion, 'acVersion'),
    name: expectACIdentifier(o.name, 'name'),
  };
  if (present(o.labels)) m.labels = parseLabels(o.labels, 'labels');
  if (present(o.app)) m.app = parseApp(o.app, 'app');
  if (present(o.dependencies)) m.dependencies = expectArray(o.dependencies, 'dependencies').map((d, i) => parseDependency(d, sub('dependencies', i)));
  if (present(o.pathWhitelist)) {
    const paths = expectArray(o.pathWhitelist, 'pathWhitelist').map((p, i) => expectAbsolutePath(p, sub('pathWhitelist', i)));
    checkUnique(paths, (p) => p, 'pathWhitelist', '', 'path');
    m.pathWhitelist = paths;
  }
  if (present(o.annotations)) m.annotations = parseAnnotations(o.annotations, 'annotations');
  return m;
}

/** Parse and fully validate an image manifest; throws ManifestError naming the field and rule. */
export function parseImageManifest(data: Buffer | string): ImageManifest {
  return validateImageManifest(decodeManifestJSON(data));
}

/** JSON text of a manifest, after checking it as strictly as a parsed one. */
export function serializeImageManifest(m: ImageManifest): string {
  return JSON.stringify(validateImageManifest(m));
}
