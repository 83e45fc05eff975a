/** Where the runtime service keeps things (state_dir is tmpfs-like, root_dir persistent). */
import { join } from 'node:path';

export interface RuntimePaths {
  store: string;
  sandboxes: string;
  ns: string;
  containers: string;
  exits: string;
  sockets: string;
  runtimes: string;
  pauseRootfs: string;
  cniCache: string;
  cniIpam: string;
  tmp: string;
}

export function runtimePaths(stateDir: string, rootDir: string): RuntimePaths {
  return {
    store: join(rootDir, 'runtime'),
    sandboxes: join(stateDir, 'sandboxes'),
    ns: join(stateDir, 'ns'),
    containers: join(stateDir, 'containers'),
    exits: join(stateDir, 'exits'),
    sockets: join(stateDir, 'sock'),
    runtimes: join(stateDir, 'runtimes'),
    pauseRootfs: join(rootDir, 'runtime-pause', 'rootfs'),
    cniCache: join(rootDir, 'cni', 'results'),
    cniIpam: join(rootDir, 'cni', 'networks'),
    tmp: join(stateDir, 'tmp'),
  };
}
