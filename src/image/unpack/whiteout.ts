/** OCI/AUFS whiteout names and their overlayfs representation. */
export const WHITEOUT_PREFIX = '.wh.';
export const WHITEOUT_META_PREFIX = '.wh..wh.';
export const WHITEOUT_OPAQUE = '.wh..wh..opq';
/** overlayfs: a 0/0 character device hides a lower entry; this xattr makes a directory opaque. */
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';

export type Whiteout = { kind: 'opaque' } | { kind: 'file'; name: string } | { kind: 'meta' } | undefined;

export function classifyWhiteout(base: string): Whiteout {
  if (base === WHITEOUT_OPAQUE) return { kind: 'opaque' };
  if (base.startsWith(WHITEOUT_META_PREFIX)) return { kind: 'meta' };
  if (base.startsWith(WHITEOUT_PREFIX)) return { kind: 'file', name: base.slice(WHITEOUT_PREFIX.length) };
  return undefined;
}
