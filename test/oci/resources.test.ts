// cgroups through the runtime: memory limit → OOM kill, pids.max contains a fork bomb,
// pause/resume via the freezer, update, stats, and delete leaving no cgroup behind.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite, runToEnd } from '../helpers/oci.ts';
import { cgroupDirs } from '../helpers/leaks.ts';
import { waitFor } from '../helpers/wait.ts';

const s = suite('res');
after(() => s.finish());
const sh = (script: string) => ['/bin/sh', '-c', script];

test('exceeding the memory limit gets the process OOM-killed', () => {
  const r = runToEnd(s, 'oom', sh('echo start; x=a; while true; do x="$x$x"; done'), (sp) => {
    sp.linux!.resources = { memory: { limit: 16 * 1024 * 1024, swap: 16 * 1024 * 1024 } };
  });
  assert.equal(r.stdout.trim(), 'start');
  assert.equal(r.status, 137, `killed by SIGKILL (status ${r.status}, ${r.stderr})`);
});

test('pids.max contains a fork bomb', async () => {
  // A real fork bomb: every process forks two more, forever.
  const b = s.bundle(sh('bomb() { bomb & bomb & wait; }; bomb'), (sp) => { sp.linux!.resources = { pids: { limit: 20 } }; });
  const id = s.id('bomb');
  assert.equal(s.oci(['run', '-d', '--bundle', b.dir, id]).status, 0);
  const cg = cgroupDirs(b.spec.linux!.cgroupsPath!.split('/').pop()!).find((d) => d.includes('/pids/'))!;
  // The kernel refused forks at the limit (pids.events counts them) and the count never exceeds it.
  await waitFor(() => Number(/max (\d+)/.exec(readFileSync(join(cg, 'pids.events'), 'utf8'))![1]) > 0, 10000, 'fork refused at pids.max');
  for (let i = 0; i < 20; i++) {
    assert.ok(Number(readFileSync(join(cg, 'pids.current'), 'utf8')) <= 20);
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(readFileSync(join(cg, 'pids.max'), 'utf8').trim(), '20');
  // The host is unaffected and the bomb is fully removed by delete --force.
  assert.equal(s.oci(['delete', '--force', id]).status, 0);
  assert.deepEqual(cgroupDirs(b.spec.linux!.cgroupsPath!.split('/').pop()!), []);
});

test('pause freezes every process and resume thaws them', async () => {
  const b = s.bundle(sh('i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done'));
  const id = s.id('pause');
  assert.equal(s.oci(['run', '-d', '--bundle', b.dir, id]).status, 0);
  const counter = join(b.rootfs, 'tmp/count');
  await waitFor(() => Number(readFileSync(counter, 'utf8')) > 2);
  let r = s.oci(['pause', id]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(s.oci(['state', id]).stdout).status, 'paused');
  const frozenAt = readFileSync(counter, 'utf8');
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(readFileSync(counter, 'utf8'), frozenAt, 'no progress while paused');
  assert.notEqual(s.oci(['pause', id]).status, 0, 'pausing a paused container fails');
  r = s.oci(['resume', id]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(s.oci(['state', id]).stdout).status, 'running');
  await waitFor(() => readFileSync(counter, 'utf8') !== frozenAt);
  assert.equal(s.oci(['delete', '--force', id]).status, 0);
  assert.deepEqual(cgroupDirs(id), []);
});

test('update changes limits of a running container; events --stats reports usage', () => {
  const b = s.bundle(['/bin/sleep', '1000'], (sp) => { sp.linux!.resources = { memory: { limit: 64 << 20 }, pids: { limit: 50 } }; });
  const id = s.id('upd');
  assert.equal(s.oci(['run', '-d', '--bundle', b.dir, id]).status, 0);
  let r = s.oci(['update', '--memory', '96m', '--pids-limit', '77', id]);
  assert.equal(r.status, 0, r.stderr);
  r = s.oci(['update', '--resources', '-', id], { input: JSON.stringify({ cpu: { shares: 512 } }) });
  assert.equal(r.status, 0, r.stderr);
  const stats = JSON.parse(s.oci(['events', '--stats', id]).stdout);
  assert.equal(stats.type, 'stats');
  assert.equal(stats.data.memory.usage.limit, 96 << 20);
  assert.equal(stats.data.pids.limit, 77);
  assert.ok(stats.data.pids.current >= 1);
  assert.ok(stats.data.memory.usage.usage > 0);
  const pids = JSON.parse(s.oci(['ps', '--format', 'json', id]).stdout);
  assert.equal(pids.length, 1);
  const cg = cgroupDirs(b.spec.linux!.cgroupsPath!.split('/').pop()!).find((d) => d.includes('/cpu/'));
  assert.ok(cg);
  assert.equal(readFileSync(join(cg!, 'cpu.shares'), 'utf8').trim(), '512');
  assert.equal(s.oci(['delete', '--force', id]).status, 0);
});

test('delete --force kills stray processes and removes the cgroup', async () => {
  const b = s.bundle(sh('(sleep 1000 &) ; sleep 1000'));
  const id = s.id('stray');
  assert.equal(s.oci(['run', '-d', '--bundle', b.dir, id]).status, 0);
  await waitFor(() => JSON.parse(s.oci(['ps', '--format', 'json', id]).stdout).length >= 2);
  const pids: number[] = JSON.parse(s.oci(['ps', '--format', 'json', id]).stdout);
  assert.equal(s.oci(['delete', '--force', id]).status, 0);
  await waitFor(() => pids.every((p) => { try { return readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1][0] === 'Z'; } catch { return true; } }), 5000, 'every container process gone');
  assert.deepEqual(cgroupDirs(b.spec.linux!.cgroupsPath!.split('/').pop()!), []);
});
