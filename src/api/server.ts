import type * as grpcTypes from '@grpc/grpc-js';
import type { GlobalOptions } from '../config/global.js';
import { UsageError } from '../errors.js';
import { log, say } from '../log.js';
import { Pod } from '../pod/pod.js';
import { APPC_VERSION, RKT_VERSION } from '../version.js';
import { EventWatcher, eventMatches } from './events.js';
import { inspectImageMessage, listImageMessages } from './images.js';
import { streamLogs } from './logs.js';
import { int64, type EventFilter, type GetLogsRequest, type ImageFilter, type PodFilter } from './messages.js';
import { listPodMessages, podMessage } from './pods.js';
import { API_VERSION, grpcModule, loadApi } from './proto.js';
import { ApiError, statusOf } from './status.js';

// rkt api-service: the v1alpha PublicAPI over gRPC. Read-only: it reads pod
// directories and the store index and writes nothing; the only locks it
// takes are the instant probes that tell a running pod from an exited one.
// Every handler turns a failure into a gRPC status; nothing a client sends
// can end the service.

export const DEFAULT_LISTEN = 'localhost:15441';
const MAX_TIMER_MS = 2 ** 31 - 1;

/** host:port, with [v6] hosts; port 0 asks for any free port. */
export function parseListen(addr: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new UsageError(`--listen=${addr} is not an address to listen on; give HOST:PORT, for example ${DEFAULT_LISTEN}`);
  return { host: m[1]!, port };
}

type Unary<Req, Res> = (call: grpcTypes.ServerUnaryCall<Req, Res>, cb: grpcTypes.sendUnaryData<Res>) => void;

export interface RunningService {
  /** The address actually bound (the port filled in when 0 was asked). */
  address: string;
  /** Stop taking calls, end open streams, and close. */
  close(): Promise<void>;
}

export async function startApiService(globals: GlobalOptions, listen: string): Promise<RunningService> {
  const { host, port } = parseListen(listen);
  const grpc = await grpcModule();
  const api = await loadApi();
  const dataDir = globals.dir;
  const watcher = new EventWatcher(dataDir);
  const streams = new Set<grpcTypes.ServerWritableStream<unknown, unknown>>();
  let closing = false;

  // A server stream ends with a status by an 'error' event (grpc-js sends it
  // as the trailers); destroy() would drop the call without one.
  const fail = (err: unknown): grpcTypes.ServiceError => {
    const { status, message } = statusOf(err);
    if (status === 'INTERNAL') log().warn(`api-service: ${message}`);
    return Object.assign(new Error(message), { code: grpc.status[status], details: message, metadata: new grpc.Metadata() });
  };
  const unary =
    <Req, Res>(fn: (req: Req) => Res): Unary<Req, Res> =>
    (call, cb) => {
      try {
        cb(null, fn(call.request));
      } catch (err) {
        cb(fail(err));
      }
    };
  const insecure = Object.entries(globals.insecureOptions)
    .filter(([, on]) => on)
    .map(([k]) => k)
    .join(',');

  const handlers: grpcTypes.UntypedServiceImplementation = {
    GetInfo: unary(() => ({
      info: {
        rkt_version: RKT_VERSION,
        appc_version: APPC_VERSION,
        api_version: API_VERSION,
        global_flags: {
          dir: dataDir,
          system_config_dir: globals.systemConfig,
          local_config_dir: globals.localConfig,
          user_config_dir: globals.userConfig,
          insecure_flags: insecure === '' ? 'none' : insecure,
          trust_keys_from_https: globals.trustKeysFromHttps,
        },
      },
    })),
    ListPods: unary((req: { filters: PodFilter[]; detail: boolean }) => ({ pods: listPodMessages(dataDir, req.filters, req.detail) })),
    InspectPod: unary((req: { id: string }) => {
      if (req.id === '') throw new ApiError('INVALID_ARGUMENT', 'no pod id given');
      return { pod: podMessage(Pod.find(dataDir, req.id), true) };
    }),
    ListImages: unary((req: { filters: ImageFilter[]; detail: boolean }) => ({ images: listImageMessages(dataDir, req.filters, req.detail) })),
    InspectImage: unary((req: { id: string }) => ({ image: inspectImageMessage(dataDir, req.id) })),
    ListenEvents: (call: grpcTypes.ServerWritableStream<{ filter: EventFilter | null }, unknown>) => {
      const filter: EventFilter = call.request.filter ?? { types: [], ids: [], names: [], since_time: '0', until_time: '0' };
      let until: number;
      try {
        int64(filter.since_time, 'since_time');
        until = int64(filter.until_time, 'until_time');
      } catch (err) {
        call.emit('error', fail(err));
        return;
      }
      if (until > 0 && until * 1000 <= Date.now()) {
        call.end();
        return;
      }
      let unsubscribe = (): void => {};
      let deadline: NodeJS.Timeout | undefined;
      const finish = () => {
        unsubscribe();
        clearTimeout(deadline);
        streams.delete(call);
      };
      streams.add(call);
      unsubscribe = watcher.subscribe((events) => {
        const mine = events.filter((e) => eventMatches(e, filter));
        if (mine.length > 0) call.write({ events: mine });
      });
      if (until > 0) {
        // setTimeout takes at most about 24.8 days; a later until_time is reached in steps
        const arm = (): void => {
          const left = until * 1000 - Date.now();
          deadline = left > MAX_TIMER_MS ? setTimeout(arm, MAX_TIMER_MS) : setTimeout(() => call.end(), left);
        };
        arm();
      }
      call.on('cancelled', finish);
      call.on('close', finish);
      call.on('finish', finish);
      // headers now: a client that saw them knows it is subscribed
      call.sendMetadata(new grpc.Metadata());
    },
    GetLogs: (call: grpcTypes.ServerWritableStream<GetLogsRequest, unknown>) => {
      let cancelled = false;
      streams.add(call);
      call.on('cancelled', () => {
        cancelled = true;
      });
      streamLogs(dataDir, call.request, { send: (lines) => call.write({ lines }), cancelled: () => cancelled || closing }).then(
        () => {
          streams.delete(call);
          if (!cancelled && !closing) call.end();
        },
        (err: unknown) => {
          streams.delete(call);
          if (!cancelled && !closing) call.emit('error', fail(err));
        },
      );
    },
  };

  const server = new grpc.Server();
  server.addService(api.PublicAPI.service, handlers);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  ).catch((err: Error) => {
    throw new UsageError(`cannot listen on ${listen}: ${err.message}; choose another address with --listen`);
  });
  const address = `${host}:${bound}`;
  log().debug(`api-service: listening on ${address}`);
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        closing = true;
        watcher.stop();
        for (const s of streams) s.end();
        streams.clear();
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}

/** Serve until SIGINT or SIGTERM, then shut down cleanly. */
export async function runApiService(globals: GlobalOptions, listen: string): Promise<void> {
  const service = await startApiService(globals, listen);
  const { host } = parseListen(listen);
  if (!/^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/.test(host)) {
    say(`warning: the API service has no authentication: anyone who can reach ${service.address} can read every pod's manifest and every image's; keep it on a loopback address unless that is what you want`);
  }
  say(`API service listening on ${service.address}`);
  await new Promise<void>((resolve) => {
    const stop = (sig: NodeJS.Signals) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      log().debug(`api-service: ${sig}, shutting down`);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await service.close();
  say('API service stopped');
}
