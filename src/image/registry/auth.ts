/**
 * Registry authentication: anonymous, basic, and the bearer-token flow
 * (WWW-Authenticate realm/service/scope → token server, cached per scope, refreshed on 401).
 * Credentials come from per-request AuthConfig (the CRI shape) or docker's config.json.
 */
import { readFileSync, existsSync } from 'node:fs';
import { InvalidArgumentError, PermissionDeniedError } from '../../errors.ts';
import { httpRequest, readBody, type TlsOptions } from './transport.ts';

/** The CRI AuthConfig shape. */
export interface AuthConfig {
  username?: string;
  password?: string;
  /** base64("user:password") */
  auth?: string;
  serverAddress?: string;
  /** An OAuth2 refresh token, exchanged at the token server. */
  identityToken?: string;
  /** A bearer token sent to the registry as is. */
  registryToken?: string;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parse a WWW-Authenticate header (one or more challenges with quoted params). */
export function parseWwwAuthenticate(h: string): Challenge[] {
  const out: Challenge[] = [];
  let cur: Challenge | undefined;
  let i = 0;
  while (i < h.length) {
    while (i < h.length && /[\s,]/.test(h[i]!)) i++;
    const m = /^[A-Za-z0-9_.~+/-]+/.exec(h.slice(i));
    if (!m) break;
    const tok = m[0];
    i += tok.length;
    let j = i;
    while (h[j] === ' ') j++;
    if (h[j] === '=' && cur) {
      i = j + 1;
      while (h[i] === ' ') i++;
      let val = '';
      if (h[i] === '"') {
        i++;
        while (i < h.length && h[i] !== '"') {
          if (h[i] === '\\') i++;
          val += h[i++] ?? '';
        }
        i++;
      } else {
        while (i < h.length && h[i] !== ',' && h[i] !== ' ') val += h[i++];
      }
      cur.params[tok.toLowerCase()] = val;
    } else {
      cur = { scheme: tok.toLowerCase(), params: {} };
      out.push(cur);
    }
  }
  return out;
}

function decodeAuth(c: AuthConfig): { username: string; password: string } | undefined {
  if (c.username || c.password) return { username: c.username ?? '', password: c.password ?? '' };
  if (c.auth) {
    const s = Buffer.from(c.auth, 'base64').toString('utf8');
    const i = s.indexOf(':');
    if (i < 0) throw new InvalidArgumentError('auth config "auth" must be base64 of "username:password"');
    return { username: s.slice(0, i), password: s.slice(i + 1) };
  }
  return undefined;
}

/** Normalize a config.json `auths` key ("https://index.docker.io/v1/", "host:5000", "https://host/") to a registry host. */
export function registryKey(address: string): string {
  let s = address.trim().replace(/^[a-z]+:\/\//, '');
  s = s.split('/')[0]!;
  if (s === 'index.docker.io' || s === 'registry-1.docker.io') return 'docker.io';
  return s;
}

/** docker's ~/.docker/config.json `auths` (credential helpers are not supported). */
export function loadDockerConfig(path: string): Map<string, AuthConfig> {
  const out = new Map<string, AuthConfig>();
  if (!existsSync(path)) return out;
  let doc: { auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string; registrytoken?: string }> };
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new InvalidArgumentError(`docker config ${path}: ${(e as Error).message}`);
  }
  for (const [k, v] of Object.entries(doc.auths ?? {})) {
    out.set(registryKey(k), {
      auth: v.auth, username: v.username, password: v.password, identityToken: v.identitytoken, registryToken: v.registrytoken, serverAddress: k,
    });
  }
  return out;
}

interface Token {
  token: string;
  expiresAt: number;
}

/** Per-client auth state: the last challenge per host and cached tokens per (host, scope). */
export class Authorizer {
  #challenges = new Map<string, Challenge>();
  #tokens = new Map<string, Token>();
  #inflight = new Map<string, Promise<Token>>();
  readonly userAgent: string;
  constructor(userAgent = 'corral') {
    this.userAgent = userAgent;
  }

  /** The Authorization header for a request, if one is known to be needed. */
  async header(host: string, scope: string, creds: AuthConfig | undefined, tlsOpts: TlsOptions): Promise<string | undefined> {
    if (creds?.registryToken) return `Bearer ${creds.registryToken}`;
    const ch = this.#challenges.get(host);
    if (!ch) return undefined;
    if (ch.scheme === 'basic') {
      const up = creds && decodeAuth(creds);
      if (!up) return undefined;
      return `Basic ${Buffer.from(`${up.username}:${up.password}`).toString('base64')}`;
    }
    if (ch.scheme === 'bearer') {
      const t = await this.#token(host, ch, scope, creds, tlsOpts);
      return `Bearer ${t.token}`;
    }
    return undefined;
  }

  /**
   * Record a 401's challenge; returns whether retrying can help (a new challenge, or a
   * cached token that may have expired and was dropped).
   */
  unauthorized(host: string, scope: string, wwwAuthenticate: string | undefined, hadAuth: boolean): boolean {
    const chs = parseWwwAuthenticate(wwwAuthenticate ?? '');
    const ch = chs.find((c) => c.scheme === 'bearer') ?? chs.find((c) => c.scheme === 'basic');
    if (!ch) return false;
    const prev = this.#challenges.get(host);
    this.#challenges.set(host, ch);
    const key = `${host}|${ch.params.scope ?? scope}`;
    const cached = this.#tokens.has(key) || this.#tokens.has(`${host}|${scope}`);
    this.#tokens.delete(key);
    this.#tokens.delete(`${host}|${scope}`);
    if (!hadAuth) return true;
    if (!prev || prev.scheme !== ch.scheme) return true;
    return cached;
  }

  async #token(host: string, ch: Challenge, scope: string, creds: AuthConfig | undefined, tlsOpts: TlsOptions): Promise<Token> {
    const key = `${host}|${scope}`;
    const t = this.#tokens.get(key);
    if (t && t.expiresAt > Date.now()) return t;
    let p = this.#inflight.get(key);
    if (!p) {
      p = this.#fetchToken(ch, scope, creds, tlsOpts).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, p);
    }
    const tok = await p;
    this.#tokens.set(key, tok);
    return tok;
  }

  async #fetchToken(ch: Challenge, scope: string, creds: AuthConfig | undefined, tlsOpts: TlsOptions): Promise<Token> {
    const realm = ch.params.realm;
    if (!realm) throw new PermissionDeniedError('registry sent a Bearer challenge without a realm');
    const url = new URL(realm);
    const service = ch.params.service;
    const scopes = [...new Set([scope, ...(ch.params.scope ? [ch.params.scope] : [])].filter(Boolean))];
    const headers: Record<string, string> = { 'User-Agent': this.userAgent };
    let res;
    if (creds?.identityToken) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: this.userAgent });
      if (service) form.set('service', service);
      if (scopes.length) form.set('scope', scopes.join(' '));
      res = await httpRequest(url, { method: 'POST', headers: { ...headers, 'Content-Type': 'application/x-www-form-urlencoded' }, body: Buffer.from(form.toString()), tls: tlsOpts });
    } else {
      if (service) url.searchParams.set('service', service);
      for (const s of scopes) url.searchParams.append('scope', s);
      const up = creds && decodeAuth(creds);
      if (up) headers.Authorization = `Basic ${Buffer.from(`${up.username}:${up.password}`).toString('base64')}`;
      res = await httpRequest(url, { headers, tls: tlsOpts });
    }
    const body = await readBody(res, 1 << 20);
    if (res.status === 401 || res.status === 403) throw new PermissionDeniedError(`token server ${url.origin} refused the credentials (HTTP ${res.status}); check the username and password`);
    if (res.status !== 200) throw new PermissionDeniedError(`token server ${url.origin} answered HTTP ${res.status}: ${body.toString().slice(0, 200)}`);
    let doc: { token?: string; access_token?: string; expires_in?: number };
    try {
      doc = JSON.parse(body.toString());
    } catch {
      throw new PermissionDeniedError(`token server ${url.origin} sent invalid JSON`);
    }
    const token = doc.access_token ?? doc.token;
    if (!token) throw new PermissionDeniedError(`token server ${url.origin} sent no token`);
    const ttl = Math.max(doc.expires_in ?? 60, 10);
    return { token, expiresAt: Date.now() + (ttl - 5) * 1000 };
  }
}
