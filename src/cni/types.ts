/**
 * Types of the Container Network Interface (CNI) specification as far as a runtime needs them:
 * network configurations (single plugin configs and conflists), the results plugins print, the
 * error document, the VERSION answer, and the conventional capability arguments the runtime
 * injects as `runtimeConfig`.
 *
 * Versions: the runtime speaks spec 1.0.0 (and understands 1.1.0 lists). Debian 12's
 * containernetworking-plugins 1.1.1 answer VERSION with
 * `{"cniVersion":"1.0.0","supportedVersions":[...,"0.4.0","1.0.0"]}` (firewall: only 0.4.0 and
 * 1.0.0; bandwidth: 0.3.0 and up), so they neither implement STATUS nor GC (both 1.1.0). Plugins
 * print results in the cniVersion of the config they were given; existing conflists (e.g. Podman's
 * 87-podman-bridge.conflist) still say 0.4.0, whose result format differs from 1.0.0 only in the
 * per-IP `version` field. 0.1.0/0.2.0 results (`ip4`/`ip6`) are read for completeness.
 */

/** Every spec version a runtime may meet in a config or a result. */
export const CNI_VERSIONS = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof CNI_VERSIONS)[number];

/** The version Corral writes into the configs it generates. */
export const CNI_DEFAULT_VERSION = '1.0.0';

/** Commands (CNI_COMMAND). STATUS and GC exist from 1.1.0 on. */
export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC';

/** Well-known error codes of the spec (section "Error"); 100 and above are plugin specific. */
export const CNI_ERROR = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODING_FAILURE: 6,
  INVALID_NETWORK_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  // STATUS (1.1.0)
  PLUGIN_NOT_AVAILABLE: 50,
  LIMITED_CONNECTIVITY: 51,
} as const;

// ---------------------------------------------------------------------------------------------
// Capability arguments (CONVENTIONS.md) — injected as `runtimeConfig` into plugins that declare
// the capability with `"capabilities": {"<name>": true}`.

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  /** "tcp" | "udp" | "sctp" */
  protocol: string;
  /** Host address to bind; empty/absent means all addresses. */
  hostIP?: string;
}

/** Rates in bits per second, bursts in bits (bandwidth plugin). */
export interface BandwidthLimits {
  ingressRate?: number;
  ingressBurst?: number;
  egressRate?: number;
  egressBurst?: number;
}

export interface IpRange {
  subnet: string;
  rangeStart?: string;
  rangeEnd?: string;
  gateway?: string;
}

export interface DnsCapability {
  servers?: string[];
  searches?: string[];
  options?: string[];
}

export interface CapabilityArgs {
  portMappings?: PortMapping[];
  bandwidth?: BandwidthLimits;
  /** An array of range sets; each inner array is one set (as host-local's `ranges`). */
  ipRanges?: IpRange[][];
  dns?: DnsCapability;
  /** Requested static IPs (host-local, static). */
  ips?: string[];
  /** Requested MAC address (bridge, tuning...). */
  mac?: string;
  /** Any other capability a plugin declares. */
  [capability: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// Configuration

export interface IpamConfig {
  type: string;
  [key: string]: unknown;
}

/** One plugin's configuration, as in a conflist's `plugins[]` or a single .conf file. */
export interface PluginConfig {
  type: string;
  /** Set by the runtime from the list. */
  cniVersion?: string;
  /** Set by the runtime from the list. */
  name?: string;
  capabilities?: Record<string, boolean>;
  ipam?: IpamConfig;
  dns?: CniDNS;
  args?: Record<string, unknown>;
  /** Set by the runtime. */
  runtimeConfig?: Record<string, unknown>;
  /** Set by the runtime (chaining, CHECK, DEL). */
  prevResult?: unknown;
  [key: string]: unknown;
}

/** A network configuration list (.conflist). A single .conf is loaded as a list of one. */
export interface NetworkConfigList {
  cniVersion: string;
  /** 1.1.0: versions the list is valid for; the runtime picks the highest it supports. */
  cniVersions?: string[];
  name: string;
  disableCheck?: boolean;
  /** 1.1.0 */
  disableGC?: boolean;
  plugins: PluginConfig[];
}

// ---------------------------------------------------------------------------------------------
// Results

export interface CniInterface {
  name: string;
  mac?: string;
  mtu?: number;
  /** Netns path for interfaces inside the sandbox; absent for host interfaces. */
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

export interface CniIPConfig {
  /** CIDR notation, e.g. "10.1.2.3/24". */
  address: string;
  gateway?: string;
  /** Index into `interfaces`. */
  interface?: number;
}

export interface CniRoute {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface CniDNS {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

/** A result in the 1.0.0 shape (also the shape of 1.1.0). Corral normalises every result to this. */
export interface CniResult {
  cniVersion: string;
  interfaces?: CniInterface[];
  ips?: CniIPConfig[];
  routes?: CniRoute[];
  dns?: CniDNS;
}

/** 0.3.0, 0.3.1 and 0.4.0 results: like 1.0.0 plus a mandatory per-IP `version`. */
export interface CniIPConfig040 extends CniIPConfig {
  version: '4' | '6';
}
export interface CniResult040 {
  cniVersion: '0.3.0' | '0.3.1' | '0.4.0';
  interfaces?: CniInterface[];
  ips?: CniIPConfig040[];
  routes?: CniRoute[];
  dns?: CniDNS;
}

/** 0.1.0 and 0.2.0 results. */
export interface CniIPConfig020 {
  ip: string;
  gateway?: string;
  routes?: CniRoute[];
}
export interface CniResult020 {
  cniVersion: '0.1.0' | '0.2.0';
  ip4?: CniIPConfig020;
  ip6?: CniIPConfig020;
  dns?: CniDNS;
}

/** What a failing plugin prints on stdout (and exits non-zero). */
export interface CniErrorDocument {
  cniVersion?: string;
  code: number;
  msg: string;
  details?: string;
}

/** The answer to VERSION. */
export interface CniVersionInfo {
  cniVersion: string;
  supportedVersions: string[];
}

// ---------------------------------------------------------------------------------------------
// Runtime side

/** One attachment of a network to a container: the identity the spec's DEL/CHECK/GC key on. */
export interface Attachment {
  containerId: string;
  /** Path of the network namespace, e.g. /run/netns/foo or /proc/<pid>/ns/net. */
  netns: string;
  /** Interface name inside the namespace (default "eth0"). */
  ifName?: string;
  /** CNI_ARGS key/value pairs (e.g. K8S_POD_NAMESPACE). */
  args?: Record<string, string>;
  /** Capability arguments, injected as runtimeConfig where plugins declare them. */
  capabilityArgs?: CapabilityArgs;
}
