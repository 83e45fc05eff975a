// bin/corral-oci as a client of the corral-oci server: auto-start and reuse, the no-server fallback,
// concurrency, the caller's cwd, stdin and preserved fds, a client killed mid-create, idle exit, and a
// stale socket. Every server of this suite lives in its own dir (CORRAL_OCI_SERVER_DIR) and is stopped
// by pid at the end.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { SpawnSyncReturns } from 'node:child_process';
import { appendFileSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { suite, CORRAL_OCI, TOP } from '../helpers/oci.ts';
import { cgroupDirs } from '../helpers/leaks.ts';
import { waitFor } from '../helpers/wait.ts';

const s = suite('clsrv');
// The suite helper's s.oci() inherits process.env: point every call of this file at our own server dir.
const serverDir = join(s.work, 'srv');
process.env.CORRAL_OCI_SERVER_DIR = serverDir;
delete process.env.CORRAL_OCI_NO_SERVER;
delete process.env.CORRAL_OCI_SERVER_IDLE_MS;
const otherDirs: string[] = [];

function serverPid(dir = serverDir): number | undefined {
  if (!existsSync(dir)) return undefined;
  const f = readdirSync(dir).find((n) => n.endsWith('.pid'));
  return f ? Number(readFileSync(join(dir, f), 'utf8').trim()) : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\S+ \(.*\) [ZX]/.test(stat);
  } catch {
    return false;
  }
}

function isServer(pid: number): boolean {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('--server');
}

/** The CLI with our own cwd/env/stdio (output through files: a container may hold the fds). */
function cli(args: string[], opts: { cwd?: string; root?: string; env?: Record<string, string>; input?: string; extraFds?: number[] } = {}): SpawnSyncReturns<string> {
  const n = Math.random().toString(36).slice(2);
  const outF = join(s.work, `.o-${n}`);
  const errF = join(s.work, `.e-${n}`);
  const out = openSync(outF, 'w');
  const err = openSync(errF, 'w');
  const r = spawnSync(CORRAL_OCI, ['--root', opts.root ?? s.root, ...args], {
    encoding: 'utf8', cwd: opts.cwd, env: { ...process.env, ...opts.env }, input: opts.input, timeout: 60000,
    stdio: [opts.input === undefined ? 'ignore' : 'pipe', out, err, ...(opts.extraFds ?? [])],
  });
  closeSync(out);
  closeSync(err);
  r.stdout = readFileSync(outF, 'utf8');
  r.stderr = readFileSync(errF, 'utf8');
  rmSync(outF);
  rmSync(errF);
  return r;
}

async function stopServer(dir: string): Promise<void> {
  const pid = serverPid(dir);
  if (pid === undefined || !alive(pid) || !isServer(pid)) return;
  process.kill(pid, 'SIGTERM');
  await waitFor(() => !alive(pid), 15000, `server ${pid} exits on SIGTERM`);
}

after(async () => {
  const pids = [serverDir, ...otherDirs].map((d) => serverPid(d)).filter((p): p is number => p !== undefined);
  for (const d of [serverDir, ...otherDirs]) await stopServer(d);
  s.finish();
  for (const p of pids) assert.equal(alive(p), false, `server ${p} is gone`);
  for (const d of [serverDir, ...otherDirs]) {
    assert.deepEqual(existsSync(d) ? readdirSync(d).filter((n) => n.endsWith('.sock') || n.endsWith('.pid')) : [], [], `${d}: socket and pid file removed`);
  }
});

test('the first call starts the server; later calls reuse it', () => {
  const r1 = cli(['list', '--quiet']);
  assert.equal(r1.status, 0, r1.stderr);
  const pid = serverPid();
  assert.ok(pid && alive(pid) && isServer(pid), 'a server runs and wrote its pid next to the socket');
  const sock = readdirSync(serverDir).find((n) => n.endsWith('.sock'));
  assert.ok(sock, 'its socket is in the server dir');
  for (let i = 0; i < 3; i++) assert.equal(cli(['state', 'no-such-ctr']).status, 1);
  const b = s.bundle(['/bin/sh', '-c', 'echo via-server; exit 4']);
  const r = cli(['run', '--bundle', b.dir, s.id('reuse')]);
  assert.equal(r.stdout, 'via-server\n', r.stderr);
  assert.equal(r.status, 4, 'run returns the container exit status through the server');
  assert.equal(serverPid(), pid, 'the same server answered every call');
  assert.ok(alive(pid!));
});

test('CORRAL_OCI_NO_SERVER=1 runs the CLI in a Node of its own, without any server', () => {
  const dir = join(s.work, 'srv-none');
  otherDirs.push(dir);
  const b = s.bundle(['/bin/sh', '-c', 'echo no-server']);
  const r = cli(['run', '--bundle', b.dir, s.id('noserver')], { env: { CORRAL_OCI_NO_SERVER: '1', CORRAL_OCI_SERVER_DIR: dir } });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'no-server\n');
  assert.equal(existsSync(dir), false, 'the client did not even create the server dir');
  const e = cli(['state', 'no-such-ctr'], { env: { CORRAL_OCI_NO_SERVER: '1', CORRAL_OCI_SERVER_DIR: dir } });
  assert.equal(e.status, 1);
  assert.match(e.stderr, /does not exist/);
});

test('concurrent creates of one id: exactly one succeeds, the others get "already exists"', async () => {
  const b = s.bundle(['/bin/sleep', '1000']);
  const id = s.id('race');
  const results = await Promise.all(Array.from({ length: 4 }, (_, i) => new Promise<{ status: number | null; stderr: string }>((resolve) => {
    const errF = join(s.work, `race-${i}.err`);
    const err = openSync(errF, 'w');
    const child = spawn(CORRAL_OCI, ['--root', s.root, 'create', '--bundle', b.dir, id], { stdio: ['ignore', 'ignore', err] });
    child.on('close', (status) => {
      closeSync(err);
      resolve({ status, stderr: readFileSync(errF, 'utf8') });
    });
  })));
  assert.equal(results.filter((r) => r.status === 0).length, 1, JSON.stringify(results));
  for (const r of results.filter((x) => x.status !== 0)) assert.match(r.stderr, /already exists/);
  assert.equal(JSON.parse(cli(['state', id]).stdout).status, 'created');
  assert.equal(cli(['delete', '--force', id]).status, 0);
});

test('relative --bundle, --pid-file and --root resolve against the caller\'s cwd', () => {
  const b = s.bundle(['/bin/sleep', '1000']);
  const id = s.id('rel');
  const cwd = join(s.work, 'cwd');
  mkdirSync(cwd);
  const r = cli(['create', '--bundle', relative(cwd, b.dir), '--pid-file', 'init.pid', id], { cwd, root: relative(cwd, s.root) });
  assert.equal(r.status, 0, r.stderr);
  const pid = Number(readFileSync(join(cwd, 'init.pid'), 'utf8'));
  const st = JSON.parse(cli(['state', id]).stdout);
  assert.equal(st.pid, pid);
  assert.equal(st.bundle, b.dir);
  assert.equal(cli(['delete', '--force', id]).status, 0);
});

test('update --resources - reads the caller\'s stdin through the server', () => {
  const b = s.bundle(['/bin/sleep', '1000'], (sp) => { sp.linux!.resources = { pids: { limit: 50 } }; });
  const id = s.id('stdin');
  assert.equal(cli(['run', '-d', '--bundle', b.dir, id]).status, 0);
  const r = cli(['update', '--resources', '-', id], { input: JSON.stringify({ pids: { limit: 42 } }) });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(cli(['events', '--stats', id]).stdout).data.pids.limit, 42);
  assert.equal(cli(['delete', '--force', id]).status, 0);
});

test('preserved fds of the caller reach the container (the client spawns the executor)', () => {
  const b = s.bundle(['/bin/sh', '-c', 'echo to-fd-3 >&3; echo to-fd-4 >&4; ls /proc/self/fd | sort -n | tr "\\n" " "']);
  const f3 = join(s.work, 'fd3.txt');
  const f4 = join(s.work, 'fd4.txt');
  const a = openSync(f3, 'w');
  const c = openSync(f4, 'w');
  const r = cli(['run', '--preserve-fds', '2', '--bundle', b.dir, s.id('pfd')], { extraFds: [a, c] });
  closeSync(a);
  closeSync(c);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync(f3, 'utf8'), 'to-fd-3\n');
  assert.equal(readFileSync(f4, 'utf8'), 'to-fd-4\n');
  assert.deepEqual(r.stdout.trim().split(' '), ['0', '1', '2', '3', '4', '5'], 'exactly stdio, the two fds, and ls\'s own');
});

test('a client SIGKILLed mid-create leaves state that delete --force removes', async () => {
  const mark = join(s.work, 'hook-ran');
  const b = s.bundle(['/bin/sleep', '1000'], (sp) => {
    sp.hooks = { prestart: [{ path: '/bin/sh', args: ['sh', '-c', `touch ${mark}; sleep 1; touch ${mark}.done`] }] };
  });
  const id = s.id('killed');
  const cgName = b.spec.linux!.cgroupsPath!.split('/').pop()!;
  const child = spawn(CORRAL_OCI, ['--root', s.root, 'create', '--bundle', b.dir, id], { stdio: 'ignore' });
  const exited = new Promise((r) => child.on('exit', r));
  await waitFor(() => existsSync(mark), 30000, 'the prestart hook runs');
  const record = JSON.parse(readFileSync(join(s.root, id, 'state.json'), 'utf8')) as { pid: number };
  assert.ok(record.pid > 0, 'the init exists while the hook runs');
  child.kill('SIGKILL');
  await exited;
  const r = cli(['delete', '--force', id]);
  assert.equal(r.status, 0, r.stderr);
  await waitFor(() => !existsSync(join(s.root, id)), 15000, 'state removed');
  await waitFor(() => !alive(record.pid), 15000, 'init gone');
  await waitFor(() => cgroupDirs(cgName).length === 0, 15000, 'cgroup removed');
  assert.notEqual(cli(['state', id]).status, 0);
  // The server's create notices its client is gone once the hook returns, and rolls back: still nothing left.
  await waitFor(() => existsSync(`${mark}.done`), 30000, 'the hook finished');
  assert.equal(cli(['list', '--quiet']).stdout.includes(id), false);
  assert.deepEqual(cgroupDirs(cgName), []);
  assert.equal(alive(serverPid()!), true, 'the server survived its client\'s death');
});

test('a server exits after its idle timeout and removes its socket', async () => {
  const dir = join(s.work, 'srv-idle');
  otherDirs.push(dir);
  const r = cli(['list', '--quiet'], { env: { CORRAL_OCI_SERVER_DIR: dir, CORRAL_OCI_SERVER_IDLE_MS: '300' } });
  assert.equal(r.status, 0, r.stderr);
  const pid = serverPid(dir);
  assert.ok(pid && isServer(pid));
  await waitFor(() => !alive(pid!), 15000, 'idle server exits');
  assert.deepEqual(readdirSync(dir), [], 'socket, pid file, and the routine-only log and its lock are gone');
  // The next call starts a new one.
  assert.equal(cli(['list', '--quiet'], { env: { CORRAL_OCI_SERVER_DIR: dir, CORRAL_OCI_SERVER_IDLE_MS: '300' } }).status, 0);
  const pid2 = serverPid(dir);
  assert.ok(pid2 && pid2 !== pid);
  await waitFor(() => !alive(pid2!), 15000, 'second idle server exits');
  // a log with anything but routine lines is kept for the operator
  assert.equal(cli(['list', '--quiet'], { env: { CORRAL_OCI_SERVER_DIR: dir, CORRAL_OCI_SERVER_IDLE_MS: '300' } }).status, 0);
  const pid3 = serverPid(dir);
  const logs = readdirSync(dir).filter((n) => n.endsWith('.log'));
  assert.equal(logs.length, 1);
  appendFileSync(join(dir, logs[0]!), 'something unusual\n');
  await waitFor(() => !alive(pid3!), 15000, 'third idle server exits');
  assert.ok(readdirSync(dir).includes(logs[0]!), 'the unusual log is kept');
});

test('a stale socket (nobody listening) is replaced by a new server', () => {
  const dir = join(s.work, 'srv-stale');
  otherDirs.push(dir);
  mkdirSync(dir, { mode: 0o700 });
  const buildId = /^build_id=(.*)$/m.exec(readFileSync(join(TOP, 'build/corral-oci-client.conf'), 'utf8'))![1];
  const sock = join(dir, `${buildId}.sock`);
  // A listener that dies without removing its socket file.
  const k = spawnSync(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  assert.equal(k.signal, 'SIGKILL');
  assert.ok(existsSync(sock), 'the stale socket file is there');
  const r = cli(['list', '--quiet'], { env: { CORRAL_OCI_SERVER_DIR: dir } });
  assert.equal(r.status, 0, r.stderr);
  const pid = serverPid(dir);
  assert.ok(pid && alive(pid) && isServer(pid), 'a new server took the socket over (after() stops it by pid)');
});
