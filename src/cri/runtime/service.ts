/**
 * The CRI RuntimeService: pod sandboxes (pinned namespaces, CNI, optional infra container for a
 * shared PID namespace) and containers (image snapshot rootfs, OCI spec from src/cri/spec,
 * supervised by conmon so they outlive the daemon). Every create records what it acquired
 * before acquiring it (./store.ts) and undoes all of it on failure, now or at the next start.
 */
import { copyFileSync, renameSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, openSync, writeSync, closeSync, watch, constants as fsc, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import {
  AlreadyExistsError, CorralError, FailedPreconditionError, InvalidArgumentError, NotFoundError, UnimplementedError,
} from '../../errors.ts';
import type { CorraldConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import type { EventBus } from '../events.ts';
import type { Reply, RuntimeServiceImpl } from '../server.ts';
import type * as T from '../types.gen.ts';
import type { ImageService } from '../../image/service.ts';
import { CniRuntime, type DelRequest, type PodAttachment } from '../../cni/network.ts';
import type { PluginRunner } from '../../cni/invoke.ts';
import { hostPlans } from '../../oci/runtime/plan-server.ts';
import { signalName } from '../../oci/runtime/signals.ts';
import { defaultNetworkConfig, podAttachments } from '../../cni/default.ts';
import { loadConfigDir } from '../../cni/config.ts';
import { sandboxAddresses } from '../../cni/result.ts';
import type { Attachment, CniResult, NetworkConfigList, PortMapping as CniPortMapping } from '../../cni/types.ts';
import { createCgroupManager, normalizeCgroupsPath } from '../../oci/cgroups/manager.ts';
import { validateSpec } from '../../oci/spec/validate.ts';
import type { Spec } from '../../oci/spec/types.ts';
import { buildContainerSpec, criResources, type ImageRuntimeConfig, type PidNamespace } from '../spec/container.ts';
import { hostsFile, resolvConf, sysctlNamespace, validateHostname } from '../spec/sandbox-files.ts';
import { RuntimeStore, newId, nowNs, type ContainerRecord, type SandboxRecord } from './store.ts';
import { OciRuntime, startConmon } from './oci.ts';
import { BuiltinOci } from './builtin-oci.ts';
import { ensureDir, mountSnapshot, pinNamespaces, unmountAll, unpinNamespaces, type PinnedNs } from './mounts.ts';
import { runtimePaths, type RuntimePaths } from './paths.ts';
import { pidAlive, run, sleep } from './proc.ts';
import type { StreamTargets } from '../streaming-backend/targets.ts';
import { Phases } from './timing.ts';
import { MS } from '../../oci/plan/ops.ts';

export interface RuntimeServiceOptions {
  config: CorraldConfig;
  log: Logger;
  images: ImageService;
  events?: EventBus;
  /** Bridge and subnet of the built-in network used when cni.conf_dir holds no config. */
  network?: { bridge?: string; subnet?: string; name?: string };
  /** cgroup parent for pods that name none (default /corral). */
  cgroupRoot?: string;
  conmonPath?: string;
  /** How often running containers are checked for exits (events); 0 = never. */
  pollMs?: number;
  onRunningCount?: (n: number) => void;
  /**
   * For a handler that is this build's corral-oci: host its server here and run its verbs in this
   * process (builtin-oci.ts). Default true; false always runs the handler's executable.
   */
  inProcessHandler?: boolean;
}

/** CNI plugins run through the plan server: a fork of the small executor, not of this process. */
const pluginViaPlanServer: PluginRunner = async (path, env, stdin, timeoutMs) => {
  const r = await hostPlans().exec({ path, args: [], env, stdin, timeoutMs });
  return { code: r.code, signal: r.signal === null ? null : signalName(r.signal), stdout: r.stdout.toString('utf8'), stderr: r.stderr, timedOut: r.timedOut };
};

const int = (v: string | number | null | undefined): number => (v === undefined || v === null || v === '' ? 0 : Number(v));
const nsOfMtime = (p: string): string => (statSync(p, { bigint: true }).mtimeNs).toString();

function ownOomScoreAdj(): number {
  try {
    return Number(readFileSync('/proc/self/oom_score_adj', 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

function matchLabels(labels: Record<string, string>, selector: Record<string, string> | undefined): boolean {
  for (const [k, v] of Object.entries(selector ?? {})) if (labels[k] !== v) return false;
  return true;
}

export class CriRuntimeService {
  readonly store: RuntimeStore;
  readonly paths: RuntimePaths;
  readonly cni: CniRuntime;
  private readonly o: RuntimeServiceOptions;
  private readonly log: Logger;
  private readonly conmon: string;
  private readonly cgroupV2: boolean;
  private timer: NodeJS.Timeout | null = null;
  /** Per-object serialisation of mutating calls. */
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly builtins = new Map<string, BuiltinOci | null>();
  private exitWatcher: FSWatcher | null = null;
  /** Woken when conmon writes the exit file named by the key (a container id). */
  private readonly exitWaiters = new Map<string, Set<() => void>>();

  constructor(o: RuntimeServiceOptions) {
    this.o = o;
    this.log = o.log.child({ component: 'runtime' });
    this.paths = runtimePaths(o.config.state_dir, o.config.root_dir);
    for (const d of [this.paths.sandboxes, this.paths.ns, this.paths.containers, this.paths.exits, this.paths.sockets, this.paths.runtimes, this.paths.tmp]) ensureDir(d);
    this.store = new RuntimeStore(this.paths.store);
    this.cni = new CniRuntime({ pluginDirs: o.config.cni.bin_dirs, cacheDir: this.paths.cniCache, runner: pluginViaPlanServer });
    this.conmon = o.conmonPath ?? '/usr/bin/conmon';
    this.cgroupV2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
  }

  // ------------------------------------------------------------------ lifecycle of the service

  /** Roll back half-created objects, record exits that happened while we were down. */
  async recover(): Promise<void> {
    // the built-in handler's server is up before the first container (conmon would find none)
    for (const h of Object.values(this.o.config.runtime_handlers)) this.builtinFor(h.path);
    for (const c of this.store.allContainers()) {
      if (c.phase === 'creating') {
        this.log.warn('rolling back a container left half-created', { id: c.id });
        await this.destroyContainer(c).catch((e) => this.log.error('rollback of container failed', { id: c.id, error: String(e) }));
      } else this.refresh(c);
    }
    for (const s of this.store.allSandboxes()) {
      if (s.phase === 'creating') {
        this.log.warn('rolling back a pod sandbox left half-created', { id: s.id });
        await this.teardownSandbox(s, true).catch((e) => this.log.error('rollback of sandbox failed', { id: s.id, error: String(e) }));
      } else if (s.phase === 'ready' && s.netnsPath && !existsSync(s.netnsPath)) {
        s.phase = 'notready';
        this.store.saveSandbox(s);
      }
    }
    this.watchExits();
    const poll = this.o.pollMs ?? 1000;
    if (poll > 0) {
      this.timer = setInterval(() => {
        for (const c of this.store.allContainers()) if (c.phase === 'running' || c.phase === 'created') this.refresh(c);
      }, poll);
      this.timer.unref();
    }
    this.reportRunning();
  }

  /** The daemon's event bus exists only once the Daemon is constructed. */
  setEvents(events: EventBus): void {
    this.o.events = events;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.exitWatcher?.close();
    this.exitWatcher = null;
    await Promise.all([...this.builtins.values()].map((b) => b?.close()));
    this.builtins.clear();
  }

  private async locked<R>(key: string, fn: () => Promise<R>): Promise<R> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(fn);
    this.locks.set(key, next);
    try {
      return await next;
    } finally {
      if (this.locks.get(key) === next) this.locks.delete(key);
    }
  }

  private runtimeFor(handler: string): { name: string; rt: OciRuntime } {
    const name = handler || this.o.config.default_runtime_handler;
    const h = this.o.config.runtime_handlers[name];
    if (!h) throw new NotFoundError(`runtime handler ${JSON.stringify(name)} is not configured (have: ${Object.keys(this.o.config.runtime_handlers).join(', ')})`);
    return { name, rt: new OciRuntime(h.path, join(this.paths.runtimes, name), this.builtinFor(h.path)) };
  }

  private rtOf(c: ContainerRecord): OciRuntime {
    return new OciRuntime(c.runtimePath, c.runtimeRoot, this.builtinFor(c.runtimePath));
  }

  /** The built-in handler behind `path` (cached; null for runc, crun, other builds), hosted from here. */
  private builtinFor(path: string): BuiltinOci | null {
    if (this.o.inProcessHandler === false) return null;
    let b = this.builtins.get(path);
    if (b === undefined) {
      b = BuiltinOci.for(path, this.log);
      this.builtins.set(path, b);
      void b?.host();
    }
    return b;
  }

  private async network(): Promise<NetworkConfigList> {
    const { networks } = await loadConfigDir(this.o.config.cni.conf_dir);
    if (networks[0]) return networks[0].config;
    if (!this.o.network) {
      throw new FailedPreconditionError(`no CNI network config in ${this.o.config.cni.conf_dir} and cni.default_network is off: add a .conflist there or enable the built-in network`);
    }
    return defaultNetworkConfig({ name: this.o.network?.name, bridge: this.o.network?.bridge, subnet: this.o.network?.subnet, dataDir: this.paths.cniIpam });
  }

  /**
   * CNI ADD of the pod's attachments (loopback "lo" and the pod network), all at once: they are
   * independent (own interface, own cache entry). Results in `entries` order. If one fails, the
   * ones that succeeded are DELeted again and the (first) error is thrown.
   */
  private async attachNetworks(base: Omit<Attachment, 'ifName' | 'capabilityArgs'>, entries: PodAttachment[]): Promise<CniResult[]> {
    const settled = await Promise.allSettled(entries.map((e) => this.cni.add(e.config, { ...base, ifName: e.ifName, capabilityArgs: e.capabilityArgs })));
    const failed = settled.find((r) => r.status === 'rejected');
    if (!failed) return settled.map((r) => (r as PromiseFulfilledResult<CniResult>).value);
    await Promise.all(entries.map((e, i) => (settled[i]!.status === 'fulfilled'
      // The original error is the one to report; a failed DEL leaves the cache entry for a later DEL.
      ? this.cni.del(e.config, { containerId: base.containerId, ifName: e.ifName, netns: base.netns }).catch(() => {})
      : undefined)));
    throw failed.reason;
  }

  /** CNI DEL of every attachment, concurrently; all are tried, the first failure (in reverse entries order) is thrown. */
  private async detachNetworks(base: Omit<DelRequest, 'ifName' | 'capabilityArgs'>, entries: PodAttachment[]): Promise<void> {
    const settled = await Promise.allSettled([...entries].reverse().map((e) => this.cni.del(e.config, { ...base, ifName: e.ifName, capabilityArgs: e.capabilityArgs })));
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** NetworkReady: a config in conf_dir or the built-in network, and its plugins installed. */
  async networkStatus(): Promise<{ ready: boolean; reason?: string; message?: string }> {
    try {
      await this.cni.status(await this.network());
      return { ready: true };
    } catch (e) {
      return { ready: false, reason: 'NetworkPluginNotReady', message: (e as Error).message };
    }
  }

  private reportRunning(): void {
    this.o.onRunningCount?.(this.store.allContainers().filter((c) => !c.infra && c.phase === 'running').length);
  }

  private publish(c: ContainerRecord, type: T.ContainerEventType): void {
    if (c.infra || !this.o.events) return;
    const s = this.store.findSandbox(c.sandboxId);
    this.o.events.publish({
      container_id: c.id,
      container_event_type: type,
      pod_sandbox_status: s ? this.sandboxStatus(s) : null,
      containers_statuses: type === 'CONTAINER_DELETED_EVENT' ? [] : [this.containerStatus(c)],
    });
  }

  // ------------------------------------------------------------------ pod sandboxes

  async runPodSandbox(req: T.RunPodSandboxRequest): Promise<string> {
    const cfg = req.config;
    if (!cfg) throw new InvalidArgumentError('RunPodSandbox: config is required');
    const md = cfg.metadata;
    if (!md || !md.name || !md.namespace || !md.uid) throw new InvalidArgumentError('RunPodSandbox: config.metadata needs name, namespace and uid');
    const { name: handler, rt } = this.runtimeFor(req.runtime_handler);
    const dup = this.store.allSandboxes().find((s) => {
      const m = s.config.metadata!;
      return m.name === md.name && m.namespace === md.namespace && m.uid === md.uid && m.attempt === md.attempt;
    });
    if (dup) throw new AlreadyExistsError(`pod sandbox ${md.namespace}/${md.name} (uid ${md.uid}, attempt ${md.attempt}) already exists as ${dup.id}; remove it first`);
    const nso = cfg.linux?.security_context?.namespace_options;
    const hostNetwork = nso?.network === 'NODE';
    const hostIpc = nso?.ipc === 'NODE';
    const hostPid = nso?.pid === 'NODE';
    const sharedPid = nso?.pid === 'POD';
    if (nso?.userns_options && nso.userns_options.mode !== 'NODE') throw new InvalidArgumentError('user namespaces (userns_options.mode POD) are not supported by corral');
    const hostname = hostNetwork ? (cfg.hostname ? validateHostname(cfg.hostname) : readFileSync('/proc/sys/kernel/hostname', 'utf8').trim()) : validateHostname(cfg.hostname || md.name.slice(0, 63));
    const sysctls = cfg.linux?.sysctls ?? {};
    for (const k of Object.keys(sysctls)) {
      const ns = sysctlNamespace(k);
      if (!ns) throw new InvalidArgumentError(`sysctl ${k} is not namespaced; only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* may be set for a pod`);
      if (ns === 'net' && hostNetwork) throw new InvalidArgumentError(`sysctl ${k} cannot be set on a hostNetwork pod (it would change the node)`);
      if (ns === 'ipc' && hostIpc) throw new InvalidArgumentError(`sysctl ${k} cannot be set on a hostIPC pod (it would change the node)`);
    }
    for (const [i, p] of cfg.port_mappings.entries()) {
      if (p.container_port <= 0 || p.container_port > 65535) throw new InvalidArgumentError(`port_mappings[${i}].container_port ${p.container_port} is not a port`);
      if (p.host_port < 0 || p.host_port > 65535) throw new InvalidArgumentError(`port_mappings[${i}].host_port ${p.host_port} is not a port`);
    }
    const ph = new Phases();
    const id = newId();
    let cgroupParent = cfg.linux?.cgroup_parent || `${this.o.cgroupRoot ?? '/corral'}/pod-${id.slice(0, 16)}`;
    cgroupParent = normalizeCgroupsPath(cgroupParent);
    if (!cgroupParent.startsWith('/')) cgroupParent = `/${cgroupParent}`;
    const dir = join(this.paths.sandboxes, id);
    const s: SandboxRecord = {
      id, phase: 'creating', createdAt: nowNs(), config: cfg, runtimeHandler: handler, hostNetwork, hostIpc, hostPid, sharedPid,
      hostname, dir, pinned: [], ips: [], cgroupParent,
    };
    this.store.saveSandbox(s);
    ph.mark('record');
    try {
      mkdirSync(dir, { recursive: true, mode: 0o711 });
      writeFileSync(join(dir, 'hostname'), hostname + '\n');
      writeFileSync(join(dir, 'resolv.conf'), resolvConf(cfg.dns_config));
      writeFileSync(join(dir, 'hosts'), hostsFile(hostname, []));
      ph.mark('files');
      // Pod cgroup: created here when it does not exist yet (the kubelet normally makes it).
      const cg = createCgroupManager({ cgroupsPath: cgroupParent, warn: (m) => this.log.warn(m, { sandbox: id }) });
      if (!cg.exists()) {
        s.cgroupCreated = true;
        this.store.saveSandbox(s);
        cg.create();
        const res = criResources(cfg.linux?.resources ?? null, this.cgroupV2, []);
        const over = criResources(cfg.linux?.overhead ?? null, this.cgroupV2, []);
        if (res.memory?.limit && over.memory?.limit) res.memory.limit += over.memory.limit;
        if (res.cpu?.quota && over.cpu?.quota) res.cpu.quota += over.cpu.quota;
        if (res.cpu || res.memory) for (const w of cg.set({ cpu: res.cpu, memory: res.memory }).warnings ?? []) this.log.warn(w, { sandbox: id });
      }
      ph.mark('cgroup');
      // Namespaces, pinned by bind mounts so the pod needs no process.
      const kinds: PinnedNs[] = [];
      if (!hostNetwork) kinds.push('net', 'uts');
      if (!hostIpc) kinds.push('ipc');
      s.pinned = kinds;
      // The pod's /dev/shm (its own IPC namespace): a tmpfs mounted by the same executor run.
      if (!hostIpc) {
        s.shmPath = join(dir, 'shm');
        s.shmMounted = true;
      }
      this.store.saveSandbox(s);
      const pins = await pinNamespaces({
        dir: join(this.paths.ns, id), kinds, hostname: hostNetwork ? undefined : hostname, sysctls,
        tmpfs: s.shmPath ? { target: s.shmPath, flags: MS.NOSUID | MS.NODEV | MS.NOEXEC, data: 'mode=1777,size=65536k' } : undefined,
      });
      s.netnsPath = pins.net;
      s.ipcnsPath = pins.ipc;
      s.utsnsPath = pins.uts;
      this.store.saveSandbox(s);
      ph.mark('pin+shm');
      if (!hostNetwork) {
        s.cniStarted = true;
        this.store.saveSandbox(s, true); // CNI allocations outlive a reboot: this one is synced
        const net = await this.network();
        ph.mark('cniConfig');
        const portMappings: CniPortMapping[] = cfg.port_mappings
          .filter((p) => p.host_port > 0)
          .map((p) => ({ hostPort: p.host_port, containerPort: p.container_port, protocol: (p.protocol || 'TCP').toLowerCase(), ...(p.host_ip ? { hostIP: p.host_ip } : {}) }));
        const results = await this.attachNetworks(
          { containerId: id, netns: s.netnsPath!, args: { K8S_POD_NAMESPACE: md.namespace, K8S_POD_NAME: md.name, K8S_POD_INFRA_CONTAINER_ID: id, K8S_POD_UID: md.uid } },
          podAttachments(net, { capabilityArgs: portMappings.length ? { portMappings } : undefined }),
        );
        s.ips = sandboxAddresses(results[results.length - 1]!, 'eth0').map((a) => a.split('/')[0]!);
        ph.mark('cniAdd');
        s.cniDone = true;
        this.store.saveSandbox(s);
      }
      writeFileSync(join(dir, 'hosts'), hostsFile(hostname, s.ips));
      if (sharedPid) await this.startInfra(s, rt, handler);
      s.phase = 'ready';
      this.store.saveSandbox(s);
      ph.mark('finish');
      ph.log(this.log, 'RunPodSandbox', { id });
      this.log.info('pod sandbox ready', { id, pod: `${md.namespace}/${md.name}`, ips: s.ips });
      return id;
    } catch (err) {
      this.log.warn('RunPodSandbox failed; rolling back', { id, error: (err as Error).message });
      await this.teardownSandbox(s, true).catch((e) => this.log.error('rollback after RunPodSandbox failure failed', { id, error: String(e) }));
      throw err;
    }
  }

  /** Undo what a sandbox holds (containers must be gone or are killed). remove: also cgroup, dir and record. */
  private async teardownSandbox(s: SandboxRecord, remove: boolean): Promise<void> {
    const errors: string[] = [];
    const ph = new Phases();
    const step = async (what: string, fn: () => Promise<void> | void) => {
      try {
        await fn();
      } catch (e) {
        errors.push(`${what}: ${(e as Error).message}`);
      }
      ph.mark(what);
    };
    if (s.infraId) {
      const infra = this.store.rawContainer(s.infraId);
      if (infra) await step('stop infra container', () => this.killAndWait(infra));
    }
    if (s.cniStarted) {
      await step('CNI DEL', async () => {
        const net = await this.network();
        // DEL from the cache entries written at ADD (config as it was); netns still pinned here.
        await this.detachNetworks({ containerId: s.id, netns: s.netnsPath && existsSync(s.netnsPath) ? s.netnsPath : '' }, podAttachments(net)).catch(async (e) => {
          for (const c of await this.cni.listCached().catch(() => [])) {
            if (c.containerId === s.id) await this.cni.del(null, { networkName: c.networkName, containerId: s.id, ifName: c.ifName });
          }
          if ((await this.cni.listCached().catch(() => [])).some((c) => c.containerId === s.id)) throw e;
        });
        s.cniStarted = false;
        s.cniDone = false;
        s.ips = [];
        this.store.saveSandbox(s);
      });
    }
    if (s.pinned.length) {
      await step('unpin namespaces', async () => {
        await unpinNamespaces(join(this.paths.ns, s.id), s.shmMounted && s.shmPath ? [s.shmPath] : []);
        s.pinned = [];
        s.netnsPath = s.ipcnsPath = s.utsnsPath = undefined;
        this.store.saveSandbox(s);
      });
    }
    if (s.shmMounted && s.shmPath) {
      await step('unmount shm', async () => {
        await unmountAll(s.shmPath!);
        s.shmMounted = false;
        this.store.saveSandbox(s);
      });
    }
    if (remove) {
      if (s.infraId) {
        const infra = this.store.rawContainer(s.infraId);
        if (infra) await step('remove infra container', () => this.destroyContainer(infra));
      }
      if (s.cgroupCreated) await step('remove pod cgroup', () => createCgroupManager({ cgroupsPath: s.cgroupParent, warn: () => {} }).destroy());
      if (errors.length === 0) {
        await rm(s.dir, { recursive: true, force: true });
        this.store.deleteSandbox(s.id);
      }
    }
    ph.log(this.log, remove ? 'sandbox teardown (remove)' : 'sandbox teardown', { id: s.id });
    if (errors.length) throw new FailedPreconditionError(`pod sandbox ${s.id}: ${errors.join('; ')}; retry the call`);
  }

  private async startInfra(s: SandboxRecord, rt: OciRuntime, handler: string): Promise<void> {
    const id = newId();
    const rootfs = this.pauseRootfs();
    const bundle = join(this.paths.containers, id);
    const c = this.newContainerRecord(id, s, rt, handler, bundle, rootfs, { name: 'POD', infra: true, logPath: '', config: null, tty: false, stdin: false, stdinOnce: false, stopSignal: 'SIGKILL' });
    s.infraId = id;
    this.store.saveSandbox(s);
    this.store.saveContainer(c);
    mkdirSync(bundle, { recursive: true, mode: 0o711 });
    const spec: Spec = {
      ociVersion: '1.2.0',
      root: { path: rootfs, readonly: true },
      process: { terminal: false, user: { uid: 65534, gid: 65534 }, args: ['/bin/busybox', 'sleep', 'infinity'], env: ['PATH=/bin'], cwd: '/', capabilities: {}, noNewPrivileges: true },
      mounts: [{ destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] }, { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755', 'size=64k'] }],
      annotations: { 'io.kubernetes.cri.container-type': 'sandbox', 'io.kubernetes.cri.sandbox-id': s.id },
      linux: {
        namespaces: [
          { type: 'mount' }, { type: 'pid' },
          ...(s.netnsPath ? [{ type: 'network' as const, path: s.netnsPath }] : []),
          ...(s.ipcnsPath ? [{ type: 'ipc' as const, path: s.ipcnsPath }] : []),
          ...(s.utsnsPath ? [{ type: 'uts' as const, path: s.utsnsPath }] : []),
        ],
        cgroupsPath: c.cgroupsPath,
        resources: { devices: [{ allow: false, access: 'rwm' }] },
        maskedPaths: ['/proc/kcore', '/proc/keys'],
        readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
      },
    };
    await this.createOci(c, spec);
    await rt.start(id);
    c.phase = 'running';
    c.startedAt = nowNs();
    this.store.saveContainer(c);
  }

  /** A read-only root with only a static busybox: what the infra process runs from. */
  private pauseRootfs(): string {
    const root = this.paths.pauseRootfs;
    if (existsSync(join(root, 'bin', 'busybox'))) return root;
    const tmp = `${root}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    for (const d of ['bin', 'proc', 'dev', 'etc']) mkdirSync(join(tmp, d), { recursive: true, mode: 0o755 });
    copyFileSync('/bin/busybox', join(tmp, 'bin', 'busybox'));
    writeFileSync(join(tmp, 'etc', 'passwd'), 'nobody:x:65534:65534:nobody:/:/bin/false\n');
    symlinkSync('busybox', join(tmp, 'bin', 'sleep'));
    mkdirSync(join(root, '..'), { recursive: true });
    rmSync(root, { recursive: true, force: true });
    renameSync(tmp, root);
    return root;
  }

  async stopPodSandbox(idOrPrefix: string): Promise<void> {
    if (!idOrPrefix) throw new InvalidArgumentError('StopPodSandbox: pod_sandbox_id is required');
    const s0 = this.store.findSandbox(idOrPrefix);
    if (!s0) throw new NotFoundError(`pod sandbox ${JSON.stringify(idOrPrefix)} does not exist`);
    await this.locked(s0.id, async () => {
      const s = this.store.findSandbox(s0.id);
      if (!s) return;
      // The containers are killed while the network is torn down (most of the time is CNI DEL):
      // the pod stops either way, and a failure of either is still reported.
      const apps = this.store.containersOf(s.id).filter((c) => !c.infra);
      const [stopped, torn] = await Promise.allSettled([Promise.all(apps.map((c) => this.stopContainerRecord(c, 0))), this.teardownSandbox(s, false)]);
      if (stopped.status === 'rejected') throw stopped.reason;
      if (torn.status === 'rejected') throw torn.reason;
      if (s.phase !== 'notready') {
        s.phase = 'notready';
        this.store.saveSandbox(s);
      }
    });
  }

  async removePodSandbox(idOrPrefix: string): Promise<void> {
    if (!idOrPrefix) throw new InvalidArgumentError('RemovePodSandbox: pod_sandbox_id is required');
    const s0 = this.store.findSandbox(idOrPrefix);
    if (!s0) return; // already gone: RemovePodSandbox is idempotent
    await this.locked(s0.id, async () => {
      const s = this.store.findSandbox(s0.id);
      if (!s) return;
      await Promise.all(this.store.containersOf(s.id).filter((c) => !c.infra).map((c) => this.removeContainerRecord(c)));
      await this.teardownSandbox(s, true);
    });
  }

  private sandboxStatus(s: SandboxRecord): Reply<T.PodSandboxStatus> {
    const nso = s.config.linux?.security_context?.namespace_options;
    return {
      id: s.id,
      metadata: s.config.metadata,
      state: s.phase === 'ready' ? 'SANDBOX_READY' : 'SANDBOX_NOTREADY',
      created_at: s.createdAt,
      network: { ip: s.ips[0] ?? '', additional_ips: s.ips.slice(1).map((ip) => ({ ip })) },
      linux: { namespaces: { options: { network: nso?.network ?? 'POD', pid: nso?.pid ?? 'CONTAINER', ipc: nso?.ipc ?? 'POD', target_id: nso?.target_id ?? '' } } },
      labels: s.config.labels,
      annotations: s.config.annotations,
      runtime_handler: s.runtimeHandler,
    };
  }

  podSandboxStatus(req: T.PodSandboxStatusRequest): Reply<T.PodSandboxStatusResponse> {
    const s = this.store.sandbox(req.pod_sandbox_id);
    const info: Record<string, string> = {};
    if (req.verbose) {
      info.info = JSON.stringify({
        netnsPath: s.netnsPath ?? '', ipcnsPath: s.ipcnsPath ?? '', utsnsPath: s.utsnsPath ?? '', cgroupParent: s.cgroupParent,
        runtimeHandler: s.runtimeHandler, infraContainerId: s.infraId ?? '', hostname: s.hostname, config: s.config,
      });
    }
    const cs = this.store.containersOf(s.id).filter((c) => !c.infra && c.phase !== 'creating').map((c) => this.containerStatus(c));
    return { status: this.sandboxStatus(s), info, containers_statuses: cs, timestamp: nowNs() };
  }

  listPodSandbox(f: T.PodSandboxFilter | null): Reply<T.PodSandbox>[] {
    return this.store
      .allSandboxes()
      .filter((s) => s.phase !== 'creating')
      .filter((s) => !f || ((!f.id || s.id.startsWith(f.id)) && (!f.state || (f.state.state === 'SANDBOX_READY') === (s.phase === 'ready')) && matchLabels(s.config.labels, f.label_selector)))
      .map((s) => ({ id: s.id, metadata: s.config.metadata, state: s.phase === 'ready' ? 'SANDBOX_READY' : 'SANDBOX_NOTREADY', created_at: s.createdAt, labels: s.config.labels, annotations: s.config.annotations, runtime_handler: s.runtimeHandler }));
  }

  // ------------------------------------------------------------------ containers

  private newContainerRecord(
    id: string, s: SandboxRecord, rt: OciRuntime, handler: string, bundle: string, rootfs: string,
    x: { name: string; infra?: boolean; logPath: string; config: T.ContainerConfig | null; tty: boolean; stdin: boolean; stdinOnce: boolean; stopSignal: string; imageRef?: string; imageName?: string; attempt?: number },
  ): ContainerRecord {
    return {
      id, sandboxId: s.id, phase: 'creating', infra: x.infra, name: x.name, attempt: x.attempt ?? 0, config: x.config,
      imageRef: x.imageRef ?? '', imageName: x.imageName ?? '', ociId: id, runtimeHandler: handler, runtimePath: rt.path, runtimeRoot: rt.root,
      bundle, rootfs, logPath: x.logPath, conmonLogPath: x.logPath || join(bundle, 'console.log'),
      attachSocket: join(this.paths.sockets, id, 'attach'), ctlFifo: join(bundle, 'ctl'),
      pidFile: join(bundle, 'pidfile'), conmonPidFile: join(bundle, 'conmon.pid'), exitFile: join(this.paths.exits, id),
      cgroupsPath: `${s.cgroupParent}/${id}`, stopSignal: x.stopSignal, createdAt: nowNs(), tty: x.tty, stdin: x.stdin, stdinOnce: x.stdinOnce,
    };
  }

  private async createOci(c: ContainerRecord, spec: Spec): Promise<void> {
    const ph = new Phases();
    validateSpec(spec, { requireProcess: true });
    writeFileSync(join(c.bundle, 'config.json'), JSON.stringify(spec, null, 1));
    rmSync(c.exitFile, { force: true });
    c.ociCreated = true; // from here on, `delete --force` is owed
    this.store.saveContainer(c);
    ph.mark('spec+record');
    const { pid } = await startConmon({
      conmon: this.conmon, id: c.id, name: c.name, runtime: this.rtOf(c), bundle: c.bundle, pidFile: c.pidFile, conmonPidFile: c.conmonPidFile,
      exitDir: this.paths.exits, socketDir: this.paths.sockets, logPath: c.conmonLogPath, logMaxBytes: this.o.config.logs.max_container_log_bytes,
      tty: c.tty, stdin: c.stdin, stdinOnce: c.stdinOnce,
    });
    ph.mark('conmon');
    c.pid = pid;
    try {
      c.conmonPid = Number(readFileSync(c.conmonPidFile, 'utf8').trim()) || undefined;
    } catch {}
    this.store.saveContainer(c);
    ph.mark('record');
    ph.log(this.log, 'create OCI container', { id: c.id });
  }

  async createContainer(req: T.CreateContainerRequest): Promise<string> {
    const ph = new Phases();
    const cfg = req.config;
    if (!req.pod_sandbox_id) throw new InvalidArgumentError('CreateContainer: pod_sandbox_id is required');
    if (!cfg) throw new InvalidArgumentError('CreateContainer: config is required');
    if (!cfg.metadata?.name) throw new InvalidArgumentError('CreateContainer: config.metadata.name is required');
    if (!cfg.image?.image) throw new InvalidArgumentError('CreateContainer: config.image.image is required');
    const s = this.store.sandbox(req.pod_sandbox_id);
    if (s.phase !== 'ready') throw new FailedPreconditionError(`CreateContainer: pod sandbox ${s.id} is not ready (it was stopped); create a new sandbox`);
    const name = cfg.metadata.name;
    const dup = this.store.containersOf(s.id).find((c) => !c.infra && c.name === name && c.attempt === cfg.metadata!.attempt);
    if (dup) throw new AlreadyExistsError(`container ${name} (attempt ${cfg.metadata.attempt}) already exists in pod sandbox ${s.id} as ${dup.id}; remove it first`);
    let image;
    try {
      image = this.o.images.get(cfg.image.image);
    } catch (e) {
      if (e instanceof CorralError && e.code === 'NOT_FOUND') throw new NotFoundError(`CreateContainer: image ${JSON.stringify(cfg.image.image)} is not present on the node; pull it first`);
      throw e;
    }
    if (!image.unpacked) throw new FailedPreconditionError(`CreateContainer: image ${cfg.image.image} is not unpacked; pull it again`);
    const nso = cfg.linux?.security_context?.namespace_options;
    let pid: PidNamespace;
    if (nso?.pid === 'NODE' || s.hostPid) pid = { mode: 'host' };
    else if (nso?.pid === 'POD' || s.sharedPid) {
      const infra = s.infraId ? this.store.rawContainer(s.infraId) : undefined;
      if (!infra?.pid || !pidAlive(infra.pid)) throw new FailedPreconditionError(`CreateContainer: the infra process holding pod ${s.id}'s PID namespace is gone; recreate the pod`);
      pid = { mode: 'path', path: `/proc/${infra.pid}/ns/pid` };
    } else if (nso?.pid === 'TARGET') {
      const t = this.store.container(nso.target_id);
      if (t.phase !== 'running' || !t.pid) throw new FailedPreconditionError(`CreateContainer: target container ${nso.target_id} for the PID namespace is not running`);
      pid = { mode: 'path', path: `/proc/${t.pid}/ns/pid` };
    } else pid = { mode: 'new' };

    const { name: handler, rt } = this.runtimeFor(s.runtimeHandler);
    const id = newId();
    const bundle = join(this.paths.containers, id);
    const logPath = s.config.log_directory && cfg.log_path ? join(s.config.log_directory, cfg.log_path) : '';
    const imgCfg = (image.config.config ?? {}) as ImageRuntimeConfig;
    const c = this.newContainerRecord(id, s, rt, handler, bundle, join(bundle, 'rootfs'), {
      name, logPath, config: cfg, tty: cfg.tty, stdin: cfg.stdin, stdinOnce: cfg.stdin_once, stopSignal: imgCfg.StopSignal || 'SIGTERM',
      imageRef: image.id, imageName: image.name, attempt: cfg.metadata.attempt,
    });
    c.resources = cfg.linux?.resources ?? undefined;
    ph.mark('validate+image');
    this.store.saveContainer(c);
    ph.mark('record');
    try {
      mkdirSync(bundle, { recursive: true, mode: 0o711 });
      if (logPath) mkdirSync(join(logPath, '..'), { recursive: true });
      const snapshotKey = `corral-container-${id}`;
      c.snapshotKey = snapshotKey;
      this.store.saveContainer(c, true); // the snapshot outlives a reboot: this one is synced
      // Under the store lock: a `corral` CLI process sharing the store may be collecting garbage.
      c.snapshotMounts = await this.o.images.withStoreLock(() => this.o.images.snapshotter.prepare(snapshotKey, image.chainId || undefined, { 'corral.io/container': id }));
      ph.mark('snapshot prepare');
      c.rootfsMounted = true;
      this.store.saveContainer(c);
      await mountSnapshot(c.snapshotMounts, c.rootfs);
      ph.mark('rootfs mount');
      const built = buildContainerSpec({
        id, sandboxId: s.id, rootfs: c.rootfs, image: imgCfg, config: cfg, cgroupV2: this.cgroupV2, minOomScoreAdj: ownOomScoreAdj(),
        sandbox: {
          netnsPath: s.netnsPath, ipcnsPath: s.ipcnsPath, utsnsPath: s.utsnsPath, pid,
          hostsFile: join(s.dir, 'hosts'), resolvConf: join(s.dir, 'resolv.conf'), hostnameFile: join(s.dir, 'hostname'),
          shmPath: s.hostIpc ? '/dev/shm' : s.shmPath, hostname: s.hostname, cgroupParent: s.cgroupParent,
        },
      });
      for (const w of built.warnings) this.log.warn(w, { container: id });
      c.warnings = built.warnings;
      ph.mark('build spec');
      await this.createOci(c, built.spec);
      ph.mark('create oci');
      c.phase = 'created';
      this.store.saveContainer(c);
      ph.mark('record');
      ph.log(this.log, 'CreateContainer', { id });
    } catch (err) {
      this.log.warn('CreateContainer failed; rolling back', { id, error: (err as Error).message });
      await this.destroyContainer(c).catch((e) => this.log.error('rollback after CreateContainer failure failed', { id, error: String(e) }));
      throw err;
    }
    this.publish(c, 'CONTAINER_CREATED_EVENT');
    return id;
  }

  /** Remove every trace of a container record (kills it if needed). */
  private async destroyContainer(c: ContainerRecord): Promise<void> {
    const ph = new Phases();
    if (c.ociCreated) await this.rtOf(c).delete(c.ociId, true);
    ph.mark('oci delete');
    if (c.rootfsMounted) {
      await unmountAll(c.rootfs);
      c.rootfsMounted = false;
      this.store.saveContainer(c);
    }
    ph.mark('umount');
    const snapshotKey = c.snapshotKey;
    if (snapshotKey) {
      try {
        await this.o.images.withStoreLock(() => this.o.images.snapshotter.remove(snapshotKey));
      } catch (e) {
        if (!(e instanceof CorralError && e.code === 'NOT_FOUND')) throw e;
      }
    }
    ph.mark('snapshot remove');
    // The OCI runtime removed the container's cgroup; a leftover one (crash) is removed here.
    const cg = createCgroupManager({ cgroupsPath: c.cgroupsPath, warn: () => {} });
    if (cg.exists()) await cg.destroy();
    await Promise.all([c.bundle, c.exitFile, join(this.paths.sockets, c.id)].map((p) => rm(p, { recursive: true, force: true })));
    this.store.deleteContainer(c.id);
    ph.mark('cleanup');
    ph.log(this.log, 'destroy container', { id: c.id });
  }

  async startContainer(idOrPrefix: string): Promise<void> {
    const c0 = this.store.container(idOrPrefix);
    await this.locked(c0.id, async () => {
      const c = this.store.container(c0.id);
      this.refresh(c);
      if (c.phase !== 'created') throw new FailedPreconditionError(`StartContainer: container ${c.id} is ${c.phase}, not created`);
      const s = this.store.findSandbox(c.sandboxId);
      if (!s || s.phase !== 'ready') throw new FailedPreconditionError(`StartContainer: pod sandbox ${c.sandboxId} is not ready`);
      const startedAt = nowNs();
      const ph = new Phases();
      try {
        await this.rtOf(c).start(c.ociId);
        ph.mark('oci start');
      } catch (e) {
        c.phase = 'exited';
        c.finishedAt = nowNs();
        c.exitCode = 128;
        c.reason = 'StartError';
        c.message = (e as Error).message;
        this.store.saveContainer(c);
        throw e;
      }
      c.phase = 'running';
      c.startedAt = startedAt;
      this.store.saveContainer(c);
      ph.mark('record');
      ph.log(this.log, 'StartContainer', { id: c.id });
    });
    const c = this.store.container(c0.id);
    this.refresh(c);
    this.publish(c, 'CONTAINER_STARTED_EVENT');
    this.reportRunning();
  }

  /** Pick up an exit recorded by conmon. Returns true when the container is (now) exited. */
  refresh(c: ContainerRecord): boolean {
    if (c.phase === 'exited') return true;
    if (c.phase === 'creating') return false;
    let code: number | undefined;
    let finishedAt: string | undefined;
    try {
      const text = readFileSync(c.exitFile, 'utf8').trim();
      if (text !== '') {
        code = Number(text);
        finishedAt = nsOfMtime(c.exitFile);
      }
    } catch {}
    if (code === undefined) {
      // conmon gone without an exit file (killed): the container's fate is unknown.
      if (c.conmonPid && !pidAlive(c.conmonPid) && !(c.pid && pidAlive(c.pid))) {
        code = 255;
        finishedAt = nowNs();
        c.message = 'conmon, the container monitor, died; the exit status is unknown';
      } else return false;
    }
    let oom = 0;
    try {
      oom = createCgroupManager({ cgroupsPath: c.cgroupsPath, warn: () => {} }).oomKillCount();
    } catch {}
    c.exitCode = Number.isFinite(code) ? code : 255;
    c.finishedAt = finishedAt;
    if (c.startedAt && c.finishedAt && BigInt(c.finishedAt) < BigInt(c.startedAt)) c.finishedAt = c.startedAt;
    if (!c.startedAt) c.startedAt = c.phase === 'running' ? c.finishedAt : undefined;
    c.reason = oom > 0 ? 'OOMKilled' : c.exitCode === 0 ? 'Completed' : 'Error';
    c.phase = 'exited';
    this.store.saveContainer(c);
    this.log.info('container exited', { id: c.id, exitCode: c.exitCode, reason: c.reason });
    this.publish(c, 'CONTAINER_STOPPED_EVENT');
    this.reportRunning();
    return true;
  }

  /**
   * Exits are noticed when conmon writes the exit file (inotify on the exits dir), so waiting for a
   * stop costs no polling and container events go out at once; the 1 s poll stays as a fallback.
   */
  private watchExits(): void {
    if (this.exitWatcher) return;
    try {
      this.exitWatcher = watch(this.paths.exits, { persistent: false }, (_event, name) => {
        if (!name) return;
        const id = String(name);
        const waiters = this.exitWaiters.get(id);
        if (waiters) for (const wake of waiters) wake();
        const c = this.store.rawContainer(id);
        if (c && (c.phase === 'running' || c.phase === 'created')) this.refresh(c);
      });
      this.exitWatcher.on('error', (e) => {
        this.log.warn('watching container exit files failed; exits are polled', { error: String(e) });
        this.exitWatcher?.close();
        this.exitWatcher = null;
      });
    } catch (e) {
      this.log.warn('cannot watch container exit files; exits are polled', { dir: this.paths.exits, error: String(e) });
    }
  }

  /** Resolves when the exit file of `id` changes, or after `ms`. */
  private exitFileChange(id: string, ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      let set = this.exitWaiters.get(id);
      if (!set) this.exitWaiters.set(id, (set = new Set()));
      const wake = () => {
        clearTimeout(timer);
        set!.delete(wake);
        if (set!.size === 0 && this.exitWaiters.get(id) === set) this.exitWaiters.delete(id);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      set.add(wake);
    });
  }

  private async waitExit(c: ContainerRecord, ms: number): Promise<boolean> {
    const end = Date.now() + ms;
    // without the watcher, poll fast first (conmon writes the file within ms of a SIGKILL), then back off
    let delay = 1;
    while (Date.now() < end) {
      if (this.refresh(c)) return true;
      const wait = Math.max(1, Math.min(this.exitWatcher ? 50 : delay, end - Date.now()));
      await this.exitFileChange(c.id, wait);
      delay = Math.min(delay * 2, 50);
    }
    return this.refresh(c);
  }

  private async killAndWait(c: ContainerRecord): Promise<void> {
    if (c.phase !== 'running' && c.phase !== 'created') return;
    if (this.refresh(c)) return;
    const ph = new Phases();
    await this.rtOf(c).kill(c.ociId, 'KILL', true).catch(() => this.rtOf(c).kill(c.ociId, 'KILL').catch(() => {}));
    ph.mark('oci kill');
    if (!(await this.waitExit(c, 30_000))) throw new FailedPreconditionError(`container ${c.id} did not exit after SIGKILL`);
    ph.mark('wait exit');
    ph.log(this.log, 'kill container', { id: c.id });
  }

  private async stopContainerRecord(c: ContainerRecord, timeoutSec: number): Promise<void> {
    if (this.refresh(c)) return;
    if (timeoutSec > 0 && c.phase === 'running') {
      await this.rtOf(c).kill(c.ociId, c.stopSignal).catch((e) => this.log.warn('stop signal failed', { id: c.id, error: String(e) }));
      if (await this.waitExit(c, timeoutSec * 1000)) return;
    }
    await this.killAndWait(c);
  }

  async stopContainer(idOrPrefix: string, timeout: number): Promise<void> {
    const c0 = this.store.container(idOrPrefix);
    await this.locked(c0.id, () => this.stopContainerRecord(this.store.container(c0.id), timeout));
  }

  private async removeContainerRecord(c: ContainerRecord): Promise<void> {
    await this.killAndWait(c);
    await this.destroyContainer(c);
    this.publish(c, 'CONTAINER_DELETED_EVENT');
    this.reportRunning();
  }

  async removeContainer(idOrPrefix: string): Promise<void> {
    if (!idOrPrefix) throw new InvalidArgumentError('RemoveContainer: container_id is required');
    const c0 = this.store.findContainer(idOrPrefix);
    if (!c0) return; // idempotent
    await this.locked(c0.id, async () => {
      const c = this.store.findContainer(c0.id);
      if (c) await this.removeContainerRecord(c);
    });
  }

  containerStatus(c: ContainerRecord): Reply<T.ContainerStatus> {
    const state: T.ContainerState = c.phase === 'running' ? 'CONTAINER_RUNNING' : c.phase === 'created' ? 'CONTAINER_CREATED' : c.phase === 'exited' ? 'CONTAINER_EXITED' : 'CONTAINER_UNKNOWN';
    return {
      id: c.id, metadata: c.config?.metadata ?? { name: c.name, attempt: c.attempt }, state, created_at: c.createdAt, started_at: c.startedAt ?? '0', finished_at: c.finishedAt ?? '0',
      exit_code: c.exitCode ?? 0, image: c.config?.image ?? null, image_ref: c.imageRef, reason: c.reason ?? '', message: c.message ?? '',
      labels: c.config?.labels ?? {}, annotations: c.config?.annotations ?? {}, mounts: c.config?.mounts ?? [], log_path: c.logPath,
      resources: c.resources ? { linux: c.resources } : null,
    };
  }

  containerStatusResponse(req: T.ContainerStatusRequest): Reply<T.ContainerStatusResponse> {
    const c = this.store.container(req.container_id);
    this.refresh(c);
    const info: Record<string, string> = {};
    if (req.verbose) {
      let spec: unknown = null;
      try {
        spec = JSON.parse(readFileSync(join(c.bundle, 'config.json'), 'utf8'));
      } catch {}
      info.info = JSON.stringify({ pid: c.pid ?? 0, sandboxID: c.sandboxId, runtimeHandler: c.runtimeHandler, runtimeRoot: c.runtimeRoot, bundle: c.bundle, snapshotKey: c.snapshotKey, warnings: c.warnings ?? [], runtimeSpec: spec });
    }
    return { status: this.containerStatus(c), info };
  }

  listContainers(f: T.ContainerFilter | null): Reply<T.Container>[] {
    const out: Reply<T.Container>[] = [];
    for (const c of this.store.allContainers()) {
      if (c.infra || c.phase === 'creating') continue;
      this.refresh(c);
      const st = this.containerStatus(c);
      if (f) {
        if (f.id && !c.id.startsWith(f.id)) continue;
        if (f.pod_sandbox_id && !c.sandboxId.startsWith(f.pod_sandbox_id)) continue;
        if (f.state && f.state.state !== st.state) continue;
        if (!matchLabels(c.config?.labels ?? {}, f.label_selector)) continue;
      }
      out.push({ id: c.id, pod_sandbox_id: c.sandboxId, metadata: st.metadata, image: st.image, image_ref: c.imageRef, state: st.state, created_at: c.createdAt, labels: st.labels, annotations: st.annotations });
    }
    return out;
  }

  async updateContainerResources(req: T.UpdateContainerResourcesRequest): Promise<void> {
    const c = this.store.container(req.container_id);
    this.refresh(c);
    if (c.phase !== 'running' && c.phase !== 'created') throw new FailedPreconditionError(`UpdateContainerResources: container ${c.id} is ${c.phase}`);
    if (!req.linux) return;
    const warnings: string[] = [];
    const res = criResources(req.linux, this.cgroupV2, warnings);
    for (const w of warnings) this.log.warn(w, { container: c.id });
    const file = join(c.bundle, 'update.json');
    writeFileSync(file, JSON.stringify({ cpu: res.cpu, memory: res.memory, hugepageLimits: res.hugepageLimits, unified: res.unified }));
    await this.rtOf(c).update(c.ociId, file);
    c.resources = req.linux;
    this.store.saveContainer(c);
  }

  async reopenContainerLog(idOrPrefix: string): Promise<void> {
    const c = this.store.container(idOrPrefix);
    this.refresh(c);
    if (c.phase !== 'running') throw new FailedPreconditionError(`ReopenContainerLog: container ${c.id} is not running`);
    let fd: number;
    try {
      fd = openSync(c.ctlFifo, fsc.O_WRONLY | fsc.O_NONBLOCK);
    } catch (e) {
      throw new FailedPreconditionError(`ReopenContainerLog: conmon's control fifo ${c.ctlFifo} cannot be opened: ${(e as Error).message}`);
    }
    try {
      writeSync(fd, '2 0 0\n'); // conmon: REOPEN_LOGS_EVENT
    } finally {
      closeSync(fd);
    }
    // conmon reopens asynchronously; the kubelet (and critest) expect the file back when this returns.
    for (let i = 0; i < 250 && !existsSync(c.conmonLogPath); i++) await sleep(20);
    if (!existsSync(c.conmonLogPath)) throw new FailedPreconditionError(`ReopenContainerLog: conmon did not reopen ${c.conmonLogPath} within 5 s`);
  }

  async execSync(req: T.ExecSyncRequest): Promise<Reply<T.ExecSyncResponse>> {
    const c = this.store.container(req.container_id);
    if (req.cmd.length === 0 || !req.cmd[0]) throw new InvalidArgumentError('ExecSync: cmd is empty');
    this.refresh(c);
    if (c.phase !== 'running') throw new FailedPreconditionError(`ExecSync: container ${c.id} is ${c.phase}, not running`);
    const spec = JSON.parse(readFileSync(join(c.bundle, 'config.json'), 'utf8')) as Spec;
    const proc = { ...spec.process!, args: req.cmd, terminal: false };
    delete proc.oomScoreAdj;
    const tag = newId().slice(0, 12);
    const pf = join(this.paths.tmp, `exec-${tag}.json`);
    const pidf = join(this.paths.tmp, `exec-${tag}.pid`);
    try {
      const timeoutMs = int(req.timeout) > 0 ? int(req.timeout) * 1000 : 0;
      const r = await this.rtOf(c).execSync(c.ociId, pf, proc, pidf, timeoutMs);
      return { stdout: r.stdout, stderr: r.stderr, exit_code: r.exitCode };
    } finally {
      rmSync(pf, { force: true });
      rmSync(pidf, { force: true });
    }
  }

  // ------------------------------------------------------------------ stats

  private async containerStats(c: ContainerRecord): Promise<Reply<T.ContainerStats>> {
    const ts = nowNs();
    const attributes = { id: c.id, metadata: c.config?.metadata ?? null, labels: c.config?.labels ?? {}, annotations: c.config?.annotations ?? {} };
    const out: Reply<T.ContainerStats> = { attributes, cpu: null, memory: null, writable_layer: null };
    const cg = createCgroupManager({ cgroupsPath: c.cgroupsPath, warn: () => {} });
    if (cg.exists()) Object.assign(out, cgroupUsage(cg.stats(), ts));
    if (c.snapshotKey) {
      try {
        const u = await this.o.images.snapshotter.usage(c.snapshotKey);
        out.writable_layer = { timestamp: ts, fs_id: { mountpoint: this.o.images.snapshotter.root }, used_bytes: { value: String(u.size) }, inodes_used: { value: String(u.inodes) } };
      } catch {}
    }
    return out;
  }

  async containerStatsOne(id: string): Promise<Reply<T.ContainerStats>> {
    return this.containerStats(this.store.container(id));
  }

  async listContainerStats(f: T.ContainerStatsFilter | null): Promise<Reply<T.ContainerStats>[]> {
    const out: Reply<T.ContainerStats>[] = [];
    for (const c of this.store.allContainers()) {
      if (c.infra || c.phase === 'creating') continue;
      if (f && ((f.id && !c.id.startsWith(f.id)) || (f.pod_sandbox_id && !c.sandboxId.startsWith(f.pod_sandbox_id)) || !matchLabels(c.config?.labels ?? {}, f.label_selector))) continue;
      out.push(await this.containerStats(c));
    }
    return out;
  }

  private async sandboxStats(s: SandboxRecord): Promise<Reply<T.PodSandboxStats>> {
    const ts = nowNs();
    const cg = createCgroupManager({ cgroupsPath: s.cgroupParent, warn: () => {} });
    const usage = cg.exists() ? cgroupUsage(cg.stats(), ts) : { cpu: null, memory: null };
    let processCount = 0;
    try {
      processCount = cg.exists() ? cg.pids().length : 0;
    } catch {}
    let network: Reply<T.NetworkUsage> | null = null;
    if (s.netnsPath && existsSync(s.netnsPath)) {
      const r = await run('nsenter', [`--net=${s.netnsPath}`, 'cat', '/proc/net/dev']).catch(() => null);
      if (r?.code === 0) {
        const itfs = parseNetDev(r.stdout.toString()).filter((i) => i.name !== 'lo');
        network = { timestamp: ts, default_interface: itfs.find((i) => i.name === 'eth0') ?? itfs[0] ?? null, interfaces: itfs };
      }
    }
    const containers = [];
    for (const c of this.store.containersOf(s.id)) if (!c.infra && c.phase !== 'creating') containers.push(await this.containerStats(c));
    return {
      attributes: { id: s.id, metadata: s.config.metadata, labels: s.config.labels, annotations: s.config.annotations },
      linux: { cpu: usage.cpu, memory: usage.memory, network, process: { timestamp: ts, process_count: { value: String(processCount) } }, containers },
    };
  }

  async podSandboxStats(id: string): Promise<Reply<T.PodSandboxStats>> {
    return this.sandboxStats(this.store.sandbox(id));
  }

  async listPodSandboxStats(f: T.PodSandboxStatsFilter | null): Promise<Reply<T.PodSandboxStats>[]> {
    const out = [];
    for (const s of this.store.allSandboxes()) {
      if (s.phase === 'creating') continue;
      if (f && ((f.id && !s.id.startsWith(f.id)) || !matchLabels(s.config.labels, f.label_selector))) continue;
      out.push(await this.sandboxStats(s));
    }
    return out;
  }

  // ------------------------------------------------------------------ for the streaming backend

  /** What src/cri/streaming-backend needs: containers and sandboxes by CRI id (prefixes allowed). */
  streamTargets(): StreamTargets {
    return {
      container: (id) => {
        const c = this.store.findContainer(id);
        if (!c || c.phase === 'creating') return null;
        this.refresh(c);
        return {
          ociId: c.ociId, runtimePath: c.runtimePath, runtimeRoot: c.runtimeRoot, conmonSocketDir: this.paths.sockets, conmonCuuid: c.id,
          tty: c.tty, stdin: c.stdin, state: c.phase === 'running' ? 'running' : c.phase === 'created' ? 'created' : 'exited',
        };
      },
      sandbox: (id) => {
        const s = this.store.findSandbox(id);
        if (!s || s.phase === 'creating') return null;
        return { netnsPath: s.netnsPath ?? '' };
      },
    };
  }

  // ------------------------------------------------------------------ the gRPC handler table

  handlers(): Partial<RuntimeServiceImpl> {
    return {
      RunPodSandbox: async (req) => ({ pod_sandbox_id: await this.runPodSandbox(req) }),
      StopPodSandbox: async (req) => (await this.stopPodSandbox(req.pod_sandbox_id), {}),
      RemovePodSandbox: async (req) => (await this.removePodSandbox(req.pod_sandbox_id), {}),
      PodSandboxStatus: (req) => this.podSandboxStatus(req),
      ListPodSandbox: (req) => ({ items: this.listPodSandbox(req.filter) }),
      CreateContainer: async (req) => ({ container_id: await this.createContainer(req) }),
      StartContainer: async (req) => (await this.startContainer(req.container_id), {}),
      StopContainer: async (req) => (await this.stopContainer(req.container_id, int(req.timeout)), {}),
      RemoveContainer: async (req) => (await this.removeContainer(req.container_id), {}),
      ListContainers: (req) => ({ containers: this.listContainers(req.filter) }),
      ContainerStatus: (req) => this.containerStatusResponse(req),
      UpdateContainerResources: async (req) => (await this.updateContainerResources(req), {}),
      ReopenContainerLog: async (req) => (await this.reopenContainerLog(req.container_id), {}),
      ExecSync: (req) => this.execSync(req),
      ContainerStats: async (req) => ({ stats: await this.containerStatsOne(req.container_id) }),
      ListContainerStats: async (req) => ({ stats: await this.listContainerStats(req.filter) }),
      PodSandboxStats: async (req) => ({ stats: await this.podSandboxStats(req.pod_sandbox_id) }),
      ListPodSandboxStats: async (req) => ({ stats: await this.listPodSandboxStats(req.filter) }),
      // What corrald deliberately does not provide, said as such (not "not implemented yet"):
      CheckpointContainer: () => {
        throw new UnimplementedError('RuntimeService.CheckpointContainer: checkpointing a container needs CRIU, which corrald does not use; nothing was changed');
      },
      ListMetricDescriptors: () => {
        throw new UnimplementedError('RuntimeService.ListMetricDescriptors: corrald serves no cAdvisor-style metrics over CRI; pod and container statistics come from ListPodSandboxStats and ListContainerStats, daemon metrics from its /metrics endpoint');
      },
      ListPodSandboxMetrics: () => {
        throw new UnimplementedError('RuntimeService.ListPodSandboxMetrics: corrald serves no cAdvisor-style metrics over CRI; use ListPodSandboxStats and ListContainerStats');
      },
    };
  }
}

function cgroupUsage(st: import('../../oci/cgroups/types.ts').CgroupStats, ts: string): { cpu: Reply<T.CpuUsage>; memory: Reply<T.MemoryUsage> } {
  const raw = st.memory.raw;
  const inactive = raw.total_inactive_file ?? raw.inactive_file ?? 0;
  const usage = st.memory.usage.usage;
  const u = (n: number) => ({ value: String(Math.max(0, Math.round(n))) });
  const limit = st.memory.usage.limit;
  return {
    cpu: { timestamp: ts, usage_core_nano_seconds: u(st.cpu.usage.total), usage_nano_cores: null },
    memory: {
      timestamp: ts, working_set_bytes: u(usage > inactive ? usage - inactive : 0), usage_bytes: u(usage),
      available_bytes: limit > 0 && limit < 2 ** 62 ? u(Math.max(0, limit - (usage - inactive))) : null,
      rss_bytes: u(raw.total_rss ?? raw.rss ?? raw.anon ?? 0), page_faults: u(raw.total_pgfault ?? raw.pgfault ?? 0), major_page_faults: u(raw.total_pgmajfault ?? raw.pgmajfault ?? 0),
    },
  };
}

function parseNetDev(text: string): Reply<T.NetworkInterfaceUsage>[] {
  const out: Reply<T.NetworkInterfaceUsage>[] = [];
  for (const line of text.split('\n').slice(2)) {
    const m = /^\s*([^:]+):\s*(.*)$/.exec(line);
    if (!m) continue;
    const f = m[2]!.trim().split(/\s+/).map(Number);
    out.push({ name: m[1]!, rx_bytes: { value: String(f[0] ?? 0) }, rx_errors: { value: String(f[2] ?? 0) }, tx_bytes: { value: String(f[8] ?? 0) }, tx_errors: { value: String(f[10] ?? 0) } });
  }
  return out;
}

