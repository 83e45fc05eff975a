/**
 * Image references, parsed and normalized the way the container ecosystem does
 * (distribution/reference grammar): `busybox` → `docker.io/library/busybox:latest`.
 */
import { InvalidArgumentError } from '../errors.ts';
import { parseDigest } from './digest.ts';

export interface Reference {
  /** Registry host, e.g. `docker.io`, `localhost:5000`, `registry.k8s.io`. */
  readonly domain: string;
  /** Repository path inside the registry, e.g. `library/busybox`. */
  readonly path: string;
  readonly tag?: string;
  readonly digest?: string;
}

export const DEFAULT_DOMAIN = 'docker.io';
export const LEGACY_DEFAULT_DOMAIN = 'index.docker.io';
export const OFFICIAL_REPO_PREFIX = 'library/';
export const DEFAULT_TAG = 'latest';
const NAME_TOTAL_LENGTH_MAX = 255;

const pathComponent = /^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$/;
const domainComponent = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const tagRe = /^[\w][\w.-]{0,127}$/;

function invalid(ref: string, why: string): never {
  throw new InvalidArgumentError(`invalid image reference "${ref}": ${why}`);
}

function validDomain(d: string): boolean {
  let host = d;
  let port: string | undefined;
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    if (end < 0) return false;
    const v6 = host.slice(1, end);
    if (!/^[0-9a-fA-F:.]+$/.test(v6)) return false;
    const rest = host.slice(end + 1);
    if (rest !== '' && !/^:[0-9]+$/.test(rest)) return false;
    return true;
  }
  const colon = host.lastIndexOf(':');
  if (colon >= 0) {
    port = host.slice(colon + 1);
    host = host.slice(0, colon);
    if (!/^[0-9]+$/.test(port)) return false;
  }
  return host.split('.').every((c) => domainComponent.test(c));
}

/** Whether the first path component names a registry host (as docker decides it). */
function looksLikeDomain(first: string): boolean {
  return first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase();
}

/**
 * Parse and normalize a reference. Without tag or digest the tag `latest` is implied
 * (`defaultTag: false` to leave it out).
 */
export function parseReference(input: string, opts: { defaultTag?: boolean } = {}): Reference {
  const ref = input.trim();
  if (ref === '') invalid(input, 'it is empty');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    rest = rest.slice(0, at);
    try {
      digest = parseDigest(d).digest;
    } catch (e) {
      invalid(input, `bad digest "${d}" (${(e as Error).message})`);
    }
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const lastColon = rest.lastIndexOf(':');
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!tagRe.test(tag)) invalid(input, `bad tag "${tag}" (letters, digits, _ . -, at most 128, not starting with . or -)`);
  }
  if (rest === '') invalid(input, 'the repository name is empty');
  let domain: string;
  let path: string;
  const slash = rest.indexOf('/');
  const first = slash < 0 ? rest : rest.slice(0, slash);
  if (slash >= 0 && looksLikeDomain(first)) {
    domain = first;
    path = rest.slice(slash + 1);
    if (!validDomain(domain)) invalid(input, `bad registry host "${domain}"`);
  } else {
    domain = DEFAULT_DOMAIN;
    path = rest;
  }
  if (domain === LEGACY_DEFAULT_DOMAIN) domain = DEFAULT_DOMAIN;
  if (domain === DEFAULT_DOMAIN && !path.includes('/')) path = OFFICIAL_REPO_PREFIX + path;
  if (path !== path.toLowerCase()) invalid(input, 'repository name must be lowercase');
  for (const c of path.split('/')) {
    if (!pathComponent.test(c)) invalid(input, `bad path component "${c}" (lowercase letters, digits and separators . _ __ -)`);
  }
  if (domain.length + 1 + path.length > NAME_TOTAL_LENGTH_MAX) invalid(input, `repository name longer than ${NAME_TOTAL_LENGTH_MAX} characters`);
  if (tag === undefined && digest === undefined && opts.defaultTag !== false) tag = DEFAULT_TAG;
  return { domain, path, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/** `docker.io/library/busybox` */
export function repositoryName(r: Reference): string {
  return `${r.domain}/${r.path}`;
}

/** Fully qualified string: `docker.io/library/busybox:latest`, `host/x@sha256:…`, `host/x:tag@sha256:…`. */
export function formatReference(r: Reference): string {
  return repositoryName(r) + (r.tag !== undefined ? `:${r.tag}` : '') + (r.digest !== undefined ? `@${r.digest}` : '');
}

/** The short form people type: `busybox:latest`, `myorg/app:1`, `localhost:5000/x:y`. */
export function familiarName(r: Reference): string {
  let name = repositoryName(r);
  if (r.domain === DEFAULT_DOMAIN) {
    name = r.path.startsWith(OFFICIAL_REPO_PREFIX) ? r.path.slice(OFFICIAL_REPO_PREFIX.length) : r.path;
  }
  return name + (r.tag !== undefined ? `:${r.tag}` : '') + (r.digest !== undefined ? `@${r.digest}` : '');
}

/** Normalize a reference string to its canonical full form. */
export function normalizeReference(input: string): string {
  return formatReference(parseReference(input));
}

/** Same repository with a different tag/digest. */
export function withTag(r: Reference, tag: string): Reference {
  if (!tagRe.test(tag)) invalid(tag, 'bad tag');
  return { domain: r.domain, path: r.path, tag };
}
export function withDigest(r: Reference, digest: string): Reference {
  return { domain: r.domain, path: r.path, digest: parseDigest(digest).digest };
}
