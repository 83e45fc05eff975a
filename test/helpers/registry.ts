/**
 * A private CNCF distribution registry (/usr/bin/docker-registry) for tests: free loopback
 * port, temp storage and config, stopped by PID. Configurations: plain HTTP, TLS with a CA
 * generated here (openssl), htpasswd basic auth (bcrypt via perl's crypt(3)), and bearer
 * token auth with a small token server signing RS256 JWTs (node:crypto) whose x5c chains to
 * the registry's rootcertbundle.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { createSign, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import http from 'node:http';
import https from 'node:https';

export interface RegistryOptions {
  tls?: boolean;
  /** htpasswd users for basic auth. */
  basicAuth?: Record<string, string>;
  /** Bearer token auth with these users (token server started alongside). */
  tokenAuth?: Record<string, string>;
  /**
   * OAuth2 refresh tokens the token server accepts (token → user), exchanged by POST with
   * grant_type=refresh_token as the distribution token spec describes (tokenAuth only).
   */
  refreshTokens?: Record<string, string>;
  /** Regexps of URLs allowed in non-distributable layer descriptors (validation.manifests.urls.allow). */
  allowLayerUrls?: string[];
}

export interface TokenRequest {
  method: string;
  grantType?: string;
  user: string;
  /** Whether the request carried basic credentials / a refresh token. */
  basic: boolean;
  refreshToken?: string;
}

export interface TestRegistry {
  host: string; // 127.0.0.1:port
  port: number;
  url: string;
  dir: string;
  pid: number;
  /** PEM of the CA that signed the TLS certificate (tls only). */
  caCert?: Buffer;
  caCertPath?: string;
  /** Number of token requests the token server answered (tokenAuth only). */
  tokenRequests: () => number;
  /** Every answered or refused token request, in order (tokenAuth only). */
  tokenLog: () => TokenRequest[];
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A CA and a server certificate for 127.0.0.1/localhost. */
export function makeCerts(dir: string, cn = '127.0.0.1'): { ca: string; cert: string; key: string } {
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=corral-test-ca'], dir);
  writeFileSync(join(dir, 'ext.cnf'), `subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n`);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', `/CN=${cn}`], dir);
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'ext.cnf'], dir);
  return { ca: join(dir, 'ca.crt'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key') };
}

/** bcrypt htpasswd line using the system crypt(3) ($2b$) through perl. */
export function htpasswdLine(user: string, password: string): string {
  const salt = randomBytes(16).toString('base64').replace(/[^A-Za-z0-9]/g, '.').slice(0, 22).padEnd(22, '.');
  const r = spawnSync('perl', ['-e', 'print crypt($ARGV[0], $ARGV[1])', password, `$2b$05$${salt}`], { encoding: 'utf8' });
  if (r.status !== 0 || !r.stdout.startsWith('$2b$')) throw new Error(`bcrypt via perl crypt failed: ${r.stderr}`);
  return `${user}:${r.stdout}`;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

interface TokenServer {
  url: string;
  server: Server;
  requests: number;
  log: TokenRequest[];
}

async function startTokenServer(dir: string, users: Record<string, string>, service: string, issuer: string, refreshTokens: Record<string, string> = {}): Promise<TokenServer> {
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'token.key', '-out', 'token.crt', '-days', '2', '-subj', '/CN=corral-token-issuer'], dir);
  const key = readFileSync(join(dir, 'token.key'), 'utf8');
  const certDer = new X509Certificate(readFileSync(join(dir, 'token.crt'))).raw;
  const ts: TokenServer = { url: '', server: undefined as unknown as Server, requests: 0, log: [] };
  const answer = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse, form: URLSearchParams | undefined) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const h = req.headers.authorization;
    let user = '';
    // GET: query parameters and optional basic auth. POST (OAuth2): a form with grant_type
    // refresh_token (refresh_token) or password (username, password), scope space-separated.
    const params = form ?? u.searchParams;
    const entry: TokenRequest = { method: req.method ?? 'GET', user: '', basic: false };
    ts.log.push(entry);
    if (form) {
      entry.grantType = form.get('grant_type') ?? '';
      if (entry.grantType === 'refresh_token') {
        const rt = form.get('refresh_token') ?? '';
        entry.refreshToken = rt;
        if (!refreshTokens[rt]) return void res.writeHead(401, { 'Content-Type': 'application/json' }).end('{"error":"invalid_grant"}');
        user = refreshTokens[rt]!;
      } else if (entry.grantType === 'password') {
        const n = form.get('username') ?? '';
        if (users[n] === undefined || users[n] !== form.get('password')) return void res.writeHead(401).end('{"error":"invalid_grant"}');
        user = n;
      } else {
        return void res.writeHead(400, { 'Content-Type': 'application/json' }).end('{"error":"unsupported_grant_type"}');
      }
      if (!form.get('client_id')) return void res.writeHead(400).end('{"error":"invalid_request","error_description":"client_id is required"}');
    } else if (h?.startsWith('Basic ')) {
      entry.basic = true;
      const [n, p] = Buffer.from(h.slice(6), 'base64').toString().split(':');
      if (users[n!] !== p) {
        res.writeHead(401).end('{"error":"bad credentials"}');
        return;
      }
      user = n!;
    }
    entry.user = user;
    ts.requests++;
    const access = params.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean).map((s) => {
      const [type, ...rest] = s.split(':');
      const actions = rest.pop()!.split(',');
      return { type, name: rest.join(':'), actions: user ? actions : [] };
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [certDer.toString('base64')] };
    const claims = { iss: issuer, sub: user, aud: params.get('service') ?? service, exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access };
    const signing = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = createSign('RSA-SHA256').update(signing).sign(key);
    const token = `${signing}.${b64url(sig)}`;
    const body = form ? { access_token: token, expires_in: 300, scope: params.getAll('scope').join(' '), issued_at: new Date().toISOString() } : { token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() };
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
  };
  ts.server = createHttpServer((req, res) => {
    if (req.method !== 'POST') return answer(req, res, undefined);
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      if (!String(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) return void res.writeHead(400).end('{"error":"invalid_request"}');
      answer(req, res, new URLSearchParams(Buffer.concat(parts).toString()));
    });
  });
  await new Promise<void>((r) => ts.server.listen(0, '127.0.0.1', r));
  const a = ts.server.address();
  ts.url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/token`;
  return ts;
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'corral-registry-'));
  const port = await freePort();
  const lines = ['version: 0.1', 'log:', '  level: error', '  accesslog:', '    disabled: true', 'storage:', '  filesystem:', `    rootdirectory: ${dir}/data`, '  delete:', '    enabled: true', 'http:', `  addr: 127.0.0.1:${port}`, `  secret: ${randomBytes(8).toString('hex')}`];
  let caCert: Buffer | undefined;
  let caCertPath: string | undefined;
  if (opts.tls) {
    const c = makeCerts(dir);
    lines.push('  tls:', `    certificate: ${c.cert}`, `    key: ${c.key}`);
    caCert = readFileSync(c.ca);
    caCertPath = c.ca;
  }
  let token: TokenServer | undefined;
  if (opts.basicAuth) {
    writeFileSync(join(dir, 'htpasswd'), Object.entries(opts.basicAuth).map(([u, p]) => htpasswdLine(u, p)).join('\n') + '\n');
    lines.push('auth:', '  htpasswd:', '    realm: corral-test', `    path: ${dir}/htpasswd`);
  } else if (opts.tokenAuth) {
    token = await startTokenServer(dir, opts.tokenAuth, 'corral-registry', 'corral-token-issuer', opts.refreshTokens);
    lines.push('auth:', '  token:', `    realm: ${token.url}`, '    service: corral-registry', '    issuer: corral-token-issuer', `    rootcertbundle: ${dir}/token.crt`);
  }
  if (opts.allowLayerUrls) lines.push('validation:', '  manifests:', '    urls:', '      allow:', ...opts.allowLayerUrls.map((r) => `        - '${r}'`));
  writeFileSync(join(dir, 'config.yml'), lines.join('\n') + '\n');
  const proc: ChildProcess = spawn('/usr/bin/docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, OTEL_TRACES_EXPORTER: 'none' } });
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const scheme = opts.tls ? 'https' : 'http';
  const url = `${scheme}://127.0.0.1:${port}`;
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise<void>((r) => proc.once('exit', () => r()));
      process.kill(proc.pid!, 'SIGTERM');
      const t = setTimeout(() => proc.exitCode === null && process.kill(proc.pid!, 'SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    if (token) await new Promise<void>((r) => token!.server.close(() => r()));
    token?.server.closeAllConnections();
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) {
      await stop();
      throw new Error(`docker-registry exited: ${stderr}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const mod = opts.tls ? https : http;
      const r = mod.get(`${url}/v2/`, { ca: caCert, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode === 200 || res.statusCode === 401);
      });
      r.on('error', () => resolve(false));
    });
    if (ok) break;
    if (i > 200) {
      await stop();
      throw new Error(`docker-registry did not come up on ${url}: ${stderr}`);
    }
    await sleep(50);
  }
  return { host: `127.0.0.1:${port}`, port, url, dir, pid: proc.pid!, caCert, caCertPath, tokenRequests: () => token?.requests ?? 0, tokenLog: () => [...(token?.log ?? [])], stop };
}

/** Whether a process is still alive (for leak checks). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
