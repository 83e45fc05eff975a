/**
 * Apply one layer (a tar stream) to a directory, safely.
 *
 * - mode "overlay": the directory is an overlayfs upper dir of its own; whiteouts become
 *   0/0 character devices and opaque directories get trusted.overlay.opaque=y.
 * - mode "direct": the directory is the complete filesystem (copy snapshotter); whiteouts
 *   delete what lower layers put there.
 *
 * No entry can write outside the root: absolute names and `..` components are rejected,
 * every parent directory is checked to be a real directory (never a symlink), hard link
 * targets are resolved the same way. Everything a layer can carry is preserved: hard links,
 * symlinks, devices, fifos, ownership, modes incl. setuid, mtimes, xattrs.
 *
 * File system calls are synchronous on purpose: a layer is applied on a worker thread
 * (layer.ts), where one direct syscall is far cheaper than a promise plus a libuv thread pool
 * round trip per operation, and regular files are finished through their descriptor
 * (fchown/fchmod/futimens) instead of three more path walks.
 */
import * as fs from 'node:fs';
import { constants as fsc } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError, fromNodeError } from '../../errors.ts';
import type { TarEntry } from './tar.ts';
import { NativeHelper, S_IFBLK, S_IFCHR, S_IFIFO } from './native.ts';
import { classifyWhiteout, OVERLAY_OPAQUE_XATTR } from './whiteout.ts';

export type ApplyMode = 'overlay' | 'direct';

export class UnsafeLayerError extends InvalidArgumentError {}

export interface ApplyResult {
  entries: number;
  /** Bytes of regular file data written. */
  bytes: number;
}

/** Clean a tar member name to a relative path with no `.`/`..` components; throw for unsafe ones. */
export function cleanEntryName(name: string, what = 'entry'): string {
  if (name.includes('\0')) throw new UnsafeLayerError(`${what} ${JSON.stringify(name)}: name contains a NUL byte`);
  if (name.startsWith('/')) throw new UnsafeLayerError(`${what} ${JSON.stringify(name)}: absolute path names are not allowed in a layer`);
  const parts: string[] = [];
  for (const c of name.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') throw new UnsafeLayerError(`${what} ${JSON.stringify(name)}: ".." would escape the layer root`);
    parts.push(c);
  }
  return parts.join('/');
}

function lstatOrNull(p: string): fs.Stats | null {
  return fs.lstatSync(p, { throwIfNoEntry: false }) ?? null;
}

function writeAll(fd: number, c: Buffer): void {
  let off = 0;
  while (off < c.length) off += fs.writeSync(fd, c, off, c.length - off);
}

export async function applyLayer(root: string, entries: AsyncIterable<TarEntry>, opts: { mode: ApplyMode; layer?: string }): Promise<ApplyResult> {
  const label = opts.layer ? `layer ${opts.layer}` : 'layer';
  const native = new NativeHelper(root);
  const verifiedDirs = new Set<string>(['']);
  /** Paths this layer created (opaque whiteouts in direct mode keep them). */
  const created = new Set<string>();
  /**
   * Directories this apply made itself (mkdir): whatever is in them, this layer put there,
   * so a name not in `created` cannot exist and needs no lstat.
   */
  const fresh = new Set<string>();
  const dirTimes: Array<[string, number]> = [];
  const res: ApplyResult = { entries: 0, bytes: 0 };
  const abs = (rel: string) => (rel === '' ? root : join(root, rel));

  const forgetTree = (rel: string) => {
    verifiedDirs.delete(rel);
    const pre = rel + '/';
    for (const d of verifiedDirs) if (d.startsWith(pre)) verifiedDirs.delete(d);
  };

  /** Ensure every component of `dir` is a real directory inside the root, creating missing ones. */
  const ensureDir = (dir: string, entryName: string, create: boolean): void => {
    if (verifiedDirs.has(dir)) return;
    const parts = dir.split('/');
    let cur = '';
    for (const part of parts) {
      cur = cur ? `${cur}/${part}` : part;
      if (verifiedDirs.has(cur)) continue;
      const st = lstatOrNull(abs(cur));
      if (st === null) {
        if (!create) throw new UnsafeLayerError(`${label}: entry ${JSON.stringify(entryName)}: parent ${cur} does not exist`);
        fs.mkdirSync(abs(cur), { mode: 0o755 });
        created.add(cur);
        fresh.add(cur);
      } else if (st.isSymbolicLink()) {
        throw new UnsafeLayerError(`${label}: entry ${JSON.stringify(entryName)} would be written through the symlinked parent ${cur}`);
      } else if (!st.isDirectory()) {
        throw new UnsafeLayerError(`${label}: entry ${JSON.stringify(entryName)}: parent ${cur} is not a directory`);
      }
      verifiedDirs.add(cur);
    }
  };

  const removeExisting = (rel: string) => {
    fs.rmSync(abs(rel), { recursive: true, force: true });
    forgetTree(rel);
    fresh.delete(rel);
    const pre = rel + '/';
    for (const d of fresh) if (d.startsWith(pre)) fresh.delete(d);
  };

  try {
    for await (const e of entries) {
      res.entries++;
      const rel = cleanEntryName(e.name, `${label}: entry`);
      const slash = rel.lastIndexOf('/');
      const dir = slash < 0 ? '' : rel.slice(0, slash);
      const base = slash < 0 ? rel : rel.slice(slash + 1);
      if (rel !== '') ensureDir(dir, e.name, true);

      const wh = rel === '' ? undefined : classifyWhiteout(base);
      if (wh) {
        if (wh.kind === 'meta') continue; // AUFS bookkeeping (.wh..wh.plnk etc.)
        if (wh.kind === 'opaque') {
          if (opts.mode === 'overlay') {
            await native.setxattr(dir === '' ? '.' : dir, OVERLAY_OPAQUE_XATTR, Buffer.from('y'));
          } else {
            const d = abs(dir);
            for (const name of fs.readdirSync(d)) {
              const child = dir ? `${dir}/${name}` : name;
              if (!created.has(child)) removeExisting(child);
            }
          }
          continue;
        }
        const target = dir ? `${dir}/${wh.name}` : wh.name;
        if (wh.name === '' || wh.name === '.' || wh.name === '..' ) throw new UnsafeLayerError(`${label}: bad whiteout ${JSON.stringify(e.name)}`);
        removeExisting(target);
        if (opts.mode === 'overlay') {
          await native.mknod(target, S_IFCHR | 0o000, 0, 0);
          fs.lchownSync(abs(target), 0, 0);
          created.add(target);
        }
        continue;
      }

      const p = abs(rel);
      // in a directory this apply made, only what this layer created can be there
      const existing = rel === '' ? fs.lstatSync(root) : fresh.has(dir) && !created.has(rel) ? null : lstatOrNull(p);
      if (existing && !(e.type === 'dir' && existing.isDirectory())) removeExisting(rel);
      if (rel !== '') created.add(rel);

      switch (e.type) {
        case 'dir':
          if (!existing || !existing.isDirectory()) {
            fs.mkdirSync(p, { mode: 0o700 });
            fresh.add(rel);
          }
          verifiedDirs.add(rel);
          break;
        case 'file': {
          const fd = fs.openSync(p, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
          try {
            for await (const c of e.body) {
              writeAll(fd, c);
              res.bytes += c.length;
            }
            fs.fchownSync(fd, e.uid, e.gid);
            fs.fchmodSync(fd, e.mode); // after chown: chown clears setuid
            if (e.xattrs.size === 0) fs.futimesSync(fd, e.mtime, e.mtime);
          } finally {
            fs.closeSync(fd);
          }
          for (const [k, v] of e.xattrs) await native.setxattr(rel === '' ? '.' : rel, k, v); // after chown: it clears security.capability
          if (e.xattrs.size !== 0) fs.lutimesSync(p, e.mtime, e.mtime);
          continue;
        }
        case 'symlink':
          fs.symlinkSync(e.linkname, p);
          break;
        case 'hardlink': {
          const target = cleanEntryName(e.linkname, `${label}: hard link ${JSON.stringify(e.name)} to`);
          if (target === '') throw new UnsafeLayerError(`${label}: hard link ${JSON.stringify(e.name)} points at the layer root`);
          const ts = target.lastIndexOf('/');
          try {
            ensureDir(ts < 0 ? '' : target.slice(0, ts), e.name, false);
          } catch (err) {
            throw new UnsafeLayerError(`${label}: hard link ${JSON.stringify(e.name)} → ${JSON.stringify(e.linkname)}: ${(err as Error).message.replace(/^.*?: /, '')}`);
          }
          const tst = lstatOrNull(abs(target));
          if (!tst) throw new UnsafeLayerError(`${label}: hard link ${JSON.stringify(e.name)} → ${JSON.stringify(e.linkname)}: target not found in this layer`);
          if (tst.isDirectory()) throw new UnsafeLayerError(`${label}: hard link ${JSON.stringify(e.name)} → ${JSON.stringify(e.linkname)}: target is a directory`);
          fs.linkSync(abs(target), p);
          continue; // a hard link shares the target's inode and metadata
        }
        case 'char':
        case 'block':
        case 'fifo': {
          const t = e.type === 'char' ? S_IFCHR : e.type === 'block' ? S_IFBLK : S_IFIFO;
          await native.mknod(rel, t | (e.mode & 0o777), e.devmajor, e.devminor);
          break;
        }
      }
      fs.lchownSync(p, e.uid, e.gid);
      if (e.type !== 'symlink') fs.chmodSync(p, e.mode); // after chown: chown clears setuid
      for (const [k, v] of e.xattrs) await native.setxattr(rel === '' ? '.' : rel, k, v); // after chown: it clears security.capability
      if (e.type === 'dir') dirTimes.push([p, e.mtime]);
      else fs.lutimesSync(p, e.mtime, e.mtime);
    }
    // directory mtimes last: creating children changes them
    for (let i = dirTimes.length - 1; i >= 0; i--) {
      const [p, t] = dirTimes[i]!;
      fs.lutimesSync(p, t, t);
    }
    return res;
  } catch (err) {
    if (err instanceof InvalidArgumentError || (err as { code?: unknown }).code === 'INVALID_ARGUMENT') throw err;
    throw fromNodeError(err, `unpack ${label}`);
  } finally {
    await native.close();
  }
}
