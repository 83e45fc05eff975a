/**
 * Loading and validating CNI network configurations.
 *
 * A directory (default /etc/cni/net.d) is read in lexical order of file names; `.conflist`
 * files hold a list, `.conf` and `.json` files a single plugin config (loaded as a list of one;
 * a `.conf`/`.json` that has a `plugins` array is taken as a list, as containerd does). The first
 * valid network in that order is the default one. Invalid files do not hide valid ones: the loader
 * returns every problem as a CniConfigError naming the file and the JSON path.
 */

import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SpecError, fromNodeError } from '../errors.ts';
import { compareVersions, parseVersion } from './result.ts';
import { CNI_VERSIONS, type NetworkConfigList, type PluginConfig } from './types.ts';

export const CONFIG_EXTENSIONS = ['.conflist', '.conf', '.json'] as const;
const MAX_CONFIG_BYTES = 1 << 20;

/** A configuration problem: `file` (may be "<inline>"), `path` (JSON path) and `reason`. */
export class CniConfigError extends SpecError {
  readonly file: string;
  constructor(file: string, path: string, reason: string) {
    super(path, reason);
    this.file = file;
    this.message = `${file}: ${path}: ${reason}`;
  }
}

/** Network names and container IDs (spec 1.0): alphanumeric first, then alnum, `_`, `.`, `-`. */
export const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Plugin `type` must be a bare executable name: it is looked up in the plugin directories. */
const TYPE_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.+-]*$/;

/** The spec versions this runtime can drive (CNI_VERSIONS); lists may name several (1.1.0 `cniVersions`). */
export function pickVersion(versions: readonly string[]): string | undefined {
  return [...versions].filter((v) => (CNI_VERSIONS as readonly string[]).includes(v)).sort(compareVersions).at(-1);
}

function validatePlugin(file: string, path: string, p: unknown): PluginConfig {
  if (!isObj(p)) throw new CniConfigError(file, path, 'expected a JSON object');
  if (p.type === undefined) throw new CniConfigError(file, `${path}.type`, 'missing; name the plugin binary, e.g. "bridge"');
  if (typeof p.type !== 'string' || !TYPE_RE.test(p.type)) {
    throw new CniConfigError(file, `${path}.type`, `must be a plugin binary name without "/", got ${JSON.stringify(p.type)}`);
  }
  if (p.capabilities !== undefined) {
    if (!isObj(p.capabilities)) throw new CniConfigError(file, `${path}.capabilities`, 'expected an object of booleans');
    for (const [k, v] of Object.entries(p.capabilities)) {
      if (typeof v !== 'boolean') throw new CniConfigError(file, `${path}.capabilities.${k}`, 'expected a boolean');
    }
  }
  if (p.ipam !== undefined) {
    if (!isObj(p.ipam)) throw new CniConfigError(file, `${path}.ipam`, 'expected an object');
    if (typeof p.ipam.type !== 'string' || !TYPE_RE.test(p.ipam.type)) {
      throw new CniConfigError(file, `${path}.ipam.type`, `must be an IPAM plugin binary name, got ${JSON.stringify(p.ipam.type)}`);
    }
  }
  for (const k of ['runtimeConfig', 'prevResult'] as const) {
    if (p[k] !== undefined) throw new CniConfigError(file, `${path}.${k}`, 'is set by the runtime and must not appear in a config file');
  }
  for (const k of ['cniVersion', 'name'] as const) {
    if (p[k] !== undefined && typeof p[k] !== 'string') throw new CniConfigError(file, `${path}.${k}`, 'expected a string');
  }
  return p as PluginConfig;
}

function validateVersion(file: string, path: string, v: unknown): string {
  if (v === undefined) throw new CniConfigError(file, path, `missing; use one of ${CNI_VERSIONS.join(', ')}`);
  if (typeof v !== 'string' || !parseVersion(v)) throw new CniConfigError(file, path, `not a version: ${JSON.stringify(v)}`);
  if (!(CNI_VERSIONS as readonly string[]).includes(v)) {
    throw new CniConfigError(file, path, `unsupported CNI version ${v}; use one of ${CNI_VERSIONS.join(', ')}`);
  }
  return v;
}

function validateName(file: string, path: string, v: unknown): string {
  if (v === undefined) throw new CniConfigError(file, path, 'missing; every network needs a name');
  if (typeof v !== 'string' || !NAME_RE.test(v)) {
    throw new CniConfigError(file, path, `must start with a letter or digit and contain only letters, digits, "_", "." and "-", got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Validate a parsed conflist document. Returns a deep copy with plugin versions/names unified. */
export function validateConfList(doc: unknown, file = '<inline>'): NetworkConfigList {
  if (!isObj(doc)) throw new CniConfigError(file, '$', 'expected a JSON object');
  let cniVersion: string;
  if (doc.cniVersions !== undefined) {
    if (!Array.isArray(doc.cniVersions) || doc.cniVersions.some((v) => typeof v !== 'string')) {
      throw new CniConfigError(file, 'cniVersions', 'expected an array of version strings');
    }
    const picked = pickVersion(doc.cniVersions as string[]);
    if (!picked) throw new CniConfigError(file, 'cniVersions', `none of ${doc.cniVersions.join(', ')} is supported (${CNI_VERSIONS.join(', ')})`);
    cniVersion = picked;
  } else {
    cniVersion = validateVersion(file, 'cniVersion', doc.cniVersion);
  }
  const name = validateName(file, 'name', doc.name);
  for (const k of ['disableCheck', 'disableGC'] as const) {
    if (doc[k] !== undefined && typeof doc[k] !== 'boolean') throw new CniConfigError(file, k, 'expected a boolean');
  }
  if (doc.plugins === undefined) throw new CniConfigError(file, 'plugins', 'missing; a conflist needs a "plugins" array');
  if (!Array.isArray(doc.plugins)) throw new CniConfigError(file, 'plugins', 'expected an array');
  if (doc.plugins.length === 0) throw new CniConfigError(file, 'plugins', 'is empty; list at least one plugin');
  const copy = structuredClone(doc) as Record<string, unknown> & { plugins: unknown[] };
  const plugins = copy.plugins.map((p, i) => validatePlugin(file, `plugins[${i}]`, p));
  return { ...(copy as object), cniVersion, name, plugins } as NetworkConfigList;
}

/** Validate a single plugin config (a .conf file) and wrap it as a list of one. */
export function validateConf(doc: unknown, file = '<inline>'): NetworkConfigList {
  if (!isObj(doc)) throw new CniConfigError(file, '$', 'expected a JSON object');
  const cniVersion = validateVersion(file, 'cniVersion', doc.cniVersion);
  const name = validateName(file, 'name', doc.name);
  const plugin = validatePlugin(file, '$', structuredClone(doc));
  const list: NetworkConfigList = { cniVersion, name, plugins: [plugin] };
  if (typeof doc.disableCheck === 'boolean') list.disableCheck = doc.disableCheck;
  return list;
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new CniConfigError(file, '$', `not valid JSON: ${(err as Error).message}`);
  }
}

/** Parse a config file's text; `.conflist` → list, anything else → single config (or a list if it has `plugins`). */
export function parseConfigText(text: string, file: string): NetworkConfigList {
  const doc = parseJson(text, file);
  if (file.endsWith('.conflist') || (isObj(doc) && Array.isArray(doc.plugins))) return validateConfList(doc, file);
  return validateConf(doc, file);
}

export async function loadConfigFile(file: string): Promise<NetworkConfigList> {
  let text: string;
  try {
    const st = await stat(file);
    if (st.size > MAX_CONFIG_BYTES) throw new CniConfigError(file, '$', `file is larger than ${MAX_CONFIG_BYTES} bytes`);
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (err instanceof CniConfigError) throw err;
    throw fromNodeError(err, `read CNI config ${file}`);
  }
  return parseConfigText(text, file);
}

export interface LoadedNetwork {
  file: string;
  config: NetworkConfigList;
}

export interface LoadResult {
  /** Valid networks in lexical file order; the first is the default. */
  networks: LoadedNetwork[];
  /** Problems with the other files (invalid JSON, schema, duplicate names). */
  errors: CniConfigError[];
}

/**
 * Load every config in `dir` (lexical order of names, dotfiles and other extensions ignored).
 * A missing directory yields no networks. Duplicate network names: the first file wins and the
 * later ones are reported.
 */
export async function loadConfigDir(dir: string): Promise<LoadResult> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return { networks: [], errors: [] };
    throw fromNodeError(err, `read CNI config directory ${dir}`);
  }
  names = names.filter((n) => !n.startsWith('.') && CONFIG_EXTENSIONS.some((e) => n.endsWith(e))).sort();
  const networks: LoadedNetwork[] = [];
  const errors: CniConfigError[] = [];
  const seen = new Map<string, string>();
  for (const n of names) {
    const file = join(dir, n);
    try {
      const st = await stat(file);
      if (!st.isFile()) continue;
      const config = await loadConfigFile(file);
      const prev = seen.get(config.name);
      if (prev !== undefined) {
        errors.push(new CniConfigError(file, 'name', `network "${config.name}" is already defined by ${prev}; this file is ignored`));
        continue;
      }
      seen.set(config.name, file);
      networks.push({ file, config });
    } catch (err) {
      if (err instanceof CniConfigError) errors.push(err);
      else errors.push(new CniConfigError(file, '$', (err as Error).message));
    }
  }
  return { networks, errors };
}

/** The default network of `dir` (first valid in lexical order), or a thrown error explaining why none. */
export async function loadDefaultNetwork(dir: string): Promise<LoadedNetwork> {
  const { networks, errors } = await loadConfigDir(dir);
  if (networks[0]) return networks[0];
  if (errors[0]) throw errors[0];
  throw new CniConfigError(dir, '$', `no CNI network configuration (${CONFIG_EXTENSIONS.join(', ')}) in this directory`);
}
