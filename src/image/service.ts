/**
 * ImageService: the library the CRI daemon and the CLI use. Pulls (parallel download and
 * unpack, shared between concurrent pulls), lists, tags, removes, prunes, pushes, imports
 * and exports images, with content, snapshots and metadata under one root directory.
 *
 * Layout: <root>/meta.db, <root>/content/{blobs,ingest}, <root>/snapshots/<snapshotter>/<id>/
 */
import { randomBytes, createHash } from 'node:crypto';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../errors.ts';
import { ContentStore } from './content/store.ts';
import { isDigest, parseDigest } from './digest.ts';
import {
  hostPlatform, isIndex, isManifest, layerKind, platformMatches, formatPlatform,
  type Descriptor, type ImageConfig, type ImageIndex, type ImageManifest, type Platform,
} from './media.ts';
import { GC_REF_CONTENT, GC_REF_SNAPSHOT, LABEL_LEASE_EXPIRE, LABEL_UNCOMPRESSED, LABEL_UNPACKING, MetadataDB, type ImageRecord } from './metadata/db.ts';
import { StoreLock } from './metadata/lock.ts';
import { formatReference, parseReference, familiarName, type Reference } from './reference.ts';
import { loadDockerConfig, registryKey, type AuthConfig } from './registry/auth.ts';
import { RegistryClient } from './registry/client.ts';
import type { HostsOptions } from './registry/hosts.ts';
import { CopySnapshotter } from './snapshot/copy.ts';
import { OverlaySnapshotter, overlaySupported } from './snapshot/overlay.ts';
import type { Snapshotter, Usage } from './snapshot/snapshotter.ts';
import { prewarmUnpackWorkers, unpackLayerFile } from './unpack/layer.ts';
import { collectGarbage, type GcResult } from './gc.ts';

export interface ImageServiceOptions {
  root: string;
  /** "overlayfs" (default when supported), "native" (copy), or "auto". */
  snapshotter?: 'overlayfs' | 'native' | 'auto';
  hosts?: HostsOptions;
  /** docker config.json with `auths` (default: none). */
  dockerConfig?: string;
  platform?: Platform;
  concurrency?: number;
  retries?: number;
  backoffMs?: number;
  noProgressTimeoutMs?: number;
  /** Ingests older than this are dropped on start (default 24 h); younger ones are resumed. */
  staleIngestMs?: number;
  /**
   * How long an operation waits for the store lock another process holds (default 10 min);
   * then it fails with UNAVAILABLE naming the holder's pid.
   */
  lockTimeoutMs?: number;
  /** Called when an operation starts waiting for another process's store lock. */
  onLockWait?: (holderPid: string) => void;
  /**
   * Non-distributable ("foreign") layers, whose descriptors may carry `urls`. "urls" (the
   * default, containerd's behaviour): fetch from the descriptor's http(s) URLs first, without
   * the registry's credentials, then from the registry; the digest is verified either way.
   * "registry": never contact the URLs, only the registry (a clear NOT_FOUND if it lacks the blob).
   */
  foreignLayers?: 'urls' | 'registry';
}

export type PullEvent =
  | { type: 'resolved'; ref: string; digest: string; mediaType: string }
  | { type: 'manifest'; digest: string; platform?: string }
  | { type: 'layer'; digest: string; size: number; status: 'waiting' | 'cached' }
  | { type: 'progress'; digest: string; done: number; total: number }
  | { type: 'downloaded'; digest: string }
  | { type: 'unpacked'; digest: string; chainId: string }
  | { type: 'done'; ref: string; digest: string };

export interface PullOptions {
  auth?: AuthConfig;
  platform?: Platform;
  onProgress?: (e: PullEvent) => void;
}

export interface ImageInfo {
  /** Every name (fully qualified) pointing at this image. */
  names: string[];
  name: string;
  /** Digest of what the name points at (index or manifest): the repo digest. */
  digest: string;
  mediaType: string;
  /** Image ID: the config digest. */
  id: string;
  manifestDigest: string;
  platform: string;
  layers: Descriptor[];
  diffIds: string[];
  chainId: string;
  /** Compressed size: config + layers. */
  size: number;
  config: ImageConfig;
  createdAt: number;
  unpacked: boolean;
}

export const LABEL_MANIFEST = 'corral.io/manifest';

export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? d : `sha256:${createHash('sha256').update(`${prev} ${d}`).digest('hex')}`);
  }
  return out;
}

export class ImageService {
  readonly root: string;
  readonly db: MetadataDB;
  readonly content: ContentStore;
  readonly snapshotter: Snapshotter;
  readonly client: RegistryClient;
  readonly platform: Platform;
  readonly opts: ImageServiceOptions;
  /** Cross-process lock held by every operation that changes the store. */
  readonly lock: StoreLock;
  #blobJobs = new Map<string, Promise<void>>();
  #unpackJobs = new Map<string, Promise<void>>();
  #pullJobs = new Map<string, Promise<ImageInfo>>();

  private constructor(opts: ImageServiceOptions, db: MetadataDB, content: ContentStore, snap: Snapshotter, client: RegistryClient, lock: StoreLock) {
    this.opts = opts;
    this.lock = lock;
    this.root = opts.root;
    this.db = db;
    this.content = content;
    this.snapshotter = snap;
    this.client = client;
    this.platform = opts.platform ?? hostPlatform();
  }

  static async open(opts: ImageServiceOptions): Promise<ImageService> {
    await fsp.mkdir(opts.root, { recursive: true });
    const lock = new StoreLock(join(opts.root, 'store.lock'), { timeoutMs: opts.lockTimeoutMs, onWait: opts.onLockWait });
    let db: MetadataDB | undefined;
    try {
      // the schema set-up and the switch to WAL happen under the lock too (another process's
      // first open may be doing the same)
      return await lock.with(async () => {
        db = new MetadataDB(join(opts.root, 'meta.db'));
        return ImageService.#open(opts, db, lock);
      });
    } catch (e) {
      db?.close();
      lock.close();
      throw e;
    }
  }

  static async #open(opts: ImageServiceOptions, db: MetadataDB, lock: StoreLock): Promise<ImageService> {
    const content = new ContentStore(join(opts.root, 'content'));
    await content.init();
    let kind = opts.snapshotter ?? 'auto';
    const prev = db.db.prepare(`SELECT value FROM meta WHERE key = 'snapshotter'`).get() as { value?: string } | undefined;
    // "auto": the snapshotter the store was created with, else overlayfs where it works
    if (kind === 'auto' && (prev?.value === 'overlayfs' || prev?.value === 'native')) kind = prev.value;
    if (kind === 'auto') kind = overlaySupported(join(opts.root, 'snapshots')) ? 'overlayfs' : 'native';
    const snapRoot = join(opts.root, 'snapshots', kind);
    if (prev?.value && prev.value !== kind) {
      throw new FailedPreconditionError(`image store ${opts.root} was created with the ${prev.value} snapshotter; open it with that one (requested ${kind})`);
    }
    db.db.prepare(`INSERT OR REPLACE INTO meta(key, value) VALUES ('snapshotter', ?)`).run(kind);
    const snap = kind === 'overlayfs' ? new OverlaySnapshotter(snapRoot, db) : new CopySnapshotter(snapRoot, db);
    await snap.init();
    const auths = opts.dockerConfig ? loadDockerConfig(opts.dockerConfig) : new Map<string, AuthConfig>();
    const client = new RegistryClient({
      hosts: opts.hosts, concurrency: opts.concurrency, retries: opts.retries, backoffMs: opts.backoffMs,
      noProgressTimeoutMs: opts.noProgressTimeoutMs, credentials: (r) => auths.get(registryKey(r)),
    });
    const svc = new ImageService(opts, db, content, snap, client, lock);
    await svc.reconcile();
    return svc;
  }

  close(): void {
    this.lock.close();
    this.db.close();
  }

  /** Run fn holding the cross-process store lock (for callers that change the store, e.g. imports). */
  withStoreLock<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock.with(fn);
  }

  /**
   * Bring metadata and disk into agreement after a crash: drop half-unpacked snapshots,
   * snapshot dirs and blobs without records, records without blobs, stale ingests and the
   * leases of pulls that died.
   */
  reconcile(): Promise<{ snapshots: number; blobs: number; ingests: number; records: number }> {
    return this.lock.with(() => this.#reconcile());
  }

  async #reconcile(): Promise<{ snapshots: number; blobs: number; ingests: number; records: number }> {
    const out = { snapshots: 0, blobs: 0, ingests: 0, records: 0 };
    for (const l of this.db.listLeases()) if (l.labels['corral.io/pull'] === 'true') this.db.deleteLease(l.id);
    for (const s of this.db.listSnapshots().reverse()) {
      if (s.labels[LABEL_UNPACKING] !== undefined && s.kind === 'active') {
        await this.snapshotter.remove(s.key).catch(() => {});
        out.snapshots++;
      }
    }
    out.snapshots += (await this.snapshotter.reconcile()).length;
    const onDisk = new Map((await this.content.list()).map((b) => [b.digest, b.size]));
    this.db.tx(() => {
      for (const c of this.db.listContent()) {
        if (onDisk.get(c.digest) !== c.size) {
          this.db.deleteContent(c.digest);
          out.records++;
        }
      }
      for (const img of this.db.listImages()) {
        if (!this.db.getContent(img.digest)) {
          this.db.deleteImage(img.name);
          out.records++;
        }
      }
    });
    for (const [d] of onDisk) {
      if (!this.db.getContent(d)) {
        await this.content.delete(d);
        out.blobs++;
      }
    }
    const stale = this.opts.staleIngestMs ?? 24 * 3600 * 1000;
    for (const i of await this.content.ingests()) {
      if (!i.expected || Date.now() - i.startedAt > stale) {
        await this.content.abortIngest(i.key);
        out.ingests++;
      }
    }
    return out;
  }

  // ------------------------------------------------------------------------------ pull

  async pull(refStr: string, opts: PullOptions = {}): Promise<ImageInfo> {
    const ref = parseReference(refStr);
    const name = formatReference(ref);
    const platform = opts.platform ?? this.platform;
    const key = `${name}|${formatPlatform(platform)}`;
    // Two concurrent pulls of the same image share one job (and its progress).
    const existing = this.#pullJobs.get(key);
    if (existing) return existing;
    const job = this.lock.with(() => this.#pull(ref, name, platform, opts)).finally(() => this.#pullJobs.delete(key));
    this.#pullJobs.set(key, job);
    return job;
  }

  async #pull(ref: Reference, name: string, platform: Platform, opts: PullOptions): Promise<ImageInfo> {
    const emit = opts.onProgress ?? (() => {});
    const lease = `pull-${randomBytes(8).toString('hex')}`;
    this.db.createLease(lease, { 'corral.io/pull': 'true' });
    try {
      const ro = { auth: opts.auth };
      const top = await this.client.fetchManifest(ref, ref.digest ?? ref.tag!, ro);
      emit({ type: 'resolved', ref: name, digest: top.descriptor.digest, mediaType: top.descriptor.mediaType });
      let manifestDesc = top.descriptor;
      let manifestData = top.data;
      const topLabels: Record<string, string> = {};
      if (isIndex(top.descriptor.mediaType)) {
        const index = JSON.parse(top.data.toString()) as ImageIndex;
        if (!Array.isArray(index.manifests)) throw new InvalidArgumentError(`index ${top.descriptor.digest} has no manifests list`);
        const pick = index.manifests.find((m) => isManifest(m.mediaType) && platformMatches(platform, m.platform));
        if (!pick) {
          const have = index.manifests.map((m) => (m.platform ? formatPlatform(m.platform) : '?')).join(', ');
          throw new NotFoundError(`${name} has no image for platform ${formatPlatform(platform)} (it has: ${have})`);
        }
        index.manifests.forEach((m, i) => (topLabels[`${GC_REF_CONTENT}m.${i}`] = m.digest));
        const m = await this.client.fetchManifest(ref, pick.digest, ro);
        manifestDesc = { ...m.descriptor, mediaType: pick.mediaType };
        manifestData = m.data;
      } else if (!isManifest(top.descriptor.mediaType)) {
        throw new InvalidArgumentError(`${name}: unsupported manifest media type "${top.descriptor.mediaType}"`);
      }
      const manifest = JSON.parse(manifestData.toString()) as ImageManifest;
      if (!manifest.config || !Array.isArray(manifest.layers)) throw new InvalidArgumentError(`manifest ${manifestDesc.digest} lacks config or layers`);
      emit({ type: 'manifest', digest: manifestDesc.digest, platform: formatPlatform(platform) });
      for (const l of manifest.layers) {
        const k = layerKind(l.mediaType);
        if (!k) throw new InvalidArgumentError(`layer ${l.digest} has media type "${l.mediaType}", which Corral cannot unpack`);
        parseDigest(l.digest);
      }
      // boot the unpack workers while the config and the layers download
      if (manifest.layers.some((l) => !this.db.getContent(l.digest)?.labels[LABEL_UNCOMPRESSED])) prewarmUnpackWorkers(manifest.layers.length);
      // config
      await this.#ensureBlob(ref, manifest.config, lease, ro, emit);
      const config = JSON.parse((await this.content.read(manifest.config.digest)).toString()) as ImageConfig;
      const diffIds = config.rootfs?.diff_ids ?? [];
      if (diffIds.length !== manifest.layers.length) {
        throw new InvalidArgumentError(`image ${name}: config lists ${diffIds.length} diff_ids for ${manifest.layers.length} layers`);
      }
      diffIds.forEach((d) => parseDigest(d));
      const chain = chainIds(diffIds);
      for (const l of manifest.layers) emit({ type: 'layer', digest: l.digest, size: l.size, status: this.db.getContent(l.digest) ? 'cached' : 'waiting' });
      await this.#unpackAll(ref, manifest.layers, diffIds, chain, lease, ro, emit);
      await this.content.writeBlob(manifestData, { digest: manifestDesc.digest, size: manifestDesc.size });
      if (manifestDesc.digest !== top.descriptor.digest) await this.content.writeBlob(top.data, { digest: top.descriptor.digest, size: top.descriptor.size });
      this.#record([name, ...(ref.digest === undefined ? [`${ref.domain}/${ref.path}@${top.descriptor.digest}`] : [])], top.descriptor, topLabels, manifestDesc, manifest, chain);
      emit({ type: 'done', ref: name, digest: top.descriptor.digest });
      return this.get(name);
    } finally {
      this.db.deleteLease(lease);
    }
  }

  /** Record manifests/config with their GC references, then the image names: one transaction. */
  #record(names: string[], top: Descriptor, topLabels: Record<string, string>, manifestDesc: Descriptor, manifest: ImageManifest, chain: string[]): void {
    const mLabels: Record<string, string> = { [`${GC_REF_CONTENT}config`]: manifest.config.digest };
    manifest.layers.forEach((l, i) => (mLabels[`${GC_REF_CONTENT}l.${i}`] = l.digest));
    this.db.tx(() => {
      this.db.putContent({ digest: manifestDesc.digest, size: manifestDesc.size, mediaType: manifestDesc.mediaType, labels: mLabels });
      if (manifestDesc.digest !== top.digest) this.db.putContent({ digest: top.digest, size: top.size, mediaType: top.mediaType, labels: topLabels });
      const cfgLabels: Record<string, string> = {};
      if (chain.length) cfgLabels[`${GC_REF_SNAPSHOT}${this.snapshotter.name}`] = chain[chain.length - 1]!;
      this.db.putContent({ digest: manifest.config.digest, size: manifest.config.size, mediaType: manifest.config.mediaType, labels: cfgLabels });
      const labels = { [LABEL_MANIFEST]: manifestDesc.digest };
      // a name@digest record too, as containerd records repo@digest
      for (const name of names) this.db.putImage({ name, digest: top.digest, mediaType: top.mediaType, size: top.size, labels });
    });
  }

  /**
   * Record an image whose index/manifest, config and layer blobs are already in the content
   * store (written there by an archive import): unpack its layers for the platform and give it
   * `names` (fully qualified references; repo@digest names are added for tagged ones).
   */
  registerImage(names: string[], top: Descriptor, opts: { platform?: Platform; onProgress?: (e: PullEvent) => void } = {}): Promise<ImageInfo> {
    return this.lock.with(() => this.#registerImage(names, top, opts));
  }

  async #registerImage(names: string[], top: Descriptor, opts: { platform?: Platform; onProgress?: (e: PullEvent) => void }): Promise<ImageInfo> {
    const emit = opts.onProgress ?? (() => {});
    const platform = opts.platform ?? this.platform;
    if (!names.length) throw new InvalidArgumentError(`image ${top.digest} has no name to record it under`);
    const refs = names.map((n) => parseReference(n));
    const lease = `import-${randomBytes(8).toString('hex')}`;
    this.db.createLease(lease, { 'corral.io/pull': 'true' });
    try {
      const need = async (d: Descriptor, what: string): Promise<Buffer> => {
        if (!(await this.content.has(d.digest))) throw new NotFoundError(`${what} ${d.digest} is not in the archive or the store`);
        this.db.addLeaseResource(lease, 'content', d.digest);
        return this.content.read(d.digest);
      };
      const topData = await need(top, 'image');
      let manifestDesc = top;
      let manifestData = topData;
      const topLabels: Record<string, string> = {};
      if (isIndex(top.mediaType)) {
        const index = JSON.parse(topData.toString()) as ImageIndex;
        if (!Array.isArray(index.manifests)) throw new InvalidArgumentError(`index ${top.digest} has no manifests list`);
        const candidates = index.manifests.filter((m) => isManifest(m.mediaType) && platformMatches(platform, m.platform));
        let pick: Descriptor | undefined;
        for (const c of candidates) if (await this.content.has(c.digest)) { pick = c; break; }
        if (!pick) {
          const have = index.manifests.map((m) => (m.platform ? formatPlatform(m.platform) : '?')).join(', ');
          throw new NotFoundError(`image ${names[0]} has no manifest for platform ${formatPlatform(platform)} in the archive (the index lists: ${have})`);
        }
        index.manifests.forEach((m, i) => (topLabels[`${GC_REF_CONTENT}m.${i}`] = m.digest));
        manifestDesc = pick;
        manifestData = await need(pick, 'manifest');
      } else if (!isManifest(top.mediaType)) {
        throw new InvalidArgumentError(`${names[0]}: unsupported manifest media type "${top.mediaType}"`);
      }
      const manifest = JSON.parse(manifestData.toString()) as ImageManifest;
      if (!manifest.config || !Array.isArray(manifest.layers)) throw new InvalidArgumentError(`manifest ${manifestDesc.digest} lacks config or layers`);
      emit({ type: 'manifest', digest: manifestDesc.digest, platform: formatPlatform(platform) });
      const config = JSON.parse((await need(manifest.config, 'config')).toString()) as ImageConfig;
      const diffIds = config.rootfs?.diff_ids ?? [];
      if (diffIds.length !== manifest.layers.length) throw new InvalidArgumentError(`image ${names[0]}: config lists ${diffIds.length} diff_ids for ${manifest.layers.length} layers`);
      diffIds.forEach((d) => parseDigest(d));
      const chain = chainIds(diffIds);
      for (const l of manifest.layers) {
        if (!layerKind(l.mediaType)) throw new InvalidArgumentError(`layer ${l.digest} has media type "${l.mediaType}", which Corral cannot unpack`);
        const info = await this.content.info(l.digest);
        if (!info) throw new NotFoundError(`layer ${l.digest} of ${names[0]} is not in the archive or the store`);
        if (info.size !== l.size) throw new InvalidArgumentError(`layer ${l.digest}: ${info.size} bytes in the store, the manifest says ${l.size}`);
        this.db.putContent({ digest: l.digest, size: l.size, mediaType: l.mediaType, labels: {} });
        emit({ type: 'layer', digest: l.digest, size: l.size, status: 'cached' });
      }
      // every layer blob has a record now, so #unpackAll never goes to a registry
      await this.#unpackAll(refs[0]!, manifest.layers, diffIds, chain, lease, {}, emit);
      const all = new Set<string>();
      for (const r of refs) {
        all.add(formatReference(r));
        if (r.digest === undefined) all.add(`${r.domain}/${r.path}@${top.digest}`);
      }
      this.#record([...all], top, topLabels, manifestDesc, manifest, chain);
      emit({ type: 'done', ref: formatReference(refs[0]!), digest: top.digest });
      return this.get(formatReference(refs[0]!));
    } finally {
      this.db.deleteLease(lease);
    }
  }

  /** Download a blob once, however many pulls want it at the same time. */
  async #ensureBlob(ref: Reference, desc: Descriptor, lease: string, ro: { auth?: AuthConfig }, emit: (e: PullEvent) => void): Promise<void> {
    this.db.addLeaseResource(lease, 'content', desc.digest);
    const rec = this.db.getContent(desc.digest);
    if (rec && (await this.content.has(desc.digest))) return;
    let job = this.#blobJobs.get(desc.digest);
    if (!job) {
      job = this.content
        .withLock(desc.digest, async () => {
          if (!(await this.content.has(desc.digest))) {
            const w = await this.content.writer(`pull-${desc.digest}`, { digest: desc.digest, size: desc.size });
            const onProgress = (done: number, total: number) => emit({ type: 'progress', digest: desc.digest, done, total });
            const foreign = layerKind(desc.mediaType)?.nonDistributable === true;
            const useUrls = foreign && (this.opts.foreignLayers ?? 'urls') === 'urls' && (desc.urls ?? []).some((u) => /^https?:\/\//i.test(u));
            try {
              let urlError: unknown;
              let done = false;
              if (useUrls) {
                // containerd's order: the descriptor's URLs first, then the registry
                try {
                  await this.client.fetchBlobFromUrls(desc, w, { onProgress });
                  done = true;
                } catch (e) {
                  if (e instanceof InvalidArgumentError) throw e;
                  urlError = e;
                }
              }
              if (!done) {
                try {
                  await this.client.fetchBlob(ref, desc, w, { ...ro, onProgress });
                } catch (e) {
                  if (foreign && e instanceof NotFoundError) {
                    const how = useUrls ? `nor from its URLs (${(urlError as Error)?.message})` : desc.urls?.length ? `and its URLs (${desc.urls.join(', ')}) are not used (foreignLayers: "registry")` : 'and it has no URLs';
                    throw new NotFoundError(`non-distributable layer ${desc.digest} is not available from the registry ${how}; import the image from an archive that contains it`, { cause: e });
                  }
                  throw e;
                }
              }
            } catch (e) {
              const nothing = w.offset === 0;
              await w.close();
              // bad data is never resumed; an ingest that got no byte has nothing to resume
              if (e instanceof InvalidArgumentError || nothing) await this.content.abort(`pull-${desc.digest}`);
              throw e;
            }
          }
          this.db.putContent({ digest: desc.digest, size: desc.size, mediaType: desc.mediaType, labels: {} });
        })
        .finally(() => this.#blobJobs.delete(desc.digest));
      this.#blobJobs.set(desc.digest, job);
    }
    await job;
    emit({ type: 'downloaded', digest: desc.digest });
  }

  async #unpackAll(ref: Reference, layers: Descriptor[], diffIds: string[], chain: string[], lease: string, ro: { auth?: AuthConfig }, emit: (e: PullEvent) => void): Promise<void> {
    const snap = this.snapshotter;
    const downloads = layers.map((l) => this.#ensureBlob(ref, l, lease, ro, emit));
    downloads.forEach((d) => d.catch(() => {}));
    if (snap.parallelUnpack) {
      // overlay: every layer unpacks into its own directory as soon as it is downloaded; the
      // chain is linked in order afterwards.
      const extracted = layers.map(async (l, i) => {
        await downloads[i];
        if (this.db.getSnapshot(chain[i]!)) {
          this.db.addLeaseResource(lease, 'snapshot', chain[i]!);
          return undefined;
        }
        return this.#extract(l, diffIds[i]!, chain[i]!, undefined, emit);
      });
      extracted.forEach((p) => p.catch(() => {}));
      let failure: unknown;
      for (let i = 0; i < layers.length; i++) {
        try {
          const key = await extracted[i];
          if (failure === undefined && key !== undefined) await this.#commitOnce(chain[i]!, key, i > 0 ? chain[i - 1]! : undefined, layers[i]!, diffIds[i]!, lease, emit);
        } catch (e) {
          failure ??= e;
        }
      }
      if (failure !== undefined) {
        for (const k of await Promise.allSettled(extracted)) {
          if (k.status === 'fulfilled' && k.value && this.db.getSnapshot(k.value)) await snap.remove(k.value).catch(() => {});
        }
        throw failure;
      }
    } else {
      for (let i = 0; i < layers.length; i++) {
        await downloads[i];
        if (this.db.getSnapshot(chain[i]!)) {
          this.db.addLeaseResource(lease, 'snapshot', chain[i]!);
          continue;
        }
        const key = await this.#extract(layers[i]!, diffIds[i]!, chain[i]!, i > 0 ? chain[i - 1]! : undefined, emit);
        await this.#commitOnce(chain[i]!, key, undefined, layers[i]!, diffIds[i]!, lease, emit);
      }
    }
  }

  /** Unpack one layer into a fresh active snapshot; on any failure the snapshot is removed. */
  async #extract(layer: Descriptor, diffId: string, chainId: string, parent: string | undefined, _emit: (e: PullEvent) => void): Promise<string> {
    const key = `extract-${randomBytes(6).toString('hex')}-${chainId}`;
    await this.snapshotter.prepare(key, parent, { [LABEL_UNPACKING]: layer.digest });
    try {
      await unpackLayerFile(this.content.blobPath(layer.digest), this.snapshotter.applyDir(key), {
        mode: this.snapshotter.applyMode, expectDiffId: diffId, layer: layer.digest,
      });
      return key;
    } catch (e) {
      await this.snapshotter.remove(key).catch(() => {});
      throw e;
    }
  }

  async #commitOnce(chainId: string, key: string, parent: string | undefined, layer: Descriptor, diffId: string, lease: string, emit: (e: PullEvent) => void): Promise<void> {
    this.db.addLeaseResource(lease, 'snapshot', chainId);
    // a concurrent pull may have committed the same chain id meanwhile
    let job = this.#unpackJobs.get(chainId);
    if (!job) {
      job = (async () => {
        if (this.db.getSnapshot(chainId)) {
          await this.snapshotter.remove(key);
          return;
        }
        await this.snapshotter.commit(chainId, key, { labels: { [LABEL_UNPACKING]: '' }, ...(parent !== undefined ? { parent } : {}) });
        this.db.putContent({ digest: layer.digest, size: layer.size, mediaType: layer.mediaType, labels: { [LABEL_UNCOMPRESSED]: diffId } });
      })().finally(() => this.#unpackJobs.delete(chainId));
      this.#unpackJobs.set(chainId, job);
    } else {
      await job;
      if (this.db.getSnapshot(key)) await this.snapshotter.remove(key);
      return;
    }
    await job;
    emit({ type: 'unpacked', digest: layer.digest, chainId });
  }

  // ------------------------------------------------------------------------ queries

  #records(refOrId: string): ImageRecord[] {
    const s = refOrId.trim();
    // image ID (config digest), possibly abbreviated
    const idLike = /^(sha256:)?[0-9a-f]{6,64}$/.test(s) || /^sha512:[0-9a-f]{6,128}$/.test(s);
    if (idLike) {
      const want = s.startsWith('sha256:') || s.startsWith('sha512:') ? s : `sha256:${s}`;
      const hits = this.db.listImages().filter((r) => {
        const id = this.#configDigest(r);
        return id?.startsWith(want) || r.digest.startsWith(want);
      });
      if (hits.length) {
        const ids = new Set(hits.map((h) => this.#configDigest(h)));
        if (ids.size > 1) throw new InvalidArgumentError(`image ID prefix "${s}" is ambiguous`);
        return hits;
      }
    }
    let name: string;
    try {
      name = formatReference(parseReference(s));
    } catch (e) {
      if (idLike) throw new NotFoundError(`image "${s}" not found`);
      throw e;
    }
    const r = this.db.getImage(name);
    if (!r) throw new NotFoundError(`image "${s}" not found (looked for ${name})`);
    return [r];
  }

  #configDigest(r: ImageRecord): string | undefined {
    const md = r.labels[LABEL_MANIFEST] ?? r.digest;
    try {
      const m = JSON.parse(this.#readSync(md)) as ImageManifest;
      return m.config?.digest;
    } catch {
      return undefined;
    }
  }

  #cache = new Map<string, string>();
  #readSync(digest: string): string {
    let s = this.#cache.get(digest);
    if (s === undefined) {
      const p = this.content.blobPath(digest);
      // manifests and configs are small; read synchronously for simple query code
      s = existsSync(p) ? readFileSync(p, 'utf8') : '';
      if (s) this.#cache.set(digest, s);
    }
    if (!s) throw new NotFoundError(`content ${digest} is missing`);
    return s;
  }

  #info(r: ImageRecord): ImageInfo {
    const md = r.labels[LABEL_MANIFEST] ?? r.digest;
    const manifest = JSON.parse(this.#readSync(md)) as ImageManifest;
    const config = JSON.parse(this.#readSync(manifest.config.digest)) as ImageConfig;
    const diffIds = config.rootfs?.diff_ids ?? [];
    const chain = chainIds(diffIds);
    const chainId = chain[chain.length - 1] ?? '';
    const names = this.db.listImages().filter((x) => x.digest === r.digest).map((x) => x.name);
    return {
      names, name: r.name, digest: r.digest, mediaType: r.mediaType, id: manifest.config.digest, manifestDigest: md,
      platform: formatPlatform({ os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) }),
      layers: manifest.layers, diffIds, chainId,
      size: manifest.config.size + manifest.layers.reduce((a, l) => a + l.size, 0),
      config, createdAt: r.createdAt, unpacked: chainId === '' || this.db.getSnapshot(chainId)?.kind === 'committed',
    };
  }

  get(refOrId: string): ImageInfo {
    return this.#info(this.#records(refOrId)[0]!);
  }

  list(): ImageInfo[] {
    return this.db.listImages().map((r) => this.#info(r));
  }

  tag(source: string, target: string): ImageInfo {
    const src = this.#records(source)[0]!;
    const t = parseReference(target);
    if (t.digest) throw new InvalidArgumentError(`cannot tag with a digest reference "${target}"`);
    const name = formatReference(t);
    this.db.putImage({ name, digest: src.digest, mediaType: src.mediaType, size: src.size, labels: src.labels });
    return this.get(name);
  }

  /** Container snapshots (active/view) that stand on the image's layers. */
  usersOf(chainId: string): string[] {
    if (!chainId) return [];
    const users: string[] = [];
    const walk = (key: string) => {
      for (const c of this.db.snapshotChildren(key)) {
        if (c.kind !== 'committed') users.push(c.key);
        else walk(c.key);
      }
    };
    walk(chainId);
    return users;
  }

  /**
   * Remove an image by name, or every name of an image given by ID/digest. Refused while a
   * container's snapshot stands on it (remove the container first). Then collects garbage.
   */
  remove(refOrId: string, opts: { gc?: boolean } = {}): Promise<{ untagged: string[]; gc?: GcResult }> {
    return this.lock.with(() => this.#remove(refOrId, opts));
  }

  async #remove(refOrId: string, opts: { gc?: boolean }): Promise<{ untagged: string[]; gc?: GcResult }> {
    const recs = this.#records(refOrId);
    const info = this.#info(recs[0]!);
    const remaining = info.names.filter((n) => !recs.some((r) => r.name === n) && !n.includes('@'));
    const dropsLast = remaining.length === 0;
    if (dropsLast) {
      const users = this.usersOf(info.chainId);
      if (users.length) throw new FailedPreconditionError(`image ${familiarName(parseReference(info.name.replace(/@.*/, '')))} is in use by snapshot(s) ${users.join(', ')}; remove the container(s) first`);
      const leased = this.db.leaseResources().filter((l) => l.type === 'image' && recs.some((r) => r.name === l.ref));
      if (leased.length) throw new FailedPreconditionError(`image ${info.name} is held by lease ${leased[0]!.leaseId}`);
    }
    const untagged: string[] = [];
    this.db.tx(() => {
      // by ID, recs may span several manifests with this config: every one of their names goes
      const names = dropsLast ? [...new Set([...info.names, ...recs.map((r) => r.name)])] : recs.map((r) => r.name);
      for (const n of names) if (this.db.deleteImage(n)) untagged.push(n);
    });
    const gc = opts.gc === false ? undefined : await this.gc();
    return { untagged, ...(gc ? { gc } : {}) };
  }

  /** Remove every image no container uses (all=true), then collect garbage. */
  prune(opts: { all?: boolean } = {}): Promise<{ removed: string[]; gc: GcResult }> {
    return this.lock.with(() => this.#prune(opts));
  }

  async #prune(opts: { all?: boolean }): Promise<{ removed: string[]; gc: GcResult }> {
    const removed: string[] = [];
    if (opts.all) {
      for (const r of this.db.listImages()) {
        const info = this.#info(r);
        if (this.usersOf(info.chainId).length === 0) {
          this.db.deleteImage(r.name);
          removed.push(r.name);
        }
      }
    }
    return { removed, gc: await this.gc() };
  }

  gc(): Promise<GcResult> {
    return this.lock.with(() => collectGarbage(this.db, this.content, this.snapshotter));
  }

  // ---------------------------------------------------------------------------- leases

  /**
   * A lease (containerd's model): content, snapshots and images added to it survive garbage
   * collection until it is released, whatever references them. Leases other than a pull's
   * own survive restarts; `expiresAt` (ms since the epoch) makes gc ignore and drop it after.
   */
  createLease(opts: { id?: string; labels?: Record<string, string>; expiresAt?: number } = {}): string {
    const id = opts.id ?? `lease-${randomBytes(8).toString('hex')}`;
    if (id.startsWith('pull-') || id.startsWith('import-')) throw new InvalidArgumentError(`lease id "${id}": the pull- and import- prefixes are reserved`);
    const labels = { ...(opts.labels ?? {}) };
    if (labels['corral.io/pull'] !== undefined) throw new InvalidArgumentError('the corral.io/pull lease label is reserved');
    if (opts.expiresAt !== undefined) labels[LABEL_LEASE_EXPIRE] = new Date(opts.expiresAt).toISOString();
    if (this.db.listLeases().some((l) => l.id === id)) throw new FailedPreconditionError(`lease "${id}" already exists`);
    this.db.createLease(id, labels);
    return id;
  }

  /** Add a resource to a lease: content by digest, a snapshot by key, or an image by name. */
  addLeaseResource(id: string, type: 'content' | 'snapshot' | 'image', ref: string): void {
    if (!this.db.listLeases().some((l) => l.id === id)) throw new NotFoundError(`lease "${id}" does not exist`);
    if (type === 'content') parseDigest(ref);
    if (type === 'image') ref = formatReference(parseReference(ref));
    this.db.addLeaseResource(id, type, ref);
  }

  listLeases(): Array<{ id: string; createdAt: number; labels: Record<string, string>; resources: Array<{ type: string; ref: string }> }> {
    const res = this.db.leaseResources();
    return this.db.listLeases().map((l) => ({ ...l, resources: res.filter((r) => r.leaseId === l.id).map(({ type, ref }) => ({ type, ref })) }));
  }

  /** Release a lease; what only it held is collected (unless gc: false). */
  releaseLease(id: string, opts: { gc?: boolean } = {}): Promise<GcResult | undefined> {
    return this.lock.with(async () => {
      if (!this.db.listLeases().some((l) => l.id === id)) throw new NotFoundError(`lease "${id}" does not exist`);
      this.db.deleteLease(id);
      return opts.gc === false ? undefined : collectGarbage(this.db, this.content, this.snapshotter);
    });
  }

  /** system df: what images, content and snapshots take. */
  async df(): Promise<{ images: number; contentBytes: number; blobs: number; snapshots: Array<{ key: string; kind: string } & Usage> }> {
    const blobs = await this.content.list();
    const snaps = [];
    for (const s of this.snapshotter.list()) snaps.push({ key: s.key, kind: s.kind, ...(await this.snapshotter.usage(s.key)) });
    return { images: this.db.listImages().length, contentBytes: blobs.reduce((a, b) => a + b.size, 0), blobs: blobs.length, snapshots: snaps };
  }

  // ------------------------------------------------------------------------------ push

  /** Push a local image (all its content) to `target` (default: its own name). */
  push(source: string, opts: { target?: string; auth?: AuthConfig } = {}): Promise<string> {
    // under the store lock: another process's gc must not delete what is being uploaded
    return this.lock.with(() => this.#push(source, opts));
  }

  async #push(source: string, opts: { target?: string; auth?: AuthConfig }): Promise<string> {
    const rec = this.#records(source)[0]!;
    const ref = parseReference(opts.target ?? rec.name);
    const ro = { auth: opts.auth };
    const pushManifestTree = async (desc: Descriptor): Promise<void> => {
      const data = await this.content.read(desc.digest);
      if (isIndex(desc.mediaType)) {
        const idx = JSON.parse(data.toString()) as ImageIndex;
        for (const m of idx.manifests) if (await this.content.has(m.digest)) await pushManifestTree(m);
      } else {
        const m = JSON.parse(data.toString()) as ImageManifest;
        // non-distributable layers are not uploaded (containerd's default): the registry's
        // manifest refers to them by their URLs
        const blobs = [m.config, ...m.layers.filter((l) => !layerKind(l.mediaType)?.nonDistributable)];
        await Promise.all(blobs.map((b) => this.client.pushBlob(ref, b, () => this.content.readStream(b.digest), ro)));
      }
      await this.client.pushManifest(ref, desc.digest, desc.mediaType, data, ro);
    };
    const top: Descriptor = { mediaType: rec.mediaType, digest: rec.digest, size: rec.size };
    await pushManifestTree(top);
    if (ref.tag) await this.client.pushManifest(ref, ref.tag, top.mediaType, await this.content.read(top.digest), ro);
    return top.digest;
  }

  /** For import/export: the descriptor a name points at. */
  record(refOrId: string): ImageRecord {
    return this.#records(refOrId)[0]!;
  }
}

export { isDigest };
