/**
 * The runtime side of CNI: ADD / CHECK / DEL / VERSION (and STATUS / GC) of a network
 * configuration list against one container attachment.
 *
 *  - ADD runs the plugins in order; each gets the list's `name` and `cniVersion`, `runtimeConfig`
 *    with the capability arguments it declares, and from the second on the previous plugin's
 *    result as `prevResult`. The last result is the attachment's result.
 *  - Results are cached on disk (`cacheDir`, default /var/lib/corral/cni/results) together with the
 *    config, CNI_ARGS and capability arguments, so CHECK and DEL work after a daemon restart and
 *    even when the config file changed or vanished. The entry is written before the first plugin
 *    runs and updated after each one, so an ADD interrupted by a crash can still be DELeted.
 *  - A failed ADD is rolled back (DEL of the whole list, best effort), as the spec asks.
 *  - DEL runs the plugins in reverse order with the cached result as `prevResult`. It goes on
 *    past failing plugins (and treats "unknown container", CNI error 3, as done) so that one
 *    broken plugin does not leak the resources of the others; the cache entry is removed only
 *    when every plugin succeeded, so DEL can be retried.
 *    DEL while the network namespace still exists: Debian 12's bridge plugin (1.1.1) finds the
 *    addresses whose masquerade rules it must remove on the interface inside the namespace, so a
 *    DEL after the namespace is gone releases the IP but leaves the CNI-<hash> nat chain behind.
 *  - STATUS and GC are spec 1.1.0. For older lists STATUS checks that the plugin binaries are
 *    present and GC only DELetes cached attachments that are no longer valid.
 */

import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AlreadyExistsError,
  CorralError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnimplementedError,
  fromNodeError,
} from '../errors.ts';
import { NAME_RE, validateConfList } from './config.ts';
import { CniPluginError, DEFAULT_PLUGIN_DIRS, DEFAULT_TIMEOUT_MS, encodeCniArgs, findPlugin, invokePlugin, type PluginRunner } from './invoke.ts';
import { compareVersions, convertResult, normalizeResult, parseVersionInfo, versionAtLeast } from './result.ts';
import {
  CNI_ERROR,
  type Attachment,
  type CapabilityArgs,
  type CniCommand,
  type CniResult,
  type CniVersionInfo,
  type NetworkConfigList,
  type PluginConfig,
} from './types.ts';

export const DEFAULT_CACHE_DIR = '/var/lib/corral/cni/results';
export const DEFAULT_IFNAME = 'eth0';
const CACHE_KIND = 'corral-cni-cache-v1';

export interface CniRuntimeOptions {
  /** Directories searched for plugin binaries, in order (also passed as CNI_PATH). */
  pluginDirs?: string[];
  /** Where results are cached. */
  cacheDir?: string;
  /** Per plugin invocation. */
  timeoutMs?: number;
  /** Extra environment for plugins. */
  env?: Record<string, string>;
  /** Prepend IgnoreUnknown=1 to non-empty CNI_ARGS (plugins reject unknown keys otherwise). Default true. */
  ignoreUnknownArgs?: boolean;
  /** How plugin processes are run (default: spawned from this process). */
  runner?: PluginRunner;
}

/** What DEL needs; anything left out is taken from the cache entry written at ADD. */
export interface DelRequest {
  containerId: string;
  ifName?: string;
  /** May be empty or name a namespace that no longer exists. */
  netns?: string;
  args?: Record<string, string>;
  capabilityArgs?: CapabilityArgs;
}

/** The on-disk cache entry of one attachment. */
export interface CachedAttachment {
  kind: typeof CACHE_KIND;
  networkName: string;
  containerId: string;
  ifName: string;
  netns: string;
  cniArgs: Record<string, string>;
  capabilityArgs: CapabilityArgs;
  /** The list as it was at ADD (DEL can run from it alone). */
  config: NetworkConfigList;
  /** The latest result in the list's version (partial while `complete` is false), or null. */
  result: unknown;
  /** False while ADD runs or when it was interrupted. */
  complete: boolean;
}

/** One entry for `attachAll`/`detachAll`: a list attached under its own interface name. */
export interface PodAttachment {
  config: NetworkConfigList;
  ifName: string;
  capabilityArgs?: CapabilityArgs;
}

export function validateIfName(ifName: string): void {
  if (!ifName || ifName.length > 15 || ifName === '.' || ifName === '..' || /[/:\s]/.test(ifName)) {
    throw new InvalidArgumentError(
      `interface name ${JSON.stringify(ifName)} is invalid: it must be 1-15 characters, not "." or "..", without "/", ":" or whitespace`,
    );
  }
}

export function validateContainerId(id: string): void {
  if (!NAME_RE.test(id)) {
    throw new InvalidArgumentError(
      `container ID ${JSON.stringify(id)} is invalid for CNI: it must start with a letter or digit and contain only letters, digits, "_", "." and "-"`,
    );
  }
}

export class CniRuntime {
  readonly pluginDirs: string[];
  readonly cacheDir: string;
  readonly timeoutMs: number;
  readonly env: Record<string, string>;
  readonly ignoreUnknownArgs: boolean;
  readonly runner: PluginRunner | undefined;
  readonly #versions = new Map<string, CniVersionInfo>();

  constructor(opts: CniRuntimeOptions = {}) {
    this.pluginDirs = opts.pluginDirs ?? [...DEFAULT_PLUGIN_DIRS];
    this.cacheDir = opts.cacheDir ?? DEFAULT_CACHE_DIR;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.env = opts.env ?? {};
    this.ignoreUnknownArgs = opts.ignoreUnknownArgs ?? true;
    this.runner = opts.runner;
  }

  // ------------------------------------------------------------------------------------------
  // Commands

  /** Attach `list` to the container; returns the final result normalised to the 1.0.0 shape. */
  async add(list: NetworkConfigList, att: Attachment): Promise<CniResult> {
    list = validateConfList(list);
    const ifName = att.ifName ?? DEFAULT_IFNAME;
    validateContainerId(att.containerId);
    validateIfName(ifName);
    if (!att.netns) throw new InvalidArgumentError('CNI ADD needs the path of the network namespace (netns)');
    const cachePath = this.#cachePath(list.name, att.containerId, ifName);
    if (await this.#readCache(cachePath)) {
      throw new AlreadyExistsError(
        `network ${list.name} is already attached to container ${att.containerId} as ${ifName}; DEL it first`,
      );
    }
    const entry: CachedAttachment = {
      kind: CACHE_KIND,
      networkName: list.name,
      containerId: att.containerId,
      ifName,
      netns: att.netns,
      cniArgs: { ...(att.args ?? {}) },
      capabilityArgs: structuredClone(att.capabilityArgs ?? {}),
      config: list,
      result: null,
      complete: false,
    };
    await this.#writeCache(cachePath, entry, true);

    const cniArgs = this.#encodeArgs(entry.cniArgs);
    let prev: unknown = undefined;
    let normalized: CniResult | undefined;
    let reached = 0;
    try {
      for (const [i, plugin] of list.plugins.entries()) {
        reached = i;
        const config = buildPluginConfig(list, plugin, entry.capabilityArgs, prev);
        const out = await this.#invoke(list, plugin.type, 'ADD', config, { ...att, ifName }, cniArgs);
        if (out === undefined) {
          throw new CniPluginError({ plugin: plugin.type, command: 'ADD', msg: 'printed no result', network: list.name });
        }
        normalized = normalizeResult(out, `CNI plugin "${plugin.type}" ADD (network ${list.name}, plugins[${i}])`);
        prev = (normalized.cniVersion === list.cniVersion || compareVersions(list.cniVersion, '0.3.0') < 0)
          ? out
          : convertResult(normalized, list.cniVersion);
        entry.result = prev;
        await this.#writeCache(cachePath, entry);
      }
    } catch (err) {
      // Undo the plugins that ran: DEL from the failing one (best effort, its error is not
      // reported: it may not have created anything) back to the first.
      const rollback = await this.#delChain(entry, att.netns, cniArgs, reached);
      if (rollback.length === 0) await rm(cachePath, { force: true });
      if (rollback.length && err instanceof Error) {
        err.message += `; rolling back with DEL also failed (${rollback.map((e) => e.message).join('; ')}), the cache entry ${cachePath} is kept so DEL can be retried`;
      }
      throw err;
    }
    entry.complete = true;
    await this.#writeCache(cachePath, entry);
    return normalized!;
  }

  /** Verify an attachment (spec 0.4.0+): every plugin is run with the cached result. */
  async check(list: NetworkConfigList, att: Attachment): Promise<void> {
    list = validateConfList(list);
    const ifName = att.ifName ?? DEFAULT_IFNAME;
    validateContainerId(att.containerId);
    validateIfName(ifName);
    if (!versionAtLeast(list.cniVersion, '0.4.0')) {
      throw new UnimplementedError(`CNI CHECK needs cniVersion 0.4.0 or later; network ${list.name} is ${list.cniVersion}`);
    }
    if (list.disableCheck) return;
    const entry = await this.#readCache(this.#cachePath(list.name, att.containerId, ifName));
    if (!entry || !entry.complete || entry.result == null) {
      throw new NotFoundError(
        `no cached CNI result for network ${list.name}, container ${att.containerId}, ${ifName}; it was never ADDed (or ADD did not finish)`,
      );
    }
    const prev = this.#prevForList(entry, list);
    const cniArgs = this.#encodeArgs(att.args ?? entry.cniArgs);
    const caps = att.capabilityArgs ?? entry.capabilityArgs;
    for (const plugin of list.plugins) {
      const config = buildPluginConfig(list, plugin, caps, prev);
      await this.#invoke(list, plugin.type, 'CHECK', config, { ...att, ifName }, cniArgs);
    }
  }

  /**
   * Detach `list` (or, when `list` is null, the config cached at ADD) from the container.
   * Succeeds when there is nothing to delete.
   */
  async del(list: NetworkConfigList | null, req: DelRequest & { networkName?: string }): Promise<void> {
    const ifName = req.ifName ?? DEFAULT_IFNAME;
    validateContainerId(req.containerId);
    validateIfName(ifName);
    const name = list?.name ?? req.networkName;
    if (!name) throw new InvalidArgumentError('CNI DEL needs a network config or a network name');
    if (list) list = validateConfList(list);
    const cachePath = this.#cachePath(name, req.containerId, ifName);
    const cached = await this.#readCache(cachePath);
    const config = list ?? cached?.config;
    if (!config) {
      throw new NotFoundError(
        `network ${name} is not attached to container ${req.containerId} as ${ifName} (no cache entry in ${this.cacheDir}) and no config was given`,
      );
    }
    const entry: CachedAttachment = {
      kind: CACHE_KIND,
      networkName: config.name,
      containerId: req.containerId,
      ifName,
      netns: req.netns ?? cached?.netns ?? '',
      cniArgs: req.args ?? cached?.cniArgs ?? {},
      capabilityArgs: req.capabilityArgs ?? cached?.capabilityArgs ?? {},
      config,
      result: cached ? this.#prevForList(cached, config) : null,
      complete: cached?.complete ?? false,
    };
    const errors = await this.#delChain(entry, entry.netns, this.#encodeArgs(entry.cniArgs));
    if (errors.length) {
      const first = errors[0];
      const msg = `CNI DEL of network ${config.name} for container ${req.containerId} (${ifName}) failed: ${errors.map((e) => e.message).join('; ')}; the cache entry is kept, retry DEL`;
      if (errors.length === 1 && first instanceof CorralError) {
        first.message = msg;
        throw first;
      }
      throw new InternalError(msg, { cause: first });
    }
    await rm(cachePath, { force: true });
  }

  /** The VERSION answer of a plugin (cached per binary for this runtime instance). */
  async version(type: string, cniVersion = '1.0.0'): Promise<CniVersionInfo> {
    const path = await findPlugin(type, this.pluginDirs);
    const known = this.#versions.get(path);
    if (known) return known;
    const out = await invokePlugin({
      type, command: 'VERSION', config: { cniVersion }, pluginDirs: this.pluginDirs, timeoutMs: this.timeoutMs, env: this.env, runner: this.runner,
    });
    const info = parseVersionInfo(out.stdout, `CNI plugin "${type}" VERSION`);
    this.#versions.set(path, info);
    return info;
  }

  /**
   * Check that every plugin (and IPAM plugin) of `list` is installed and supports its cniVersion.
   * Returns the capabilities the list declares.
   */
  async validate(list: NetworkConfigList): Promise<{ capabilities: string[] }> {
    list = validateConfList(list);
    const caps = new Set<string>();
    for (const [i, plugin] of list.plugins.entries()) {
      for (const [type, where] of [
        [plugin.type, `plugins[${i}]`],
        ...(plugin.ipam?.type ? [[plugin.ipam.type, `plugins[${i}].ipam`] as const] : []),
      ] as const) {
        const info = await this.version(type, list.cniVersion);
        if (!info.supportedVersions.includes(list.cniVersion)) {
          throw new FailedPreconditionError(
            `network ${list.name}: ${where} plugin "${type}" does not support cniVersion ${list.cniVersion} (it supports ${info.supportedVersions.join(', ')}); change the list's cniVersion`,
          );
        }
      }
      for (const [k, v] of Object.entries(plugin.capabilities ?? {})) if (v) caps.add(k);
    }
    return { capabilities: [...caps].sort() };
  }

  /**
   * Is the network ready for ADDs? 1.1.0 lists: STATUS of every plugin (throws its error).
   * Older lists: the plugin binaries must be present.
   */
  async status(list: NetworkConfigList): Promise<void> {
    list = validateConfList(list);
    for (const plugin of list.plugins) {
      if (versionAtLeast(list.cniVersion, '1.1.0')) {
        await this.#invoke(list, plugin.type, 'STATUS', buildPluginConfig(list, plugin, {}, undefined), undefined, '');
      } else {
        await findPlugin(plugin.type, this.pluginDirs);
        if (plugin.ipam?.type) await findPlugin(plugin.ipam.type, this.pluginDirs);
      }
    }
  }

  /**
   * Garbage-collect: DEL every cached attachment of `list` that is not in `valid`; then, for 1.1.0
   * lists without disableGC, run GC on every plugin with `cni.dev/valid-attachments`.
   * Returns the attachments that were deleted; failures are collected and thrown at the end.
   */
  async gc(list: NetworkConfigList, valid: { containerId: string; ifName?: string }[]): Promise<CachedAttachment[]> {
    list = validateConfList(list);
    const keep = new Set(valid.map((v) => `${v.containerId}\0${v.ifName ?? DEFAULT_IFNAME}`));
    const removed: CachedAttachment[] = [];
    const errors: Error[] = [];
    for (const c of await this.listCached(list.name)) {
      if (keep.has(`${c.containerId}\0${c.ifName}`)) continue;
      try {
        await this.del(list, { containerId: c.containerId, ifName: c.ifName });
        removed.push(c);
      } catch (err) {
        errors.push(err as Error);
      }
    }
    if (versionAtLeast(list.cniVersion, '1.1.0') && !list.disableGC) {
      const attachments = valid.map((v) => ({ containerID: v.containerId, ifname: v.ifName ?? DEFAULT_IFNAME }));
      for (const plugin of list.plugins) {
        const config = { ...buildPluginConfig(list, plugin, {}, undefined), 'cni.dev/valid-attachments': attachments };
        try {
          await this.#invoke(list, plugin.type, 'GC', config, undefined, '');
        } catch (err) {
          errors.push(err as Error);
        }
      }
    }
    if (errors.length) {
      throw new InternalError(`CNI GC of network ${list.name} failed: ${errors.map((e) => e.message).join('; ')}`, { cause: errors[0] });
    }
    return removed;
  }

  // ------------------------------------------------------------------------------------------
  // Several networks at once (e.g. loopback + the pod network)

  /** ADD each entry in order; on failure the entries already added are DELeted again. */
  async attachAll(base: Omit<Attachment, 'ifName' | 'capabilityArgs'>, entries: PodAttachment[]): Promise<CniResult[]> {
    const results: CniResult[] = [];
    const done: PodAttachment[] = [];
    try {
      for (const e of entries) {
        results.push(await this.add(e.config, { ...base, ifName: e.ifName, capabilityArgs: e.capabilityArgs }));
        done.push(e);
      }
    } catch (err) {
      for (const e of done.reverse()) {
        try {
          await this.del(e.config, { containerId: base.containerId, ifName: e.ifName, netns: base.netns });
        } catch {
          // The original error is the one to report; the cache entry remains for a later DEL.
        }
      }
      throw err;
    }
    return results;
  }

  /** DEL each entry in reverse order; every entry is tried, the first failure is thrown. */
  async detachAll(base: Omit<DelRequest, 'ifName' | 'capabilityArgs'>, entries: PodAttachment[]): Promise<void> {
    let first: unknown;
    for (const e of [...entries].reverse()) {
      try {
        await this.del(e.config, { ...base, ifName: e.ifName, capabilityArgs: e.capabilityArgs });
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) throw first;
  }

  // ------------------------------------------------------------------------------------------
  // Cache

  async cachedAttachment(networkName: string, containerId: string, ifName = DEFAULT_IFNAME): Promise<CachedAttachment | undefined> {
    return this.#readCache(this.#cachePath(networkName, containerId, ifName));
  }

  /** Every cache entry (of one network, if given). Unreadable entries are skipped. */
  async listCached(networkName?: string): Promise<CachedAttachment[]> {
    let names: string[];
    try {
      names = await readdir(this.cacheDir);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return [];
      throw fromNodeError(err, `read CNI cache directory ${this.cacheDir}`);
    }
    const out: CachedAttachment[] = [];
    for (const n of names.sort()) {
      if (!n.endsWith('.json') || n.startsWith('.')) continue;
      if (networkName !== undefined && !n.startsWith(`${networkName}+`)) continue;
      const e = await this.#readCache(join(this.cacheDir, n)).catch(() => undefined);
      if (e && (networkName === undefined || e.networkName === networkName)) out.push(e);
    }
    return out;
  }

  /** `<network>+<container>+<ifname>.json`: "+" occurs in neither network names nor container IDs. */
  #cachePath(network: string, containerId: string, ifName: string): string {
    return join(this.cacheDir, `${network}+${containerId}+${ifName}.json`);
  }

  async #readCache(path: string): Promise<CachedAttachment | undefined> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return undefined;
      throw fromNodeError(err, `read CNI cache entry ${path}`);
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      throw new InternalError(`CNI cache entry ${path} is not valid JSON; remove it after cleaning up the attachment by hand`);
    }
    const e = doc as CachedAttachment;
    if (e?.kind !== CACHE_KIND || typeof e.containerId !== 'string' || typeof e.config !== 'object') {
      throw new InternalError(`CNI cache entry ${path} is not a ${CACHE_KIND} record`);
    }
    return e;
  }

  /**
   * Atomic (rename) always; `durable` also syncs it to disk. The entry written before the first
   * plugin runs is durable: the allocations plugins make outlive a power loss, and so must the
   * record that they have to be DELeted. Later updates (each plugin's result) are not synced (a
   * sync is a journal commit, several per pod): after a power loss DEL runs with an older
   * prevResult, which plugins must cope with anyway.
   */
  async #writeCache(path: string, entry: CachedAttachment, durable = false): Promise<void> {
    try {
      await mkdir(this.cacheDir, { recursive: true, mode: 0o700 });
      const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(JSON.stringify(entry, null, 2));
        if (durable) await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
    } catch (err) {
      throw fromNodeError(err, `write CNI cache entry ${path}`);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Internals

  /** The cached result in the version of `list` (DEL/CHECK prevResult); null when there is none. */
  #prevForList(entry: CachedAttachment, list: NetworkConfigList): unknown {
    if (entry.result == null || !versionAtLeast(list.cniVersion, '0.4.0')) return null;
    const normalized = normalizeResult(entry.result, `cached CNI result of ${entry.networkName}/${entry.containerId}`);
    if (normalized.cniVersion === list.cniVersion) return entry.result;
    return convertResult(normalized, list.cniVersion);
  }

  /**
   * DEL the plugins in reverse order, continuing past failures; returns the failures. With
   * `failedAt` (ADD rollback) only plugins[0..failedAt] are deleted and plugins[failedAt]'s own
   * failure is ignored.
   */
  async #delChain(entry: CachedAttachment, netns: string, cniArgs: string, failedAt?: number): Promise<Error[]> {
    const list = entry.config;
    const prev = entry.result ?? undefined;
    const errors: Error[] = [];
    const plugins = failedAt === undefined ? list.plugins : list.plugins.slice(0, failedAt + 1);
    for (const [i, plugin] of [...plugins.entries()].reverse()) {
      const config = buildPluginConfig(list, plugin, entry.capabilityArgs, versionAtLeast(list.cniVersion, '0.4.0') ? prev : undefined);
      try {
        await this.#invoke(list, plugin.type, 'DEL', config, { containerId: entry.containerId, netns, ifName: entry.ifName }, cniArgs);
      } catch (err) {
        if (err instanceof CniPluginError && err.cniCode === CNI_ERROR.UNKNOWN_CONTAINER) continue;
        if (i === failedAt) continue;
        errors.push(err as Error);
      }
    }
    return errors;
  }

  #encodeArgs(args: Record<string, string>): string {
    if (Object.keys(args).length === 0) return '';
    const withIgnore = this.ignoreUnknownArgs && !('IgnoreUnknown' in args) ? { IgnoreUnknown: '1', ...args } : args;
    return encodeCniArgs(withIgnore);
  }

  async #invoke(
    list: NetworkConfigList,
    type: string,
    command: CniCommand,
    config: unknown,
    att: { containerId: string; netns?: string; ifName?: string } | undefined,
    cniArgs: string,
  ): Promise<unknown> {
    const out = await invokePlugin({
      type,
      command,
      config,
      pluginDirs: this.pluginDirs,
      containerId: att?.containerId,
      netns: att?.netns,
      ifName: att?.ifName,
      cniArgs,
      timeoutMs: this.timeoutMs,
      env: this.env,
      network: list.name,
      runner: this.runner,
    });
    return out.stdout;
  }
}

/**
 * The stdin of one plugin: its config from the list plus `name`, `cniVersion`, `runtimeConfig`
 * (only the capabilities the plugin declares true and the runtime has arguments for) and
 * `prevResult` when given.
 */
export function buildPluginConfig(
  list: NetworkConfigList,
  plugin: PluginConfig,
  capabilityArgs: CapabilityArgs,
  prevResult: unknown,
): Record<string, unknown> {
  const config: Record<string, unknown> = { ...structuredClone(plugin), name: list.name, cniVersion: list.cniVersion };
  const runtimeConfig: Record<string, unknown> = {};
  for (const [cap, on] of Object.entries(plugin.capabilities ?? {})) {
    if (on && capabilityArgs[cap] !== undefined) runtimeConfig[cap] = structuredClone(capabilityArgs[cap]);
  }
  if (Object.keys(runtimeConfig).length) config.runtimeConfig = runtimeConfig;
  else delete config.runtimeConfig;
  if (prevResult !== undefined && prevResult !== null) config.prevResult = prevResult;
  else delete config.prevResult;
  return config;
}
