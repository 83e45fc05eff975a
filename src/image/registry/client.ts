/**
 * OCI distribution client: ping, manifests (by tag or digest, OCI + Docker schema 2 and
 * their indexes), blobs (redirects with auth dropped on a host change, Range resume,
 * retries with backoff, no-progress deadline, concurrency limit, digest and size verified
 * while streaming) and pushes. Mirrors are tried in order with fallback to the origin.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CorralError, DeadlineExceededError, InvalidArgumentError, NotFoundError, PermissionDeniedError, UnavailableError, fromNodeError,
} from '../../errors.ts';
import { digestOf, parseDigest } from '../digest.ts';
import { MANIFEST_ACCEPT, MAX_MANIFEST_SIZE, type Descriptor } from '../media.ts';
import type { Reference } from '../reference.ts';
import type { ContentWriter } from '../content/store.ts';
import { Authorizer, type AuthConfig } from './auth.ts';
import { resolveEndpoints, type Capability, type Endpoint, type HostsOptions } from './hosts.ts';
import { discard, httpRequest, readBody, TransportError, type HttpResponse } from './transport.ts';

export interface RegistryClientOptions {
  hosts?: HostsOptions;
  /** Credentials for a registry host (per-request credentials take precedence). */
  credentials?: (registry: string) => AuthConfig | undefined;
  /** Parallel blob transfers (default 4). */
  concurrency?: number;
  /** Attempts per endpoint for transient failures without progress (default 4). */
  retries?: number;
  backoffMs?: number;
  noProgressTimeoutMs?: number;
  userAgent?: string;
}

export interface RequestOptions {
  auth?: AuthConfig;
  signal?: AbortSignal;
}

export class ManifestTooLargeError extends InvalidArgumentError {}
export class BlobMismatchError extends InvalidArgumentError {}

class Semaphore {
  #n: number;
  #q: Array<() => void> = [];
  constructor(n: number) {
    this.#n = n;
  }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#n <= 0) await new Promise<void>((r) => this.#q.push(r));
    else this.#n--;
    try {
      return await fn();
    } finally {
      const next = this.#q.shift();
      if (next) next();
      else this.#n++;
    }
  }
}

/** Errors worth another attempt (network, timeouts, 5xx, 429). */
function transient(e: unknown): boolean {
  return e instanceof TransportError || e instanceof DeadlineExceededError || (e instanceof HttpStatusError && (e.status >= 500 || e.status === 429));
}

export class HttpStatusError extends UnavailableError {
  readonly status: number;
  constructor(status: number, msg: string) {
    super(msg);
    this.status = status;
  }
}

function statusError(res: HttpResponse, what: string, body: string): CorralError {
  let detail = body.slice(0, 300);
  try {
    const j = JSON.parse(body) as { errors?: Array<{ code?: string; message?: string }> };
    if (j.errors?.length) detail = j.errors.map((e) => `${e.code}: ${e.message}`).join('; ');
  } catch {
    /* not JSON */
  }
  const msg = `${what}: HTTP ${res.status} from ${res.url.host}${detail ? ` (${detail})` : ''}`;
  if (res.status === 404) return new NotFoundError(msg);
  if (res.status === 401 || res.status === 403) return new PermissionDeniedError(`${msg}; check the registry credentials`);
  return new HttpStatusError(res.status, msg);
}

export class RegistryClient {
  readonly opts: RegistryClientOptions;
  readonly authorizer: Authorizer;
  readonly #sem: Semaphore;
  constructor(opts: RegistryClientOptions = {}) {
    this.opts = opts;
    this.authorizer = new Authorizer(opts.userAgent ?? 'corral/0.1');
    this.#sem = new Semaphore(opts.concurrency ?? 4);
  }

  endpoints(registry: string, cap: Capability): Endpoint[] {
    const eps = resolveEndpoints(registry, this.opts.hosts).filter((e) => e.capabilities.has(cap));
    if (!eps.length) throw new InvalidArgumentError(`no host for registry ${registry} has the "${cap}" capability`);
    return eps;
  }

  #creds(registry: string, ro: RequestOptions): AuthConfig | undefined {
    return ro.auth ?? this.opts.credentials?.(registry);
  }

  /**
   * One request with auth: adds the Authorization header when a challenge is known, and
   * on 401 learns the challenge / drops a stale token and retries once. Redirects are
   * followed (up to 5); the Authorization header is dropped when the host changes.
   */
  async request(ep: Endpoint, path: string, scope: string, creds: AuthConfig | undefined, init: { method?: string; headers?: Record<string, string>; body?: Buffer | (() => NodeJS.ReadableStream); followRedirects?: boolean } = {}): Promise<HttpResponse> {
    for (let attempt = 0; ; attempt++) {
      let url = path.startsWith('http://') || path.startsWith('https://') ? new URL(path) : new URL(ep.base.href.replace(/\/$/, '') + path);
      const auth = await this.authorizer.header(ep.host, scope, creds, ep.tls);
      let headers: Record<string, string> = { 'User-Agent': this.authorizer.userAgent, ...ep.headers, ...(init.headers ?? {}) };
      if (auth) headers.Authorization = auth;
      let res: HttpResponse;
      for (let hop = 0; ; hop++) {
        res = await httpRequest(url, { method: init.method, headers, body: init.body, tls: url.host === ep.host ? ep.tls : {}, noProgressTimeoutMs: this.opts.noProgressTimeoutMs });
        const loc = res.headers.location;
        if (init.followRedirects !== false && [301, 302, 303, 307, 308].includes(res.status) && loc) {
          await discard(res);
          if (hop >= 5) throw new UnavailableError(`too many redirects from ${ep.host}${path}`);
          const next = new URL(loc, url);
          if (next.host !== url.host) {
            const { Authorization: _a, ...rest } = headers;
            void _a;
            headers = rest;
          }
          url = next;
          continue;
        }
        break;
      }
      if (res.status === 401 && attempt === 0 && !creds?.registryToken) {
        const retry = this.authorizer.unauthorized(ep.host, scope, res.headers['www-authenticate'] as string | undefined, auth !== undefined);
        if (retry) {
          await discard(res);
          continue;
        }
      }
      return res;
    }
  }

  /** Run op against each endpoint in order with retries; fall back to the next on failure. */
  async #withEndpoints<T>(registry: string, cap: Capability, what: string, op: (ep: Endpoint) => Promise<T>): Promise<T> {
    const eps = this.endpoints(registry, cap);
    let last: unknown;
    for (const ep of eps) {
      const retries = this.opts.retries ?? 4;
      for (let attempt = 0; attempt < retries; attempt++) {
        try {
          return await op(ep);
        } catch (e) {
          last = e;
          if (e instanceof NotFoundError && ep.mirror) break; // a mirror may lack it; try the next
          if (e instanceof PermissionDeniedError && ep.mirror) break;
          if (!transient(e)) {
            if (ep.mirror && !(e instanceof InvalidArgumentError)) break;
            throw e;
          }
          if (attempt + 1 < retries) await sleep(this.#backoff(attempt));
        }
      }
    }
    if (last instanceof CorralError) throw last;
    throw new UnavailableError(`${what}: ${(last as Error)?.message ?? 'failed'}`, { cause: last });
  }

  #backoff(attempt: number): number {
    const base = this.opts.backoffMs ?? 200;
    return Math.min(base * 2 ** attempt, 10_000) * (0.5 + Math.random() / 2);
  }

  async ping(registry: string, ro: RequestOptions = {}): Promise<void> {
    await this.#withEndpoints(registry, 'resolve', `ping ${registry}`, async (ep) => {
      const res = await this.request(ep, '/', '', this.#creds(registry, ro));
      const body = await readBody(res, 1 << 16);
      if (res.status !== 200) throw statusError(res, `ping ${ep.base.href}`, body.toString());
    });
  }

  /** Fetch a manifest or index by tag or digest. Verifies the digest; refuses > 4 MiB. */
  async fetchManifest(ref: Reference, reference: string, ro: RequestOptions = {}): Promise<{ descriptor: Descriptor; data: Buffer }> {
    const scope = `repository:${ref.path}:pull`;
    const byDigest = reference.includes(':');
    if (byDigest) parseDigest(reference);
    return this.#withEndpoints(ref.domain, byDigest ? 'pull' : 'resolve', `fetch manifest ${ref.domain}/${ref.path}@${reference}`, async (ep) => {
      const res = await this.request(ep, `/${ref.path}/manifests/${reference}`, scope, this.#creds(ref.domain, ro), { headers: { Accept: MANIFEST_ACCEPT.join(', ') } });
      if (res.status !== 200) throw statusError(res, `fetch manifest ${ref.path}:${reference}`, (await readBody(res, 1 << 16).catch(() => Buffer.alloc(0))).toString());
      const len = Number(res.headers['content-length'] ?? -1);
      if (len > MAX_MANIFEST_SIZE) {
        res.body.destroy();
        throw new ManifestTooLargeError(`manifest ${ref.path}:${reference} is ${len} bytes; manifests over ${MAX_MANIFEST_SIZE} bytes are refused`);
      }
      let data: Buffer;
      try {
        data = await readBody(res, MAX_MANIFEST_SIZE);
      } catch (e) {
        if (e instanceof TransportError && /larger than/.test(e.message)) throw new ManifestTooLargeError(`manifest ${ref.path}:${reference} is over ${MAX_MANIFEST_SIZE} bytes; refused`);
        throw e;
      }
      const algo = byDigest ? parseDigest(reference).algorithm : 'sha256';
      const digest = digestOf(data, algo);
      if (byDigest && digest !== reference) throw new BlobMismatchError(`manifest ${ref.path}@${reference}: the registry sent content with digest ${digest}`);
      const header = res.headers['docker-content-digest'];
      if (!byDigest && typeof header === 'string' && header.startsWith('sha256:') && header !== digest) {
        throw new BlobMismatchError(`manifest ${ref.path}:${reference}: Docker-Content-Digest ${header} does not match the content (${digest})`);
      }
      let mediaType = String(res.headers['content-type'] ?? '').split(';')[0]!.trim();
      try {
        const j = JSON.parse(data.toString('utf8')) as { mediaType?: string; manifests?: unknown; config?: unknown };
        if (j.mediaType) mediaType = j.mediaType;
        else if (!MANIFEST_ACCEPT.includes(mediaType as (typeof MANIFEST_ACCEPT)[number])) {
          mediaType = j.manifests ? 'application/vnd.oci.image.index.v1+json' : 'application/vnd.oci.image.manifest.v1+json';
        }
      } catch {
        throw new InvalidArgumentError(`manifest ${ref.path}:${reference} is not valid JSON`);
      }
      return { descriptor: { mediaType, digest, size: data.length }, data };
    });
  }

  /**
   * Download a blob into an ingest writer, resuming from writer.offset with a Range
   * request. Retries transient failures; an attempt that made progress does not count.
   */
  async fetchBlob(ref: Reference, desc: Descriptor, w: ContentWriter, ro: RequestOptions & { onProgress?: (done: number, total: number) => void } = {}): Promise<string> {
    const scope = `repository:${ref.path}:pull`;
    return this.#sem.run(() =>
      this.#withEndpoints(ref.domain, 'pull', `fetch blob ${desc.digest}`, (ep) =>
        this.#download(desc, w, ro, (headers) => this.request(ep, `/${ref.path}/blobs/${desc.digest}`, scope, this.#creds(ref.domain, ro), { headers })),
      ),
    );
  }

  /**
   * Download a non-distributable layer from one of its descriptor's URLs (http/https only),
   * in order, without the registry's credentials (redirects followed; digest and size verified
   * as for registry blobs). NOT_FOUND when no URL has it.
   */
  async fetchBlobFromUrls(desc: Descriptor, w: ContentWriter, ro: RequestOptions & { onProgress?: (done: number, total: number) => void } = {}): Promise<string> {
    const urls = (desc.urls ?? []).filter((u) => /^https?:\/\//i.test(u));
    if (!urls.length) throw new NotFoundError(`layer ${desc.digest} has no http(s) URLs to fetch it from`);
    let last: unknown;
    for (const u of urls) {
      let url: URL;
      try {
        url = new URL(u);
      } catch {
        last = new InvalidArgumentError(`layer ${desc.digest}: invalid URL "${u}"`);
        continue;
      }
      // an endpoint of its own: no registry headers, TLS from the system CAs, no credentials
      const ep: Endpoint = { base: new URL(url.origin), host: url.host, capabilities: new Set(['pull']), tls: {}, headers: {}, mirror: true };
      try {
        return await this.#sem.run(() => this.#download(desc, w, { onProgress: ro.onProgress }, (headers) => this.request(ep, url.href, '', undefined, { headers })));
      } catch (e) {
        last = e;
        if (e instanceof BlobMismatchError) throw e;
      }
    }
    throw new NotFoundError(`layer ${desc.digest}: none of its URLs served it (${urls.join(', ')}): ${(last as Error)?.message ?? ''}`, { cause: last });
  }

  async #download(desc: Descriptor, w: ContentWriter, ro: { onProgress?: (done: number, total: number) => void }, open: (headers: Record<string, string>) => Promise<HttpResponse>): Promise<string> {
    const retries = this.opts.retries ?? 4;
    let failures = 0;
    for (;;) {
      const start = w.offset;
      try {
        if (start < desc.size || desc.size === 0) {
          const headers: Record<string, string> = {};
          if (start > 0) headers.Range = `bytes=${start}-`;
          const res = await open(headers);
          if (res.status === 416 && start > 0) {
            await discard(res);
            await w.truncate();
            if (++failures >= retries) throw new BlobMismatchError(`blob ${desc.digest}: the registry refused a range at ${start} of the expected ${desc.size} bytes`);
            continue;
          }
          if (res.status !== 200 && res.status !== 206) throw statusError(res, `fetch blob ${desc.digest}`, (await readBody(res, 1 << 16).catch(() => Buffer.alloc(0))).toString());
          if (res.status === 200 && start > 0) await w.truncate(); // server ignored Range
          if (res.status === 206) {
            const cr = /^bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''));
            if (!cr || Number(cr[1]) !== start) {
              res.body.destroy();
              await w.truncate();
              throw new TransportError(`blob ${desc.digest}: bad Content-Range "${res.headers['content-range']}"`);
            }
          }
          try {
            for await (const c of res.body) {
              try {
                await w.write(c as Buffer);
              } catch (e) {
                // a local failure (disk full, read-only store) is not a network error: no retry
                throw fromNodeError(e, `write blob ${desc.digest} into the content store`);
              }
              ro.onProgress?.(w.offset, desc.size);
            }
          } catch (e) {
            if (e instanceof CorralError) throw e;
            throw new TransportError(`blob ${desc.digest}: download interrupted at ${w.offset} of ${desc.size} bytes: ${(e as Error).message}`, { cause: e });
          }
          if (!res.body.complete) throw new TransportError(`blob ${desc.digest}: connection closed at ${w.offset} of ${desc.size} bytes`);
          if (w.offset !== desc.size) throw new BlobMismatchError(`blob ${desc.digest}: the registry sent ${w.offset} bytes, the descriptor says ${desc.size}; refusing it`);
        }
        if (w.offset < desc.size) throw new TransportError(`blob ${desc.digest}: got ${w.offset} of ${desc.size} bytes`);
        try {
          return await w.commit();
        } catch (e) {
          throw new BlobMismatchError((e as Error).message, { cause: e });
        }
      } catch (e) {
        if (!transient(e)) throw e;
        if (w.offset > start) failures = 0; // progress: keep going from the new offset
        else if (++failures >= retries) throw e;
        await sleep(this.#backoff(failures));
      }
    }
  }

  // ---------------------------------------------------------------------------- push

  async blobExists(ref: Reference, digest: string, ro: RequestOptions = {}): Promise<boolean> {
    return this.#withEndpoints(ref.domain, 'push', `check blob ${digest}`, async (ep) => {
      const res = await this.request(ep, `/${ref.path}/blobs/${digest}`, `repository:${ref.path}:pull,push`, this.#creds(ref.domain, ro), { method: 'HEAD' });
      await discard(res);
      if (res.status === 200) return true;
      if (res.status === 404) return false;
      throw statusError(res, `check blob ${digest}`, '');
    });
  }

  /** Monolithic upload: POST to start, PUT with the digest. Skips blobs the registry has. */
  async pushBlob(ref: Reference, desc: Descriptor, body: () => NodeJS.ReadableStream, ro: RequestOptions = {}): Promise<void> {
    if (await this.blobExists(ref, desc.digest, ro)) return;
    const scope = `repository:${ref.path}:pull,push`;
    await this.#sem.run(() =>
      this.#withEndpoints(ref.domain, 'push', `push blob ${desc.digest}`, async (ep) => {
        const creds = this.#creds(ref.domain, ro);
        const start = await this.request(ep, `/${ref.path}/blobs/uploads/`, scope, creds, { method: 'POST', headers: { 'Content-Length': '0' }, body: Buffer.alloc(0) });
        const sb = (await readBody(start, 1 << 16)).toString();
        if (start.status !== 202) throw statusError(start, `start upload of ${desc.digest}`, sb);
        const loc = new URL(String(start.headers.location), start.url);
        loc.searchParams.set('digest', desc.digest);
        const put = await this.request(ep, loc.href, scope, creds, {
          method: 'PUT', headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(desc.size) }, body,
        });
        const pb = (await readBody(put, 1 << 16)).toString();
        if (put.status !== 201) throw statusError(put, `upload ${desc.digest}`, pb);
      }),
    );
  }

  async pushManifest(ref: Reference, reference: string, mediaType: string, data: Buffer, ro: RequestOptions = {}): Promise<string> {
    const scope = `repository:${ref.path}:pull,push`;
    return this.#withEndpoints(ref.domain, 'push', `push manifest ${reference}`, async (ep) => {
      const res = await this.request(ep, `/${ref.path}/manifests/${reference}`, scope, this.#creds(ref.domain, ro), {
        method: 'PUT', headers: { 'Content-Type': mediaType, 'Content-Length': String(data.length) }, body: data,
      });
      const b = (await readBody(res, 1 << 16)).toString();
      if (res.status !== 201) throw statusError(res, `push manifest ${ref.path}:${reference}`, b);
      return digestOf(data);
    });
  }
}
