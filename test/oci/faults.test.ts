// Faults: the runtime SIGKILLed in the middle of create; `delete --force` then cleans up completely.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite, CORRAL_OCI } from '../helpers/oci.ts';
import { cgroupDirs } from '../helpers/leaks.ts';
import { waitFor } from '../helpers/wait.ts';

const s = suite('fault');
after(() => s.finish());

test('SIGKILL of the runtime mid-create leaves a state that delete --force removes entirely', async () => {
  const marker = join(s.work, 'hook-ran');
  const hook = join(s.work, 'slow-hook.sh');
  // The hook proves we are inside create (the init exists, the cgroup is populated), then blocks.
  writeFileSync(hook, `#!/bin/sh\ncat > ${marker}\nexec sleep 5\n`);
  chmodSync(hook, 0o755);
  const b = s.bundle(['/bin/sleep', '1000'], (sp) => { sp.hooks = { createRuntime: [{ path: hook }] }; });
  const id = s.id('killed');
  const cli = spawn(CORRAL_OCI, ['--root', s.root, 'create', '--bundle', b.dir, id], { stdio: 'ignore' });
  await waitFor(() => existsSync(marker) && readFileSync(marker, 'utf8').includes('"status":"creating"'), 15000, 'create reached its hook');
  const state = JSON.parse(readFileSync(marker, 'utf8'));
  const cgName = b.spec.linux!.cgroupsPath!.split('/').pop()!;
  assert.ok(cgroupDirs(cgName).length > 0, 'the cgroup exists mid-create');
  cli.kill('SIGKILL');
  await new Promise((r) => cli.once('exit', r));
  // The half-made container is visible and not mistaken for a live one.
  const st = JSON.parse(run(['state', id]).stdout);
  assert.ok(['creating', 'stopped'].includes(st.status), `status after the kill: ${st.status}`);
  assert.notEqual(run(['start', id]).status, 0, 'a half-created container cannot be started');
  const r = run(['delete', '--force', id]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(existsSync(join(s.root, id)), false, 'no state dir');
  assert.deepEqual(cgroupDirs(cgName), [], 'no cgroup');
  await waitFor(() => !isAlive(state.pid), 5000, 'the init is gone');
});

function run(args: string[]) {
  return s.oci(args);
}

function isAlive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1][0] !== 'Z';
  } catch {
    return false;
  }
}
