/**
 * Resolve a path inside a root directory the way openat2(RESOLVE_IN_ROOT) does:
 * ".." never climbs above the root and absolute symlinks are taken relative to it.
 * Used by TypeScript-side checks (finding the executable at create time); the
 * executor itself resolves with openat2, never with this.
 */
import { lstatSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

const MAX_LINKS = 40;

/** Returns the host path the in-root path resolves to (it may not exist). */
export function resolveInRoot(root: string, path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  const resolved: string[] = [];
  let links = 0;
  while (parts.length > 0) {
    const part = parts.shift()!;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const host = join(root, ...resolved, part);
    let isLink = false;
    try {
      isLink = lstatSync(host).isSymbolicLink();
    } catch {
      resolved.push(part, ...parts);
      return join(root, ...resolved);
    }
    if (!isLink) {
      resolved.push(part);
      continue;
    }
    if (++links > MAX_LINKS) return join(root, ...resolved, part, ...parts);
    const target = readlinkSync(host);
    if (target.startsWith('/')) resolved.length = 0;
    parts.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
  }
  return join(root, ...resolved);
}

/** Find `name` the way execvp would, with `PATH` from `env`, inside `root`. Returns the in-root path or undefined. */
export function findExecutableInRoot(root: string, name: string, env: readonly string[], cwd: string): string | undefined {
  const isExec = (inRoot: string) => {
    try {
      const st = lstatSync(resolveInRoot(root, inRoot));
      return st.isFile() && (st.mode & 0o111) !== 0;
    } catch {
      return false;
    }
  };
  if (name.includes('/')) {
    const p = name.startsWith('/') ? name : join(cwd, name);
    return isExec(p) ? p : undefined;
  }
  const pathVar = env.findLast((e) => e.startsWith('PATH='))?.slice(5) ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
  for (const dir of pathVar.split(':')) {
    const p = join(dir || '.', name);
    if (isExec(p.startsWith('/') ? p : join(cwd, p))) return p;
  }
  return undefined;
}
