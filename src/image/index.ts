/** Public surface of the image subsystem (used by the CRI ImageService and the CLI). */
export { ImageService, chainIds, type ImageInfo, type ImageServiceOptions, type PullEvent, type PullOptions } from './service.ts';
export { parseReference, normalizeReference, formatReference, familiarName, repositoryName, type Reference } from './reference.ts';
export { parseDigest, digestOf, isDigest } from './digest.ts';
export { MediaType, hostPlatform, parsePlatform, formatPlatform, type Descriptor, type Platform, type ImageManifest, type ImageIndex, type ImageConfig } from './media.ts';
export { RegistryClient, type RegistryClientOptions } from './registry/client.ts';
export { loadDockerConfig, type AuthConfig } from './registry/auth.ts';
export { resolveEndpoints, type HostsOptions, type Endpoint } from './registry/hosts.ts';
export { ContentStore } from './content/store.ts';
export { Snapshotter, type Mount, type SnapshotInfo, type Usage } from './snapshot/snapshotter.ts';
export { OverlaySnapshotter, overlaySupported } from './snapshot/overlay.ts';
export { CopySnapshotter } from './snapshot/copy.ts';
export { mountAll, unmount } from './snapshot/mount.ts';
export { collectGarbage, type GcResult } from './gc.ts';
