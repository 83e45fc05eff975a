/** OCI / Docker media types and the manifest shapes Corral reads and writes. */

export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OciLayerNonDist: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  OciLayerNonDistGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  OciLayerNonDistZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerLayerZstd: 'application/vnd.docker.image.rootfs.diff.tar.zstd',
  DockerLayerForeignGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

export const MANIFEST_ACCEPT = [
  MediaType.OciIndex,
  MediaType.OciManifest,
  MediaType.DockerManifestList,
  MediaType.DockerManifest,
];

export function isIndex(mt: string | undefined): boolean {
  return mt === MediaType.OciIndex || mt === MediaType.DockerManifestList;
}
export function isManifest(mt: string | undefined): boolean {
  return mt === MediaType.OciManifest || mt === MediaType.DockerManifest;
}

export type Compression = 'none' | 'gzip' | 'zstd';
export interface LayerKind {
  compression: Compression;
  /** Non-distributable ("foreign") layers may be absent from registries. */
  nonDistributable: boolean;
}

const layerKinds: Record<string, LayerKind> = {
  [MediaType.OciLayer]: { compression: 'none', nonDistributable: false },
  [MediaType.OciLayerGzip]: { compression: 'gzip', nonDistributable: false },
  [MediaType.OciLayerZstd]: { compression: 'zstd', nonDistributable: false },
  [MediaType.OciLayerNonDist]: { compression: 'none', nonDistributable: true },
  [MediaType.OciLayerNonDistGzip]: { compression: 'gzip', nonDistributable: true },
  [MediaType.OciLayerNonDistZstd]: { compression: 'zstd', nonDistributable: true },
  [MediaType.DockerLayer]: { compression: 'none', nonDistributable: false },
  [MediaType.DockerLayerGzip]: { compression: 'gzip', nonDistributable: false },
  [MediaType.DockerLayerZstd]: { compression: 'zstd', nonDistributable: false },
  [MediaType.DockerLayerForeignGzip]: { compression: 'gzip', nonDistributable: true },
};

/** The layer kind of a media type, or undefined for a type that is not a layer Corral can unpack. */
export function layerKind(mt: string): LayerKind | undefined {
  return layerKinds[mt];
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  created?: string;
  config?: Record<string, unknown>;
  rootfs: { type: 'layers'; diff_ids: string[] };
  history?: Array<Record<string, unknown>>;
}

/** Manifests larger than this are refused (the limit containerd and distribution use). */
export const MAX_MANIFEST_SIZE = 4 * 1024 * 1024;

/** The platform of this machine, in OCI terms. */
export function hostPlatform(): Platform {
  const arch: Record<string, [string, string?]> = {
    x64: ['amd64'],
    arm64: ['arm64', 'v8'],
    arm: ['arm', 'v7'],
    ia32: ['386'],
    ppc64: ['ppc64le'],
    s390x: ['s390x'],
    riscv64: ['riscv64'],
  };
  const [architecture, variant] = arch[process.arch] ?? [process.arch];
  return { os: 'linux', architecture, ...(variant ? { variant } : {}) };
}

function normVariant(arch: string, variant: string | undefined): string | undefined {
  if (arch === 'arm64' && (variant === undefined || variant === '' || variant === 'v8')) return 'v8';
  if (arch === 'amd64' && (variant === undefined || variant === '' || variant === 'v1')) return 'v1';
  return variant || undefined;
}

/** Whether an index entry's platform matches the wanted one (variant compared when wanted). */
export function platformMatches(want: Platform, have: Platform | undefined): boolean {
  if (!have) return false;
  if (want.os !== have.os || want.architecture !== have.architecture) return false;
  if (want.variant !== undefined) {
    return normVariant(want.architecture, want.variant) === normVariant(have.architecture, have.variant);
  }
  return true;
}

export function parsePlatform(s: string): Platform {
  const [os, architecture, variant] = s.split('/');
  if (!os || !architecture) throw new Error(`invalid platform "${s}": expected os/arch[/variant]`);
  return { os, architecture, ...(variant ? { variant } : {}) };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}
