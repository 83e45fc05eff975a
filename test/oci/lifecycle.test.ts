// Black-box lifecycle through the CLI: create/start/state/kill/delete, run, list, wrong-state errors, bad input.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from '../helpers/oci.ts';
import { cgroupDirs } from '../helpers/leaks.ts';
import { waitFor } from '../helpers/wait.ts';

const s = suite('life');
after(() => s.finish());

test('run prints the container output and returns its exit status', () => {
  const r = s.oci(['run', '--bundle', s.bundle(['/bin/sh', '-c', 'echo hi from $(hostname); exit 7'], (sp) => { sp.hostname = 'box'; }).dir, s.id('run')]);
  assert.equal(r.stdout, 'hi from box\n', r.stderr);
  assert.equal(r.status, 7);
  assert.equal(existsSync(join(s.root, s.id('run'))), false, 'run removes the container afterwards');
});

test('create → state created → start → running → kill → stopped → delete', async () => {
  const b = s.bundle(['/bin/sleep', '1000']);
  const id = s.id('cycle');
  const pidFile = join(s.work, 'cycle.pid');
  let r = s.oci(['create', '--bundle', b.dir, '--pid-file', pidFile, id]);
  assert.equal(r.status, 0, r.stderr);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  let st = JSON.parse(s.oci(['state', id]).stdout);
  assert.equal(st.status, 'created');
  assert.equal(st.pid, pid);
  assert.equal(st.id, id);
  assert.equal(st.bundle, b.dir);
  assert.equal(st.ociVersion, '1.2.0');
  // The init has not exec'd the user process yet.
  assert.notEqual(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0], '/bin/sleep');
  r = s.oci(['start', id]);
  assert.equal(r.status, 0, r.stderr);
  st = JSON.parse(s.oci(['state', id]).stdout);
  assert.equal(st.status, 'running');
  await waitFor(() => readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('/bin/sleep'));
  r = s.oci(['start', id]);
  assert.notEqual(r.status, 0, 'starting twice fails');
  assert.match(r.stderr, /running/);
  r = s.oci(['delete', id]);
  assert.notEqual(r.status, 0, 'deleting a running container without --force fails');
  assert.match(r.stderr, /--force/);
  r = s.oci(['kill', id, 'KILL']);
  assert.equal(r.status, 0, r.stderr);
  await waitFor(() => JSON.parse(s.oci(['state', id]).stdout).status === 'stopped');
  r = s.oci(['delete', id]);
  assert.equal(r.status, 0, r.stderr);
  assert.notEqual(s.oci(['state', id]).status, 0);
  assert.deepEqual(cgroupDirs(id), []);
});

test('duplicate id is refused and leaves the first container alone', () => {
  const b = s.bundle(['/bin/sleep', '1000']);
  const id = s.id('dup');
  assert.equal(s.oci(['create', '--bundle', b.dir, id]).status, 0);
  const r = s.oci(['create', '--bundle', b.dir, id]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /already exists/);
  assert.equal(JSON.parse(s.oci(['state', id]).stdout).status, 'created');
  assert.equal(s.oci(['delete', id]).status, 0, 'a created container can be deleted');
});

test('list shows containers as a table and as JSON', () => {
  const b = s.bundle(['/bin/sleep', '1000']);
  const id = s.id('list');
  assert.equal(s.oci(['create', '--bundle', b.dir, id]).status, 0);
  const table = s.oci(['list']).stdout;
  assert.match(table, /^ID\s+PID\s+STATUS\s+BUNDLE/);
  assert.match(table, new RegExp(`${id}\\s+\\d+\\s+created`));
  const json = JSON.parse(s.oci(['list', '--format', 'json']).stdout);
  assert.equal(json.find((c: { id: string }) => c.id === id)?.status, 'created');
  assert.equal(s.oci(['delete', '--force', id]).status, 0);
});

test('kill --all signals every process; signal names and numbers work', async () => {
  const b = s.bundle(['/bin/sh', '-c', 'sleep 1000 & sleep 1000 & wait']);
  const id = s.id('killall');
  assert.equal(s.oci(['run', '-d', '--bundle', b.dir, id]).status, 0);
  await waitFor(() => JSON.parse(s.oci(['ps', '--format', 'json', id]).stdout).length === 3);
  assert.notEqual(s.oci(['kill', id, 'SIGNOPE']).status, 0);
  assert.equal(s.oci(['kill', '--all', id, '9']).status, 0);
  await waitFor(() => JSON.parse(s.oci(['state', id]).stdout).status === 'stopped');
  assert.equal(s.oci(['delete', id]).status, 0);
});

test('invalid config.json: error names the JSON path, nothing is left behind', () => {
  const cases: Array<[string, (spec: any) => void, RegExp]> = [
    ['ns', (sp) => { sp.linux.namespaces.push({ type: 'bogus' }); }, /linux\.namespaces\[\d\]\.type: unknown namespace type "bogus"/],
    ['cap', (sp) => { sp.process.capabilities.bounding.push('CAP_FLY'); }, /process\.capabilities\.bounding\[\d\]: unknown capability "CAP_FLY"/],
    ['cwd', (sp) => { sp.process.cwd = 'relative'; }, /process\.cwd: must be an absolute path/],
    ['rlimit', (sp) => { sp.process.rlimits = [{ type: 'RLIMIT_NOFILE', soft: 10, hard: 5 }]; }, /process\.rlimits\[0\]: soft limit must not exceed/],
    ['args', (sp) => { sp.process.args = ['/no/such/binary']; }, /process\.args\[0\]: executable "\/no\/such\/binary" was not found/],
    ['mountsrc', (sp) => { sp.mounts.push({ destination: '/x', type: 'bind', source: '/no/such/dir', options: ['bind'] }); }, /mounts\[\d+\]\.source: bind mount source/],
    ['sysctl', (sp) => { sp.linux.sysctl = { 'vm.swappiness': '10' }; }, /linux\.sysctl\["vm\.swappiness"\]: is not namespaced/],
    ['version', (sp) => { sp.ociVersion = 'banana'; }, /ociVersion: must be a 1\.x\.y/],
  ];
  for (const [name, tweak, re] of cases) {
    const b = s.bundle(['/bin/true'], tweak);
    const id = s.id(`bad-${name}`);
    const r = s.oci(['create', '--bundle', b.dir, id]);
    assert.notEqual(r.status, 0, name);
    assert.match(r.stderr, re, name);
    assert.equal(existsSync(join(s.root, id)), false, `${name}: no state dir`);
  }
  const b = s.bundle(['/bin/true']);
  writeFileSync(join(b.dir, 'config.json'), '{"ociVersion": "1.2.0",');
  const r = s.oci(['create', '--bundle', b.dir, s.id('badjson')]);
  assert.match(r.stderr, /config\.json: is not valid JSON/);
  assert.deepEqual(cgroupDirs(s.marker).flatMap((d) => readdirSync(d, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => `${d}/${e.name}`)), [], 'no container cgroup left');
});

test('a failure inside the executor (bad mount) rolls back: no state dir, no cgroup', () => {
  const b = s.bundle(['/bin/true'], (sp) => { sp.mounts!.push({ destination: '/mnt', type: 'nosuchfs', source: 'x' }); });
  const id = s.id('badmount');
  const r = s.oci(['create', '--bundle', b.dir, id]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /mounts\[\d+\]/);
  assert.equal(existsSync(join(s.root, id)), false);
  assert.deepEqual(cgroupDirs(id), []);
});

test('delete --force of a missing container succeeds; without --force it fails', () => {
  assert.equal(s.oci(['delete', '--force', s.id('ghost')]).status, 0);
  const r = s.oci(['delete', s.id('ghost')]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /does not exist/);
});

test('errors go to --log as JSON lines with --log-format json', () => {
  const log = join(s.work, 'log.json');
  const r = s.oci(['--log', log, '--log-format', 'json', 'state', s.id('nothere')]);
  assert.notEqual(r.status, 0);
  const line = JSON.parse(readFileSync(log, 'utf8').trim().split('\n').at(-1)!);
  assert.equal(line.level, 'error');
  assert.match(line.msg, /does not exist/);
});


test('spec writes a valid template; features describes the runtime; --version', () => {
  const dir = join(s.work, 'specdir');
  mkdirSync(dir);
  assert.equal(s.oci(['spec', '--bundle', dir]).status, 0);
  const spec = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  assert.equal(spec.ociVersion, '1.2.0');
  assert.deepEqual(spec.process.args, ['sh']);
  assert.notEqual(s.oci(['spec', '--bundle', dir]).status, 0, 'an existing config.json is not overwritten');
  const f = JSON.parse(s.oci(['features']).stdout);
  assert.equal(f.ociVersionMax, '1.2.0');
  assert.ok(f.linux.namespaces.includes('user'));
  assert.equal(f.linux.seccomp.enabled, true);
  assert.match(s.oci(['--version']).stdout, /^corral-oci version \d+\.\d+\.\d+\nspec: 1\.2\.0/);
  const r = s.oci(['--systemd-cgroup', 'list']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /systemd cgroup driver is not supported/);
});

test('a failed create removes the cgroup parents it created', () => {
  const b = s.bundle(['/bin/true'], (sp) => {
    sp.linux!.cgroupsPath = `${s.cgroupParent}/made/by/create`;
    sp.mounts!.push({ destination: '/mnt', type: 'nosuchfs', source: 'x' });
  });
  assert.notEqual(s.oci(['create', '--bundle', b.dir, s.id('cgparents')]).status, 0);
  assert.deepEqual(cgroupDirs('made'), []);
  assert.deepEqual(cgroupDirs('by'), []);
});

test('a relative cgroupsPath is relative to the caller\'s cgroup (not the corral-oci server\'s)', () => {
  const rel = `${s.marker}-rel/c`;
  const b = s.bundle(['/bin/sleep', '1000'], (sp) => { sp.linux!.cgroupsPath = rel; });
  const id = s.id('relcg');
  const pidFile = join(s.work, 'relcg.pid');
  const r = s.oci(['create', '--bundle', b.dir, '--pid-file', pidFile, id]);
  assert.equal(r.status, 0, r.stderr);
  const mine = Object.fromEntries(readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n').map((l) => { const [, c, p] = l.split(':'); return [c, p]; }));
  const init = Object.fromEntries(readFileSync(`/proc/${readFileSync(pidFile, 'utf8')}/cgroup`, 'utf8').trim().split('\n').map((l) => { const [, c, p] = l.split(':'); return [c, p]; }));
  for (const c of ['memory', 'pids', 'freezer']) assert.equal(init[c], join(mine[c], rel), `${c} hierarchy`);
  assert.equal(s.oci(['delete', '--force', id]).status, 0);
  for (const c of ['memory', 'pids', 'freezer', 'cpu', 'cpuacct', 'cpuset', 'devices', 'blkio', 'systemd']) {
    const key = c === 'systemd' ? 'name=systemd' : c;
    if (mine[key] === undefined) continue;
    const parent = join('/sys/fs/cgroup', c, mine[key], `${s.marker}-rel`);
    assert.equal(existsSync(join(parent, 'c')), false, `${parent}/c removed by delete`);
    try { rmdirSync(parent); } catch { /* not created in this hierarchy */ }
  }
});
