/**
 * Where to reach a registry: the containerd hosts-directory convention
 * (<configDir>/<registry>/hosts.toml, `_default/hosts.toml`) plus docker's certs.d
 * (<certsDir>/<host>/*.crt, client.cert/client.key). Mirrors are tried in file order,
 * then the origin (`server`). Any registry name can be redirected, e.g. registry.k8s.io
 * to a local mirror. Plain HTTP only for http:// URLs or registries listed as insecure.
 */
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join, isAbsolute } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { InvalidArgumentError } from '../../errors.ts';
import type { TlsOptions } from './transport.ts';

export type Capability = 'pull' | 'resolve' | 'push';

export interface Endpoint {
  /** Base URL including the API path prefix, e.g. http://127.0.0.1:5000/v2 */
  base: URL;
  /** host[:port] */
  host: string;
  capabilities: Set<Capability>;
  tls: TlsOptions;
  headers: Record<string, string>;
  mirror: boolean;
}

export interface HostsOptions {
  /** containerd-style hosts directory (e.g. /etc/containerd/certs.d). */
  configDir?: string;
  /** docker-style certs directories (e.g. /etc/docker/certs.d). */
  certsDirs?: string[];
  /** Registries (host[:port]) reached over plain HTTP. */
  insecure?: string[];
  /**
   * Mirrors per registry (e.g. corrald's `registry.mirrors`): `http(s)://` endpoints tried for
   * pull and resolve, in order, before the hosts.toml hosts and the registry itself.
   */
  mirrors?: Record<string, string[]>;
}

const ALL: Capability[] = ['pull', 'resolve', 'push'];

function readCertsDir(dir: string): TlsOptions {
  const out: TlsOptions = { ca: [] };
  if (!existsSync(dir)) return out;
  for (const f of readdirSync(dir).sort()) {
    if (f.endsWith('.crt')) out.ca!.push(readFileSync(join(dir, f)));
    else if (f.endsWith('.cert')) {
      const key = join(dir, f.replace(/\.cert$/, '.key'));
      if (!existsSync(key)) throw new InvalidArgumentError(`client certificate ${join(dir, f)} has no matching .key file`);
      out.cert = readFileSync(join(dir, f));
      out.key = readFileSync(key);
    }
  }
  return out;
}

function hostDirName(registry: string): string {
  return registry;
}

function defaultServer(registry: string, insecure: boolean): string {
  if (registry === 'docker.io') return 'https://registry-1.docker.io';
  return `${insecure ? 'http' : 'https'}://${registry}`;
}

function baseUrl(server: string, overridePath: boolean): URL {
  const u = new URL(server);
  let p = u.pathname.replace(/\/+$/, '');
  if (!overridePath) p = p.endsWith('/v2') ? p : `${p}/v2`;
  u.pathname = p;
  return u;
}

function toList(v: unknown): string[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? v.map(String) : [String(v)];
}

export function resolveEndpoints(registry: string, opts: HostsOptions = {}): Endpoint[] {
  const insecure = (opts.insecure ?? []).includes(registry);
  const certsFor = (host: string): TlsOptions => {
    const t: TlsOptions = { ca: [] };
    for (const d of opts.certsDirs ?? []) {
      const x = readCertsDir(join(d, host));
      t.ca!.push(...(x.ca ?? []));
      if (x.cert) {
        t.cert = x.cert;
        t.key = x.key;
      }
    }
    return t;
  };
  let file: string | undefined;
  let dir: string | undefined;
  if (opts.configDir) {
    for (const name of [hostDirName(registry), '_default']) {
      const d = join(opts.configDir, name);
      if (existsSync(join(d, 'hosts.toml'))) {
        file = join(d, 'hosts.toml');
        dir = d;
        break;
      }
      if (name !== '_default' && existsSync(d)) dir = d; // certs only
    }
  }
  const endpoints: Endpoint[] = [];
  const mk = (server: string, cfg: Record<string, unknown>, mirror: boolean, baseDir: string | undefined): Endpoint => {
    const base = baseUrl(server, cfg.override_path === true);
    const caps = cfg.capabilities === undefined ? ALL : toList(cfg.capabilities);
    for (const c of caps) if (!ALL.includes(c as Capability)) throw new InvalidArgumentError(`${file}: unknown capability "${c}"`);
    const t = certsFor(base.host);
    const rel = (p: string) => (isAbsolute(p) || !baseDir ? p : join(baseDir, p));
    for (const ca of toList(cfg.ca)) t.ca!.push(readFileSync(rel(ca)));
    if (cfg.client !== undefined) {
      const c = cfg.client as unknown;
      const pair = Array.isArray(c) ? (Array.isArray(c[0]) ? (c[0] as string[]) : (c as string[])) : [String(c)];
      t.cert = readFileSync(rel(pair[0]!));
      t.key = readFileSync(rel(pair[1] ?? pair[0]!.replace(/\.cert$/, '.key')));
    }
    if (cfg.skip_verify === true) t.skipVerify = true;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries((cfg.header as Record<string, unknown>) ?? {})) headers[k] = toList(v).join(', ');
    return { base, host: base.host, capabilities: new Set(caps as Capability[]), tls: t, headers, mirror };
  };
  for (const url of opts.mirrors?.[registry] ?? []) endpoints.push(mk(url, { capabilities: ['pull', 'resolve'] }, true, dir));
  let server = defaultServer(registry, insecure);
  let serverCfg: Record<string, unknown> = {};
  if (file) {
    let doc: Record<string, unknown>;
    try {
      doc = parseToml(readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new InvalidArgumentError(`${file}: ${(e as Error).message}`);
    }
    if (typeof doc.server === 'string') server = doc.server;
    serverCfg = doc;
    const hosts = (doc.host as Record<string, Record<string, unknown>>) ?? {};
    for (const [url, cfg] of Object.entries(hosts)) endpoints.push(mk(url, cfg, true, dir));
  }
  const origin = mk(server, { ...serverCfg, capabilities: serverCfg.capabilities ?? ALL }, false, dir);
  if (dir && !file) {
    const x = readCertsDir(dir);
    origin.tls.ca!.push(...(x.ca ?? []));
    if (x.cert) {
      origin.tls.cert = x.cert;
      origin.tls.key = x.key;
    }
  }
  endpoints.push(origin);
  return endpoints;
}
