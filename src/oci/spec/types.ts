/**
 * OCI runtime-spec 1.2 config.json and state types (Linux parts).
 * Field names and shapes follow the specification exactly.
 */
import type { LinuxResources } from '../cgroups/types.ts';
import type { LinuxSeccomp } from '../seccomp/types.ts';

export const OCI_VERSION = '1.2.0';

export interface Spec {
  ociVersion: string;
  root?: Root;
  mounts?: Mount[];
  process?: Process;
  hostname?: string;
  domainname?: string;
  hooks?: Hooks;
  annotations?: Record<string, string>;
  linux?: Linux;
}

export interface Root {
  path: string;
  readonly?: boolean;
}

export interface Mount {
  destination: string;
  source?: string;
  type?: string;
  options?: string[];
  uidMappings?: IDMapping[];
  gidMappings?: IDMapping[];
}

export interface Process {
  terminal?: boolean;
  consoleSize?: { height: number; width: number };
  user: User;
  args?: string[];
  commandLine?: string;
  env?: string[];
  cwd: string;
  capabilities?: Capabilities;
  rlimits?: POSIXRlimit[];
  noNewPrivileges?: boolean;
  apparmorProfile?: string;
  oomScoreAdj?: number;
  selinuxLabel?: string;
  ioPriority?: { class: string; priority: number };
  scheduler?: Record<string, unknown>;
  execCPUAffinity?: { initial?: string; final?: string };
}

export interface User {
  uid: number;
  gid: number;
  umask?: number;
  additionalGids?: number[];
  username?: string;
}

export interface Capabilities {
  bounding?: string[];
  effective?: string[];
  inheritable?: string[];
  permitted?: string[];
  ambient?: string[];
}

export interface POSIXRlimit {
  type: string;
  hard: number;
  soft: number;
}

export interface Hook {
  path: string;
  args?: string[];
  env?: string[];
  timeout?: number;
}

export interface Hooks {
  prestart?: Hook[];
  createRuntime?: Hook[];
  createContainer?: Hook[];
  startContainer?: Hook[];
  poststart?: Hook[];
  poststop?: Hook[];
}

export type NamespaceType = 'pid' | 'network' | 'mount' | 'ipc' | 'uts' | 'user' | 'cgroup' | 'time';

export interface LinuxNamespace {
  type: NamespaceType;
  path?: string;
}

export interface IDMapping {
  containerID: number;
  hostID: number;
  size: number;
}

export interface LinuxDevice {
  path: string;
  type: 'c' | 'b' | 'u' | 'p';
  major?: number;
  minor?: number;
  fileMode?: number;
  uid?: number;
  gid?: number;
}

export interface Linux {
  namespaces?: LinuxNamespace[];
  uidMappings?: IDMapping[];
  gidMappings?: IDMapping[];
  timeOffsets?: Record<string, { secs?: number; nanosecs?: number }>;
  devices?: LinuxDevice[];
  cgroupsPath?: string;
  resources?: LinuxResources;
  rootfsPropagation?: string;
  seccomp?: LinuxSeccomp;
  sysctl?: Record<string, string>;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  mountLabel?: string;
  personality?: { domain: string; flags?: string[] };
  intelRdt?: Record<string, unknown>;
}

export type Status = 'creating' | 'created' | 'running' | 'stopped' | 'paused';

/** The OCI state document (`state` command, hooks' stdin). */
export interface State {
  ociVersion: string;
  id: string;
  status: Status;
  pid?: number;
  bundle: string;
  annotations?: Record<string, string>;
}
