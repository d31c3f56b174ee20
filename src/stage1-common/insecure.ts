import { LINUX_CAPABILITIES } from '../appc/capabilities.js';
import { readRunOptions, type PodPaths } from '../stage1/contract.js';
import type { AppSpec } from './app-spec.js';

// The run-time words of rkt's --insecure-options, as a stage1 applies them
// (stage0 records them in run-options.json): each switches one kind of
// isolation off for the pod's apps. What each means per flavor is in
// docs/appc-conformance.md ("Insecure options").

export type RunRelaxation = 'capabilities' | 'paths' | 'seccomp';

/** The words stage0 recorded; a pod run by hand may have none. */
export function storedInsecureOptions(paths: PodPaths): Set<string> {
  const stored = readRunOptions(paths) as { insecureOptions?: unknown } | undefined;
  const words = Array.isArray(stored?.insecureOptions) ? stored.insecureOptions : [];
  return new Set(words.filter((o): o is string => typeof o === 'string'));
}

/** Whether `what` is switched off; rkt's "all-run" and "all" switch off every one. */
export function relaxed(words: ReadonlySet<string>, what: RunRelaxation): boolean {
  return words.has(what) || words.has('all-run') || words.has('all');
}

/** The spec with every capability, for --insecure-options=capabilities. */
export function withAllCapabilities(spec: AppSpec): AppSpec {
  const { capabilitiesRetain: _r, capabilitiesRemove: _d, ...rest } = spec.isolators;
  return { ...spec, isolators: { ...rest, capabilities: [...LINUX_CAPABILITIES] } };
}
