import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RktError } from '../errors.js';
import type { GrpcObject, ServiceClientConstructor } from '@grpc/grpc-js';

// The v1alpha API definition (api/v1alpha/api.proto at the top of the
// repository), loaded at run time. The compiled code runs from dist/src/api
// or from the CLI bundle in dist/cli-bundle, so the file is found by looking
// upwards from this module rather than at a fixed relative path.

export const API_VERSION = '1.0.0-alpha';
const PROTO_REL = path.join('api', 'v1alpha', 'api.proto');

export function protoFile(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = path.join(dir, PROTO_REL);
    if (fs.existsSync(candidate)) return candidate;
    dir = path.dirname(dir);
  }
  throw new RktError(`the API definition ${PROTO_REL} is missing from this installation; reinstall rkt`);
}

/**
 * Fields keep the .proto's names (snake_case, and KeyValue's "Key"); int64
 * values travel as decimal strings, since nanosecond times do not fit a
 * JavaScript number exactly; enums as their names.
 */
export const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, arrays: true } as const;

export interface V1Alpha {
  PublicAPI: ServiceClientConstructor;
}

type GrpcModule = typeof import('@grpc/grpc-js');
type LoaderModule = typeof import('@grpc/proto-loader');

/** A CommonJS package loaded lazily: its exports, whether the loader wrapped them in a default or not. */
function cjs<T extends object>(mod: T): T {
  return 'default' in mod && typeof mod.default === 'object' && mod.default !== null ? (mod.default as T) : mod;
}

export async function grpcModule(): Promise<GrpcModule> {
  return cjs(await import('@grpc/grpc-js'));
}

export async function loadApi(): Promise<V1Alpha> {
  const grpc = await grpcModule();
  const loader = cjs<LoaderModule>(await import('@grpc/proto-loader'));
  const def = loader.loadSync(protoFile(), LOADER_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def).v1alpha as GrpcObject;
  return pkg as unknown as V1Alpha;
}
