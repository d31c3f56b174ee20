// Labels, annotations and image IDs: the metadata shared by image manifests,
// their dependencies and pod manifests.

import { quote } from '../errors.js';
import type { Annotation, Label } from './types.js';
import { checkUnique, expectACIdentifier, expectArray, expectObject, expectString, fail, sub } from './check.js';
import { isImageId } from './image-ref.js';

/**
 * The os/arch combinations the spec whitelists (schema/types/labels.go in
 * appc/spec, as rkt shipped it). An image without an "os" label is
 * OS-independent, and "arch" only means something next to "os".
 */
export const VALID_OS_ARCH: Readonly<Record<string, readonly string[]>> = {
  linux: ['amd64', 'i386', 'aarch64', 'aarch64_be', 'armv6l', 'armv7l', 'armv7b', 'ppc64', 'ppc64le', 's390x'],
  freebsd: ['amd64', 'i386', 'arm'],
  darwin: ['x86_64', 'i386'],
};

export function parseLabels(v: unknown, field: string): Label[] {
  const labels = expectArray(v, field).map((item, i): Label => {
    const f = sub(field, i);
    const o = expectObject(item, f);
    const name = expectACIdentifier(o.name, sub(f, 'name'));
    // The image's name is not a label; allowing one would make "name" ambiguous in image strings.
    if (name === 'name') fail(sub(f, 'name'), 'must not be "name" (the image name is not a label)');
    const value = expectString(o.value, sub(f, 'value'));
    if (name === 'version' && value === '') fail(sub(f, 'value'), 'the version label must not be empty');
    return { name, value };
  });
  checkUnique(labels, (l) => l.name, field, 'name', 'label');
  checkOsArch(labels, field);
  return labels;
}

function checkOsArch(labels: Label[], field: string): void {
  const osIndex = labels.findIndex((l) => l.name === 'os');
  if (osIndex < 0) return;
  const os = labels[osIndex]!.value;
  // own keys only: "constructor" and "__proto__" are values an image may carry
  const arches = Object.hasOwn(VALID_OS_ARCH, os) ? VALID_OS_ARCH[os] : undefined;
  if (arches === undefined) {
    fail(sub(sub(field, osIndex), 'value'), `unsupported os ${quote(os)} (must be one of: ${Object.keys(VALID_OS_ARCH).sort().join(', ')})`);
  }
  const archIndex = labels.findIndex((l) => l.name === 'arch');
  if (archIndex < 0) return;
  const arch = labels[archIndex]!.value;
  if (!arches.includes(arch)) {
    fail(sub(sub(field, archIndex), 'value'), `unsupported arch ${quote(arch)} for os ${quote(os)} (must be one of: ${arches.join(', ')})`);
  }
}

/** The value of a label, if present. */
export function labelValue(labels: readonly Label[] | undefined, name: string): string | undefined {
  return labels?.find((l) => l.name === name)?.value;
}

// RFC 3339 date-time with the "T" the spec insists on.
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-](\d{2}):(\d{2}))$/;

export function isRFC3339(s: string): boolean {
  const m = RFC3339.exec(s);
  if (m === null) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  const offsetOk = m[8] === 'Z' || (Number(m[9]) <= 23 && Number(m[10]) <= 59);
  // Second 60 is a leap second, which RFC 3339 allows.
  return month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth && hour <= 23 && minute <= 59 && second <= 60 && offsetOk;
}

export function isHttpURL(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
  } catch {
    return false;
  }
}

// Annotations whose values the spec constrains (spec/aci.md).
const ANNOTATION_VALUE_RULES: Readonly<Record<string, [(s: string) => boolean, string]>> = {
  created: [isRFC3339, 'must be an RFC 3339 timestamp such as 2014-10-27T19:32:27.67021798Z'],
  homepage: [isHttpURL, 'must be an http or https URL'],
  documentation: [isHttpURL, 'must be an http or https URL'],
};

export function parseAnnotations(v: unknown, field: string): Annotation[] {
  const annotations = expectArray(v, field).map((item, i): Annotation => {
    const f = sub(field, i);
    const o = expectObject(item, f);
    // AC Identifier, not AC Name: rkt's own annotations look like coreos.com/rkt/stage1/run.
    const name = expectACIdentifier(o.name, sub(f, 'name'));
    const value = expectString(o.value, sub(f, 'value'));
    const rule = Object.hasOwn(ANNOTATION_VALUE_RULES, name) ? ANNOTATION_VALUE_RULES[name] : undefined;
    if (rule !== undefined && !rule[0](value)) fail(sub(f, 'value'), rule[1]);
    return { name, value };
  });
  checkUnique(annotations, (a) => a.name, field, 'name', 'annotation');
  return annotations;
}

/** The value of an annotation, if present. */
export function annotationValue(annotations: readonly Annotation[] | undefined, name: string): string | undefined {
  return annotations?.find((a) => a.name === name)?.value;
}

/** "sha512-" and hex; rkt writes IDs shortened to 64 hex digits into pod manifests, so shorter is fine. */
export function expectImageId(v: unknown, field: string): string {
  const s = expectString(v, field);
  if (s === '') fail(field, 'is required');
  if (!isImageId(s)) fail(field, `${quote(s)} is not an image ID ("sha512-" followed by lowercase hex digits)`);
  return s;
}
