/** overlayfs snapshotter: each snapshot is an upper dir; lowers are the committed chain. */
import { spawnSync } from 'node:child_process';
import { promises as fsp, readFileSync, mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FailedPreconditionError, ResourceExhaustedError } from '../../errors.ts';
import type { SnapshotRecord } from '../metadata/db.ts';
import { Snapshotter, type Mount } from './snapshotter.ts';

/** The kernel copies mount options into one page; leave room for the other options. */
export const MOUNT_OPTIONS_LIMIT = 4096 - 512;

export class OverlaySnapshotter extends Snapshotter {
  readonly name = 'overlayfs';
  readonly applyMode = 'overlay' as const;
  readonly parallelUnpack = true;
  /** For tests: pretend the page is smaller to exercise the relative-path fallback. */
  optionsLimit = MOUNT_OPTIONS_LIMIT;

  protected async createDirs(rec: SnapshotRecord): Promise<void> {
    await fsp.mkdir(this.fsDir(rec.id), { recursive: true, mode: 0o755 });
    if (rec.kind === 'active') await fsp.mkdir(join(this.dir(rec.id), 'work'), { mode: 0o700 });
  }

  applyDir(key: string): string {
    return this.fsDir(this.get(key).id);
  }

  protected override async beforeCommit(s: SnapshotRecord): Promise<void> {
    await fsp.rm(join(this.dir(s.id), 'work'), { recursive: true, force: true });
  }

  mounts(key: string): Mount[] {
    const s = this.get(key);
    const parents = s.parent === null ? [] : this.chain(s.parent);
    if (s.kind === 'committed') throw new FailedPreconditionError(`snapshot "${key}" is committed; create a view or prepare on top of it`);
    if (parents.length === 0) {
      return [{ type: 'bind', source: this.fsDir(s.id), options: [s.kind === 'view' ? 'ro' : 'rw', 'rbind'] }];
    }
    if (s.kind === 'view' && parents.length === 1) {
      return [{ type: 'bind', source: this.fsDir(parents[0]!.id), options: ['ro', 'rbind'] }];
    }
    const lowers = parents.map((p) => this.fsDir(p.id));
    const opts: string[] = ['index=off'];
    if (s.kind === 'active') opts.push(`workdir=${join(this.dir(s.id), 'work')}`, `upperdir=${this.fsDir(s.id)}`);
    const absolute = [...opts, `lowerdir=${lowers.join(':')}`];
    if (absolute.join(',').length <= this.optionsLimit) return [{ type: 'overlay', source: 'overlay', options: absolute }];
    const relative = [...opts, `lowerdir=${parents.map((p) => `${p.id}/fs`).join(':')}`];
    if (relative.join(',').length > this.optionsLimit) {
      throw new ResourceExhaustedError(`snapshot "${key}" has ${parents.length} layers: too many for one overlay mount (mount options exceed ${this.optionsLimit} bytes)`);
    }
    return [{ type: 'overlay', source: 'overlay', options: relative, cwd: this.root }];
  }
}

/**
 * Whether overlayfs works with upper dirs under `root` (it does not on overlayfs itself,
 * or without kernel support). Tries a real mount in a scratch dir and removes it.
 */
export function overlaySupported(root: string): boolean {
  try {
    if (!/\toverlay\n/.test(readFileSync('/proc/filesystems', 'utf8'))) return false;
  } catch {
    return false;
  }
  mkdirSync(root, { recursive: true });
  const t = mkdtempSync(join(root, '.probe-'));
  try {
    for (const d of ['l1', 'l2', 'u', 'w', 'm']) mkdirSync(join(t, d));
    const r = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${t}/l1:${t}/l2,upperdir=${t}/u,workdir=${t}/w`, join(t, 'm')], { stdio: 'ignore' });
    if (r.status !== 0) return false;
    spawnSync('umount', [join(t, 'm')], { stdio: 'ignore' });
    return true;
  } finally {
    rmSync(t, { recursive: true, force: true });
  }
}
