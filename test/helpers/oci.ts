/**
 * Driving corral-oci in tests: through the real CLI binary (bin/corral-oci, as
 * conmon/containerd do), each suite with its own state root, cgroup parent and
 * temp dirs, and a cleanup that checks nothing leaked.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { SpawnSyncReturns } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, rmdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeBundle } from './rootfs.ts';
import type { Bundle } from './rootfs.ts';
import { assertNoLeaks } from './leaks.ts';
import type { Spec } from '../../src/oci/spec/types.ts';

export const TOP = join(import.meta.dirname, '../..');
export const CORRAL_OCI = join(TOP, 'bin/corral-oci');

export interface Suite {
  /** Unique marker in every name this suite creates (cgroups, dirs, ids). */
  marker: string;
  root: string;
  work: string;
  cgroupParent: string;
  bundle(args: string[], tweak?: (spec: Spec) => void): Bundle;
  oci(args: string[], opts?: { input?: string; timeout?: number }): SpawnSyncReturns<string>;
  /** Run the CLI asynchronously (for commands that block, e.g. run in the foreground). */
  ociAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }>;
  id(name: string): string;
  /** Force-delete every container of this suite, remove its cgroup parent and dirs, assert no leaks. */
  finish(): void;
}

export function suite(name: string): Suite {
  const marker = `crt${name}${process.pid}`;
  const work = mkdtempSync(join(tmpdir(), `${marker}-`));
  const root = join(work, 'state');
  const cgroupParent = `/${marker}`;
  let seq = 0;
  const s: Suite = {
    marker, root, work, cgroupParent,
    bundle(args, tweak) {
      return makeBundle(args, (spec) => {
        spec.linux!.cgroupsPath = `${cgroupParent}/${Math.random().toString(36).slice(2, 10)}`;
        tweak?.(spec);
      }, work);
    },
    oci(args, opts = {}) {
      // Output goes through files, not pipes: a created container inherits the CLI's stdio and would
      // otherwise hold the pipes open after the CLI exited.
      const n = seq++;
      const outFile = join(work, `.out-${n}`);
      const errFile = join(work, `.err-${n}`);
      const out = openSync(outFile, 'w');
      const err = openSync(errFile, 'w');
      const r = spawnSync(CORRAL_OCI, ['--root', root, ...args], {
        encoding: 'utf8', input: opts.input, timeout: opts.timeout ?? 60000, stdio: [opts.input === undefined ? 'ignore' : 'pipe', out, err],
      });
      closeSync(out);
      closeSync(err);
      r.stdout = readFileSync(outFile, 'utf8');
      r.stderr = readFileSync(errFile, 'utf8');
      rmSync(outFile);
      rmSync(errFile);
      return r;
    },
    ociAsync(args) {
      return new Promise((resolve) => {
        const child = spawn(CORRAL_OCI, ['--root', root, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        child.on('close', (status) => resolve({ status, stdout, stderr }));
      });
    },
    id(n) {
      return `${marker}-${n}`;
    },
    finish() {
      const ids = existsSync(root) ? readdirSync(root) : [];
      for (const id of ids) s.oci(['delete', '--force', id]);
      removeCgroupTree(cgroupParent);
      rmSync(work, { recursive: true, force: true });
      assertNoLeaks(marker);
      assertNoLeaks('corral-bundle-');
    },
  };
  return s;
}

/** rmdir a cgroup directory (and empty children) in every hierarchy. */
export function removeCgroupTree(path: string): void {
  let hierarchies: string[] = [];
  try { hierarchies = readdirSync('/sys/fs/cgroup').map((h) => join('/sys/fs/cgroup', h)); } catch { return; }
  for (const h of [...hierarchies, '/sys/fs/cgroup']) {
    const dir = join(h, path);
    const rm = (d: string) => {
      let entries;
      try { entries = readdirSync(d, { withFileTypes: true }); } catch { return; }
      for (const e of entries) if (e.isDirectory()) rm(join(d, e.name));
      try { rmdirSync(d); } catch { /* busy or gone */ }
    };
    rm(dir);
  }
}

/** Run a container to completion via `run` and return its output. */
export function runToEnd(s: Suite, name: string, args: string[], tweak?: (spec: Spec) => void): SpawnSyncReturns<string> {
  const b = s.bundle(args, tweak);
  return s.oci(['run', '--bundle', b.dir, s.id(name)]);
}
