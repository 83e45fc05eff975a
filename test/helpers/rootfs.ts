/**
 * Test fixtures: a minimal root file system built from Debian's static busybox, and
 * OCI bundles around it. Everything lives in a temp dir the caller removes.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exampleSpec } from '../../src/oci/spec/defaults.ts';
import type { Spec } from '../../src/oci/spec/types.ts';

export const BUSYBOX = '/bin/busybox';

let applets: string[] | undefined;

/** Build a busybox rootfs at `dir` (created). */
export function buildRootfs(dir: string): string {
  mkdirSync(dir, { recursive: true });
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root', 'var', 'run']) {
    mkdirSync(join(dir, d), { recursive: true });
  }
  copyFileSync(BUSYBOX, join(dir, 'bin/busybox'));
  execFileSync('chmod', ['0755', join(dir, 'bin/busybox')]);
  applets ??= execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const a of applets) {
    if (a === 'busybox') continue;
    const link = join(dir, 'bin', a);
    if (!existsSync(link)) symlinkSync('busybox', link);
  }
  writeFileSync(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  writeFileSync(join(dir, 'etc/group'), 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n');
  execFileSync('chmod', ['1777', join(dir, 'tmp')]);
  return dir;
}

export interface Bundle {
  dir: string;
  rootfs: string;
  spec: Spec;
  write(spec?: Spec): void;
  cleanup(): void;
}

/** A bundle whose config runs `args` without a terminal, ready to tweak. */
export function makeBundle(args: string[], tweak?: (spec: Spec) => void, parent?: string): Bundle {
  const dir = mkdtempSync(join(parent ?? tmpdir(), 'corral-bundle-'));
  chmodSync(dir, 0o755);
  const rootfs = buildRootfs(join(dir, 'rootfs'));
  const spec = exampleSpec();
  spec.process!.terminal = false;
  spec.process!.args = args;
  spec.root = { path: 'rootfs', readonly: false };
  tweak?.(spec);
  const bundle: Bundle = {
    dir, rootfs, spec,
    write(s = bundle.spec) { writeFileSync(join(dir, 'config.json'), JSON.stringify(s, null, 2)); },
    cleanup() { rmSync(dir, { recursive: true, force: true }); },
  };
  bundle.write();
  return bundle;
}
