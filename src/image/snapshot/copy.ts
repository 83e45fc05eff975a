/** Copy-based snapshotter (no overlayfs): a snapshot is a full copy of its parent's tree. */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { InternalError, FailedPreconditionError } from '../../errors.ts';
import type { SnapshotRecord } from '../metadata/db.ts';
import { Snapshotter, type Mount } from './snapshotter.ts';

/** cp -a keeps hard links, devices, ownership, modes, xattrs and times. */
export async function copyTree(from: string, to: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn('cp', ['-a', '--reflink=auto', '--', `${from}/.`, to], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new InternalError(`copy ${from} to ${to} failed: ${err.trim()}`))));
  });
}

export class CopySnapshotter extends Snapshotter {
  readonly name = 'native';
  readonly applyMode = 'direct' as const;
  readonly parallelUnpack = false;

  protected async createDirs(rec: SnapshotRecord, parent: SnapshotRecord | undefined): Promise<void> {
    await fsp.mkdir(this.dir(rec.id), { recursive: true });
    if (rec.kind === 'view' && parent) return; // a view binds the parent read-only
    await fsp.mkdir(this.fsDir(rec.id), { mode: 0o755 });
    if (parent) await copyTree(this.fsDir(parent.id), this.fsDir(rec.id));
  }

  applyDir(key: string): string {
    return this.fsDir(this.get(key).id);
  }

  mounts(key: string): Mount[] {
    const s = this.get(key);
    if (s.kind === 'committed') throw new FailedPreconditionError(`snapshot "${key}" is committed; create a view or prepare on top of it`);
    if (s.kind === 'view' && s.parent !== null) return [{ type: 'bind', source: this.fsDir(this.get(s.parent).id), options: ['ro', 'rbind'] }];
    return [{ type: 'bind', source: this.fsDir(s.id), options: [s.kind === 'view' ? 'ro' : 'rw', 'rbind'] }];
  }
}
