/**
 * Build OCI / Docker images in memory for tests: layers from tar entries (or raw bytes for
 * malicious fixtures), config with diff_ids, manifest, optional index; push with Corral's
 * own registry client.
 */
import { readFileSync } from 'node:fs';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { digestOf } from '../../src/image/digest.ts';
import { MediaType, type Descriptor, type ImageConfig, type ImageManifest, type Platform } from '../../src/image/media.ts';
import { parseReference } from '../../src/image/reference.ts';
import type { RegistryClient } from '../../src/image/registry/client.ts';
import type { AuthConfig } from '../../src/image/registry/auth.ts';
import { writeTar, type TarWriteEntry } from '../../src/image/unpack/tar.ts';
import { Readable } from 'node:stream';

export interface LayerSpec {
  entries?: TarWriteEntry[];
  /** Raw uncompressed tar instead of entries. */
  tar?: Buffer;
  compression?: 'none' | 'gzip' | 'zstd';
  mediaType?: string;
  /** Post-process the compressed blob (e.g. truncate it). */
  mangle?: (blob: Buffer) => Buffer;
  /** Record this diff_id instead of the real one. */
  diffId?: string;
}

export interface BuiltImage {
  manifest: ImageManifest;
  manifestData: Buffer;
  manifestDesc: Descriptor;
  config: ImageConfig;
  blobs: Map<string, Buffer>;
}

export function buildLayer(spec: LayerSpec, docker = false): { desc: Descriptor; blob: Buffer; diffId: string } {
  const tar = spec.tar ?? writeTar(spec.entries ?? []);
  const comp = spec.compression ?? 'gzip';
  let blob = comp === 'gzip' ? gzipSync(tar) : comp === 'zstd' ? zstdCompressSync(tar) : tar;
  if (spec.mangle) blob = spec.mangle(blob);
  const mt =
    spec.mediaType ??
    (docker
      ? { none: MediaType.DockerLayer, gzip: MediaType.DockerLayerGzip, zstd: MediaType.DockerLayerZstd }[comp]
      : { none: MediaType.OciLayer, gzip: MediaType.OciLayerGzip, zstd: MediaType.OciLayerZstd }[comp]);
  return { desc: { mediaType: mt, digest: digestOf(blob), size: blob.length }, blob, diffId: spec.diffId ?? digestOf(tar) };
}

export function buildImage(layers: LayerSpec[], opts: { docker?: boolean; platform?: Platform; cmd?: string[]; labels?: Record<string, string> } = {}): BuiltImage {
  const blobs = new Map<string, Buffer>();
  const built = layers.map((l) => buildLayer(l, opts.docker));
  for (const b of built) blobs.set(b.desc.digest, b.blob);
  const p = opts.platform ?? { os: 'linux', architecture: 'amd64' };
  const config: ImageConfig = {
    architecture: p.architecture, os: p.os, ...(p.variant ? { variant: p.variant } : {}),
    created: '2024-01-01T00:00:00Z',
    config: { Cmd: opts.cmd ?? ['/bin/sh'], Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Labels: opts.labels ?? {} },
    rootfs: { type: 'layers', diff_ids: built.map((b) => b.diffId) },
    history: built.map(() => ({ created_by: 'corral test image-builder' })),
  };
  const configData = Buffer.from(JSON.stringify(config));
  const configDesc: Descriptor = { mediaType: opts.docker ? MediaType.DockerConfig : MediaType.OciConfig, digest: digestOf(configData), size: configData.length };
  blobs.set(configDesc.digest, configData);
  const manifest: ImageManifest = {
    schemaVersion: 2, mediaType: opts.docker ? MediaType.DockerManifest : MediaType.OciManifest, config: configDesc, layers: built.map((b) => b.desc),
  };
  const manifestData = Buffer.from(JSON.stringify(manifest));
  return { manifest, manifestData, manifestDesc: { mediaType: manifest.mediaType!, digest: digestOf(manifestData), size: manifestData.length, platform: p }, config, blobs };
}

export function buildIndex(images: BuiltImage[], docker = false): { data: Buffer; desc: Descriptor } {
  const idx = {
    schemaVersion: 2, mediaType: docker ? MediaType.DockerManifestList : MediaType.OciIndex,
    manifests: images.map((i) => i.manifestDesc),
  };
  const data = Buffer.from(JSON.stringify(idx));
  return { data, desc: { mediaType: idx.mediaType, digest: digestOf(data), size: data.length } };
}

/** Push blobs, the manifest (by digest) and `ref`'s tag. */
export async function pushImage(client: RegistryClient, ref: string, img: BuiltImage, auth?: AuthConfig, tag = true): Promise<void> {
  const r = parseReference(ref);
  for (const [digest, data] of img.blobs) {
    await client.pushBlob(r, { mediaType: 'application/octet-stream', digest, size: data.length }, () => Readable.from([data]), { auth });
  }
  await client.pushManifest(r, img.manifestDesc.digest, img.manifestDesc.mediaType, img.manifestData, { auth });
  if (tag && r.tag) await client.pushManifest(r, r.tag, img.manifestDesc.mediaType, img.manifestData, { auth });
}

export async function pushIndex(client: RegistryClient, ref: string, images: BuiltImage[], auth?: AuthConfig): Promise<Descriptor> {
  const r = parseReference(ref);
  for (const i of images) await pushImage(client, ref, i, auth, false);
  const idx = buildIndex(images);
  await client.pushManifest(r, r.tag ?? idx.desc.digest, idx.desc.mediaType, idx.data, { auth });
  return idx.desc;
}

/** A busybox root: /bin/busybox from the host plus applet symlinks and a few dirs. */
export function busyboxEntries(): TarWriteEntry[] {
  const bb = readFileSync('/bin/busybox');
  const e: TarWriteEntry[] = [
    { name: 'bin/', type: 'dir', mode: 0o755 },
    { name: 'bin/busybox', data: bb, mode: 0o755, mtime: 1700000000 },
    { name: 'etc/', type: 'dir', mode: 0o755 },
    { name: 'etc/passwd', data: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' },
    { name: 'etc/group', data: 'root:x:0:\nnogroup:x:65534:\n' },
    { name: 'tmp/', type: 'dir', mode: 0o1777 },
    { name: 'root/', type: 'dir', mode: 0o700 },
  ];
  for (const a of ['sh', 'ls', 'cat', 'echo', 'true', 'sleep', 'id', 'env']) e.push({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox' });
  return e;
}
