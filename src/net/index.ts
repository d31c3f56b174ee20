// Pod networking with CNI: the API stage0 and the stage1 flavors use.
// See the module headers for the why of each part.

export { parseNetList, formatNetList, type NetRequest, type NetRequestEntry } from './netlist.js';
export {
  loadNetworkConfigs,
  selectNetworks,
  parseNetworkConfig,
  builtinNetworks,
  pluginDirs,
  findPlugin,
  DEFAULT_SUBNET,
  DEFAULT_RESTRICTED_SUBNET,
  type NetworkConfig,
  type ConfigDirs,
} from './config.js';
export { parsePortFlag, resolvePortMappings, checkHostPortsFree, type AppPorts, type PortMapping } from './ports.js';
export {
  planResolvConf,
  planHosts,
  parseHostsEntries,
  validateDnsOptions,
  makeResolvConf,
  writePodDnsFiles,
  HOSTS_DEFAULTS,
  type DnsOptions,
  type PodDnsFiles,
  type ResolvConfPlan,
  type HostsPlan,
} from './dns.js';
export { createNetns, deleteNetns, isLiveNetns, inNetns, netnsName, netnsPathOf, NETNS_DIR } from './netns.js';
export {
  setupPodNetwork,
  teardownPodNetwork,
  readPodNetworks,
  formatPodNetworks,
  type PodNetworkOptions,
  type PodNetworkResult,
  type PodNetwork,
  type PodNetworkSummary,
} from './pod-network.js';
export { setupKvmTaps, teardownKvmTaps, qemuNetArgs, type GuestNetConfig, type GuestRoute, type GuestAddress } from './kvm-tap.js';
export { netinfoDir, netinfoStatePath, podResolvConfPath, podHostsPath } from './state.js';
export { NetworkConfigError, NetworkSetupError, CniPluginError, PortInUseError } from './errors.js';
