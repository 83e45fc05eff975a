/**
 * Shared set-up for the runtime-service suites: a registry with a busybox image, the image
 * pulled into the daemon's store, corrald spawned on temp dirs with its own bridge, subnet and
 * cgroup root, and the leak checks of everything this suite may create.
 *
 * `runtimeSuite()` (called inside a describe) registers the before/after hooks every suite
 * shares: set-up + daemon start, then at the end every pod stopped and removed, the daemon
 * stopped, `leftovers()` asserted empty and the host cleaned.
 */
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes, randomInt } from 'node:crypto';
import { ImageService } from '../../../src/image/service.ts';
import { RegistryClient } from '../../../src/image/registry/client.ts';
import { closeIdleConnections } from '../../../src/image/registry/transport.ts';
import { buildImage, busyboxEntries, pushImage } from '../../helpers/image-builder.ts';
import { startRegistry, type TestRegistry } from '../../helpers/registry.ts';
import { call, criClients, spawnCorrald, type Client, type SpawnedDaemon } from '../harness.ts';

export interface Env {
  tag: string;
  dir: string;
  socket: string;
  bridge: string;
  subnetPrefix: string;
  cgroupRoot: string;
  image: string;
  reg: TestRegistry;
  configFile: string;
  args: string[];
}

export function pickSubnetPrefix(): string {
  const inUse = execFileSync('ip', ['-4', 'addr'], { encoding: 'utf8' }) + execFileSync('ip', ['-4', 'route', 'show', 'table', 'all'], { encoding: 'utf8' });
  for (let i = 0; i < 50; i++) {
    const o = randomInt(1, 255);
    if (!inUse.includes(`10.214.${o}.`)) return `10.214.${o}.`;
  }
  throw new Error('no free 10.214.x.0/24');
}

/** max_container_log_bytes of every suite's daemon. */
export const LOG_LIMIT = 256 * 1024;

export async function setup(): Promise<Env> {
  const tag = randomBytes(3).toString('hex');
  const dir = mkdtempSync(`/tmp/crt-${tag}-`);
  const reg = await startRegistry();
  const applets = execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).split('\n').filter((a) => a && a !== 'busybox');
  const entries = busyboxEntries().filter((e) => !(e.type === 'symlink'));
  for (const a of applets) entries.push({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox' });
  entries.push({ name: 'etc/group', data: 'root:x:0:\nnogroup:x:65534:\nstaff:x:50:nobody\n' });
  const img = buildImage([{ entries }], { cmd: ['/bin/sh', '-c', 'echo default-cmd'] });
  const image = `${reg.host}/corral-rt/busybox:1`;
  await pushImage(new RegistryClient({ hosts: { insecure: [reg.host] } }), image, img);
  const svc = await ImageService.open({ root: join(dir, 'root', 'images'), hosts: { insecure: [reg.host] } });
  await svc.pull(image);
  svc.close();
  closeIdleConnections();
  const socket = join(dir, 'cri.sock');
  const cniDir = join(dir, 'net.d');
  mkdirSync(cniDir);
  const configFile = join(dir, 'corrald.toml');
  writeFileSync(configFile, [
    `socket = ${JSON.stringify(socket)}`, `state_dir = ${JSON.stringify(join(dir, 'state'))}`, `root_dir = ${JSON.stringify(join(dir, 'root'))}`,
    '[cni]', `conf_dir = ${JSON.stringify(cniDir)}`, 'bin_dirs = ["/usr/lib/cni"]', '[metrics]', 'address = ""',
    // a foreign runc-compatible handler beside the built-in corral-oci (RuntimeClass "runc")
    '[runtime_handlers.runc]', 'path = "/usr/sbin/runc"', 'type = "oci"',
    // small enough for a test to pass it (the lifecycle suite checks the limit)
    '[logs]', `max_container_log_bytes = ${LOG_LIMIT}`, '',
  ].join('\n'));
  const subnetPrefix = pickSubnetPrefix();
  const bridge = `crt${tag}`;
  const cgroupRoot = `/corral-rt-${tag}`;
  const args = ['--config', configFile, '--pod-bridge', bridge, '--pod-subnet', `${subnetPrefix}0/24`, '--cgroup-root', cgroupRoot, '--log-level', 'debug'];
  return { tag, dir, socket, bridge, subnetPrefix, cgroupRoot, image, reg, configFile, args };
}

export interface RunningDaemon {
  d: SpawnedDaemon;
  rt: Client;
  close(): void;
}

export async function startDaemon(env: Env): Promise<RunningDaemon> {
  const d = await spawnCorrald(env.args);
  const c = criClients(env.socket);
  return { d, rt: c.runtime, close: () => c.close() };
}

export interface RuntimeSuite {
  /** Valid inside tests (set in the suite's before hook). */
  readonly env: Env;
  /** The running daemon; a suite that restarts corrald assigns the new one here. */
  daemon: RunningDaemon;
  /** The RuntimeService client of the current daemon. */
  readonly rt: Client;
}

export interface RuntimeSuiteOptions {
  /** Extra leak checks run after the daemon stopped (e.g. processes the suite learned the PIDs of). */
  leftovers?: (env: Env) => string[];
}

/** Register the shared before/after hooks in the current describe; returns the suite's handles. */
export function runtimeSuite(options: RuntimeSuiteOptions = {}): RuntimeSuite {
  let env: Env | undefined;
  let daemon: RunningDaemon | undefined;
  const suite: RuntimeSuite = {
    get env(): Env {
      if (!env) throw new Error('runtimeSuite: env is only set once the before hook ran');
      return env;
    },
    get daemon(): RunningDaemon {
      if (!daemon) throw new Error('runtimeSuite: no daemon (the before hook failed or has not run)');
      return daemon;
    },
    set daemon(d: RunningDaemon) {
      daemon = d;
    },
    get rt(): Client {
      return suite.daemon.rt;
    },
  };

  before(async () => {
    env = await setup();
    daemon = await startDaemon(env);
  });

  after(async () => {
    try {
      if (daemon) {
        const rt = daemon.rt;
        const pods = await call<{ items: { id: string }[] }>(rt, 'ListPodSandbox', {}).catch(() => ({ items: [] }));
        for (const p of pods.items) {
          await call(rt, 'StopPodSandbox', { pod_sandbox_id: p.id }).catch(() => {});
          await call(rt, 'RemovePodSandbox', { pod_sandbox_id: p.id }).catch(() => {});
        }
      }
      daemon?.close();
      if (daemon && daemon.d.child.exitCode === null && daemon.d.child.signalCode === null) {
        daemon.d.child.kill('SIGTERM');
        await daemon.d.exited;
      }
      if (env) assert.deepEqual([...leftovers(env), ...(options.leftovers?.(env) ?? [])], [], 'nothing of the suite is left on the host');
    } finally {
      if (env) await teardown(env);
    }
  });
  return suite;
}

export function podConfig(env: Env, name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    metadata: { name, uid: `uid-${name}-${env.tag}`, namespace: 'rt-test', attempt: 0 },
    hostname: name,
    log_directory: join(env.dir, 'logs', name),
    labels: { app: name, suite: env.tag },
    linux: { cgroup_parent: `${env.cgroupRoot}/${name}` },
    ...extra,
  };
}

export function containerConfig(env: Env, name: string, command: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { metadata: { name, attempt: 0 }, image: { image: env.image }, command, log_path: `${name}.log`, labels: { c: name }, ...extra };
}

export async function waitState(rt: Client, id: string, state: string, ms = 20000): Promise<Record<string, any>> {
  const end = Date.now() + ms;
  for (;;) {
    const st = (await call<{ status: Record<string, any> }>(rt, 'ContainerStatus', { container_id: id })).status;
    if (st.state === state) return st;
    if (Date.now() > end) throw new Error(`container ${id} is ${st.state}, not ${state} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Everything of ours on the host: mounts, cgroups, veths on our bridge, iptables lines. */
export function leftovers(env: Env): string[] {
  const out: string[] = [];
  for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = l.split(' ')[4];
    if (mp && mp.includes(env.dir)) out.push(`mount ${mp}`);
  }
  // The suite's own cgroup root may remain (the daemon made it as a pod cgroup's parent); nothing below it may.
  for (const h of CGROUP_HIERARCHIES) {
    let kids: string[] = [];
    try {
      kids = readdirSync(`/sys/fs/cgroup/${h}${env.cgroupRoot}`, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch {}
    for (const k of kids) out.push(`cgroup ${h}${env.cgroupRoot}/${k}`);
  }
  const links = spawnSync('ip', ['-o', 'link', 'show', 'master', env.bridge], { encoding: 'utf8' }).stdout.trim();
  if (links) out.push(`veths on ${env.bridge}: ${links}`);
  const ipt = spawnSync('iptables-save', [], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.includes(env.subnetPrefix));
  for (const l of ipt) out.push(`iptables ${l}`);
  // Processes started for the suite (conmon, runtimes, relay helpers) name its temp dir on their command line.
  for (const p of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(p) || Number(p) === process.pid) continue;
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    } catch {}
    if (cmdline.includes(env.dir)) out.push(`process ${p}: ${cmdline}`);
  }
  return out;
}

/** Identity of a host process: its pid plus its start time, so a reused pid is not mistaken for it. */
export interface ProcessId {
  pid: number;
  start: string;
  what: string;
}

export function processId(pid: number, what: string): ProcessId {
  return { pid, start: procStart(pid) ?? '', what };
}

function procStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null; // field 22, starttime
  } catch {
    return null;
  }
}

/** The processes of `ids` that are still alive (same pid, same start time), and not zombies. */
export function stillRunning(ids: ProcessId[]): string[] {
  const out: string[] = [];
  for (const p of ids) {
    if (procStart(p.pid) !== p.start) continue;
    let state = '';
    try {
      const stat = readFileSync(`/proc/${p.pid}/stat`, 'utf8');
      state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '';
    } catch {
      continue;
    }
    if (state !== 'Z' && state !== 'X') out.push(`process ${p.pid} (${p.what}) is still running`);
  }
  return out;
}

const CGROUP_HIERARCHIES = ['memory', 'cpu', 'cpuacct', 'pids', 'freezer', 'devices', 'cpuset', 'blkio', 'systemd', 'unified', 'net_cls', 'net_prio', 'perf_event', 'hugetlb', 'rdma', 'misc'];

export async function teardown(env: Env): Promise<void> {
  for (const h of CGROUP_HIERARCHIES) try { rmdirSync(`/sys/fs/cgroup/${h}${env.cgroupRoot}`); } catch {}
  spawnSync('ip', ['link', 'del', env.bridge]);
  await env.reg.stop();
  rmSync(env.dir, { recursive: true, force: true });
}
