import { LINUX_CAPABILITIES } from '../appc/capabilities.js';
import type { AppSpec } from './app-spec.js';

// The run-time parts of rkt's --insecure-options, as a stage1 applies them
// (stage0 passes them as rkt's --disable-* flags): each switches one kind of
// isolation off for the pod's apps. What each means per flavor is in
// docs/appc-conformance.md ("Insecure options").

export type RunRelaxation = 'capabilities' | 'paths' | 'seccomp';

/** The spec with every capability, for --insecure-options=capabilities. */
export function withAllCapabilities(spec: AppSpec): AppSpec {
  const { capabilitiesRetain: _r, capabilitiesRemove: _d, ...rest } = spec.isolators;
  return { ...spec, isolators: { ...rest, capabilities: [...LINUX_CAPABILITIES] } };
}
