/** The files every container of a pod shares: resolv.conf (from the DNS config), hosts, hostname. */
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from '../../errors.ts';
import type { DNSConfig } from '../types.gen.ts';

const HOSTNAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/i;

export function validateHostname(name: string): string {
  if (name.length > 64 || !HOSTNAME_RE.test(name)) {
    throw new InvalidArgumentError(`hostname ${JSON.stringify(name)} is invalid: at most 64 characters of letters, digits, "-" and "."`);
  }
  return name;
}

/** resolv.conf for the pod; with no DNS config, the host's (as the kubelet's "Default" policy). */
export function resolvConf(dns: DNSConfig | null | undefined, hostFile = '/etc/resolv.conf'): string {
  if (!dns || (dns.servers.length === 0 && dns.searches.length === 0 && dns.options.length === 0)) {
    try {
      return readFileSync(hostFile, 'utf8');
    } catch {
      return '';
    }
  }
  const lines: string[] = [];
  for (const s of dns.servers) {
    if (!/^[0-9a-fA-F.:]+$/.test(s)) throw new InvalidArgumentError(`dns_config.servers: ${JSON.stringify(s)} is not an IP address`);
    lines.push(`nameserver ${s}`);
  }
  if (dns.searches.length) {
    if (dns.searches.length > 32) throw new InvalidArgumentError('dns_config.searches: at most 32 search domains');
    for (const s of dns.searches) if (/\s/.test(s) || !s) throw new InvalidArgumentError(`dns_config.searches: ${JSON.stringify(s)} is not a domain`);
    lines.push(`search ${dns.searches.join(' ')}`);
  }
  if (dns.options.length) {
    for (const o of dns.options) if (/\s/.test(o) || !o) throw new InvalidArgumentError(`dns_config.options: ${JSON.stringify(o)} is not a resolver option`);
    lines.push(`options ${dns.options.join(' ')}`);
  }
  return lines.join('\n') + '\n';
}

export function hostsFile(hostname: string, ips: string[]): string {
  const lines = ['# Kubernetes-managed hosts file (corral).', '127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback', 'fe00::0\tip6-localnet', 'fe00::0\tip6-mcastprefix', 'fe00::1\tip6-allnodes', 'fe00::2\tip6-allrouters'];
  for (const ip of ips) lines.push(`${ip}\t${hostname}`);
  if (ips.length === 0) lines.push(`127.0.1.1\t${hostname}`);
  return lines.join('\n') + '\n';
}

/** Namespaced sysctls a pod may set (and in which namespace they live). */
export function sysctlNamespace(key: string): 'net' | 'ipc' | null {
  if (key.startsWith('net.')) return 'net';
  if (/^kernel\.(shm|msg|sem)/.test(key) || key.startsWith('fs.mqueue.')) return 'ipc';
  return null;
}
