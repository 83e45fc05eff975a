/**
 * config.json → executor plan. All interpretation of the spec happens here; the
 * executor only carries the ops out. Two entry points: `compileCreatePlan` (a new
 * container's init) and `compileExecPlan` (a process joining a running one).
 */
import { statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { SpecError } from '../../errors.ts';
import { compileSeccomp } from '../seccomp/compile.ts';
import { capabilityMask } from '../spec/capabilities.ts';
import { DEFAULT_DEV_SYMLINKS, DEFAULT_DEVICES } from '../spec/defaults.ts';
import { parseMountOptions, propagationFlags } from '../spec/mount-options.ts';
import { RLIMITS, rlimitValue } from '../spec/rlimits.ts';
import type { LinuxSeccomp } from '../seccomp/types.ts';
import type { Hook, LinuxDevice, NamespaceType, Process, Spec } from '../spec/types.ts';
import { CLONE, MKDIR, MOUNT_EXTRA, MS, SYNC } from './ops.ts';
import type { Op, Plan } from './ops.ts';

export const NS_FLAGS: Record<NamespaceType, number> = {
  mount: CLONE.NEWNS,
  cgroup: CLONE.NEWCGROUP,
  uts: CLONE.NEWUTS,
  ipc: CLONE.NEWIPC,
  user: CLONE.NEWUSER,
  pid: CLONE.NEWPID,
  network: CLONE.NEWNET,
  time: CLONE.NEWTIME,
};

/** /proc/<pid>/ns/<file> names. */
export const NS_FILES: Record<NamespaceType, string> = {
  mount: 'mnt', cgroup: 'cgroup', uts: 'uts', ipc: 'ipc', user: 'user', pid: 'pid', network: 'net', time: 'time',
};

/** setns order: user first (gain privileges there), mount last (it changes how later paths resolve). */
export const SETNS_ORDER: readonly NamespaceType[] = ['user', 'ipc', 'uts', 'network', 'pid', 'cgroup', 'time', 'mount'];

/** Where the container's /sys/fs/cgroup gets its content from (host paths of the container's cgroups). */
export interface CgroupMountSource {
  /** Directory name under the cgroup mount ("memory", "cpu,cpuacct", "" for a v2 unified mount). */
  name: string;
  /** Host path of the container's cgroup in that hierarchy. */
  hostPath: string;
  /** For v1: the options string for mounting this hierarchy inside a cgroup namespace ("memory", "name=systemd"). */
  options: string;
}

export interface CreatePlanInput {
  spec: Spec;
  bundle: string;
  rootfs: string;
  parentMode: 'exit' | 'wait';
  /** Fifo the init blocks on until `start`. */
  startFifo: string;
  consoleSocket?: string;
  noPivot?: boolean;
  preserveFds?: number;
  cgroupMode: 'v1' | 'v2';
  cgroupMounts: CgroupMountSource[];
  /** The mount point (in the runtime's mount namespace) that contains the rootfs; made private for a shared root. */
  rootfsParentMount?: string;
  /** cgroup v2: the device filter to attach to the container's cgroup before the init joins it. */
  deviceFilter?: { cgroupDir: string; program: Uint8Array };
}

const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;

function rel(p: string): string {
  return p.replace(/^\/+/, '').replace(/\/+$/, '') || '.';
}

export function cloneFlagsFor(spec: Spec): number {
  let flags = 0;
  for (const ns of spec.linux?.namespaces ?? []) {
    // A cgroup namespace is unshared after the init joined its cgroup, so its root is the container's cgroup.
    // cgroup: unshared after the init joined its cgroup. time: CLONE_NEWTIME cannot go to clone() (it
    // overlaps the exit-signal bits); the launcher unshares it so the child is created inside.
    if (ns.path === undefined && ns.type !== 'cgroup' && ns.type !== 'time') flags |= NS_FLAGS[ns.type];
  }
  return flags;
}

function setnsOps(spec: Spec): Op[] {
  const ops: Op[] = [];
  const byType = new Map((spec.linux?.namespaces ?? []).map((n, i) => [n.type, { ...n, i }]));
  for (const type of SETNS_ORDER) {
    const ns = byType.get(type);
    if (ns?.path !== undefined) {
      ops.push({ op: 'setns', path: ns.path, nstype: NS_FLAGS[type], origin: `linux.namespaces[${ns.i}].path` });
    }
  }
  return ops;
}

function hookOps(hooks: Hook[] | undefined, kind: string, stdin: string): Op[] {
  return (hooks ?? []).map((h, i) => ({
    op: 'runHook',
    path: h.path,
    args: h.args?.length ? h.args : [h.path],
    env: h.env ?? [],
    timeoutSec: h.timeout ?? 0,
    stdin,
    origin: `hooks.${kind}[${i}]`,
  }));
}

/** Mounts from spec.mounts, in order, each as one or more ops on paths inside the root. */
function mountOps(input: CreatePlanInput, inUserNs: boolean, newCgroupNs: boolean): Op[] {
  const ops: Op[] = [];
  (input.spec.mounts ?? []).forEach((m, i) => {
    const origin = `mounts[${i}]`;
    const dest = rel(m.destination);
    const o = parseMountOptions(m.options);
    const type = m.type ?? '';
    if (type === 'cgroup') {
      ops.push(...cgroupMountOps(input, dest, o.flags, origin, newCgroupNs));
      return;
    }
    if (o.bind || type === 'bind') {
      const source = isAbsolute(m.source!) ? m.source! : resolve(input.bundle, m.source!);
      let st;
      try {
        st = statSync(source);
      } catch {
        throw new SpecError(`${origin}.source`, `bind mount source "${source}" does not exist`);
      }
      const mkdir = st.isDirectory() ? MKDIR.DIR : MKDIR.FILE;
      ops.push({ op: 'mountInRoot', source, target: dest, fstype: '', flags: MS.BIND | (o.recursive ? MS.REC : 0), data: '', mkdir, extra: 0, origin });
      const remountFlags = o.flags & ~MS.REMOUNT;
      if (remountFlags !== 0) {
        ops.push({ op: 'mountInRoot', source: '', target: dest, fstype: '', flags: MS.REMOUNT | MS.BIND | remountFlags, data: '', mkdir: MKDIR.NONE, extra: MOUNT_EXTRA.KEEP_LOCKED_FLAGS, origin });
      }
    } else {
      let fstype = type;
      let source = m.source ?? type;
      let flags = o.flags;
      // sysfs needs a network namespace we own; in a user namespace without one, bind the host's /sys instead.
      if (type === 'sysfs' && inUserNs && !input.spec.linux?.namespaces?.some((n) => n.type === 'network' && !n.path)) {
        fstype = '';
        source = '/sys';
        flags = MS.BIND | MS.REC;
      }
      ops.push({ op: 'mountInRoot', source, target: dest, fstype, flags, data: o.data, mkdir: MKDIR.DIR, extra: 0, origin });
      if (fstype === '' && (o.flags & ~MS.REMOUNT) !== 0) {
        ops.push({ op: 'mountInRoot', source: '', target: dest, fstype: '', flags: MS.REMOUNT | MS.BIND | o.flags, data: '', mkdir: MKDIR.NONE, extra: MOUNT_EXTRA.KEEP_LOCKED_FLAGS, origin });
      }
    }
    for (const p of o.propagation) {
      ops.push({ op: 'mountInRoot', source: '', target: dest, fstype: '', flags: p, data: '', mkdir: MKDIR.NONE, extra: 0, origin });
    }
  });
  return ops;
}

/**
 * /sys/fs/cgroup inside the container. v2: the container's own cgroup (a real cgroup2 mount inside a cgroup
 * namespace, else a bind of its directory). v1: a tmpfs with one entry per hierarchy, each showing only the
 * container's cgroup, then read-only if asked.
 */
function cgroupMountOps(input: CreatePlanInput, dest: string, flags: number, origin: string, newCgroupNs: boolean): Op[] {
  const ops: Op[] = [];
  const common = flags & (MS.NOSUID | MS.NODEV | MS.NOEXEC | MS.RELATIME);
  const ro = flags & MS.RDONLY;
  if (input.cgroupMode === 'v2') {
    const src = input.cgroupMounts[0];
    if (newCgroupNs || !src) {
      ops.push({ op: 'mountInRoot', source: 'cgroup2', target: dest, fstype: 'cgroup2', flags: common | ro, data: '', mkdir: MKDIR.DIR, extra: 0, origin });
    } else {
      ops.push({ op: 'mountInRoot', source: src.hostPath, target: dest, fstype: '', flags: MS.BIND | MS.REC, data: '', mkdir: MKDIR.DIR, extra: 0, origin });
      ops.push({ op: 'mountInRoot', source: '', target: dest, fstype: '', flags: MS.REMOUNT | MS.BIND | common | ro, data: '', mkdir: MKDIR.NONE, extra: MOUNT_EXTRA.KEEP_LOCKED_FLAGS, origin });
    }
    return ops;
  }
  ops.push({ op: 'mountInRoot', source: 'tmpfs', target: dest, fstype: 'tmpfs', flags: common, data: 'mode=755', mkdir: MKDIR.DIR, extra: 0, origin });
  for (const h of input.cgroupMounts) {
    const target = `${dest}/${h.name}`;
    ops.push({ op: 'mountInRoot', source: h.hostPath, target, fstype: '', flags: MS.BIND, data: '', mkdir: MKDIR.DIR, extra: 0, origin });
    ops.push({ op: 'mountInRoot', source: '', target, fstype: '', flags: MS.REMOUNT | MS.BIND | common | ro, data: '', mkdir: MKDIR.NONE, extra: MOUNT_EXTRA.KEEP_LOCKED_FLAGS, origin });
    // "cpu,cpuacct" is reachable as "cpu" and "cpuacct" too, as on the host.
    if (h.name.includes(',')) {
      for (const part of h.name.split(',')) ops.push({ op: 'symlinkInRoot', target: h.name, linkpath: `${dest}/${part}`, origin });
    }
  }
  if (ro) ops.push({ op: 'mountInRoot', source: '', target: dest, fstype: '', flags: MS.REMOUNT | common | MS.RDONLY, data: 'mode=755', mkdir: MKDIR.NONE, extra: MOUNT_EXTRA.KEEP_LOCKED_FLAGS, origin });
  return ops;
}

function deviceOps(spec: Spec, inUserNs: boolean): Op[] {
  const ops: Op[] = [];
  const listed = spec.linux?.devices ?? [];
  const devices: Array<{ d: LinuxDevice; origin: string }> = [
    ...DEFAULT_DEVICES.filter((d) => !listed.some((l) => l.path === d.path)).map((d) => ({ d, origin: 'default devices' })),
    ...listed.map((d, i) => ({ d, origin: `linux.devices[${i}]` })),
  ];
  for (const { d, origin } of devices) {
    const path = rel(d.path);
    if (inUserNs) {
      // mknod is not allowed in a user namespace: bind the host's node instead.
      ops.push({ op: 'mountInRoot', source: d.path, target: path, fstype: '', flags: MS.BIND, data: '', mkdir: MKDIR.FILE, extra: 0, origin });
      continue;
    }
    const type = d.type === 'b' ? S_IFBLK : d.type === 'p' ? S_IFIFO : S_IFCHR;
    const parent = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
    if (parent && parent !== 'dev') ops.push({ op: 'mkdirInRoot', path: parent, mode: 0o755, origin });
    ops.push({
      op: 'mknodInRoot', path, mode: type | (d.fileMode ?? 0o666), major: d.major ?? 0, minor: d.minor ?? 0,
      uid: d.uid ?? 0, gid: d.gid ?? 0, origin,
    });
  }
  return ops;
}

function hasMountAt(spec: Spec, dest: string): boolean {
  return (spec.mounts ?? []).some((m) => rel(m.destination) === rel(dest));
}

/** Process attributes shared by a container's init and `exec`: everything from rlimits to the final execve. */
export function processOps(
  proc: Process,
  opts: { seccomp?: LinuxSeccomp; preserveFds: number; beforeExec?: Op[]; pathPrefix: string; createHandshake?: Op[]; warnings?: string[] },
): Op[] {
  const ops: Op[] = [];
  const p = opts.pathPrefix;
  proc.rlimits?.forEach((r, i) => {
    ops.push({ op: 'setrlimit', resource: RLIMITS[r.type], soft: rlimitValue(r.soft), hard: rlimitValue(r.hard), origin: `${p}rlimits[${i}]` });
  });
  if (proc.user.umask !== undefined) ops.push({ op: 'umask', mask: proc.user.umask, origin: `${p}user.umask` });
  let seccompOp: Op | undefined;
  if (opts.seccomp) {
    const { program, flags, warnings } = compileSeccomp(opts.seccomp);
    opts.warnings?.push(...warnings.map((w) => `linux.seccomp: ${w}`));
    seccompOp = { op: 'seccomp', program, flags, origin: 'linux.seccomp' };
  }
  // Marking fds close-on-exec needs no privilege, so it goes before any filter that might not allow close_range.
  ops.push({ op: 'cloexecFrom', from: 3 + opts.preserveFds, origin: 'preserved file descriptors' });
  // Without no_new_privs the filter must be loaded while we still hold CAP_SYS_ADMIN.
  if (seccompOp && !proc.noNewPrivileges) ops.push(seccompOp);
  const caps = proc.capabilities ?? {};
  ops.push({ op: 'capsBounding', keep: capabilityMask(caps.bounding, `${p}capabilities.bounding`), origin: `${p}capabilities.bounding` });
  ops.push({
    op: 'setUser', uid: proc.user.uid, gid: proc.user.gid, groups: proc.user.additionalGids ?? [], setgroups: true, origin: `${p}user`,
  });
  ops.push({ op: 'chdir', path: proc.cwd, origin: `${p}cwd` });
  const permitted = capabilityMask(caps.permitted, `${p}capabilities.permitted`);
  const inheritable = capabilityMask(caps.inheritable, `${p}capabilities.inheritable`);
  ops.push({
    op: 'capsSet',
    effective: capabilityMask(caps.effective, `${p}capabilities.effective`),
    permitted,
    inheritable,
    // The kernel only keeps ambient capabilities that are both permitted and inheritable.
    ambient: capabilityMask(caps.ambient, `${p}capabilities.ambient`) & permitted & inheritable,
    origin: `${p}capabilities`,
  });
  if (proc.noNewPrivileges) ops.push({ op: 'noNewPrivs', origin: `${p}noNewPrivileges` });
  ops.push(...(opts.createHandshake ?? []));
  ops.push(...(opts.beforeExec ?? []));
  if (seccompOp && proc.noNewPrivileges) ops.push(seccompOp);
  const env = proc.env ?? [];
  const args = proc.args ?? [];
  ops.push({ op: 'exec', path: args[0], argv: args, env, searchPath: true, origin: `${p}args` });
  return ops;
}

export function compileCreatePlan(input: CreatePlanInput): Plan {
  const { spec } = input;
  const ns = new Map((spec.linux?.namespaces ?? []).map((n) => [n.type, n.path]));
  const isNew = (t: NamespaceType) => ns.has(t) && ns.get(t) === undefined;
  const inUserNs = ns.has('user');
  const proc = spec.process!;
  const ops: Op[] = [];
  const warnings: string[] = [];

  ops.push(...setnsOps(spec));
  if (isNew('time')) {
    ops.push({ op: 'unshare', flags: CLONE.NEWTIME, origin: 'linux.namespaces (time)' });
    const offsets = Object.entries(spec.linux?.timeOffsets ?? {}).map(([clock, o]) => `${clock} ${o.secs ?? 0} ${o.nanosecs ?? 0}\n`).join('');
    // Offsets must be set before the first process enters the namespace: now, before clone.
    if (offsets) ops.push({ op: 'writeFile', path: '/proc/self/timens_offsets', data: offsets, origin: 'linux.timeOffsets' });
  }
  ops.push({ op: 'mkfifo', path: input.startFifo, mode: 0o622, origin: 'start fifo' });
  if (input.deviceFilter) ops.push({ op: 'attachDeviceFilter', ...input.deviceFilter, origin: 'linux.resources.devices' });
  ops.push({ op: 'clone', flags: cloneFlagsFor(spec), parentMode: input.parentMode, origin: 'linux.namespaces' });
  // The runtime writes id maps and puts us in our cgroup, then says go.
  ops.push({ op: 'syncWait', message: SYNC.GO, origin: 'runtime handshake' });
  // In-container hooks read the state (with the init's pid, known only now) on stdin: the runtime sends it after "go".
  if (spec.hooks?.createContainer?.length || spec.hooks?.startContainer?.length) ops.push({ op: 'syncRecvState', origin: 'hooks' });
  // In a new user namespace our host uid/gid are unmapped until we switch to the namespace's root.
  if (isNew('user')) ops.push({ op: 'setUser', uid: 0, gid: 0, groups: [], setgroups: true, origin: 'linux.uidMappings (container root)' });
  if (isNew('cgroup')) ops.push({ op: 'unshare', flags: CLONE.NEWCGROUP, origin: 'linux.namespaces (cgroup)' });

  // Root file system. Without a mount namespace (allowed, as runc allows it) the host's mount tree is never
  // re-propagated or pivoted: mounts land under the rootfs and `delete` removes them; the init chroots.
  const ownMountNs = ns.has('mount');
  const rootProp = propagationFlags(spec.linux?.rootfsPropagation) ?? MS.SLAVE | MS.REC;
  const sharedRoot = (rootProp & MS.SHARED) !== 0;
  if (ownMountNs) {
    ops.push({ op: 'mount', source: '', target: '/', fstype: '', flags: rootProp, data: '', extra: 0, origin: 'linux.rootfsPropagation' });
    // A shared root keeps the host's peer groups (so bidirectional bind mounts reach the host), but the
    // mount holding the rootfs must not be: mounts made under the rootfs would appear on the host, and
    // pivot_root refuses a shared parent.
    if (sharedRoot && input.rootfsParentMount) {
      ops.push({ op: 'mount', source: '', target: input.rootfsParentMount, fstype: '', flags: MS.PRIVATE, data: '', extra: 0, origin: 'linux.rootfsPropagation' });
    }
    ops.push({ op: 'mount', source: input.rootfs, target: input.rootfs, fstype: '', flags: MS.BIND | MS.REC, data: '', extra: 0, origin: 'root.path' });
    if (sharedRoot) ops.push({ op: 'mount', source: '', target: input.rootfs, fstype: '', flags: MS.PRIVATE, data: '', extra: 0, origin: 'root.path' });
  }
  ops.push({ op: 'openRoot', path: input.rootfs, origin: 'root.path' });
  ops.push(...mountOps(input, inUserNs, isNew('cgroup')));
  ops.push(...deviceOps(spec, inUserNs));
  for (const [target, link] of DEFAULT_DEV_SYMLINKS) ops.push({ op: 'symlinkInRoot', target, linkpath: rel(link), origin: 'default /dev links' });
  if (hasMountAt(spec, '/dev/pts')) ops.push({ op: 'symlinkInRoot', target: 'pts/ptmx', linkpath: 'dev/ptmx', origin: 'default /dev links' });
  if (proc.terminal) ops.push({ op: 'mknodInRoot', path: 'dev/console', mode: 0o100000 | 0o600, major: 0, minor: 0, uid: 0, gid: 0, origin: 'process.terminal' });

  if (spec.hooks?.prestart?.length || spec.hooks?.createRuntime?.length) {
    ops.push({ op: 'syncSend', message: SYNC.HOOKS, origin: 'hooks.createRuntime' });
    ops.push({ op: 'syncWait', message: SYNC.HOOKS_DONE, origin: 'hooks.createRuntime' });
  }
  ops.push(...hookOps(spec.hooks?.createContainer, 'createContainer', ''));
  ops.push({ op: 'openStartFifo', path: input.startFifo, origin: 'start fifo' });
  if (proc.terminal) {
    if (!input.consoleSocket) throw new SpecError('process.terminal', 'a terminal needs --console-socket to hand the pty master to the caller');
    ops.push({ op: 'consoleConnect', path: input.consoleSocket, origin: '--console-socket' });
  }
  if (!ownMountNs) ops.push({ op: 'chroot', path: input.rootfs, origin: 'root.path (no mount namespace)' });
  else if (input.noPivot) ops.push({ op: 'moveRoot', path: input.rootfs, origin: '--no-pivot' });
  else ops.push({ op: 'pivotRoot', path: input.rootfs, origin: 'root.path' });
  if (sharedRoot && ownMountNs) ops.push({ op: 'mount', source: '', target: '/', fstype: '', flags: rootProp, data: '', extra: 0, origin: 'linux.rootfsPropagation' });

  if (spec.hostname !== undefined && ns.has('uts')) ops.push({ op: 'sethostname', name: spec.hostname, origin: 'hostname' });
  if (spec.domainname !== undefined && ns.has('uts')) ops.push({ op: 'setdomainname', name: spec.domainname, origin: 'domainname' });
  for (const [key, value] of Object.entries(spec.linux?.sysctl ?? {})) {
    ops.push({ op: 'writeFile', path: `/proc/sys/${key.replaceAll('.', '/')}`, data: value, origin: `linux.sysctl["${key}"]` });
  }
  if (proc.terminal) {
    ops.push({ op: 'setupConsole', rows: proc.consoleSize?.height ?? 0, cols: proc.consoleSize?.width ?? 0, mountConsole: true, origin: 'process.terminal' });
  }
  spec.linux?.readonlyPaths?.forEach((path, i) => ops.push({ op: 'readonlyPath', path, origin: `linux.readonlyPaths[${i}]` }));
  spec.linux?.maskedPaths?.forEach((path, i) => ops.push({ op: 'maskPath', path, origin: `linux.maskedPaths[${i}]` }));
  if (spec.root?.readonly && ownMountNs) {
    ops.push({ op: 'mount', source: '', target: '/', fstype: '', flags: MS.REMOUNT | MS.BIND | MS.RDONLY, data: '', extra: MOUNT_EXTRA.KEEP_LOCKED_FLAGS, origin: 'root.readonly' });
  }
  if (spec.linux?.personality) {
    ops.push({ op: 'personality', domain: spec.linux.personality.domain === 'LINUX32' ? 0x0008 : 0, origin: 'linux.personality' });
  }
  ops.push(...processOps(proc, {
    seccomp: spec.linux?.seccomp,
    preserveFds: input.preserveFds ?? 0,
    pathPrefix: 'process.',
    createHandshake: [
      { op: 'syncSend', message: SYNC.READY, origin: 'runtime handshake' },
      { op: 'waitStart', origin: 'start fifo' },
    ],
    beforeExec: hookOps(spec.hooks?.startContainer, 'startContainer', ''),
    warnings,
  }));
  return { ops, warnings };
}

export interface ExecPlanInput {
  process: Process;
  /** The container init's host pid (its /proc/<pid>/ns/* are joined). */
  initPid: number;
  /** Namespace types the container has (joined in SETNS_ORDER). */
  namespaces: NamespaceType[];
  /** cgroup.procs files to join, so the process is accounted and limited with the container. */
  cgroupProcs: string[];
  seccomp?: LinuxSeccomp;
  consoleSocket?: string;
  preserveFds?: number;
  detach: boolean;
}

export function compileExecPlan(input: ExecPlanInput): Plan {
  const ops: Op[] = [];
  for (const path of input.cgroupProcs) ops.push({ op: 'writeFile', path, data: '0', origin: 'container cgroup' });
  if (input.process.terminal) {
    if (!input.consoleSocket) throw new SpecError('process.terminal', 'a terminal needs --console-socket to hand the pty master to the caller');
    ops.push({ op: 'consoleConnect', path: input.consoleSocket, origin: '--console-socket' });
  }
  for (const type of SETNS_ORDER) {
    if (input.namespaces.includes(type)) {
      ops.push({ op: 'setns', path: join('/proc', String(input.initPid), 'ns', NS_FILES[type]), nstype: NS_FLAGS[type], origin: `container ${type} namespace` });
    }
  }
  ops.push({ op: 'clone', flags: 0, parentMode: input.detach ? 'exit' : 'wait', origin: 'exec' });
  if (input.process.terminal) {
    ops.push({ op: 'setupConsole', rows: input.process.consoleSize?.height ?? 0, cols: input.process.consoleSize?.width ?? 0, mountConsole: false, origin: 'process.terminal' });
  }
  const warnings: string[] = [];
  ops.push(...processOps(input.process, { seccomp: input.seccomp, preserveFds: input.preserveFds ?? 0, pathPrefix: 'process.', warnings }));
  return { ops, warnings };
}

