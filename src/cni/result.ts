/**
 * Reading plugin output: results of every spec version are validated and normalised to the
 * 1.0.0 shape, and converted back to the version of a config when they are passed on as
 * `prevResult`. Also: the error document and the VERSION answer.
 */

import { InternalError } from '../errors.ts';
import type {
  CniDNS,
  CniErrorDocument,
  CniInterface,
  CniIPConfig,
  CniResult,
  CniRoute,
  CniVersionInfo,
} from './types.ts';

/** "1.0.0" → [1,0,0]; undefined when not a version. */
export function parseVersion(v: string): [number, number, number] | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/** Compare two x.y.z versions (malformed ones sort first). */
export function compareVersions(a: string, b: string): number {
  const pa = parseVersion(a) ?? [-1, 0, 0];
  const pb = parseVersion(b) ?? [-1, 0, 0];
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i] - pb[i];
  return 0;
}

export function versionAtLeast(v: string, min: string): boolean {
  return compareVersions(v, min) >= 0;
}

class ResultError extends InternalError {}

function bad(where: string, path: string, reason: string): never {
  throw new ResultError(`${where}: invalid result at ${path}: ${reason}`);
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const CIDR4 = /^(\d{1,3})(\.\d{1,3}){3}\/\d{1,2}$/;
const CIDR6 = /^[0-9a-fA-F:.]+(%[^/]+)?\/\d{1,3}$/;
export const isCidr = (s: string): boolean => CIDR4.test(s) || (s.includes(':') && CIDR6.test(s));

function str(where: string, path: string, v: unknown, optional: boolean): string | undefined {
  if (v === undefined || (optional && v === null)) {
    if (optional) return undefined;
    bad(where, path, 'missing');
  }
  if (typeof v !== 'string') bad(where, path, `expected a string, got ${JSON.stringify(v)}`);
  return v;
}

function strArray(where: string, path: string, v: unknown): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) bad(where, path, 'expected an array of strings');
  return v as string[];
}

function readDns(where: string, path: string, v: unknown): CniDNS | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObj(v)) bad(where, path, 'expected an object');
  const dns: CniDNS = {};
  const ns = strArray(where, `${path}.nameservers`, v.nameservers);
  if (ns) dns.nameservers = ns;
  const domain = str(where, `${path}.domain`, v.domain, true);
  if (domain) dns.domain = domain;
  const search = strArray(where, `${path}.search`, v.search);
  if (search) dns.search = search;
  const options = strArray(where, `${path}.options`, v.options);
  if (options) dns.options = options;
  return dns;
}

function readRoutes(where: string, path: string, v: unknown): CniRoute[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) bad(where, path, 'expected an array');
  return v.map((r, i) => {
    const p = `${path}[${i}]`;
    if (!isObj(r)) bad(where, p, 'expected an object');
    const dst = str(where, `${p}.dst`, r.dst, false)!;
    if (!isCidr(dst)) bad(where, `${p}.dst`, `not a CIDR: ${dst}`);
    const route: CniRoute = { dst };
    const gw = str(where, `${p}.gw`, r.gw, true);
    if (gw) route.gw = gw;
    for (const k of ['mtu', 'advmss', 'priority', 'table', 'scope'] as const) {
      if (r[k] === undefined || r[k] === null) continue;
      if (typeof r[k] !== 'number') bad(where, `${p}.${k}`, 'expected a number');
      route[k] = r[k] as number;
    }
    return route;
  });
}

/**
 * Validate a result of any version and return it in the 1.0.0 shape (cniVersion is kept, so the
 * caller still knows what the plugin spoke). `where` names the plugin for messages.
 */
export function normalizeResult(raw: unknown, where: string): CniResult {
  if (!isObj(raw)) bad(where, '$', 'expected a JSON object');
  const version = str(where, 'cniVersion', raw.cniVersion, false)!;
  if (!parseVersion(version)) bad(where, 'cniVersion', `not a version: ${version}`);

  if (compareVersions(version, '0.3.0') < 0) {
    // 0.1.0 / 0.2.0: ip4 / ip6 with their own routes.
    const out: CniResult = { cniVersion: version };
    const ips: CniIPConfig[] = [];
    const routes: CniRoute[] = [];
    for (const fam of ['ip4', 'ip6'] as const) {
      const v = raw[fam];
      if (v === undefined || v === null) continue;
      if (!isObj(v)) bad(where, fam, 'expected an object');
      const address = str(where, `${fam}.ip`, v.ip, false)!;
      if (!isCidr(address)) bad(where, `${fam}.ip`, `not a CIDR: ${address}`);
      const ip: CniIPConfig = { address };
      const gw = str(where, `${fam}.gateway`, v.gateway, true);
      if (gw) ip.gateway = gw;
      ips.push(ip);
      routes.push(...(readRoutes(where, `${fam}.routes`, v.routes) ?? []));
    }
    if (ips.length) out.ips = ips;
    if (routes.length) out.routes = routes;
    const dns = readDns(where, 'dns', raw.dns);
    if (dns) out.dns = dns;
    return out;
  }

  const out: CniResult = { cniVersion: version };
  if (raw.interfaces !== undefined && raw.interfaces !== null) {
    if (!Array.isArray(raw.interfaces)) bad(where, 'interfaces', 'expected an array');
    out.interfaces = raw.interfaces.map((itf, i): CniInterface => {
      const p = `interfaces[${i}]`;
      if (!isObj(itf)) bad(where, p, 'expected an object');
      const o: CniInterface = { name: str(where, `${p}.name`, itf.name, false)! };
      const mac = str(where, `${p}.mac`, itf.mac, true);
      if (mac) o.mac = mac;
      const sandbox = str(where, `${p}.sandbox`, itf.sandbox, true);
      if (sandbox) o.sandbox = sandbox;
      if (typeof itf.mtu === 'number') o.mtu = itf.mtu;
      const sock = str(where, `${p}.socketPath`, itf.socketPath, true);
      if (sock) o.socketPath = sock;
      const pci = str(where, `${p}.pciID`, itf.pciID, true);
      if (pci) o.pciID = pci;
      return o;
    });
  }
  if (raw.ips !== undefined && raw.ips !== null) {
    if (!Array.isArray(raw.ips)) bad(where, 'ips', 'expected an array');
    out.ips = raw.ips.map((ip, i): CniIPConfig => {
      const p = `ips[${i}]`;
      if (!isObj(ip)) bad(where, p, 'expected an object');
      const address = str(where, `${p}.address`, ip.address, false)!;
      if (!isCidr(address)) bad(where, `${p}.address`, `not a CIDR: ${address}`);
      const o: CniIPConfig = { address };
      const gw = str(where, `${p}.gateway`, ip.gateway, true);
      if (gw) o.gateway = gw;
      if (ip.interface !== undefined && ip.interface !== null) {
        const n = ip.interface;
        if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) bad(where, `${p}.interface`, 'expected an index');
        if (!out.interfaces || n >= out.interfaces.length)
          bad(where, `${p}.interface`, `index ${n} is outside interfaces (${out.interfaces?.length ?? 0})`);
        o.interface = n;
      }
      return o;
    });
  }
  const routes = readRoutes(where, 'routes', raw.routes);
  if (routes) out.routes = routes;
  const dns = readDns(where, 'dns', raw.dns);
  if (dns) out.dns = dns;
  return out;
}

/**
 * Render a normalised result in another spec version (for `prevResult` and the cache). Only
 * 0.3.0 and later can be produced; 0.1.0/0.2.0 cannot carry interfaces.
 */
export function convertResult(result: CniResult, toVersion: string): Record<string, unknown> {
  if (compareVersions(toVersion, '0.3.0') < 0) {
    throw new ResultError(`cannot convert a CNI result to version ${toVersion}; only 0.3.0 and later are supported`);
  }
  const out: Record<string, unknown> = { cniVersion: toVersion };
  if (result.interfaces) out.interfaces = result.interfaces.map((i) => ({ ...i }));
  if (result.ips) {
    const legacy = compareVersions(toVersion, '1.0.0') < 0;
    out.ips = result.ips.map((ip) => (legacy ? { version: ip.address.includes(':') ? '6' : '4', ...ip } : { ...ip }));
  }
  if (result.routes) out.routes = result.routes.map((r) => ({ ...r }));
  if (result.dns) out.dns = { ...result.dns };
  return out;
}

/** Is `raw` a CNI error document? */
export function asErrorDocument(raw: unknown): CniErrorDocument | undefined {
  if (!isObj(raw) || typeof raw.code !== 'number') return undefined;
  const doc: CniErrorDocument = { code: raw.code, msg: typeof raw.msg === 'string' ? raw.msg : '' };
  if (typeof raw.cniVersion === 'string') doc.cniVersion = raw.cniVersion;
  if (typeof raw.details === 'string' && raw.details) doc.details = raw.details;
  return doc;
}

export function parseVersionInfo(raw: unknown, where: string): CniVersionInfo {
  if (!isObj(raw)) bad(where, '$', 'expected a JSON object');
  const cniVersion = str(where, 'cniVersion', raw.cniVersion, false)!;
  const supportedVersions = strArray(where, 'supportedVersions', raw.supportedVersions);
  if (!supportedVersions) bad(where, 'supportedVersions', 'missing');
  return { cniVersion, supportedVersions };
}

/**
 * The pod addresses of a result: IPs whose interface is inside the sandbox (or, if the plugin
 * did not say, all IPs), optionally only those of interface `ifName`.
 */
export function sandboxAddresses(result: CniResult, ifName?: string): string[] {
  const itfs = result.interfaces ?? [];
  return (result.ips ?? [])
    .filter((ip) => {
      if (ip.interface === undefined) return true;
      const itf = itfs[ip.interface];
      if (!itf) return false;
      if (!itf.sandbox) return false;
      return ifName === undefined || itf.name === ifName;
    })
    .map((ip) => ip.address);
}
