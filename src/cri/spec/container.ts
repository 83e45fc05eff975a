/**
 * CRI ContainerConfig + image config + sandbox → OCI runtime spec (config.json).
 *
 * Kubernetes semantics: command replaces the image Entrypoint (and drops its Cmd), args
 * replace Cmd; env: image first, CRI envs override by name; working_dir over WorkingDir;
 * the user from run_as_user/run_as_username/run_as_group or the image's User, resolved in
 * the image rootfs (./user.ts). The container joins the sandbox's pinned network/IPC/UTS
 * namespaces by path and its PID namespace per NamespaceMode.
 */
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../../errors.ts';
import { CAPABILITIES, hostBoundingCapabilities } from '../../oci/spec/capabilities.ts';
import { DEFAULT_PATH } from '../../oci/spec/defaults.ts';
import type { LinuxDevice, LinuxNamespace, Mount as OciMount, Spec } from '../../oci/spec/types.ts';
import type { LinuxDeviceCgroup, LinuxResources } from '../../oci/cgroups/types.ts';
import type { LinuxSeccomp } from '../../oci/seccomp/types.ts';
import { runtimeDefaultProfile } from '../../oci/seccomp/index.ts';
import type { ContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, Mount as CriMount, SecurityProfile } from '../types.gen.ts';
import { resolveUser, type ResolvedUser } from './user.ts';

/** containerd's / CRI-O's default capability set for CRI containers. */
export const CRI_DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

export const DEFAULT_MASKED_PATHS: readonly string[] = [
  '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap',
];
export const DEFAULT_READONLY_PATHS: readonly string[] = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** Image config fields we use (OCI image-spec `config`). */
export interface ImageRuntimeConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
  StopSignal?: string;
}

/** How the container's PID namespace is set up. */
export type PidNamespace = { mode: 'host' } | { mode: 'new' } | { mode: 'path'; path: string };

export interface SandboxContext {
  /** Pinned namespace files; undefined = the host's (hostNetwork/hostIPC). */
  netnsPath?: string;
  ipcnsPath?: string;
  utsnsPath?: string;
  pid: PidNamespace;
  /** Files bind-mounted into every container of the pod. */
  hostsFile?: string;
  resolvConf?: string;
  hostnameFile?: string;
  /** The pod's /dev/shm (a tmpfs of the sandbox, or the host's with hostIPC). */
  shmPath?: string;
  hostname: string;
  /** cgroup parent of the pod (absolute). */
  cgroupParent: string;
}

export interface BuildInput {
  id: string;
  sandboxId: string;
  /** Absolute path of the mounted rootfs. */
  rootfs: string;
  image: ImageRuntimeConfig;
  config: ContainerConfig;
  sandbox: SandboxContext;
  cgroupV2: boolean;
  /** The lowest oom_score_adj we may set (our own: lowering needs CAP_SYS_RESOURCE). */
  minOomScoreAdj: number;
  /** Directory Localhost seccomp profiles are taken from when localhost_ref is relative. */
  seccompProfileRoot?: string;
}

export interface BuiltSpec {
  spec: Spec;
  user: ResolvedUser;
  warnings: string[];
  stopSignal: string;
}

const int = (v: string | number | undefined | null): number => (v === undefined || v === null || v === '' ? 0 : Number(v));

export function normalizeCap(name: string, where: string): string {
  const u = name.toUpperCase();
  if (u === 'ALL') return 'ALL';
  const c = u.startsWith('CAP_') ? u : `CAP_${u}`;
  if (!CAPABILITIES.includes(c)) throw new InvalidArgumentError(`${where}: unknown capability ${JSON.stringify(name)}`);
  return c;
}

export function mergeCommand(image: ImageRuntimeConfig, command: string[], args: string[]): string[] {
  const entry = image.Entrypoint ?? [];
  const cmd = image.Cmd ?? [];
  if (command.length) return [...command, ...args];
  if (args.length) return [...entry, ...args];
  return [...entry, ...cmd];
}

export function mergeEnv(imageEnv: string[], envs: { key: string; value: string }[], extra: Record<string, string>): string[] {
  const order: string[] = [];
  const map = new Map<string, string>();
  const set = (k: string, v: string) => {
    if (!map.has(k)) order.push(k);
    map.set(k, v);
  };
  for (const e of imageEnv) {
    const i = e.indexOf('=');
    if (i > 0) set(e.slice(0, i), e.slice(i + 1));
  }
  for (const [k, v] of Object.entries(extra)) if (!map.has(k)) set(k, v);
  for (const e of envs) {
    if (!e.key) throw new InvalidArgumentError('config.envs: an entry has an empty key');
    if (e.key.includes('=')) throw new InvalidArgumentError(`config.envs: key ${JSON.stringify(e.key)} must not contain "="`);
    set(e.key, e.value);
  }
  return order.map((k) => `${k}=${map.get(k)}`);
}

/**
 * "All capabilities" (privileged, or add ALL) means all this host lets a process hold, as containerd
 * does: here root lacks CAP_SYS_RESOURCE, and asking capset for it would fail the container.
 */
let hostCaps: string[] | undefined;
function allCapabilities(): string[] {
  return (hostCaps ??= hostBoundingCapabilities());
}

function capabilitySet(sc: LinuxContainerSecurityContext | null, privileged: boolean): string[] {
  if (privileged) return allCapabilities();
  const caps = new Set(CRI_DEFAULT_CAPABILITIES);
  const c = sc?.capabilities;
  if (c) {
    const drop = c.drop_capabilities.map((n, i) => normalizeCap(n, `security_context.capabilities.drop_capabilities[${i}]`));
    const add = c.add_capabilities.map((n, i) => normalizeCap(n, `security_context.capabilities.add_capabilities[${i}]`));
    if (drop.includes('ALL')) caps.clear();
    for (const d of drop) caps.delete(d);
    if (add.includes('ALL')) for (const a of allCapabilities()) caps.add(a);
    for (const a of add) if (a !== 'ALL') caps.add(a);
  }
  return CAPABILITIES.filter((n) => caps.has(n));
}

/** RuntimeDefault / Localhost / Unconfined (and the deprecated seccomp_profile_path strings). */
export function seccompFor(profile: SecurityProfile | null | undefined, legacyPath: string, capabilities: string[], root?: string): LinuxSeccomp | undefined {
  let kind: 'default' | 'unconfined' | 'localhost' = 'unconfined';
  let ref = '';
  if (profile) {
    if (profile.profile_type === 'RuntimeDefault') kind = 'default';
    else if (profile.profile_type === 'Localhost') {
      kind = 'localhost';
      ref = profile.localhost_ref;
    }
  } else if (legacyPath === 'runtime/default' || legacyPath === 'docker/default') kind = 'default';
  else if (legacyPath.startsWith('localhost/')) {
    kind = 'localhost';
    ref = legacyPath.slice('localhost/'.length);
  } else if (legacyPath !== '' && legacyPath !== 'unconfined') {
    throw new InvalidArgumentError(`seccomp_profile_path ${JSON.stringify(legacyPath)} is not one of "", "unconfined", "runtime/default", "localhost/<path>"`);
  }
  if (kind === 'unconfined') return undefined;
  if (kind === 'default') return runtimeDefaultProfile({ capabilities });
  if (!ref) throw new InvalidArgumentError('seccomp profile Localhost needs localhost_ref (a path to a JSON profile)');
  const path = isAbsolute(ref) ? ref : root ? `${root}/${ref}` : '';
  if (!path) throw new InvalidArgumentError(`seccomp localhost_ref ${JSON.stringify(ref)} must be an absolute path`);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new NotFoundError(`seccomp profile ${path} (localhost_ref) cannot be read; install it on the node`);
  }
  try {
    return JSON.parse(text) as LinuxSeccomp;
  } catch (e) {
    throw new InvalidArgumentError(`seccomp profile ${path} is not valid JSON: ${(e as Error).message}`);
  }
}

export function criResources(r: LinuxContainerResources | null | undefined, cgroupV2: boolean, warnings: string[]): LinuxResources {
  const out: LinuxResources = {};
  if (!r) return out;
  const cpu: NonNullable<LinuxResources['cpu']> = {};
  if (int(r.cpu_shares) > 0) cpu.shares = int(r.cpu_shares);
  if (int(r.cpu_quota) > 0) cpu.quota = int(r.cpu_quota);
  if (int(r.cpu_period) > 0) cpu.period = int(r.cpu_period);
  if (r.cpuset_cpus) cpu.cpus = r.cpuset_cpus;
  if (r.cpuset_mems) cpu.mems = r.cpuset_mems;
  if (Object.keys(cpu).length) out.cpu = cpu;
  const mem: NonNullable<LinuxResources['memory']> = {};
  if (int(r.memory_limit_in_bytes) > 0) mem.limit = int(r.memory_limit_in_bytes);
  if (int(r.memory_swap_limit_in_bytes) > 0) mem.swap = int(r.memory_swap_limit_in_bytes);
  if (mem.swap !== undefined && mem.limit !== undefined && mem.swap < mem.limit) {
    throw new InvalidArgumentError(`memory_swap_limit_in_bytes (${mem.swap}) must be at least memory_limit_in_bytes (${mem.limit})`);
  }
  if (Object.keys(mem).length) out.memory = mem;
  if (r.hugepage_limits.length) {
    out.hugepageLimits = r.hugepage_limits.map((h, i) => {
      if (!/^\d+[KMG]B$/.test(h.page_size)) throw new InvalidArgumentError(`hugepage_limits[${i}].page_size ${JSON.stringify(h.page_size)} must look like "2MB" or "1GB"`);
      return { pageSize: h.page_size, limit: int(h.limit) };
    });
  }
  if (Object.keys(r.unified).length) {
    if (cgroupV2) out.unified = { ...r.unified };
    else warnings.push(`resources.unified (${Object.keys(r.unified).join(', ')}) ignored: this node uses cgroup v1`);
  }
  return out;
}

/** The oom_score_adj to ask for: clamped to `min` (restrict_oom_score_adj). */
export function clampOomScoreAdj(requested: number, min: number, warnings: string[]): number {
  if (requested < -1000 || requested > 1000) throw new InvalidArgumentError(`oom_score_adj ${requested} is outside -1000..1000`);
  if (requested < min) {
    warnings.push(`oom_score_adj ${requested} raised to ${min}: lowering it below the daemon's own needs CAP_SYS_RESOURCE`);
    return min;
  }
  return requested;
}

function propagationOption(p: CriMount['propagation']): { opt: string; root?: 'rslave' | 'rshared' } {
  if (p === 'PROPAGATION_HOST_TO_CONTAINER') return { opt: 'rslave', root: 'rslave' };
  if (p === 'PROPAGATION_BIDIRECTIONAL') return { opt: 'rshared', root: 'rshared' };
  return { opt: 'rprivate' };
}

function deviceFor(hostPath: string, containerPath: string, perms: string, where: string): { dev: LinuxDevice; rule: LinuxDeviceCgroup } {
  if (!isAbsolute(hostPath)) throw new InvalidArgumentError(`${where}.host_path ${JSON.stringify(hostPath)} must be absolute`);
  let st;
  try {
    st = statSync(hostPath);
  } catch {
    throw new NotFoundError(`${where}: device ${hostPath} does not exist on the node`);
  }
  const type = st.isCharacterDevice() ? 'c' : st.isBlockDevice() ? 'b' : null;
  if (!type) throw new InvalidArgumentError(`${where}: ${hostPath} is not a character or block device`);
  const rdev = Number(st.rdev);
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & 0xfff00);
  const access = perms || 'rwm';
  if (!/^[rwm]+$/.test(access)) throw new InvalidArgumentError(`${where}.permissions ${JSON.stringify(perms)} must be a combination of r, w, m`);
  return {
    dev: { path: containerPath || hostPath, type, major, minor, fileMode: st.mode & 0o777, uid: st.uid, gid: st.gid },
    rule: { allow: true, type, major, minor, access },
  };
}

export function buildContainerSpec(input: BuildInput): BuiltSpec {
  const { config, sandbox, image } = input;
  const warnings: string[] = [];
  const sc = config.linux?.security_context ?? null;
  const privileged = !!sc?.privileged;
  const args = mergeCommand(image, config.command, config.args);
  if (args.length === 0) throw new InvalidArgumentError('the container has no command: the image has neither Entrypoint nor Cmd and config.command/args are empty');
  if (sc?.run_as_group && !sc.run_as_user && !sc.run_as_username) {
    throw new InvalidArgumentError('security_context.run_as_group needs run_as_user or run_as_username: a group alone does not say which user runs');
  }
  const user = resolveUser(input.rootfs, {
    imageUser: image.User ?? '',
    runAsUser: sc?.run_as_user ? int(sc.run_as_user.value) : null,
    runAsUsername: sc?.run_as_username ?? '',
    runAsGroup: sc?.run_as_group ? int(sc.run_as_group.value) : null,
    supplementalGroups: (sc?.supplemental_groups ?? []).map(int),
  });
  const extraEnv: Record<string, string> = { PATH: DEFAULT_PATH, HOSTNAME: sandbox.hostname };
  if (config.tty) extraEnv.TERM = 'xterm';
  if (user.home) extraEnv.HOME = user.home;
  const env = mergeEnv(image.Env ?? [], config.envs, extraEnv);
  const cwd = config.working_dir || image.WorkingDir || '/';
  if (!cwd.startsWith('/')) throw new InvalidArgumentError(`working_dir ${JSON.stringify(cwd)} must be an absolute path`);
  const caps = capabilitySet(sc, privileged);
  const ambient = (sc?.capabilities?.add_ambient_capabilities ?? []).map((n, i) => normalizeCap(n, `security_context.capabilities.add_ambient_capabilities[${i}]`)).filter((c) => c !== 'ALL');
  const resources = criResources(config.linux?.resources, input.cgroupV2, warnings);
  const oom = clampOomScoreAdj(int(config.linux?.resources?.oom_score_adj), input.minOomScoreAdj, warnings);

  // ---- mounts
  const mounts: OciMount[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', privileged ? 'rw' : 'ro'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', privileged ? 'rw' : 'ro'] },
  ];
  const criDests = new Set(config.mounts.map((m) => m.container_path.replace(/\/+$/, '')));
  const podFile = (dest: string, src: string | undefined, ro: boolean) => {
    if (!src || criDests.has(dest)) return;
    mounts.push({ destination: dest, type: 'bind', source: src, options: ['rbind', 'rprivate', ro ? 'ro' : 'rw'] });
  };
  if (sandbox.shmPath && !criDests.has('/dev/shm')) {
    mounts.push({ destination: '/dev/shm', type: 'bind', source: sandbox.shmPath, options: ['rbind', 'rprivate', 'nosuid', 'nodev', 'noexec'] });
  } else if (!criDests.has('/dev/shm')) {
    mounts.push({ destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] });
  }
  podFile('/etc/hosts', sandbox.hostsFile, !!sc?.readonly_rootfs);
  podFile('/etc/resolv.conf', sandbox.resolvConf, !!sc?.readonly_rootfs);
  podFile('/etc/hostname', sandbox.hostnameFile, !!sc?.readonly_rootfs);
  let rootfsPropagation: string | undefined;
  const criMounts = [...config.mounts].map((m, i) => ({ m, i })).sort((a, b) => a.m.container_path.split('/').length - b.m.container_path.split('/').length);
  for (const { m, i } of criMounts) {
    const where = `config.mounts[${i}]`;
    if (!isAbsolute(m.container_path)) throw new InvalidArgumentError(`${where}.container_path ${JSON.stringify(m.container_path)} must be absolute`);
    if (!isAbsolute(m.host_path)) throw new InvalidArgumentError(`${where}.host_path ${JSON.stringify(m.host_path)} must be absolute`);
    if (!existsSync(m.host_path)) {
      try {
        mkdirSync(m.host_path, { recursive: true, mode: 0o755 });
      } catch (e) {
        throw new FailedPreconditionError(`${where}: host_path ${m.host_path} does not exist and cannot be created: ${(e as Error).message}`);
      }
    }
    const prop = propagationOption(m.propagation);
    if (prop.root === 'rshared' || (prop.root === 'rslave' && rootfsPropagation !== 'rshared')) rootfsPropagation = prop.root;
    mounts.push({ destination: m.container_path, type: 'bind', source: m.host_path, options: ['rbind', prop.opt, m.readonly ? 'ro' : 'rw'] });
  }

  // ---- devices
  const devices: LinuxDevice[] = [];
  const deviceRules: LinuxDeviceCgroup[] = [{ allow: privileged, access: 'rwm' }];
  config.devices.forEach((d, i) => {
    const { dev, rule } = deviceFor(d.host_path, d.container_path, d.permissions, `config.devices[${i}]`);
    devices.push(dev);
    deviceRules.push(rule);
  });
  resources.devices = deviceRules;

  // ---- namespaces
  const namespaces: LinuxNamespace[] = [{ type: 'mount' }];
  if (sandbox.netnsPath) namespaces.push({ type: 'network', path: sandbox.netnsPath });
  if (sandbox.ipcnsPath) namespaces.push({ type: 'ipc', path: sandbox.ipcnsPath });
  if (sandbox.utsnsPath) namespaces.push({ type: 'uts', path: sandbox.utsnsPath });
  if (sandbox.pid.mode === 'new') namespaces.push({ type: 'pid' });
  else if (sandbox.pid.mode === 'path') namespaces.push({ type: 'pid', path: sandbox.pid.path });
  if (input.cgroupV2) namespaces.push({ type: 'cgroup' });

  const seccomp = privileged ? undefined : seccompFor(sc?.seccomp, sc?.seccomp_profile_path ?? '', caps, input.seccompProfileRoot);
  const masked = privileged ? [] : sc?.masked_paths.length ? [...sc.masked_paths] : [...DEFAULT_MASKED_PATHS];
  const readonly = privileged ? [] : sc?.readonly_paths.length ? [...sc.readonly_paths] : [...DEFAULT_READONLY_PATHS];

  const spec: Spec = {
    ociVersion: '1.2.0',
    root: { path: input.rootfs, readonly: !!sc?.readonly_rootfs },
    process: {
      terminal: config.tty,
      user: { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids, umask: 0o022 },
      args,
      env,
      cwd,
      capabilities: { bounding: caps, effective: caps, permitted: caps, ...(ambient.length ? { ambient, inheritable: ambient } : {}) },
      noNewPrivileges: !!sc?.no_new_privs,
      ...(oom !== 0 || input.minOomScoreAdj !== 0 ? { oomScoreAdj: oom } : {}),
    },
    mounts,
    annotations: {
      ...config.annotations,
      'io.kubernetes.cri.container-type': 'container',
      'io.kubernetes.cri.sandbox-id': input.sandboxId,
      'io.kubernetes.cri.container-name': config.metadata?.name ?? '',
    },
    linux: {
      namespaces,
      cgroupsPath: `${sandbox.cgroupParent.replace(/\/+$/, '')}/${input.id}`,
      resources,
      devices,
      maskedPaths: masked,
      readonlyPaths: readonly,
      ...(rootfsPropagation ? { rootfsPropagation } : {}),
      ...(seccomp ? { seccomp } : {}),
    },
  };
  return { spec, user, warnings, stopSignal: image.StopSignal || 'SIGTERM' };
}
