/** config.json mount options → mount(2) flags, propagation, and the fs-specific data string. */
import { MS } from '../plan/ops.ts';

export interface ParsedMountOptions {
  /** Flags for the mount (or the bind + remount). */
  flags: number;
  /** Flags that must be cleared (e.g. "rw" clears MS_RDONLY); informational for remounts. */
  clear: number;
  /** MS_SHARED/MS_PRIVATE/... (with MS_REC for r-variants), applied in a separate mount(2) call. */
  propagation: number[];
  bind: boolean;
  recursive: boolean;
  /** Comma-joined fs-specific options ("mode=755,size=65536k"). */
  data: string;
  /** Options this runtime recognised but that have no kernel counterpart here (e.g. "tmpcopyup"). */
  ignored: string[];
}

const FLAGS: Record<string, { set?: number; clear?: number }> = {
  ro: { set: MS.RDONLY },
  rw: { clear: MS.RDONLY },
  nosuid: { set: MS.NOSUID },
  suid: { clear: MS.NOSUID },
  nodev: { set: MS.NODEV },
  dev: { clear: MS.NODEV },
  noexec: { set: MS.NOEXEC },
  exec: { clear: MS.NOEXEC },
  sync: { set: MS.SYNCHRONOUS },
  async: { clear: MS.SYNCHRONOUS },
  dirsync: { set: MS.DIRSYNC },
  remount: { set: MS.REMOUNT },
  mand: { set: MS.MANDLOCK },
  nomand: { clear: MS.MANDLOCK },
  atime: { clear: MS.NOATIME },
  noatime: { set: MS.NOATIME },
  diratime: { clear: MS.NODIRATIME },
  nodiratime: { set: MS.NODIRATIME },
  relatime: { set: MS.RELATIME },
  norelatime: { clear: MS.RELATIME },
  strictatime: { set: MS.STRICTATIME },
  nostrictatime: { clear: MS.STRICTATIME },
  lazytime: { set: MS.LAZYTIME },
  nolazytime: { clear: MS.LAZYTIME },
  symfollow: { clear: MS.NOSYMFOLLOW },
  nosymfollow: { set: MS.NOSYMFOLLOW },
  silent: { set: MS.SILENT },
  loud: { clear: MS.SILENT },
  defaults: {},
};

const PROPAGATION: Record<string, number> = {
  private: MS.PRIVATE,
  rprivate: MS.PRIVATE | MS.REC,
  shared: MS.SHARED,
  rshared: MS.SHARED | MS.REC,
  slave: MS.SLAVE,
  rslave: MS.SLAVE | MS.REC,
  unbindable: MS.UNBINDABLE,
  runbindable: MS.UNBINDABLE | MS.REC,
};

/** Options accepted and deliberately without effect (runc/crun extensions that don't apply here). */
const IGNORED = new Set(['tmpcopyup', 'idmap', 'ridmap', 'copy-symlink', 'notmpcopyup']);

export function parseMountOptions(options: readonly string[] | undefined): ParsedMountOptions {
  const out: ParsedMountOptions = { flags: 0, clear: 0, propagation: [], bind: false, recursive: false, data: '', ignored: [] };
  const data: string[] = [];
  for (const opt of options ?? []) {
    if (opt === 'bind' || opt === 'rbind') {
      out.bind = true;
      out.recursive ||= opt === 'rbind';
      continue;
    }
    const f = FLAGS[opt];
    if (f) {
      if (f.set) { out.flags |= f.set; out.clear &= ~f.set; }
      if (f.clear) { out.flags &= ~f.clear; out.clear |= f.clear; }
      continue;
    }
    const p = PROPAGATION[opt];
    if (p !== undefined) { out.propagation.push(p); continue; }
    if (IGNORED.has(opt)) { out.ignored.push(opt); continue; }
    data.push(opt);
  }
  out.data = data.join(',');
  return out;
}

export function propagationFlags(name: string | undefined): number | undefined {
  return name ? PROPAGATION[name] : undefined;
}
