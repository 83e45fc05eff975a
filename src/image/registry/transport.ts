/** HTTP(S) requests to registries: per-endpoint TLS (system CAs + extra), no-progress deadline. */
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { DeadlineExceededError, UnavailableError } from '../../errors.ts';

export interface TlsOptions {
  /** Extra CA certificates (PEM) trusted in addition to the system and bundled ones. */
  ca?: Buffer[];
  cert?: Buffer;
  key?: Buffer;
  skipVerify?: boolean;
}

export interface HttpRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer | (() => NodeJS.ReadableStream);
  tls?: TlsOptions;
  /** Abort when no byte arrives for this long (waiting for headers or body). */
  noProgressTimeoutMs?: number;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: IncomingMessage;
  url: URL;
}

let baseCAs: string[] | undefined;
function systemCAs(): string[] {
  if (!baseCAs) {
    const set = new Set<string>(tls.rootCertificates);
    try {
      for (const c of tls.getCACertificates('system')) set.add(c);
    } catch {
      /* older Node: bundled roots only */
    }
    baseCAs = [...set];
  }
  return baseCAs;
}

const agents = new Map<string, http.Agent>();
function agentFor(url: URL, t: TlsOptions | undefined): http.Agent {
  const key = `${url.protocol}|${url.host}|${t?.skipVerify ? 1 : 0}|${(t?.ca ?? []).map((c) => c.length).join(',')}|${t?.cert?.length ?? 0}`;
  let a = agents.get(key);
  if (!a) {
    a =
      url.protocol === 'https:'
        ? new https.Agent({
            keepAlive: true,
            ca: [...systemCAs(), ...(t?.ca ?? []).map((b) => b.toString())],
            cert: t?.cert,
            key: t?.key,
            rejectUnauthorized: !t?.skipVerify,
          })
        : new http.Agent({ keepAlive: true });
    agents.set(key, a);
  }
  return a;
}

/** Close idle keep-alive connections (tests call this before stopping registries). */
export function closeIdleConnections(): void {
  for (const a of agents.values()) a.destroy();
  agents.clear();
}

export class TransportError extends UnavailableError {}

export function httpRequest(url: URL, req: HttpRequest = {}): Promise<HttpResponse> {
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise<HttpResponse>((resolve, reject) => {
    const r = mod.request(url, { method: req.method ?? 'GET', headers: req.headers, agent: agentFor(url, req.tls) }, (res) => {
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res, url });
    });
    const ms = req.noProgressTimeoutMs ?? 60_000;
    r.setTimeout(ms, () => r.destroy(new DeadlineExceededError(`${req.method ?? 'GET'} ${url.origin}${url.pathname}: no progress for ${ms} ms`)));
    r.on('error', (e) => {
      if (e instanceof DeadlineExceededError) reject(e);
      else reject(new TransportError(`${req.method ?? 'GET'} ${url.origin}${url.pathname}: ${e.message}`, { cause: e, errno: (e as NodeJS.ErrnoException).code }));
    });
    if (req.body === undefined) r.end();
    else if (Buffer.isBuffer(req.body)) r.end(req.body);
    else {
      const s = req.body();
      s.on('error', (e) => r.destroy(e as Error));
      s.pipe(r);
    }
  });
}

export async function readBody(res: HttpResponse, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of res.body) {
    n += (c as Buffer).length;
    if (n > limit) {
      res.body.destroy();
      throw new TransportError(`response from ${res.url.host} larger than ${limit} bytes`);
    }
    parts.push(c as Buffer);
  }
  return Buffer.concat(parts);
}

export async function discard(res: HttpResponse): Promise<void> {
  res.body.resume();
  await new Promise<void>((r) => {
    res.body.on('end', r);
    res.body.on('error', () => r());
    res.body.on('close', r);
  });
}
