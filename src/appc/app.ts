// The "app" object (spec/aci.md): how to run an image. It appears in image
// manifests and, as an override, in each app of a pod manifest, with the
// same rules in both places.

import { quote } from '../errors.js';
import type { App, EnvironmentVariable, EventHandler, EventHandlerName, MountPoint, Port } from './types.js';
import {
  checkUnique,
  expectAbsolutePath,
  expectACName,
  expectArray,
  expectBool,
  expectInt,
  expectNonEmptyString,
  expectObject,
  expectString,
  expectStringArray,
  expectStringMap,
  fail,
  present,
  sub,
} from './check.js';
import { parseIsolators } from './isolators.js';

/**
 * A command line whose first word is an absolute path in the app's rootfs.
 * The spec also says exec must be non-empty, but the reference schema lets
 * an empty one through and docker2aci relies on that for images without a
 * command; whoever runs the app must then be given one (rkt run --exec).
 */
function parseExec(v: unknown, field: string): string[] {
  const exec = expectStringArray(v, field);
  if (exec.length > 0) expectAbsolutePath(exec[0], sub(field, 0));
  return exec;
}

const EVENT_HANDLER_NAMES: readonly EventHandlerName[] = ['pre-start', 'post-stop'];

function parseEventHandlers(v: unknown, field: string): EventHandler[] {
  const handlers = expectArray(v, field).map((item, i): EventHandler => {
    const f = sub(field, i);
    const o = expectObject(item, f);
    const name = expectNonEmptyString(o.name, sub(f, 'name'));
    if (!(EVENT_HANDLER_NAMES as readonly string[]).includes(name)) fail(sub(f, 'name'), `must be "pre-start" or "post-stop", not ${quote(name)}`);
    const exec = parseExec(o.exec, sub(f, 'exec'));
    if (exec.length === 0) fail(sub(f, 'exec'), 'must name a command to run');
    return { name: name as EventHandlerName, exec };
  });
  checkUnique(handlers, (h) => h.name, field, 'name', 'event handler');
  return handlers;
}

// IEEE Std 1003.1: letters, digits and underscores, not starting with a digit.
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function parseEnvironment(v: unknown, field: string): EnvironmentVariable[] {
  const env = expectArray(v, field).map((item, i): EnvironmentVariable => {
    const f = sub(field, i);
    const o = expectObject(item, f);
    const name = expectNonEmptyString(o.name, sub(f, 'name'));
    if (!ENV_NAME.test(name)) fail(sub(f, 'name'), `${quote(name)} is not a valid environment variable name (letters, digits and "_", not starting with a digit)`);
    return { name, value: expectString(o.value, sub(f, 'value')) };
  });
  checkUnique(env, (e) => e.name, field, 'name', 'environment variable');
  return env;
}

function parseMountPoints(v: unknown, field: string): MountPoint[] {
  const mps = expectArray(v, field).map((item, i): MountPoint => {
    const f = sub(field, i);
    const o = expectObject(item, f);
    const mp: MountPoint = { name: expectACName(o.name, sub(f, 'name')), path: expectAbsolutePath(o.path, sub(f, 'path')) };
    if (present(o.readOnly)) mp.readOnly = expectBool(o.readOnly, sub(f, 'readOnly'));
    return mp;
  });
  checkUnique(mps, (m) => m.name, field, 'name', 'mount point');
  return mps;
}

/** One port or port range an app listens on; also the shape of a pod manifest's podPort. */
export function parsePort(v: unknown, field: string): Port {
  const o = expectObject(v, field);
  // Any protocol name is allowed by the spec; executors may refuse ones they cannot forward.
  const port: Port = {
    name: expectACName(o.name, sub(field, 'name')),
    protocol: expectNonEmptyString(o.protocol, sub(field, 'protocol')),
    port: expectInt(o.port, sub(field, 'port'), 1, 65535),
  };
  if (present(o.count)) {
    port.count = expectInt(o.count, sub(field, 'count'), 1);
    if (port.port + port.count - 1 > 65535) fail(sub(field, 'count'), `the range ${port.port}+${port.count} ends beyond port 65535`);
  }
  if (present(o.socketActivated)) port.socketActivated = expectBool(o.socketActivated, sub(field, 'socketActivated'));
  return port;
}

function parsePorts(v: unknown, field: string): Port[] {
  const ports = expectArray(v, field).map((item, i) => parsePort(item, sub(field, i)));
  checkUnique(ports, (p) => p.name, field, 'name', 'port');
  return ports;
}

export function parseApp(v: unknown, field: string): App {
  const o = expectObject(v, field);
  const exec = present(o.exec) ? parseExec(o.exec, sub(field, 'exec')) : undefined;
  const eventHandlers = present(o.eventHandlers) ? parseEventHandlers(o.eventHandlers, sub(field, 'eventHandlers')) : undefined;
  const app: App = {
    ...(exec !== undefined && { exec }),
    ...(eventHandlers !== undefined && { eventHandlers }),
    // Free-form: a name, a number, or a path whose owner is used.
    user: expectNonEmptyString(o.user, sub(field, 'user')),
    group: expectNonEmptyString(o.group, sub(field, 'group')),
  };
  if (present(o.supplementaryGIDs)) {
    const f = sub(field, 'supplementaryGIDs');
    app.supplementaryGIDs = expectArray(o.supplementaryGIDs, f).map((g, i) => expectInt(g, sub(f, i), 0, 4294967294));
  }
  if (present(o.workingDirectory) && o.workingDirectory !== '') {
    app.workingDirectory = expectAbsolutePath(o.workingDirectory, sub(field, 'workingDirectory'));
  }
  if (present(o.environment)) app.environment = parseEnvironment(o.environment, sub(field, 'environment'));
  if (present(o.mountPoints)) app.mountPoints = parseMountPoints(o.mountPoints, sub(field, 'mountPoints'));
  if (present(o.ports)) app.ports = parsePorts(o.ports, sub(field, 'ports'));
  if (present(o.isolators)) app.isolators = parseIsolators(o.isolators, sub(field, 'isolators'));
  if (present(o.userAnnotations)) app.userAnnotations = expectStringMap(o.userAnnotations, sub(field, 'userAnnotations'));
  if (present(o.userLabels)) app.userLabels = expectStringMap(o.userLabels, sub(field, 'userLabels'));
  return app;
}
