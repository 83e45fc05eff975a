/**
 * The network Corral sets up when no CNI config is installed: a Linux bridge (the host side is
 * the gateway, traffic leaving the subnet is masqueraded, hairpin on so a pod can reach itself via
 * a port mapping), host-local IPAM on a configurable subnet, portmap for hostPort mappings,
 * firewall (accept forwarding of the pod's traffic), optionally bandwidth. The pod's loopback is
 * a separate list with the loopback plugin, attached first as "lo".
 *
 * Note: with isGateway the bridge plugin enables net.ipv4.ip_forward on the host.
 */

import { InvalidArgumentError } from '../errors.ts';
import { NAME_RE, validateConfList } from './config.ts';
import type { PodAttachment } from './network.ts';
import { CNI_DEFAULT_VERSION, type CapabilityArgs, type NetworkConfigList, type PluginConfig } from './types.ts';

export const DEFAULT_NETWORK_NAME = 'corral';
export const DEFAULT_BRIDGE = 'corral0';
export const DEFAULT_SUBNET = '10.90.0.0/16';
export const DEFAULT_IPAM_DATA_DIR = '/var/lib/corral/cni/networks';
export const LOOPBACK_NETWORK_NAME = 'corral-loopback';

export interface DefaultNetworkOptions {
  name?: string;
  cniVersion?: string;
  /** Bridge device name (≤ 15 characters). */
  bridge?: string;
  /** IPv4 subnet in CIDR notation; the gateway defaults to its first address. */
  subnet?: string;
  gateway?: string;
  rangeStart?: string;
  rangeEnd?: string;
  /** Optional IPv6 subnet (a second range set: dual stack). */
  subnet6?: string;
  /** Routes installed in the pod (default: a default route for each family). */
  routes?: string[];
  /** host-local's dataDir (leases live in <dataDir>/<network name>/). */
  dataDir?: string;
  mtu?: number;
  isGateway?: boolean;
  ipMasq?: boolean;
  hairpinMode?: boolean;
  /** Add portmap (capability portMappings). Default true. */
  portMappings?: boolean;
  /** Add firewall. Default true. */
  firewall?: boolean;
  /** firewall plugin backend; by default the plugin picks firewalld when it runs, else iptables. */
  firewallBackend?: 'iptables' | 'firewalld';
  /** Add bandwidth (capability bandwidth). Default false. */
  bandwidth?: boolean;
}

function parseIPv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}

const formatIPv4 = (n: number): string => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');

/** Parse "a.b.c.d/len" (host bits must be zero). */
export function parseIPv4Cidr(cidr: string): { network: number; prefix: number } | undefined {
  const [addr, len, ...rest] = cidr.split('/');
  if (rest.length || len === undefined || !/^\d{1,2}$/.test(len)) return undefined;
  const prefix = Number(len);
  const network = parseIPv4(addr);
  if (network === undefined || prefix > 32) return undefined;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  if ((network & mask) >>> 0 !== network) return undefined;
  return { network, prefix };
}

/** The bridge + host-local + portmap + firewall list. */
export function defaultNetworkConfig(opts: DefaultNetworkOptions = {}): NetworkConfigList {
  const name = opts.name ?? DEFAULT_NETWORK_NAME;
  if (!NAME_RE.test(name)) throw new InvalidArgumentError(`network name ${JSON.stringify(name)} is invalid`);
  const bridge = opts.bridge ?? DEFAULT_BRIDGE;
  if (!/^[a-zA-Z0-9_.-]{1,15}$/.test(bridge)) {
    throw new InvalidArgumentError(`bridge name ${JSON.stringify(bridge)} is invalid: use 1-15 letters, digits, "_", "." or "-"`);
  }
  const subnet = opts.subnet ?? DEFAULT_SUBNET;
  const parsed = parseIPv4Cidr(subnet);
  if (!parsed || parsed.prefix > 30) {
    throw new InvalidArgumentError(`subnet ${JSON.stringify(subnet)} is not an IPv4 network in CIDR notation with room for pods (prefix ≤ 30, host bits zero)`);
  }
  const gateway = opts.gateway ?? formatIPv4(parsed.network + 1);
  const range4: Record<string, string> = { subnet, gateway };
  if (opts.rangeStart) range4.rangeStart = opts.rangeStart;
  if (opts.rangeEnd) range4.rangeEnd = opts.rangeEnd;
  const ranges: Record<string, string>[][] = [[range4]];
  if (opts.subnet6) ranges.push([{ subnet: opts.subnet6 }]);
  const routes = (opts.routes ?? (opts.subnet6 ? ['0.0.0.0/0', '::/0'] : ['0.0.0.0/0'])).map((dst) => ({ dst }));

  const ipam: Record<string, unknown> = { type: 'host-local', ranges, routes, dataDir: opts.dataDir ?? DEFAULT_IPAM_DATA_DIR };
  const bridgePlugin: PluginConfig = {
    type: 'bridge',
    bridge,
    isGateway: opts.isGateway ?? true,
    ipMasq: opts.ipMasq ?? true,
    hairpinMode: opts.hairpinMode ?? true,
    capabilities: { ipRanges: true, ips: true },
    ipam: ipam as PluginConfig['ipam'],
  };
  if (opts.mtu !== undefined) bridgePlugin.mtu = opts.mtu;
  const plugins: PluginConfig[] = [bridgePlugin];
  if (opts.portMappings ?? true) plugins.push({ type: 'portmap', snat: true, capabilities: { portMappings: true } });
  if (opts.firewall ?? true) {
    const fw: PluginConfig = { type: 'firewall' };
    if (opts.firewallBackend) fw.backend = opts.firewallBackend;
    plugins.push(fw);
  }
  if (opts.bandwidth) plugins.push({ type: 'bandwidth', capabilities: { bandwidth: true } });
  return validateConfList({ cniVersion: opts.cniVersion ?? CNI_DEFAULT_VERSION, name, plugins }, '<default network>');
}

/** The list that brings the pod's "lo" up. */
export function loopbackNetworkConfig(cniVersion: string = CNI_DEFAULT_VERSION): NetworkConfigList {
  return { cniVersion, name: LOOPBACK_NETWORK_NAME, plugins: [{ type: 'loopback' }] };
}

/** What a pod gets: loopback as "lo", then `network` as `ifName` (default eth0) with the capability arguments. */
export function podAttachments(
  network: NetworkConfigList,
  opts: { ifName?: string; capabilityArgs?: CapabilityArgs } = {},
): PodAttachment[] {
  const main: PodAttachment = { config: network, ifName: opts.ifName ?? 'eth0' };
  if (opts.capabilityArgs) main.capabilityArgs = opts.capabilityArgs;
  return [{ config: loopbackNetworkConfig(network.cniVersion), ifName: 'lo' }, main];
}
