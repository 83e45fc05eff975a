/**
 * Import image archives into the store, then unpack them:
 *   - `docker save` archives: manifest.json ([{Config, RepoTags, Layers}]) + repositories,
 *     layers as (usually uncompressed) tars; a Docker schema 2 manifest is made for each image.
 *   - OCI image layouts, as a directory or a tar: oci-layout, index.json, blobs/<alg>/<hex>.
 *     Names come from the io.containerd.image.name annotation, or
 *     org.opencontainers.image.ref.name (a full reference, or a tag joined to `name`).
 * An archive that is both (docker 25+ writes an OCI layout with a manifest.json) is read as OCI.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import { InvalidArgumentError, NotFoundError, fromNodeError } from '../../errors.ts';
import { MediaType, isIndex, isManifest, platformMatches, type Descriptor, type ImageIndex, type ImageManifest, type Platform } from '../media.ts';
import { formatReference, parseReference } from '../reference.ts';
import type { ImageInfo, ImageService, PullEvent } from '../service.ts';
import { sniffCompression } from '../unpack/layer.ts';
import { readLayoutDir, readTarArchive, type ArchiveFiles } from './files.ts';

export type ArchiveFormat = 'docker-archive' | 'oci-archive' | 'oci-dir';

export interface ImportOptions {
  /** Repository for OCI entries named only by a tag, or not named at all (e.g. "example.com/app"). */
  name?: string;
  platform?: Platform;
  onProgress?: (e: PullEvent) => void;
}

export interface ImportResult {
  format: ArchiveFormat;
  images: ImageInfo[];
}

/** org.opencontainers.image.ref.name / io.containerd.image.name */
export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';
export const ANNOTATION_IMAGE_NAME = 'io.containerd.image.name';

function json<T>(buf: Buffer, what: string): T {
  try {
    return JSON.parse(buf.toString('utf8')) as T;
  } catch (e) {
    throw new InvalidArgumentError(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

const bareTag = /^[\w][\w.-]{0,127}$/;

/**
 * Import from a path (a tar file, compressed or not, or an OCI layout directory) or a stream
 * (a tar on stdin).
 */
export function importImages(svc: ImageService, source: string | AsyncIterable<Buffer>, opts: ImportOptions = {}): Promise<ImportResult> {
  // the blobs an import writes have no records until the image is registered: keep other
  // processes' reconcile and gc away meanwhile
  return svc.withStoreLock(() => importLocked(svc, source, opts));
}

async function importLocked(svc: ImageService, source: string | AsyncIterable<Buffer>, opts: ImportOptions): Promise<ImportResult> {
  let files: ArchiveFiles;
  let where: string;
  if (typeof source === 'string') {
    where = source;
    let st;
    try {
      st = await fsp.stat(source);
    } catch (e) {
      throw fromNodeError(e, `open archive ${source}`);
    }
    files = st.isDirectory() ? await readLayoutDir(source, svc.content, svc.db) : await readTarArchive(createReadStream(source) as AsyncIterable<Buffer>, svc.content, svc.db);
  } else {
    where = 'standard input';
    files = await readTarArchive(source, svc.content, svc.db);
  }
  try {
    if (files.meta('oci-layout') && files.meta('index.json')) {
      return { format: files.kind === 'dir' ? 'oci-dir' : 'oci-archive', images: await importOci(svc, files, where, opts) };
    }
    if (files.meta('manifest.json')) return { format: 'docker-archive', images: await importDocker(svc, files, where, opts) };
    if (files.kind === 'dir') throw new InvalidArgumentError(`${where} is not an OCI image layout (it has no oci-layout and index.json)`);
    throw new InvalidArgumentError(`${where} is neither a docker save archive (no manifest.json) nor an OCI layout (no oci-layout and index.json)`);
  } finally {
    // blobs this import wrote that no record refers to (docker's per-layer json, VERSION, …)
    for (const d of files.written()) if (!svc.db.getContent(d)) await svc.content.delete(d);
  }
}

interface DockerManifestEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
  LayerSources?: Record<string, Descriptor>;
}

async function importDocker(svc: ImageService, files: ArchiveFiles, where: string, opts: ImportOptions): Promise<ImageInfo[]> {
  const entries = json<DockerManifestEntry[]>(files.meta('manifest.json')!, `${where}: manifest.json`);
  if (!Array.isArray(entries) || entries.length === 0) throw new InvalidArgumentError(`${where}: manifest.json lists no images`);
  const out: ImageInfo[] = [];
  for (const [i, e] of entries.entries()) {
    if (typeof e.Config !== 'string' || !Array.isArray(e.Layers)) throw new InvalidArgumentError(`${where}: manifest.json entry ${i} lacks Config or Layers`);
    const cfg = await files.blob(e.Config, `config of image ${i}`);
    const layers: Descriptor[] = [];
    for (const l of e.Layers) {
      let b;
      try {
        b = await files.blob(l, `layer of image ${i}`);
      } catch (err) {
        if (err instanceof NotFoundError && e.LayerSources && Object.keys(e.LayerSources).length) {
          throw new NotFoundError(`${where}: layer ${l} is a foreign (non-distributable) layer that is not in the archive; Corral does not fetch foreign layers`, { cause: err });
        }
        throw err;
      }
      const comp = await sniffCompression(svc.content.blobPath(b.digest));
      const mediaType = { none: MediaType.DockerLayer, gzip: MediaType.DockerLayerGzip, zstd: MediaType.DockerLayerZstd }[comp];
      layers.push({ mediaType, digest: b.digest, size: b.size });
    }
    const manifest: ImageManifest = {
      schemaVersion: 2, mediaType: MediaType.DockerManifest,
      config: { mediaType: MediaType.DockerConfig, digest: cfg.digest, size: cfg.size }, layers,
    };
    const data = Buffer.from(JSON.stringify(manifest, null, 3));
    const digest = await svc.content.writeBlob(data);
    const names = (e.RepoTags ?? []).map((t) => formatReference(parseReference(t)));
    if (!names.length) {
      if (!opts.name) throw new InvalidArgumentError(`${where}: image ${i} (config ${cfg.digest}) has no RepoTags; give it a name (--name REPO[:TAG])`);
      names.push(formatReference(parseReference(opts.name)));
    }
    out.push(await svc.registerImage(names, { mediaType: MediaType.DockerManifest, digest, size: data.length }, { platform: opts.platform, onProgress: opts.onProgress }));
  }
  return out;
}

function namesFor(desc: Descriptor, opts: ImportOptions, where: string, unnamedCount: number): string[] {
  const a = desc.annotations ?? {};
  const full = a[ANNOTATION_IMAGE_NAME];
  if (full) return [formatReference(parseReference(full))];
  const ref = a[ANNOTATION_REF_NAME];
  if (ref && bareTag.test(ref) && !ref.includes(':')) {
    if (!opts.name) throw new InvalidArgumentError(`${where}: image ${desc.digest} is named only by the tag "${ref}"; give the repository to import it under (--name REPO)`);
    const base = parseReference(opts.name, { defaultTag: false });
    return [formatReference({ domain: base.domain, path: base.path, tag: ref })];
  }
  if (ref) return [formatReference(parseReference(ref))];
  if (!opts.name) throw new InvalidArgumentError(`${where}: image ${desc.digest} has no name annotation; give it a name (--name REPO[:TAG])`);
  if (unnamedCount > 1) throw new InvalidArgumentError(`${where}: ${unnamedCount} images have no name annotation; --name can name only one`);
  return [formatReference(parseReference(opts.name))];
}

async function importOci(svc: ImageService, files: ArchiveFiles, where: string, opts: ImportOptions): Promise<ImageInfo[]> {
  const layout = json<{ imageLayoutVersion?: string }>(files.meta('oci-layout')!, `${where}: oci-layout`);
  if (layout.imageLayoutVersion !== '1.0.0') throw new InvalidArgumentError(`${where}: unsupported OCI layout version ${JSON.stringify(layout.imageLayoutVersion)} (1.0.0 is supported)`);
  const index = json<ImageIndex>(files.meta('index.json')!, `${where}: index.json`);
  if (!Array.isArray(index.manifests) || !index.manifests.length) throw new InvalidArgumentError(`${where}: index.json lists no images`);
  const platform = opts.platform ?? svc.platform;
  const path = (d: Descriptor) => {
    const [alg, hex] = d.digest.split(':');
    return `blobs/${alg}/${hex}`;
  };
  const fetch = async (d: Descriptor, what: string) => {
    const b = await files.blob(path(d), what);
    if (b.size !== d.size) throw new InvalidArgumentError(`${where}: ${what} ${d.digest} is ${b.size} bytes, its descriptor says ${d.size}`);
    return svc.content.read(d.digest);
  };
  const ensureImage = async (m: Descriptor) => {
    const man = json<ImageManifest>(await fetch(m, 'manifest'), `manifest ${m.digest}`);
    if (!man.config || !Array.isArray(man.layers)) throw new InvalidArgumentError(`${where}: manifest ${m.digest} lacks config or layers`);
    await fetch(man.config, 'config');
    for (const l of man.layers) await fetch(l, 'layer');
  };
  const unnamed = index.manifests.filter((d) => !d.annotations?.[ANNOTATION_IMAGE_NAME] && !d.annotations?.[ANNOTATION_REF_NAME]).length;
  // several index.json entries may name the same image (one per tag): import each image once
  const byDigest = new Map<string, { desc: Descriptor; names: string[] }>();
  for (const d of index.manifests) {
    const names = namesFor(d, opts, where, unnamed);
    const have = byDigest.get(d.digest);
    if (have) have.names.push(...names);
    else byDigest.set(d.digest, { desc: d, names });
  }
  const out: ImageInfo[] = [];
  for (const { desc, names } of byDigest.values()) {
    const top: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
    if (isIndex(desc.mediaType)) {
      const idx = json<ImageIndex>(await fetch(top, 'index'), `index ${desc.digest}`);
      let picked = false;
      for (const m of idx.manifests ?? []) {
        if (!isManifest(m.mediaType)) continue;
        try {
          await fetch(m, 'manifest');
        } catch (e) {
          if (e instanceof NotFoundError) continue; // a layout may hold only some platforms
          throw e;
        }
        if (!picked && platformMatches(platform, m.platform)) {
          await ensureImage(m);
          picked = true;
        }
      }
    } else if (isManifest(desc.mediaType)) {
      await ensureImage(top);
    } else {
      throw new InvalidArgumentError(`${where}: index.json entry ${desc.digest} has media type "${desc.mediaType}", not an image manifest or index`);
    }
    out.push(await svc.registerImage(names, top, { platform, onProgress: opts.onProgress }));
  }
  return out;
}
