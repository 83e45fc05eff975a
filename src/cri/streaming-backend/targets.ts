/**
 * What the streaming backend needs to know about containers and pod sandboxes. The runtime
 * service's store implements `StreamTargets`; the backend never looks anywhere else.
 */

export type StreamContainerState = 'created' | 'running' | 'exited' | 'unknown';

export interface StreamContainer {
  /** The id the OCI runtime knows the container by (`corral-oci --root R state <ociId>`). */
  ociId: string;
  /** OCI runtime CLI with runc's command line, e.g. /work/main/bin/corral-oci. */
  runtimePath: string;
  /** The runtime's state root (`--root`). */
  runtimeRoot: string;
  /**
   * conmon's `--socket-dir-path`. conmon puts `<dir>/<cuuid>` there (a symlink to the bundle)
   * holding the `attach` socket and the `ctl` fifo. Without it the container cannot be attached to.
   */
  conmonSocketDir?: string;
  /** conmon's `-u` (defaults to ociId). */
  conmonCuuid?: string;
  /** The container was created with a terminal (ContainerConfig.tty). */
  tty: boolean;
  /** The container's stdin is open (ContainerConfig.stdin: conmon ran with -i). */
  stdin: boolean;
  state: StreamContainerState;
}

export interface StreamSandbox {
  /** The pod's pinned network namespace file (e.g. /var/run/netns/cni-…); empty for host-network pods. */
  netnsPath: string;
}

export interface StreamTargets {
  /** The container with this CRI id, or null when there is none. */
  container(id: string): StreamContainer | null | Promise<StreamContainer | null>;
  /** The pod sandbox with this CRI id, or null when there is none. */
  sandbox(id: string): StreamSandbox | null | Promise<StreamSandbox | null>;
}
