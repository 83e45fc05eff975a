/**
 * Where this checkout's files are, for code that runs both from the TypeScript sources and
 * from the bundles scripts/setup.sh writes into build/ (build/corrald.mjs, build/corral.mjs,
 * build/unpack-worker.mjs, build/corral-oci.cjs).
 *
 * This file sits one directory below the checkout's root, as every bundle does, so `..` from
 * import.meta.url is the root either way. Code that needs a file of the checkout (package.json,
 * bin/*, build/*, src/cri/api.proto) asks here instead of resolving against its own
 * import.meta.url: in a bundle that URL is the bundle's, not the source file's.
 */
import { fileURLToPath } from 'node:url';

/** The checkout's root directory (with a trailing slash). */
export const REPO_DIR = fileURLToPath(new URL('../', import.meta.url));

/** True when running from a bundle in build/, false from the .ts sources. */
export const BUNDLED = !import.meta.url.endsWith('.ts');

/** A path inside the checkout, e.g. repoPath('bin/corral-oci'). */
export function repoPath(rel: string): string {
  return REPO_DIR + rel;
}

/** A file scripts/setup.sh builds into build/, e.g. buildPath('corral-exec'). */
export function buildPath(name: string): string {
  return REPO_DIR + 'build/' + name;
}
