import { ManifestError } from '../errors.js';
import type { ImageManifest } from './types.js';

/** Parse and fully validate an image manifest; throws ManifestError naming the field and rule. */
export function parseImageManifest(data: Buffer | string): ImageManifest {
  let value: unknown;
  try {
    value = JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
  } catch (err) {
    throw new ManifestError('manifest', `is not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ManifestError('manifest', 'must be a JSON object');
  const m = value as Record<string, unknown>;
  if (m.acKind !== 'ImageManifest') throw new ManifestError('acKind', 'must be "ImageManifest"');
  if (typeof m.name !== 'string' || m.name === '') throw new ManifestError('name', 'is required');
  return m as unknown as ImageManifest;
}
