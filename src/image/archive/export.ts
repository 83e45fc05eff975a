/**
 * Export images from the store:
 *   - "docker": a `docker save` archive (manifest.json, repositories, <config hex>.json and one
 *     uncompressed <diff_id hex>.tar per layer; compressed layers are decompressed and checked
 *     against their diff_id on the way out).
 *   - "oci": an OCI image layout, as a tar or a directory (oci-layout, index.json, blobs/), the
 *     blobs exactly as stored, so digests survive the round trip. index.json has one entry per
 *     name with io.containerd.image.name (the full name) and org.opencontainers.image.ref.name
 *     (the tag), as containerd writes them.
 * An image pulled through a multi-platform index is exported as its platform's manifest unless
 * every platform is in the store.
 */
import { createWriteStream, promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, basename } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FailedPreconditionError, InvalidArgumentError, fromNodeError } from '../../errors.ts';
import { Digester } from '../digest.ts';
import { MediaType, isIndex, type Descriptor, type ImageIndex, type ImageManifest } from '../media.ts';
import { familiarName, formatReference, parseReference } from '../reference.ts';
import type { ImageInfo, ImageService } from '../service.ts';
import { decompress, sniffCompression } from '../unpack/layer.ts';
import { tarStream, type TarWriteEntry } from '../unpack/tar.ts';
import { ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME } from './import.ts';

export type ExportFormat = 'docker' | 'oci';

interface Item {
  entry: TarWriteEntry;
  size: number;
  data?: () => AsyncIterable<Uint8Array>;
}

interface Selected {
  info: ImageInfo;
  names: string[];
  top: Descriptor;
  /** Every blob to write (OCI): digest → size. */
  blobs: Map<string, number>;
}

function tryName(ref: string): string | undefined {
  try {
    return formatReference(parseReference(ref));
  } catch {
    return undefined;
  }
}

/** Resolve the arguments to images (grouped: two names of one image export it once). */
async function select(svc: ImageService, refs: string[]): Promise<Selected[]> {
  if (!refs.length) throw new InvalidArgumentError('name at least one image to export');
  const out = new Map<string, Selected>();
  for (const ref of refs) {
    const info = svc.get(ref);
    const exact = tryName(ref);
    const names = exact && svc.db.getImage(exact) ? [exact] : info.names;
    let s = out.get(info.digest);
    if (!s) {
      const blobs = new Map<string, number>();
      const manifestData = await svc.content.read(info.manifestDigest);
      const manifest = JSON.parse(manifestData.toString()) as ImageManifest;
      const mDesc: Descriptor = { mediaType: manifest.mediaType ?? MediaType.OciManifest, digest: info.manifestDigest, size: manifestData.length };
      let top = mDesc;
      const addImage = (m: ImageManifest, d: Descriptor) => {
        blobs.set(d.digest, d.size);
        blobs.set(m.config.digest, m.config.size);
        for (const l of m.layers) blobs.set(l.digest, l.size);
      };
      addImage(manifest, mDesc);
      if (isIndex(info.mediaType)) {
        // the whole index only when every platform's content is here
        const idx = JSON.parse((await svc.content.read(info.digest)).toString()) as ImageIndex;
        const extra = new Map<string, number>();
        let complete = true;
        for (const m of idx.manifests) {
          if (!(await svc.content.has(m.digest))) {
            complete = false;
            break;
          }
          const man = JSON.parse((await svc.content.read(m.digest)).toString()) as ImageManifest;
          for (const b of [m, man.config, ...(man.layers ?? [])]) {
            if (!(await svc.content.has(b.digest))) complete = false;
            extra.set(b.digest, b.size);
          }
        }
        if (complete) {
          for (const [d, n] of extra) blobs.set(d, n);
          top = { mediaType: info.mediaType, digest: info.digest, size: (await svc.content.info(info.digest))!.size };
          blobs.set(top.digest, top.size);
        }
      }
      for (const [d] of blobs) if (!(await svc.content.has(d))) throw new FailedPreconditionError(`image ${info.name}: content ${d} is missing from the store; pull the image again`);
      s = { info, names: [], top, blobs };
      out.set(info.digest, s);
    }
    for (const n of names) if (!s.names.includes(n)) s.names.push(n);
  }
  return [...out.values()];
}

const dirEntry = (name: string): Item => ({ entry: { name, type: 'dir', mode: 0o755 }, size: 0 });
const fileEntry = (name: string, data: Buffer): Item => ({ entry: { name, mode: 0o644 }, size: data.length, data: () => [data] as unknown as AsyncIterable<Uint8Array> });

function blobPath(digest: string): string {
  const [alg, hex] = digest.split(':');
  return `blobs/${alg}/${hex}`;
}

function ociIndex(images: Selected[]): Buffer {
  const manifests: Descriptor[] = [];
  for (const s of images) {
    const platform = s.top.digest === s.info.manifestDigest ? { architecture: s.info.config.architecture, os: s.info.config.os, ...(s.info.config.variant ? { variant: s.info.config.variant } : {}) } : undefined;
    for (const n of s.names) {
      const r = parseReference(n);
      const annotations: Record<string, string> = { [ANNOTATION_IMAGE_NAME]: n };
      if (r.tag) annotations[ANNOTATION_REF_NAME] = r.tag;
      manifests.push({ ...s.top, annotations, ...(platform ? { platform } : {}) });
    }
  }
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests }));
}

const OCI_LAYOUT = Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' }));

async function* ociItems(svc: ImageService, images: Selected[]): AsyncGenerator<Item> {
  yield fileEntry('oci-layout', OCI_LAYOUT);
  yield dirEntry('blobs/');
  const algs = new Set<string>();
  const all = new Map<string, number>();
  for (const s of images) for (const [d, n] of s.blobs) all.set(d, n);
  for (const d of all.keys()) algs.add(d.split(':')[0]!);
  for (const a of [...algs].sort()) yield dirEntry(`blobs/${a}/`);
  for (const [d, size] of all) yield { entry: { name: blobPath(d), mode: 0o644 }, size, data: () => svc.content.readStream(d) as AsyncIterable<Uint8Array> };
  yield fileEntry('index.json', ociIndex(images));
}

/** Decompressed layer size and digest (one pass), to write a tar header before the data. */
async function measure(svc: ImageService, digest: string): Promise<{ size: number; diffId: string; compression: 'none' | 'gzip' | 'zstd' }> {
  const compression = await sniffCompression(svc.content.blobPath(digest));
  const dg = new Digester();
  for await (const c of decompress(svc.content.readStream(digest), compression)) dg.update(c);
  return { size: dg.size, diffId: dg.digest(), compression };
}

async function* dockerItems(svc: ImageService, images: Selected[]): AsyncGenerator<Item> {
  const manifest: Array<{ Config: string; RepoTags: string[]; Layers: string[] }> = [];
  const repositories: Record<string, Record<string, string>> = {};
  const written = new Set<string>();
  for (const s of images) {
    const m = JSON.parse((await svc.content.read(s.info.manifestDigest)).toString()) as ImageManifest;
    const cfgName = `${m.config.digest.split(':')[1]}.json`;
    if (!written.has(cfgName)) {
      written.add(cfgName);
      yield { entry: { name: cfgName, mode: 0o644 }, size: m.config.size, data: () => svc.content.readStream(m.config.digest) as AsyncIterable<Uint8Array> };
    }
    const layers: string[] = [];
    for (const [i, l] of m.layers.entries()) {
      const diffId = s.info.diffIds[i]!;
      const name = `${diffId.split(':')[1]}.tar`;
      layers.push(name);
      if (written.has(name)) continue;
      written.add(name);
      const ms = await measure(svc, l.digest);
      if (ms.diffId !== diffId) throw new FailedPreconditionError(`layer ${l.digest} of ${s.info.name}: uncompressed digest ${ms.diffId} is not the config's diff_id ${diffId}; the store is damaged, pull the image again`);
      yield {
        entry: { name, mode: 0o644 }, size: ms.size,
        data: () => (ms.compression === 'none' ? svc.content.readStream(l.digest) : decompress(svc.content.readStream(l.digest), ms.compression)) as AsyncIterable<Uint8Array>,
      };
    }
    const tags = s.names.filter((n) => !n.includes('@')).map((n) => familiarName(parseReference(n)));
    manifest.push({ Config: cfgName, RepoTags: tags, Layers: layers });
    for (const n of s.names) {
      const r = parseReference(n);
      if (!r.tag) continue;
      const repo = familiarName({ domain: r.domain, path: r.path });
      (repositories[repo] ??= {})[r.tag] = (s.info.diffIds[s.info.diffIds.length - 1] ?? '').split(':')[1] ?? '';
    }
  }
  yield fileEntry('manifest.json', Buffer.from(JSON.stringify(manifest)));
  yield fileEntry('repositories', Buffer.from(JSON.stringify(repositories)));
}

/** The archive as a tar stream. */
export async function* exportStream(svc: ImageService, refs: string[], format: ExportFormat): AsyncGenerator<Buffer> {
  const images = await select(svc, refs);
  yield* tarStream(format === 'oci' ? ociItems(svc, images) : dockerItems(svc, images));
}

/**
 * Write the archive to a file (atomically: a temp file beside it, renamed at the end) or to a
 * writable stream (stdout).
 */
export async function exportImages(svc: ImageService, refs: string[], dest: string | NodeJS.WritableStream, format: ExportFormat): Promise<{ images: number }> {
  const images = await select(svc, refs);
  const tar = () => Readable.from(tarStream(format === 'oci' ? ociItems(svc, images) : dockerItems(svc, images)));
  if (typeof dest !== 'string') {
    await pipeline(tar(), dest, { end: false });
    return { images: images.length };
  }
  const tmp = join(dirname(dest), `.${basename(dest)}.tmp-${randomBytes(4).toString('hex')}`);
  try {
    await pipeline(tar(), createWriteStream(tmp, { flags: 'wx', mode: 0o644 }));
    await fsp.rename(tmp, dest);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw fromNodeError(e, `write ${dest}`);
  }
  return { images: images.length };
}

/** Write an OCI layout directory (which must not exist yet, or be empty). */
export async function exportLayoutDir(svc: ImageService, refs: string[], dir: string): Promise<{ images: number }> {
  const images = await select(svc, refs);
  const existing = await fsp.readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw fromNodeError(e, `read ${dir}`);
  });
  if (existing && existing.length) throw new FailedPreconditionError(`${dir} is not empty; export an OCI layout into a new or empty directory`);
  try {
    await fsp.mkdir(dir, { recursive: true });
    const all = new Map<string, number>();
    for (const s of images) for (const [d, n] of s.blobs) all.set(d, n);
    for (const d of all.keys()) {
      const p = join(dir, blobPath(d));
      await fsp.mkdir(dirname(p), { recursive: true });
      await fsp.copyFile(svc.content.blobPath(d), p);
    }
    await fsp.writeFile(join(dir, 'oci-layout'), OCI_LAYOUT);
    await fsp.writeFile(join(dir, 'index.json'), ociIndex(images));
  } catch (e) {
    if (!existing) await fsp.rm(dir, { recursive: true, force: true });
    throw fromNodeError(e, `write OCI layout ${dir}`);
  }
  return { images: images.length };
}
