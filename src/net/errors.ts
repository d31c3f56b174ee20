import { RktError } from '../errors.js';

// Typed failures of pod networking. Each message is one line that names the
// network, file or plugin involved, so the user can go straight to it.

/** A network configuration file (or the --net request) cannot be used. */
export class NetworkConfigError extends RktError {}

/** Setting up or tearing down a pod's network failed. */
export class NetworkSetupError extends RktError {}

/** A CNI plugin reported an error (or did not run): carries the CNI error code when there is one. */
export class CniPluginError extends NetworkSetupError {
  readonly network: string;
  readonly plugin: string;
  readonly code: number | undefined;
  constructor(network: string, plugin: string, message: string, code?: number) {
    super(message);
    this.network = network;
    this.plugin = plugin;
    this.code = code;
  }
}

/** A requested host port is already taken by a host socket or by another pod's forwarding. */
export class PortInUseError extends NetworkSetupError {}

/** Collapse a multi-line message (plugin output, stderr) into one line for the user. */
export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, '; ').trim();
}
