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
 */
import { promises as fsp, constants as fsc } from 'node:fs';
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

async function lstatOrNull(p: string) {
  try {
    return await fsp.lstat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

export async function applyLayer(root: string, entries: AsyncIterable<TarEntry>, opts: { mode: ApplyMode; layer?: string }): Promise<ApplyResult> {
  const label = opts.layer ? `layer ${opts.layer}` : 'layer';
  const native = new NativeHelper(root);
  const verifiedDirs = new Set<string>(['']);
  /** Paths this layer created (opaque whiteouts in direct mode keep them). */
  const created = new Set<string>();
  const dirTimes: Array<[string, number]> = [];
  const res: ApplyResult = { entries: 0, bytes: 0 };
  const abs = (rel: string) => (rel === '' ? root : join(root, rel));

  const forgetTree = (rel: string) => {
    verifiedDirs.delete(rel);
    const pre = rel + '/';
    for (const d of verifiedDirs) if (d.startsWith(pre)) verifiedDirs.delete(d);
  };

  /** Ensure every component of `dir` is a real directory inside the root, creating missing ones. */
  const ensureDir = async (dir: string, entryName: string, create: boolean) => {
    if (verifiedDirs.has(dir)) return;
    const parts = dir.split('/');
    let cur = '';
    for (const part of parts) {
      cur = cur ? `${cur}/${part}` : part;
      if (verifiedDirs.has(cur)) continue;
      const st = await lstatOrNull(abs(cur));
      if (st === null) {
        if (!create) throw new UnsafeLayerError(`${label}: entry ${JSON.stringify(entryName)}: parent ${cur} does not exist`);
        await fsp.mkdir(abs(cur), { mode: 0o755 });
        created.add(cur);
      } else if (st.isSymbolicLink()) {
        throw new UnsafeLayerError(`${label}: entry ${JSON.stringify(entryName)} would be written through the symlinked parent ${cur}`);
      } else if (!st.isDirectory()) {
        throw new UnsafeLayerError(`${label}: entry ${JSON.stringify(entryName)}: parent ${cur} is not a directory`);
      }
      verifiedDirs.add(cur);
    }
  };

  const removeExisting = async (rel: string) => {
    await fsp.rm(abs(rel), { recursive: true, force: true });
    forgetTree(rel);
  };

  try {
    for await (const e of entries) {
      res.entries++;
      const rel = cleanEntryName(e.name, `${label}: entry`);
      const slash = rel.lastIndexOf('/');
      const dir = slash < 0 ? '' : rel.slice(0, slash);
      const base = slash < 0 ? rel : rel.slice(slash + 1);
      if (rel !== '') await ensureDir(dir, e.name, true);

      const wh = rel === '' ? undefined : classifyWhiteout(base);
      if (wh) {
        if (wh.kind === 'meta') continue; // AUFS bookkeeping (.wh..wh.plnk etc.)
        if (wh.kind === 'opaque') {
          if (opts.mode === 'overlay') {
            await native.setxattr(dir === '' ? '.' : dir, OVERLAY_OPAQUE_XATTR, Buffer.from('y'));
          } else {
            const d = abs(dir);
            for (const name of await fsp.readdir(d)) {
              const child = dir ? `${dir}/${name}` : name;
              if (!created.has(child)) await removeExisting(child);
            }
          }
          continue;
        }
        const target = dir ? `${dir}/${wh.name}` : wh.name;
        if (wh.name === '' || wh.name === '.' || wh.name === '..' ) throw new UnsafeLayerError(`${label}: bad whiteout ${JSON.stringify(e.name)}`);
        await removeExisting(target);
        if (opts.mode === 'overlay') {
          await native.mknod(target, S_IFCHR | 0o000, 0, 0);
          await fsp.lchown(abs(target), 0, 0);
        }
        continue;
      }

      const p = abs(rel);
      const existing = rel === '' ? await fsp.lstat(root) : await lstatOrNull(p);
      if (existing && !(e.type === 'dir' && existing.isDirectory())) await removeExisting(rel);
      if (rel !== '') created.add(rel);

      switch (e.type) {
        case 'dir':
          if (!existing || !existing.isDirectory()) await fsp.mkdir(p, { mode: 0o700 });
          verifiedDirs.add(rel);
          break;
        case 'file': {
          const fh = await fsp.open(p, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
          try {
            for await (const c of e.body) {
              await fh.write(c);
              res.bytes += c.length;
            }
          } finally {
            await fh.close();
          }
          break;
        }
        case 'symlink':
          await fsp.symlink(e.linkname, p);
          break;
        case 'hardlink': {
          const target = cleanEntryName(e.linkname, `${label}: hard link ${JSON.stringify(e.name)} to`);
          if (target === '') throw new UnsafeLayerError(`${label}: hard link ${JSON.stringify(e.name)} points at the layer root`);
          const ts = target.lastIndexOf('/');
          await ensureDir(ts < 0 ? '' : target.slice(0, ts), e.name, false).catch((err) => {
            throw new UnsafeLayerError(`${label}: hard link ${JSON.stringify(e.name)} → ${JSON.stringify(e.linkname)}: ${(err as Error).message.replace(/^.*?: /, '')}`);
          });
          const tst = await lstatOrNull(abs(target));
          if (!tst) throw new UnsafeLayerError(`${label}: hard link ${JSON.stringify(e.name)} → ${JSON.stringify(e.linkname)}: target not found in this layer`);
          if (tst.isDirectory()) throw new UnsafeLayerError(`${label}: hard link ${JSON.stringify(e.name)} → ${JSON.stringify(e.linkname)}: target is a directory`);
          await fsp.link(abs(target), p);
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
      await fsp.lchown(p, e.uid, e.gid);
      if (e.type !== 'symlink') await fsp.chmod(p, e.mode); // after chown: chown clears setuid
      for (const [k, v] of e.xattrs) await native.setxattr(rel === '' ? '.' : rel, k, v); // after chown: it clears security.capability
      if (e.type === 'dir') dirTimes.push([p, e.mtime]);
      else await fsp.lutimes(p, e.mtime, e.mtime);
    }
    // directory mtimes last: creating children changes them
    for (let i = dirTimes.length - 1; i >= 0; i--) {
      const [p, t] = dirTimes[i]!;
      await fsp.lutimes(p, t, t);
    }
    return res;
  } catch (err) {
    if (err instanceof InvalidArgumentError || (err as { code?: unknown }).code === 'INVALID_ARGUMENT') throw err;
    throw fromNodeError(err, `unpack ${label}`);
  } finally {
    await native.close();
  }
}
