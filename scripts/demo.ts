/**
 * The main job at this stage: build an OCI bundle from the host's busybox, run it
 * with corral-oci (through the real CLI, as conmon or containerd would), and print
 * what the container printed.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeBundle } from '../test/helpers/rootfs.ts';

const top = join(import.meta.dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'corral-demo-'));
const bundle = makeBundle(['/bin/sh', '-c', [
  'echo "hello from a corral container"',
  'echo "hostname: $(hostname)"',
  'echo "pid: $$ (pid namespace)"',
  'echo "user: $(id)"',
  'grep -E "^(CapEff|NoNewPrivs|Seccomp)" /proc/self/status',
  'echo "root: $(ls / | tr "\\n" " ")"',
].join('; ')], (spec) => {
  spec.hostname = 'corral-demo';
  spec.linux!.cgroupsPath = `/corral-demo-${process.pid}`;
}, work);
const id = `demo-${process.pid}`;
const r = spawnSync(join(top, 'bin/corral-oci'), ['--root', join(work, 'state'), 'run', '--bundle', bundle.dir, id], { stdio: 'inherit' });
rmSync(work, { recursive: true, force: true });
console.log(`corral-oci run exited with status ${r.status}`);
process.exit(r.status ?? 1);
