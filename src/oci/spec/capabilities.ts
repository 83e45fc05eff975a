/** Linux capability names (linux/capability.h) → numbers, and set ↔ bitmask helpers. */
import { readFileSync } from 'node:fs';
import { SpecError } from '../../errors.ts';

export const CAPABILITIES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL',
  'CAP_SETGID', 'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER',
  'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];

const byName = new Map(CAPABILITIES.map((n, i) => [n, i]));

export function capabilityNumber(name: string): number | undefined {
  return byName.get(name.toUpperCase().startsWith('CAP_') ? name.toUpperCase() : `CAP_${name.toUpperCase()}`);
}

/** Turn a list of names into a bitmask; unknown names throw a SpecError at `path`. */
export function capabilityMask(names: readonly string[] | undefined, path: string): bigint {
  let mask = 0n;
  (names ?? []).forEach((name, i) => {
    const n = capabilityNumber(name);
    if (n === undefined) throw new SpecError(`${path}[${i}]`, `unknown capability "${name}"`);
    mask |= 1n << BigInt(n);
  });
  return mask;
}

export function capabilityNames(mask: bigint): string[] {
  return CAPABILITIES.filter((_, i) => (mask >> BigInt(i)) & 1n);
}

/** The capabilities in this process's bounding set: all that a container started from here can hold. */
export function hostBoundingCapabilities(status = readFileSync('/proc/self/status', 'utf8')): string[] {
  const m = /^CapBnd:\s*([0-9a-f]+)$/m.exec(status);
  return m ? capabilityNames(BigInt(`0x${m[1]}`)) : [...CAPABILITIES];
}
