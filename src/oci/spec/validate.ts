/**
 * config.json validation: a list of named checks, each throwing a SpecError that
 * names the JSON path and the reason. Runs before anything touches the host.
 */
import { SpecError } from '../../errors.ts';
import { validateSeccomp } from '../seccomp/validate.ts';
import { capabilityNumber } from './capabilities.ts';
import { RLIMITS } from './rlimits.ts';
import type { Spec, NamespaceType } from './types.ts';

export interface Check {
  name: string;
  run(spec: Spec): void;
}

const NAMESPACE_TYPES: readonly NamespaceType[] = ['pid', 'network', 'mount', 'ipc', 'uts', 'user', 'cgroup', 'time'];
const PROPAGATIONS = ['', 'private', 'rprivate', 'slave', 'rslave', 'shared', 'rshared', 'unbindable', 'runbindable'];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function isUint32(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;
}
function expectArray(v: unknown, path: string): unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new SpecError(path, 'must be an array');
  return v;
}
function expectString(v: unknown, path: string, opts: { absolute?: boolean; nonEmpty?: boolean } = {}): string {
  if (typeof v !== 'string') throw new SpecError(path, 'must be a string');
  if (opts.nonEmpty && v === '') throw new SpecError(path, 'must not be empty');
  if (opts.absolute && !v.startsWith('/')) throw new SpecError(path, `must be an absolute path, got "${v}"`);
  if (v.includes('\0')) throw new SpecError(path, 'must not contain NUL bytes');
  return v;
}

export function namespaceSet(spec: Spec): Map<NamespaceType, string | undefined> {
  const m = new Map<NamespaceType, string | undefined>();
  for (const ns of spec.linux?.namespaces ?? []) m.set(ns.type, ns.path);
  return m;
}

export const checks: Check[] = [
  {
    name: 'ociVersion',
    run(spec) {
      const v = spec.ociVersion;
      if (typeof v !== 'string' || !/^1\.\d+\.\d+(-[\w.]+)?(\+[\w.]+)?$/.test(v)) {
        throw new SpecError('ociVersion', `must be a 1.x.y semantic version, got ${JSON.stringify(v)}`);
      }
    },
  },
  {
    name: 'root',
    run(spec) {
      if (!isObject(spec.root)) throw new SpecError('root', 'is required on Linux');
      expectString(spec.root.path, 'root.path', { nonEmpty: true });
      if (spec.root.readonly !== undefined && typeof spec.root.readonly !== 'boolean') {
        throw new SpecError('root.readonly', 'must be a boolean');
      }
    },
  },
  {
    name: 'process',
    run(spec) {
      const p = spec.process;
      if (p === undefined) return;
      if (!isObject(p)) throw new SpecError('process', 'must be an object');
      expectString(p.cwd, 'process.cwd', { absolute: true });
      expectArray(p.args, 'process.args').forEach((a, i) => expectString(a, `process.args[${i}]`));
      expectArray(p.env, 'process.env').forEach((e, i) => {
        const s = expectString(e, `process.env[${i}]`);
        if (!s.includes('=')) throw new SpecError(`process.env[${i}]`, `must be KEY=VALUE, got "${s}"`);
      });
      if (!isObject(p.user)) throw new SpecError('process.user', 'is required');
      if (!isUint32(p.user.uid)) throw new SpecError('process.user.uid', 'must be an unsigned 32-bit integer');
      if (!isUint32(p.user.gid)) throw new SpecError('process.user.gid', 'must be an unsigned 32-bit integer');
      expectArray(p.user.additionalGids, 'process.user.additionalGids').forEach((g, i) => {
        if (!isUint32(g)) throw new SpecError(`process.user.additionalGids[${i}]`, 'must be an unsigned 32-bit integer');
      });
      if (p.user.umask !== undefined && !(isUint32(p.user.umask) && p.user.umask <= 0o777)) {
        throw new SpecError('process.user.umask', 'must be an integer between 0 and 0777');
      }
      if (p.capabilities !== undefined) {
        if (!isObject(p.capabilities)) throw new SpecError('process.capabilities', 'must be an object');
        for (const set of ['bounding', 'effective', 'inheritable', 'permitted', 'ambient'] as const) {
          expectArray(p.capabilities[set], `process.capabilities.${set}`).forEach((c, i) => {
            const name = expectString(c, `process.capabilities.${set}[${i}]`);
            if (capabilityNumber(name) === undefined) {
              throw new SpecError(`process.capabilities.${set}[${i}]`, `unknown capability "${name}"`);
            }
          });
        }
      }
      const seen = new Set<string>();
      expectArray(p.rlimits, 'process.rlimits').forEach((r, i) => {
        const path = `process.rlimits[${i}]`;
        if (!isObject(r)) throw new SpecError(path, 'must be an object');
        const type = expectString(r.type, `${path}.type`);
        if (!(type in RLIMITS)) throw new SpecError(`${path}.type`, `unknown rlimit "${type}"`);
        if (seen.has(type)) throw new SpecError(`${path}.type`, `duplicate rlimit "${type}"`);
        seen.add(type);
        for (const k of ['soft', 'hard'] as const) {
          if (!Number.isInteger(r[k]) || (r[k] as number) < 0) throw new SpecError(`${path}.${k}`, 'must be a non-negative integer');
        }
        if ((r.soft as number) > (r.hard as number)) throw new SpecError(path, 'soft limit must not exceed the hard limit');
      });
      if (p.oomScoreAdj !== undefined && !(Number.isInteger(p.oomScoreAdj) && p.oomScoreAdj >= -1000 && p.oomScoreAdj <= 1000)) {
        throw new SpecError('process.oomScoreAdj', 'must be an integer between -1000 and 1000');
      }
      if (p.consoleSize !== undefined) {
        if (!isObject(p.consoleSize) || !isUint32(p.consoleSize.height) || !isUint32(p.consoleSize.width)) {
          throw new SpecError('process.consoleSize', 'must have unsigned integer height and width');
        }
      }
      if (p.terminal !== undefined && typeof p.terminal !== 'boolean') throw new SpecError('process.terminal', 'must be a boolean');
      if (p.noNewPrivileges !== undefined && typeof p.noNewPrivileges !== 'boolean') {
        throw new SpecError('process.noNewPrivileges', 'must be a boolean');
      }
      if (p.apparmorProfile) {
        throw new SpecError('process.apparmorProfile', `AppArmor is not available on this host; cannot apply profile "${p.apparmorProfile}"`);
      }
      for (const key of ['ioPriority', 'scheduler', 'execCPUAffinity'] as const) {
        if (p[key] !== undefined) throw new SpecError(`process.${key}`, 'is not supported by this runtime yet; remove it');
      }
      if (p.selinuxLabel) {
        throw new SpecError('process.selinuxLabel', `SELinux is not enabled on this host; cannot apply label "${p.selinuxLabel}"`);
      }
    },
  },
  {
    name: 'mounts',
    run(spec) {
      expectArray(spec.mounts, 'mounts').forEach((m, i) => {
        const path = `mounts[${i}]`;
        if (!isObject(m)) throw new SpecError(path, 'must be an object');
        const dest = expectString(m.destination, `${path}.destination`, { nonEmpty: true });
        if (dest.split('/').includes('..')) throw new SpecError(`${path}.destination`, `must not contain ".." components, got "${dest}"`);
        if (m.source !== undefined) expectString(m.source, `${path}.source`);
        if (m.type !== undefined) expectString(m.type, `${path}.type`);
        expectArray(m.options, `${path}.options`).forEach((o, j) => expectString(o, `${path}.options[${j}]`));
        const isBind = m.type === 'bind' || (m.options as string[] | undefined)?.some((o) => o === 'bind' || o === 'rbind');
        if (isBind && !m.source) throw new SpecError(`${path}.source`, 'is required for a bind mount');
        if (m.uidMappings || m.gidMappings) {
          throw new SpecError(`${path}.uidMappings`, 'idmapped mounts are not supported by this runtime');
        }
      });
    },
  },
  {
    name: 'namespaces',
    run(spec) {
      const seen = new Set<string>();
      expectArray(spec.linux?.namespaces, 'linux.namespaces').forEach((n, i) => {
        const path = `linux.namespaces[${i}]`;
        if (!isObject(n)) throw new SpecError(path, 'must be an object');
        const type = expectString(n.type, `${path}.type`) as NamespaceType;
        if (!NAMESPACE_TYPES.includes(type)) {
          throw new SpecError(`${path}.type`, `unknown namespace type "${type}" (one of ${NAMESPACE_TYPES.join(', ')})`);
        }
        if (seen.has(type)) throw new SpecError(`${path}.type`, `namespace "${type}" is listed twice`);
        seen.add(type);
        if (n.path !== undefined) expectString(n.path, `${path}.path`, { absolute: true });
      });
      const ns = namespaceSet(spec);
      if (spec.root?.readonly && !ns.has('mount')) {
        throw new SpecError('root.readonly', 'a read-only root needs a mount namespace (it would remount the host\'s mount)');
      }
      const userNew = ns.has('user') && ns.get('user') === undefined;
      const maps = spec.linux?.uidMappings?.length || spec.linux?.gidMappings?.length;
      if (userNew && !(spec.linux?.uidMappings?.length && spec.linux?.gidMappings?.length)) {
        throw new SpecError('linux.uidMappings', 'a new user namespace needs both uidMappings and gidMappings');
      }
      if (maps && !userNew) throw new SpecError('linux.uidMappings', 'uid/gid mappings need a new user namespace in linux.namespaces');
      for (const key of ['uidMappings', 'gidMappings'] as const) {
        expectArray(spec.linux?.[key], `linux.${key}`).forEach((m, i) => {
          const path = `linux.${key}[${i}]`;
          if (!isObject(m) || !isUint32(m.containerID) || !isUint32(m.hostID) || !isUint32(m.size) || m.size === 0) {
            throw new SpecError(path, 'must have unsigned integer containerID, hostID and a positive size');
          }
        });
      }
      if (spec.hostname && !ns.has('uts')) {
        throw new SpecError('hostname', 'setting the hostname needs a uts namespace (new, or joined by path); it would change the host\'s');
      }
      if (spec.domainname && !ns.has('uts')) {
        throw new SpecError('domainname', 'setting the domainname needs a uts namespace (new, or joined by path); it would change the host\'s');
      }
      if (spec.linux?.timeOffsets && !(ns.has('time') && ns.get('time') === undefined)) {
        throw new SpecError('linux.timeOffsets', 'time offsets need a new time namespace');
      }
      for (const [clock, o] of Object.entries(spec.linux?.timeOffsets ?? {})) {
        const path = `linux.timeOffsets.${clock}`;
        if (clock !== 'monotonic' && clock !== 'boottime') throw new SpecError(path, 'only the monotonic and boottime clocks can be offset');
        if (!isObject(o) || (o.secs !== undefined && !Number.isInteger(o.secs)) || (o.nanosecs !== undefined && !(isUint32(o.nanosecs) && (o.nanosecs as number) < 1e9))) {
          throw new SpecError(path, 'must be { secs: integer, nanosecs: 0..999999999 }');
        }
      }
    },
  },
  {
    name: 'devices',
    run(spec) {
      expectArray(spec.linux?.devices, 'linux.devices').forEach((d, i) => {
        const path = `linux.devices[${i}]`;
        if (!isObject(d)) throw new SpecError(path, 'must be an object');
        const p = expectString(d.path, `${path}.path`, { absolute: true });
        if (p.split('/').includes('..')) throw new SpecError(`${path}.path`, 'must not contain ".."');
        if (!['c', 'b', 'u', 'p'].includes(d.type as string)) throw new SpecError(`${path}.type`, `must be one of c, b, u, p; got ${JSON.stringify(d.type)}`);
        if (d.type !== 'p') {
          if (!Number.isInteger(d.major) || (d.major as number) < 0) throw new SpecError(`${path}.major`, 'is required for c/b/u devices');
          if (!Number.isInteger(d.minor) || (d.minor as number) < 0) throw new SpecError(`${path}.minor`, 'is required for c/b/u devices');
        }
        if (d.fileMode !== undefined && !(isUint32(d.fileMode) && (d.fileMode as number) <= 0o7777)) {
          throw new SpecError(`${path}.fileMode`, 'must be a permission mode (at most 07777)');
        }
      });
    },
  },
  {
    name: 'sysctl',
    run(spec) {
      const ns = namespaceSet(spec);
      const newNs = (t: NamespaceType) => ns.has(t);
      for (const [key, value] of Object.entries(spec.linux?.sysctl ?? {})) {
        const path = `linux.sysctl["${key}"]`;
        if (typeof value !== 'string') throw new SpecError(path, 'value must be a string');
        if (!/^[a-z0-9_]+(\.[a-zA-Z0-9_\-*]+)+$/.test(key) && !key.includes('/')) throw new SpecError(path, 'is not a valid sysctl name');
        if (key.split(/[./]/).includes('..')) throw new SpecError(path, 'is not a valid sysctl name');
        const k = key.replaceAll('/', '.');
        if (k.startsWith('net.')) {
          if (!newNs('network')) throw new SpecError(path, 'net.* sysctls need a network namespace');
        } else if (k.startsWith('fs.mqueue.') || ['kernel.msgmax', 'kernel.msgmnb', 'kernel.msgmni', 'kernel.sem', 'kernel.shmall', 'kernel.shmmax', 'kernel.shmmni', 'kernel.shm_rmid_forced'].includes(k)) {
          if (!newNs('ipc')) throw new SpecError(path, 'IPC sysctls need an ipc namespace');
        } else if (k === 'kernel.hostname' || k === 'kernel.domainname') {
          if (!newNs('uts')) throw new SpecError(path, 'needs a uts namespace');
        } else {
          throw new SpecError(path, 'is not namespaced; setting it would change the whole host');
        }
      }
    },
  },
  {
    name: 'paths',
    run(spec) {
      for (const key of ['maskedPaths', 'readonlyPaths'] as const) {
        expectArray(spec.linux?.[key], `linux.${key}`).forEach((p, i) => expectString(p, `linux.${key}[${i}]`, { absolute: true }));
      }
      const prop = spec.linux?.rootfsPropagation;
      if (prop !== undefined && !PROPAGATIONS.includes(prop)) {
        throw new SpecError('linux.rootfsPropagation', `must be one of ${PROPAGATIONS.filter(Boolean).join(', ')}; got "${prop}"`);
      }
      const pers = spec.linux?.personality;
      if (pers !== undefined && !['LINUX', 'LINUX32'].includes(pers.domain)) {
        throw new SpecError('linux.personality.domain', `must be LINUX or LINUX32, got "${pers.domain}"`);
      }
      if (spec.linux?.cgroupsPath !== undefined) {
        const cg = expectString(spec.linux.cgroupsPath, 'linux.cgroupsPath');
        if (cg.split('/').includes('..')) throw new SpecError('linux.cgroupsPath', 'must not contain ".."');
      }
      if (spec.linux?.intelRdt) throw new SpecError('linux.intelRdt', 'Intel RDT is not supported on this host');
    },
  },
  {
    name: 'hooks',
    run(spec) {
      if (spec.hooks === undefined) return;
      if (!isObject(spec.hooks)) throw new SpecError('hooks', 'must be an object');
      for (const [kind, list] of Object.entries(spec.hooks)) {
        if (!['prestart', 'createRuntime', 'createContainer', 'startContainer', 'poststart', 'poststop'].includes(kind)) {
          throw new SpecError(`hooks.${kind}`, 'is not a known hook kind');
        }
        expectArray(list, `hooks.${kind}`).forEach((h, i) => {
          const path = `hooks.${kind}[${i}]`;
          if (!isObject(h)) throw new SpecError(path, 'must be an object');
          expectString(h.path, `${path}.path`, { absolute: true });
          if (h.timeout !== undefined && !(Number.isInteger(h.timeout) && (h.timeout as number) > 0)) {
            throw new SpecError(`${path}.timeout`, 'must be a positive integer (seconds)');
          }
          expectArray(h.args, `${path}.args`).forEach((a, j) => expectString(a, `${path}.args[${j}]`));
          expectArray(h.env, `${path}.env`).forEach((a, j) => expectString(a, `${path}.env[${j}]`));
        });
      }
    },
  },
  {
    name: 'seccomp',
    run(spec) {
      if (spec.linux?.seccomp !== undefined) validateSeccomp(spec.linux.seccomp, 'linux.seccomp');
    },
  },
];

/** Run every check in order; the first failure throws a SpecError. */
export function validateSpec(spec: unknown, opts: { requireProcess?: boolean } = {}): Spec {
  if (!isObject(spec)) throw new SpecError('(root)', 'config.json must contain a JSON object');
  const s = spec as unknown as Spec;
  for (const check of checks) check.run(s);
  if (opts.requireProcess && !s.process) throw new SpecError('process', 'is required to create a container');
  if (opts.requireProcess && !(s.process?.args?.length)) throw new SpecError('process.args', 'must name the program to run');
  return s;
}
