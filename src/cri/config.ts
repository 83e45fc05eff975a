/**
 * corrald configuration: built-in defaults, overlaid by a TOML file, overlaid by command-line
 * flags. Every key is documented in config.md beside this file; unknown keys are errors so a
 * typo does not silently fall back to a default.
 */
import { readFileSync } from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { InvalidArgumentError, NotFoundError, fromNodeError } from '../errors.ts';
import { repoPath } from '../layout.ts';
import { isLogLevel, type LogLevel } from './log.ts';

export interface RuntimeHandler {
  /** Executable implementing the handler (an OCI runtime CLI). */
  path: string;
  /** What kind of handler this is; only "oci" (runc-compatible CLI) today. */
  type: 'oci';
}

export interface CorraldConfig {
  socket: string;
  state_dir: string;
  root_dir: string;
  log_level: LogLevel;
  default_runtime_handler: string;
  runtime_handlers: Record<string, RuntimeHandler>;
  cni: {
    conf_dir: string;
    bin_dirs: string[];
    /** Use a built-in bridge network when conf_dir holds no config (and report NetworkReady from it). */
    default_network: boolean;
    default_bridge: string;
    default_subnet: string;
  };
  registry: { mirrors: Record<string, string[]>; hosts_dir: string; insecure: string[] };
  /** cgroup parent of pods whose config names none. */
  cgroup_parent: string;
  /** The container monitor. */
  conmon_path: string;
  stream: { address: string; port: number; base_url: string; token_ttl_seconds: number };
  logs: { max_container_log_bytes: number };
  /** host:port for the Prometheus endpoint; "" turns it off. */
  metrics: { address: string };
}

export const DEFAULT_CONFIG_PATH = '/etc/corral/corrald.toml';

const repoBin = (name: string) => repoPath(`bin/${name}`);

export function defaultConfig(): CorraldConfig {
  return {
    socket: '/run/corral/corral.sock',
    state_dir: '/run/corral',
    root_dir: '/var/lib/corral',
    log_level: 'info',
    default_runtime_handler: 'corral-oci',
    runtime_handlers: { 'corral-oci': { path: repoBin('corral-oci'), type: 'oci' } },
    cni: { conf_dir: '/etc/cni/net.d', bin_dirs: ['/opt/cni/bin', '/usr/lib/cni'], default_network: true, default_bridge: 'corral0', default_subnet: '10.90.0.0/16' },
    registry: { mirrors: {}, hosts_dir: '/etc/corral/certs.d', insecure: [] },
    cgroup_parent: '/corral',
    conmon_path: '/usr/bin/conmon',
    stream: { address: '127.0.0.1', port: 0, base_url: '', token_ttl_seconds: 60 },
    logs: { max_container_log_bytes: 10 * 1024 * 1024 },
    metrics: { address: '127.0.0.1:9464' },
  };
}

// ---- validation ----------------------------------------------------------------------

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);

function bad(where: string, key: string, want: string, got: unknown): never {
  const shown = typeof got === 'string' ? JSON.stringify(got) : Array.isArray(got) ? 'an array' : typeof got;
  throw new InvalidArgumentError(`${where}: ${key} must be ${want}, got ${shown}`);
}

function onlyKeys(where: string, section: string, o: Obj, allowed: string[]): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) {
      throw new InvalidArgumentError(`${where}: unknown key ${section ? `${section}.` : ''}${k} (known: ${allowed.join(', ')})`);
    }
  }
}

function str(where: string, key: string, v: unknown, opts: { absolute?: boolean; empty?: boolean } = {}): string {
  if (typeof v !== 'string') bad(where, key, 'a string', v);
  if (!opts.empty && v === '') bad(where, key, 'a non-empty string', v);
  if (opts.absolute && v !== '' && !v.startsWith('/')) bad(where, key, 'an absolute path', v);
  return v;
}

function int(where: string, key: string, v: unknown, min: number, max: number): number {
  const n = typeof v === 'bigint' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) bad(where, key, `an integer in ${min}..${max}`, v);
  return n;
}

function strList(where: string, key: string, v: unknown, absolute = false): string[] {
  if (!Array.isArray(v)) bad(where, key, 'an array of strings', v);
  return v.map((x, i) => str(where, `${key}[${i}]`, x, { absolute }));
}

function hostPort(where: string, key: string, v: unknown, allowEmpty: boolean): string {
  const s = str(where, key, v, { empty: allowEmpty });
  if (s === '' && allowEmpty) return s;
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:\[\]]*):(\d+)$/.exec(s);
  if (!m || Number(m[2]) > 65535) bad(where, key, 'host:port (e.g. "127.0.0.1:9464")', v);
  return s;
}

/** Overlay a parsed TOML document onto `base` (mutates and returns base). */
export function applyDocument(base: CorraldConfig, doc: Obj, where: string): CorraldConfig {
  onlyKeys(where, '', doc, ['socket', 'state_dir', 'root_dir', 'log_level', 'default_runtime_handler', 'runtime_handlers', 'cni', 'registry', 'stream', 'logs', 'metrics', 'cgroup_parent', 'conmon_path']);
  if (doc.cgroup_parent !== undefined) base.cgroup_parent = str(where, 'cgroup_parent', doc.cgroup_parent, { absolute: true });
  if (doc.conmon_path !== undefined) base.conmon_path = str(where, 'conmon_path', doc.conmon_path, { absolute: true });
  if (doc.socket !== undefined) base.socket = str(where, 'socket', doc.socket, { absolute: true });
  if (doc.state_dir !== undefined) base.state_dir = str(where, 'state_dir', doc.state_dir, { absolute: true });
  if (doc.root_dir !== undefined) base.root_dir = str(where, 'root_dir', doc.root_dir, { absolute: true });
  if (doc.log_level !== undefined) {
    if (!isLogLevel(doc.log_level)) bad(where, 'log_level', 'one of debug, info, warn, error', doc.log_level);
    base.log_level = doc.log_level;
  }
  if (doc.default_runtime_handler !== undefined) base.default_runtime_handler = str(where, 'default_runtime_handler', doc.default_runtime_handler);
  if (doc.runtime_handlers !== undefined) {
    if (!isObj(doc.runtime_handlers)) bad(where, 'runtime_handlers', 'a table', doc.runtime_handlers);
    for (const [name, h] of Object.entries(doc.runtime_handlers)) {
      const key = `runtime_handlers.${name}`;
      if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(name)) bad(where, key, 'named with lower-case letters, digits, "." and "-"', name);
      if (!isObj(h)) bad(where, key, 'a table with path and type', h);
      onlyKeys(where, key, h, ['path', 'type']);
      const path = str(where, `${key}.path`, h.path, { absolute: true });
      const type = h.type ?? 'oci';
      if (type !== 'oci') bad(where, `${key}.type`, '"oci"', type);
      base.runtime_handlers[name] = { path, type };
    }
  }
  if (doc.cni !== undefined) {
    if (!isObj(doc.cni)) bad(where, 'cni', 'a table', doc.cni);
    onlyKeys(where, 'cni', doc.cni, ['conf_dir', 'bin_dirs', 'default_network', 'default_bridge', 'default_subnet']);
    if (doc.cni.default_network !== undefined) {
      if (typeof doc.cni.default_network !== 'boolean') bad(where, 'cni.default_network', 'true or false', doc.cni.default_network);
      base.cni.default_network = doc.cni.default_network;
    }
    if (doc.cni.default_bridge !== undefined) {
      base.cni.default_bridge = str(where, 'cni.default_bridge', doc.cni.default_bridge);
      if (!/^[A-Za-z0-9_.-]{1,15}$/.test(base.cni.default_bridge)) bad(where, 'cni.default_bridge', 'an interface name of at most 15 characters', doc.cni.default_bridge);
    }
    if (doc.cni.default_subnet !== undefined) {
      base.cni.default_subnet = str(where, 'cni.default_subnet', doc.cni.default_subnet);
      if (!/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(base.cni.default_subnet)) bad(where, 'cni.default_subnet', 'an IPv4 CIDR such as "10.90.0.0/16"', doc.cni.default_subnet);
    }
    if (doc.cni.conf_dir !== undefined) base.cni.conf_dir = str(where, 'cni.conf_dir', doc.cni.conf_dir, { absolute: true });
    if (doc.cni.bin_dirs !== undefined) base.cni.bin_dirs = strList(where, 'cni.bin_dirs', doc.cni.bin_dirs, true);
  }
  if (doc.registry !== undefined) {
    if (!isObj(doc.registry)) bad(where, 'registry', 'a table', doc.registry);
    onlyKeys(where, 'registry', doc.registry, ['mirrors', 'hosts_dir', 'insecure']);
    if (doc.registry.insecure !== undefined) base.registry.insecure = strList(where, 'registry.insecure', doc.registry.insecure);
    if (doc.registry.hosts_dir !== undefined) base.registry.hosts_dir = str(where, 'registry.hosts_dir', doc.registry.hosts_dir, { absolute: true });
    if (doc.registry.mirrors !== undefined) {
      if (!isObj(doc.registry.mirrors)) bad(where, 'registry.mirrors', 'a table of registry = [endpoints]', doc.registry.mirrors);
      for (const [reg, eps] of Object.entries(doc.registry.mirrors)) {
        const list = strList(where, `registry.mirrors."${reg}"`, eps);
        for (const e of list) {
          if (!/^https?:\/\/[^/\s]+/.test(e)) bad(where, `registry.mirrors."${reg}"`, 'a list of http(s):// URLs', e);
        }
        base.registry.mirrors[reg] = list;
      }
    }
  }
  if (doc.stream !== undefined) {
    if (!isObj(doc.stream)) bad(where, 'stream', 'a table', doc.stream);
    onlyKeys(where, 'stream', doc.stream, ['address', 'port', 'base_url', 'token_ttl_seconds']);
    if (doc.stream.address !== undefined) base.stream.address = str(where, 'stream.address', doc.stream.address);
    if (doc.stream.port !== undefined) base.stream.port = int(where, 'stream.port', doc.stream.port, 0, 65535);
    if (doc.stream.base_url !== undefined) {
      base.stream.base_url = str(where, 'stream.base_url', doc.stream.base_url, { empty: true });
      if (base.stream.base_url && !/^https?:\/\//.test(base.stream.base_url)) bad(where, 'stream.base_url', 'an http(s):// URL or ""', doc.stream.base_url);
    }
    if (doc.stream.token_ttl_seconds !== undefined) base.stream.token_ttl_seconds = int(where, 'stream.token_ttl_seconds', doc.stream.token_ttl_seconds, 1, 3600);
  }
  if (doc.logs !== undefined) {
    if (!isObj(doc.logs)) bad(where, 'logs', 'a table', doc.logs);
    onlyKeys(where, 'logs', doc.logs, ['max_container_log_bytes']);
    if (doc.logs.max_container_log_bytes !== undefined) {
      base.logs.max_container_log_bytes = int(where, 'logs.max_container_log_bytes', doc.logs.max_container_log_bytes, 0, Number.MAX_SAFE_INTEGER);
    }
  }
  if (doc.metrics !== undefined) {
    if (!isObj(doc.metrics)) bad(where, 'metrics', 'a table', doc.metrics);
    onlyKeys(where, 'metrics', doc.metrics, ['address']);
    if (doc.metrics.address !== undefined) base.metrics.address = hostPort(where, 'metrics.address', doc.metrics.address, true);
  }
  return base;
}

export function checkConsistency(c: CorraldConfig, where: string): CorraldConfig {
  if (!c.runtime_handlers[c.default_runtime_handler]) {
    throw new InvalidArgumentError(
      `${where}: default_runtime_handler ${JSON.stringify(c.default_runtime_handler)} is not in runtime_handlers (have: ${Object.keys(c.runtime_handlers).join(', ') || 'none'})`,
    );
  }
  return c;
}

export function parseConfigText(text: string, where: string): CorraldConfig {
  let doc: Obj;
  try {
    doc = parseToml(text) as Obj;
  } catch (err) {
    throw new InvalidArgumentError(`${where}: not valid TOML: ${err instanceof Error ? err.message : String(err)}`);
  }
  return checkConsistency(applyDocument(defaultConfig(), doc, where), where);
}

/**
 * Load a config file. With `required` false (no --config given) a missing default file just
 * means "all defaults".
 */
export function loadConfigFile(path: string, required: boolean): CorraldConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') {
      if (!required) return defaultConfig();
      throw new NotFoundError(`config file ${path} does not exist; create it or drop --config to use the defaults`);
    }
    throw fromNodeError(err, `read config file ${path}`);
  }
  return parseConfigText(text, path);
}

// ---- flags ---------------------------------------------------------------------------

export interface ParsedArgs {
  help: boolean;
  version: boolean;
  configPath: string | null;
  /** Flag overrides as a TOML-shaped document, applied after the file. */
  overrides: Obj;
}

const valueFlags: Record<string, (o: Obj, v: string) => void> = {
  '--socket': (o, v) => (o.socket = v),
  '--state-dir': (o, v) => (o.state_dir = v),
  '--root-dir': (o, v) => (o.root_dir = v),
  '--log-level': (o, v) => (o.log_level = v),
  '--default-runtime-handler': (o, v) => (o.default_runtime_handler = v),
  '--cni-conf-dir': (o, v) => (sub(o, 'cni').conf_dir = v),
  '--cni-bin-dir': (o, v) => {
    const c = sub(o, 'cni');
    c.bin_dirs = [...((c.bin_dirs as string[]) ?? []), v];
  },
  '--registry-hosts-dir': (o, v) => (sub(o, 'registry').hosts_dir = v),
  '--stream-address': (o, v) => (sub(o, 'stream').address = v),
  '--stream-port': (o, v) => (sub(o, 'stream').port = /^\d+$/.test(v) ? Number(v) : v),
  '--stream-base-url': (o, v) => (sub(o, 'stream').base_url = v),
  '--metrics-address': (o, v) => (sub(o, 'metrics').address = v),
  '--pod-bridge': (o, v) => (sub(o, 'cni').default_bridge = v),
  '--pod-subnet': (o, v) => (sub(o, 'cni').default_subnet = v),
  '--cgroup-root': (o, v) => (o.cgroup_parent = v),
  '--conmon': (o, v) => (o.conmon_path = v),
  '--max-container-log-bytes': (o, v) => (sub(o, 'logs').max_container_log_bytes = /^\d+$/.test(v) ? Number(v) : v),
};

function sub(o: Obj, k: string): Obj {
  if (!isObj(o[k])) o[k] = {};
  return o[k] as Obj;
}

export const USAGE = `usage: corrald [--config FILE] [flags]

  --config FILE                 TOML config (default ${DEFAULT_CONFIG_PATH}, optional)
  --socket PATH                 CRI unix socket
  --state-dir DIR               runtime state (tmpfs)
  --root-dir DIR                persistent data
  --log-level LEVEL             debug|info|warn|error
  --default-runtime-handler N   handler used when a pod names none
  --cni-conf-dir DIR            CNI network configs
  --cni-bin-dir DIR             CNI plugin dir (repeat for several)
  --registry-hosts-dir DIR      per-registry hosts.toml/certs
  --stream-address ADDR         streaming server listen address
  --stream-port PORT            streaming server port (0 = any free port)
  --stream-base-url URL         URL prefix handed to exec/attach/port-forward clients
  --metrics-address HOST:PORT   Prometheus /metrics endpoint ("" = off)
  --max-container-log-bytes N   rotate container logs past this size
  --pod-bridge NAME             bridge of the built-in pod network (cni.default_bridge)
  --pod-subnet CIDR             its IPv4 subnet (cni.default_subnet)
  --no-default-network          no built-in network: pods need a config in cni.conf_dir
  --cgroup-root PATH            cgroup parent of pods that name none (cgroup_parent)
  --conmon PATH                 the conmon binary (conmon_path)
  --version                     print the version and exit
  --help                        this text

See src/cri/config.md for the config file keys and their defaults.`;

export function parseArgs(argv: string[]): ParsedArgs {
  const out: ParsedArgs = { help: false, version: false, configPath: null, overrides: {} };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]!;
    let inline: string | undefined;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      inline = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (arg === '--help' || arg === '-h') out.help = true;
    else if (arg === '--no-default-network') sub(out.overrides, 'cni').default_network = false;
    else if (arg === '--version' || arg === '-v') out.version = true;
    else if (arg === '--config' || valueFlags[arg]) {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new InvalidArgumentError(`${arg} needs a value`);
      if (arg === '--config') out.configPath = v;
      else valueFlags[arg]!(out.overrides, v);
    } else {
      throw new InvalidArgumentError(`unknown argument ${JSON.stringify(argv[i])}; see corrald --help`);
    }
  }
  return out;
}

/** Defaults ← file ← flags. */
export function resolveConfig(args: ParsedArgs): CorraldConfig {
  const base = loadConfigFile(args.configPath ?? DEFAULT_CONFIG_PATH, args.configPath !== null);
  applyDocument(base, args.overrides, 'command line');
  return checkConsistency(base, 'command line');
}
