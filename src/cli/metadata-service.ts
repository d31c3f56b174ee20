import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { DEFAULT_PORT, DEFAULT_SOCKET, SOCKET_ENV } from '../mds/protocol.js';

// `rkt metadata-service [--listen-port=PORT]`: runs in the foreground until
// SIGINT or SIGTERM (a unit's ExecStart, or a terminal). The work is
// src/mds/service.ts; the registration socket is rkt's, or the one
// RKT_METADATA_SERVICE_SOCKET names.

function parsePort(v: string): number {
  if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw new UsageError(`--listen-port takes a TCP port number (0-65535), not "${v}"`);
  return Number(v);
}

/** The registration socket systemd passed (socket activation: LISTEN_PID, LISTEN_FDS, the first at fd 3), if any. */
function activatedSocket(): number | undefined {
  const pid = process.env.LISTEN_PID;
  const fds = Number(process.env.LISTEN_FDS ?? '0');
  if (pid === undefined || pid !== String(process.pid) || !Number.isInteger(fds) || fds < 1) return undefined;
  // not for our children (rkt run started from a unit's shell, say)
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_FDNAMES;
  return 3;
}

export function register(program: Command): void {
  program
    .command('metadata-service')
    .description('run the metadata service: apps of pods run with --mds-register introspect their pod and assert their identity through it')
    .option('--listen-port <port>', 'TCP port the apps reach the service on', String(DEFAULT_PORT))
    .addHelpText('after', `\nPods register on the Unix socket ${DEFAULT_SOCKET}, or the one ${SOCKET_ENV} names (set it for rkt run too).`)
    .action(async (opts: { listenPort: string }) => {
      const port = parsePort(opts.listenPort);
      const { MetadataService } = await import('../mds/service.js');
      const { registrationSocket } = await import('../mds/client.js');
      const { say } = await import('../log.js');
      const socket = registrationSocket();
      const activatedFd = activatedSocket();
      const service = new MetadataService();
      await service.start({ socketPath: socket, port, ...(activatedFd !== undefined && { activatedFd }) });
      say(`metadata service running: registrations on ${activatedFd !== undefined ? 'the socket systemd passed' : socket}, apps on TCP port ${service.port}`);
      await new Promise<void>((resolve) => {
        const stop = (): void => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await service.close();
      say('metadata service exiting');
    });
}
