import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import * as grpc from '@grpc/grpc-js';
import * as loader from '@grpc/proto-loader';
import { REPO, RKT, type RktEnv } from './rkt.js';
import { needFile } from './prereqs.js';

// A real gRPC client of `rkt api-service`, built from the repository's
// api/v1alpha/api.proto, and the service itself started on a free loopback
// port in a test's own rkt world.

export const FLY_ACI = path.join(REPO, 'build', 'stage1-fly.aci');
export const FLY = ['--insecure-options=image', `--stage1-path=${FLY_ACI}`];

export function needFlyStage1(): void {
  needFile(FLY_ACI, 'build it with "node dist/stage1-fly/build.js build/stage1-fly.aci"');
}

export type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

/** A client of `service` in package `pkg` (dotted) of the repository's proto file `proto`, at a grpc-js address. */
export function protoClient(proto: string, pkg: string, service: string, address: string): Client {
  const def = loader.loadSync(path.join(REPO, proto), { keepCase: true, longs: String, enums: String, defaults: true, arrays: true });
  let ns = grpc.loadPackageDefinition(def);
  for (const part of pkg.split('.')) ns = ns[part] as grpc.GrpcObject;
  const Ctor = ns[service] as grpc.ServiceClientConstructor;
  return new Ctor(address, grpc.credentials.createInsecure()) as unknown as Client;
}

export function apiClient(address: string): Client {
  return protoClient('api/v1alpha/api.proto', 'v1alpha', 'PublicAPI', address);
}

/** One unary call; rejects with the gRPC ServiceError (its .code is the status). */
export function call<T>(client: Client, method: string, req: object, timeoutMs = 60_000): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method]!(req, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res)));
  });
}

/** A server stream, collected until it ends; rejects with its error status. */
export function collect<T>(client: Client, method: string, req: object): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const out: T[] = [];
    const s = client[method]!(req, { deadline: Date.now() + 60_000 }) as grpc.ClientReadableStream<T>;
    s.on('data', (d: T) => out.push(d));
    s.on('error', reject);
    s.on('end', () => resolve(out));
  });
}

export interface ApiService {
  address: string;
  client: Client;
  proc: ResultPromise;
  stderr(): string;
  stop(): Promise<void>;
}

/** Start `rkt api-service --listen=127.0.0.1:0` in the env and wait until it says where it listens. */
export async function startApiService(env: RktEnv): Promise<ApiService> {
  const proc = execa(RKT, [...env.globals(), 'api-service', '--listen=127.0.0.1:0'], { reject: false, stdin: 'ignore', buffer: false });
  let err = '';
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (s: string) => {
    err += s;
  });
  const deadline = Date.now() + 30_000;
  let address: string | undefined;
  while (address === undefined) {
    address = /listening on (127\.0\.0\.1:\d+)/.exec(err)?.[1];
    if (address) break;
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`rkt api-service did not start: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const client = apiClient(address);
  let stopped = false;
  return {
    address,
    client,
    proc,
    stderr: () => err,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      client.close();
      proc.kill('SIGTERM');
      const killer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await proc;
      clearTimeout(killer);
    },
  };
}

export function uuidOf(file: string): string {
  return fs.readFileSync(file, 'utf8').trim();
}
