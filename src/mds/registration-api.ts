import type { PodRegistry } from './registry.js';
import { RegistryError } from './registry.js';

// The registration side of the metadata service, spoken by `rkt run
// --mds-register` over the service's Unix socket (root's alone), in rkt's
// own protocol:
//
//   PUT    /pods/UUID?token=TOKEN   body: the pod manifest
//   PUT    /pods/UUID/APP           body: the app's image manifest
//   DELETE /pods/UUID
//
// The answer to a pod's registration also says, as JSON, which TCP port the
// apps reach the service on ({"port": 18112}); rkt's clients ignore the body.

export interface RegistrationRequest {
  method: string;
  url: string;
  body: Buffer;
}

export interface RegistrationResponse {
  status: number;
  body: string;
}

function reply(status: number, body: string): RegistrationResponse {
  return { status, body };
}

export function register(req: RegistrationRequest, registry: PodRegistry, port: number): RegistrationResponse {
  const u = new URL(req.url, 'http://unix');
  const parts = u.pathname.split('/').slice(1);
  if (parts[0] !== 'pods' || parts.length < 2 || parts.length > 3) return reply(404, 'no such endpoint\n');
  const uuid = parts[1]!;
  try {
    if (parts.length === 2 && req.method === 'PUT') {
      const tokens = u.searchParams.getAll('token');
      if (tokens.length !== 1) return reply(400, 'give the token once, as ?token=\n');
      registry.addPod(uuid, tokens[0]!, req.body);
      return reply(200, JSON.stringify({ port }));
    }
    if (parts.length === 2 && req.method === 'DELETE') {
      return registry.removePod(uuid) ? reply(200, '') : reply(404, 'no pod with this UUID is registered\n');
    }
    if (parts.length === 3 && req.method === 'PUT') {
      registry.addApp(uuid, decodeURIComponent(parts[2]!), req.body);
      return reply(200, '');
    }
  } catch (err) {
    if (err instanceof RegistryError) return reply(err.status, `${err.message}\n`);
    if (err instanceof URIError) return reply(400, 'malformed app name\n');
    throw err;
  }
  return reply(405, 'use PUT or DELETE\n');
}
