/**
 * The CRI ImageService over the image library, with the semantics the kubelet expects
 * (those of containerd's CRI plugin):
 *   - an image's id is its config digest; repo_tags are its fully qualified tagged names,
 *     repo_digests its repo@digest names; size is the compressed size (config + layers);
 *     uid/username come from the config's User ("1000", "1000:1000" → uid; "nobody" → username).
 *   - ImageStatus of an absent image answers with no image (not an error); RemoveImage of an
 *     absent image succeeds; RemoveImage of any name removes the whole image (every name).
 *   - PullImage answers image_ref = the image id.
 *   - ImageFsInfo: the snapshotter's root, bytes and inodes its snapshots use.
 * Malformed references are INVALID_ARGUMENT; images that do not exist are NOT_FOUND.
 */
import { promises as fsp } from 'node:fs';
import { InvalidArgumentError, NotFoundError } from '../../errors.ts';
import type { AuthConfig } from '../../image/registry/auth.ts';
import { isDigest } from '../../image/digest.ts';
import { formatReference, parseReference } from '../../image/reference.ts';
import type { ImageInfo, ImageService } from '../../image/service.ts';
import type { Logger } from '../log.ts';
import type { Image, ImageSpec, AuthConfig as CriAuthConfig } from '../types.gen.ts';
import type { ImageServiceImpl, Reply } from '../server.ts';

export interface CriImageOptions {
  /** Images never reported as garbage-collectable by the kubelet (pinned), e.g. the sandbox image. */
  pinnedImages?: string[];
  log?: Logger;
  /** Called with the bytes each pull downloaded (e.g. the corral_image_pull_bytes_total counter). */
  onPullBytes?: (bytes: number) => void;
  /** How long ImageFsInfo's answer is reused (default 5 s: the kubelet asks every few seconds). */
  fsInfoCacheMs?: number;
}

/** The User of an image config, as the kubelet wants it: a numeric uid or a user name. */
export function imageUser(user: unknown): { uid?: string; username?: string } {
  if (typeof user !== 'string' || user === '') return {};
  const u = user.split(':')[0]!;
  if (/^\d+$/.test(u)) return { uid: String(BigInt(u)) };
  return u ? { username: u } : {};
}

function criAuth(a: CriAuthConfig | null | undefined): AuthConfig | undefined {
  if (!a) return undefined;
  const out: AuthConfig = {};
  if (a.username) out.username = a.username;
  if (a.password) out.password = a.password;
  if (a.auth) out.auth = a.auth;
  if (a.server_address) out.serverAddress = a.server_address;
  if (a.identity_token) out.identityToken = a.identity_token;
  if (a.registry_token) out.registryToken = a.registry_token;
  return Object.keys(out).length ? out : undefined;
}

function specRef(spec: ImageSpec | null | undefined, method: string): string {
  const ref = spec?.image?.trim() ?? '';
  if (!ref) throw new InvalidArgumentError(`${method}: image reference is empty (set image.image to a name such as "busybox:1.36" or an image id)`);
  return ref;
}

/** Validate a user-given reference: an id / id prefix / digest, or a parseable name. */
function checkRef(ref: string, method: string): void {
  if (/^(sha256:)?[0-9a-f]{6,64}$/.test(ref) || isDigest(ref)) return;
  try {
    parseReference(ref);
  } catch (e) {
    throw new InvalidArgumentError(`${method}: ${(e as Error).message}`);
  }
}

export class CriImageService {
  readonly images: ImageService;
  readonly opts: CriImageOptions;
  #pinned = new Set<string>();
  /** Usage of committed snapshots never changes: cached by key. */
  #usage = new Map<string, { size: number; inodes: number }>();
  #fsInfo: { at: number; value: Reply<import('../types.gen.ts').ImageFsInfoResponse> } | undefined;

  constructor(images: ImageService, opts: CriImageOptions = {}) {
    this.images = images;
    this.opts = opts;
    for (const p of opts.pinnedImages ?? []) {
      try {
        this.#pinned.add(formatReference(parseReference(p)));
      } catch {
        /* a bad pinned name is the config's problem; it simply pins nothing */
      }
    }
  }

  /** The CRI Image for an image (all its names folded into one entry). */
  toCri(info: ImageInfo): Reply<Image> {
    const tags = info.names.filter((n) => !n.includes('@')).sort();
    const digests = info.names.filter((n) => n.includes('@')).sort();
    // a repo@digest for every repository that has a tag, as containerd reports
    for (const t of tags) {
      const r = parseReference(t);
      const d = `${r.domain}/${r.path}@${info.digest}`;
      if (!digests.includes(d)) digests.push(d);
    }
    const user = imageUser((info.config.config as { User?: unknown } | undefined)?.User);
    return {
      id: info.id,
      repo_tags: tags,
      repo_digests: digests.sort(),
      size: String(info.size),
      ...(user.uid !== undefined ? { uid: { value: user.uid } } : {}),
      username: user.username ?? '',
      spec: { image: info.id, annotations: {} },
      pinned: info.names.some((n) => this.#pinned.has(n)),
    };
  }

  /** Each image once (by id), whatever number of names it has. */
  #all(): ImageInfo[] {
    const byId = new Map<string, ImageInfo>();
    for (const i of this.images.list()) {
      const prev = byId.get(i.id);
      if (!prev) byId.set(i.id, i);
      else for (const n of i.names) if (!prev.names.includes(n)) prev.names.push(n);
    }
    return [...byId.values()];
  }

  /** The image a reference or id names, or undefined when there is none. */
  find(ref: string): ImageInfo | undefined {
    let info: ImageInfo;
    try {
      info = this.images.get(ref);
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
    // fold in every name of the same image (other tags may point at another index/manifest with the same config)
    const names = new Set(info.names);
    for (const i of this.images.list()) if (i.id === info.id) for (const n of i.names) names.add(n);
    return { ...info, names: [...names] };
  }

  listImages(filter: string | undefined): Reply<Image>[] {
    if (filter) {
      checkRef(filter, 'ListImages');
      const i = this.find(filter);
      return i ? [this.toCri(i)] : [];
    }
    return this.#all().map((i) => this.toCri(i));
  }

  imageStatus(ref: string, verbose: boolean): { image: Reply<Image> | null; info: Record<string, string> } {
    checkRef(ref, 'ImageStatus');
    const i = this.find(ref);
    if (!i) return { image: null, info: {} };
    const info: Record<string, string> = {};
    if (verbose) {
      info.info = JSON.stringify({
        imageSpec: i.config,
        chainID: i.chainId,
        manifestDigest: i.manifestDigest,
        repoDigest: i.digest,
        mediaType: i.mediaType,
        platform: i.platform,
        layers: i.layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType })),
        diffIDs: i.diffIds,
        unpacked: i.unpacked,
        snapshotter: this.images.snapshotter.name,
      });
    }
    return { image: this.toCri(i), info };
  }

  async pullImage(ref: string, auth: AuthConfig | undefined): Promise<string> {
    try {
      parseReference(ref);
    } catch (e) {
      throw new InvalidArgumentError(`PullImage: ${(e as Error).message}`);
    }
    let bytes = 0;
    const last = new Map<string, number>();
    const started = Date.now();
    const info = await this.images.pull(ref, {
      auth,
      onProgress: (e) => {
        if (e.type === 'progress') {
          bytes += e.done - (last.get(e.digest) ?? 0);
          last.set(e.digest, e.done);
        }
      },
    });
    this.opts.onPullBytes?.(bytes);
    this.opts.log?.info('image pulled', { image: ref, id: info.id, digest: info.digest, bytes, ms: Date.now() - started });
    return info.id;
  }

  async removeImage(ref: string): Promise<void> {
    checkRef(ref, 'RemoveImage');
    const i = this.find(ref);
    if (!i) return; // already gone: RemoveImage is idempotent
    // every name of the image goes, as the kubelet means "remove the image"
    const res = await this.images.remove(i.id);
    this.opts.log?.info('image removed', { image: ref, id: i.id, untagged: res.untagged, freedBytes: res.gc?.bytes ?? 0 });
  }

  async imageFsInfo(): Promise<Reply<import('../types.gen.ts').ImageFsInfoResponse>> {
    const ttl = this.opts.fsInfoCacheMs ?? 5000;
    if (this.#fsInfo && Date.now() - this.#fsInfo.at < ttl) return this.#fsInfo.value;
    const snap = this.images.snapshotter;
    let size = 0;
    let inodes = 0;
    const live = new Set<string>();
    for (const s of snap.list()) {
      live.add(s.key);
      let u = s.kind === 'committed' ? this.#usage.get(s.key) : undefined;
      if (!u) {
        try {
          u = await snap.usage(s.key);
        } catch (e) {
          if (e instanceof NotFoundError) continue; // removed meanwhile
          throw e;
        }
        if (s.kind === 'committed') this.#usage.set(s.key, u);
      }
      size += u.size;
      inodes += u.inodes;
    }
    for (const k of this.#usage.keys()) if (!live.has(k)) this.#usage.delete(k);
    // never more than the file system itself has in use (hard links counted once per snapshot)
    try {
      const st = await fsp.statfs(snap.root);
      size = Math.min(size, (st.blocks - st.bfree) * st.bsize);
      inodes = Math.min(inodes, st.files - st.ffree);
    } catch {
      /* statfs unavailable: keep the walk's numbers */
    }
    const value = {
      image_filesystems: [{
        timestamp: String(BigInt(Date.now()) * 1_000_000n),
        fs_id: { mountpoint: snap.root },
        used_bytes: { value: String(size) },
        inodes_used: { value: String(inodes) },
      }],
    };
    this.#fsInfo = { at: Date.now(), value };
    return value;
  }

  /** The ImageServiceImpl handler table for CriServer.use({ image }). */
  handlers(): ImageServiceImpl {
    return {
      ListImages: (req) => ({ images: this.listImages(req.filter?.image?.image?.trim() || undefined) }),
      ImageStatus: (req) => this.imageStatus(specRef(req.image, 'ImageStatus'), req.verbose),
      PullImage: async (req) => ({ image_ref: await this.pullImage(specRef(req.image, 'PullImage'), criAuth(req.auth)) }),
      RemoveImage: async (req) => {
        await this.removeImage(specRef(req.image, 'RemoveImage'));
        return {};
      },
      ImageFsInfo: () => this.imageFsInfo(),
    };
  }
}

/** The handler table corrald plugs in: `new Daemon({ ..., image: createImageServiceImpl(svc, opts) })`. */
export function createImageServiceImpl(images: ImageService, opts: CriImageOptions = {}): ImageServiceImpl {
  return new CriImageService(images, opts).handlers();
}
