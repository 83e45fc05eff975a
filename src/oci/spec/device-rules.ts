/**
 * The device cgroup rules a container gets: the spec's linux.resources.devices, then
 * access to the devices the runtime itself creates (the default set, the pty
 * devices, and every linux.devices entry), as runc does, so a "deny all" first rule
 * still leaves a usable /dev.
 */
import type { LinuxDeviceCgroup, LinuxResources } from '../cgroups/types.ts';
import type { Spec } from './types.ts';

const ALWAYS_ALLOWED: readonly LinuxDeviceCgroup[] = [
  { allow: true, type: 'c', access: 'm' }, // mknod of any char device (the node is still access-controlled)
  { allow: true, type: 'b', access: 'm' },
  { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' }, // null
  { allow: true, type: 'c', major: 1, minor: 8, access: 'rwm' }, // random
  { allow: true, type: 'c', major: 1, minor: 7, access: 'rwm' }, // full
  { allow: true, type: 'c', major: 5, minor: 0, access: 'rwm' }, // tty
  { allow: true, type: 'c', major: 1, minor: 5, access: 'rwm' }, // zero
  { allow: true, type: 'c', major: 1, minor: 9, access: 'rwm' }, // urandom
  { allow: true, type: 'c', major: 5, minor: 1, access: 'rwm' }, // console
  { allow: true, type: 'c', major: 136, access: 'rwm' }, // pts/*
  { allow: true, type: 'c', major: 5, minor: 2, access: 'rwm' }, // ptmx
  { allow: true, type: 'c', major: 10, minor: 200, access: 'rwm' }, // tun
];

export function effectiveResources(spec: Spec): LinuxResources {
  const r = spec.linux?.resources ?? {};
  if (!r.devices?.length) return r;
  const listed: LinuxDeviceCgroup[] = (spec.linux?.devices ?? [])
    .filter((d) => d.type !== 'p')
    .map((d) => ({ allow: true, type: d.type === 'u' ? 'c' : d.type, major: d.major, minor: d.minor, access: 'rwm' }));
  return { ...r, devices: [...r.devices, ...ALWAYS_ALLOWED, ...listed] };
}
