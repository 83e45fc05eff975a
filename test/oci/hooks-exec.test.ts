// Hooks (order, namespaces, state on stdin, timeouts), exec into a running container, and the console socket.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { suite, TOP, CORRAL_OCI } from '../helpers/oci.ts';
import { waitFor } from '../helpers/wait.ts';

const s = suite('hook');
after(() => s.finish());
const sh = (script: string) => ['/bin/sh', '-c', script];

function hookScript(name: string, log: string): string {
  const path = join(s.work, `hook-${name}.sh`);
  // Logs the hook kind, the status it was given on stdin, and which mount namespace it runs in.
  writeFileSync(path, `#!/bin/sh\nstate=$(cat)\necho "${name} $(echo "$state" | grep -o '"status":"[a-z]*"') $(readlink /proc/self/ns/mnt)" >> ${log}\n`);
  chmodSync(path, 0o755);
  return path;
}

test('hooks run in order, in the right namespaces, with the state on stdin', async () => {
  const log = join(s.work, 'hooks.log');
  const b = s.bundle(sh('echo main >> /hooklog; sleep 0.2'), (sp) => {
    const h = (n: string) => ({ path: hookScript(n, n === 'createContainer' || n === 'startContainer' ? '/hooklog' : log) });
    sp.hooks = {
      prestart: [h('prestart')], createRuntime: [h('createRuntime')], createContainer: [h('createContainer')],
      startContainer: [h('startContainer')], poststart: [h('poststart')], poststop: [h('poststop')],
    };
  });
  // createContainer/startContainer run inside the container: give them the script and a log in the rootfs.
  for (const n of ['createContainer', 'startContainer']) {
    writeFileSync(join(b.rootfs, `hook-${n}.sh`), readFileSync(join(s.work, `hook-${n}.sh`)));
    chmodSync(join(b.rootfs, `hook-${n}.sh`), 0o755);
  }
  b.spec.hooks!.createContainer = [{ path: join(s.work, 'hook-createContainer.sh') }];
  b.spec.hooks!.startContainer = [{ path: '/hook-startContainer.sh' }];
  // createContainer's path is resolved in the runtime namespace but it runs in the container's mount namespace.
  writeFileSync(join(s.work, 'hook-createContainer.sh'), `#!/bin/sh\nstate=$(cat)\necho "createContainer $(echo "$state" | grep -o '"status":"[a-z]*"') $(readlink /proc/self/ns/mnt)" >> ${log}\n`);
  b.write();
  const id = s.id('hooks');
  const r = s.oci(['run', '--bundle', b.dir, id]);
  assert.equal(r.status, 0, r.stderr);
  const hostMnt = spawnSync('readlink', ['/proc/self/ns/mnt'], { encoding: 'utf8' }).stdout.trim();
  const lines = readFileSync(log, 'utf8').trim().split('\n').map((l) => l.split(' '));
  assert.deepEqual(lines.map((l) => l[0]), ['prestart', 'createRuntime', 'createContainer', 'poststart', 'poststop']);
  assert.equal(lines[0][2], hostMnt, 'prestart runs in the runtime namespace');
  assert.equal(lines[1][2], hostMnt, 'createRuntime runs in the runtime namespace');
  assert.notEqual(lines[2][2], hostMnt, 'createContainer runs in the container namespace');
  assert.equal(lines[0][1], '"status":"creating"');
  assert.equal(lines[4][1], '"status":"stopped"');
  assert.deepEqual(readFileSync(join(b.rootfs, 'hooklog'), 'utf8').trim().split('\n').map((l) => l.split(' ')[0]), ['startContainer', 'main']);
});

test('a failing createRuntime hook aborts create and leaves nothing behind', () => {
  const b = s.bundle(['/bin/true'], (sp) => { sp.hooks = { createRuntime: [{ path: '/bin/false' }] }; });
  const id = s.id('hookfail');
  const r = s.oci(['create', '--bundle', b.dir, id]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /hooks\.createRuntime\[0\]: hook \/bin\/false exited with status 1/);
  assert.equal(existsSync(join(s.root, id)), false);
});

test('a hook that exceeds its timeout is killed and fails create', () => {
  const b = s.bundle(['/bin/true'], (sp) => { sp.hooks = { prestart: [{ path: '/bin/sleep', args: ['sleep', '30'], timeout: 1 }] }; });
  const r = s.oci(['create', '--bundle', b.dir, s.id('hooktimeout')]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /timed out after 1s/);
});

test('exec runs a process inside a running container with its namespaces, cgroup and overrides', () => {
  const b = s.bundle(['/bin/sleep', '1000'], (sp) => { sp.hostname = 'execbox'; });
  const id = s.id('exec');
  assert.equal(s.oci(['run', '-d', '--bundle', b.dir, id]).status, 0);
  let r = s.oci(['exec', '--env', 'X=42', '--cwd', '/tmp', '--user', '1000:1000', id, '/bin/sh', '-c', 'echo $(hostname) $X $(pwd) $(id -u); tr "\\0" " " < /proc/1/cmdline; exit 3']);
  assert.equal(r.status, 3, r.stderr);
  const [line, nprocs] = r.stdout.trim().split('\n');
  assert.equal(line, 'execbox 42 /tmp 1000');
  assert.equal(nprocs.trim(), '/bin/sleep 1000', 'pid 1 is the container init: same pid namespace');
  // exec with a process.json, detached, with a pid file.
  const procFile = join(s.work, 'process.json');
  writeFileSync(procFile, JSON.stringify({ user: { uid: 0, gid: 0 }, args: ['/bin/sleep', '1000'], cwd: '/', env: ['PATH=/bin'] }));
  const pidFile = join(s.work, 'exec.pid');
  r = s.oci(['exec', '-d', '--process', procFile, '--pid-file', pidFile, id]);
  assert.equal(r.status, 0, r.stderr);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  const pids: number[] = JSON.parse(s.oci(['ps', '--format', 'json', id]).stdout);
  assert.ok(pids.includes(pid), 'the exec process is in the container cgroup');
  r = s.oci(['exec', id, '/no/such/program']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /no\/such\/program/);
  assert.equal(s.oci(['delete', '--force', id]).status, 0);
});

test('terminal: the pty master reaches --console-socket and the process has a controlling tty', async () => {
  const recv = join(TOP, 'build/console-recv');
  const sock = join(s.work, 'console.sock');
  const out = join(s.work, 'console.out');
  const receiver = spawn(recv, [sock], { stdio: ['ignore', 'pipe', 'inherit'] });
  let got = '';
  receiver.stdout.on('data', (d) => (got += d));
  await waitFor(() => existsSync(sock), 5000, 'console socket listening');
  const b = s.bundle(sh('tty; stty size; echo done'), (sp) => {
    sp.process!.terminal = true;
    sp.process!.consoleSize = { height: 33, width: 111 };
  });
  const r = spawnSync(CORRAL_OCI, ['--root', s.root, 'run', '--console-socket', sock, '--bundle', b.dir, s.id('tty')], { encoding: 'utf8', timeout: 30000 });
  assert.equal(r.status, 0, r.stderr);
  await waitFor(() => got.includes('done'), 5000, 'output through the pty');
  receiver.kill();
  assert.match(got, /\/dev\/pts\/\d+/);
  assert.match(got, /33 111/);
  void out;
});

test('run with a terminal and no --console-socket relays the pty to the caller\'s terminal (like runc run)', async () => {
  const b = s.bundle(sh('tty; stty size; read x; echo got:$x; exit 3'), (sp) => {
    sp.process!.terminal = true;
    sp.process!.consoleSize = { height: 21, width: 77 };
  });
  // script(1) gives the CLI a real terminal; its stdin feeds that terminal.
  const child = spawn('script', ['-qec', `${CORRAL_OCI} --root ${s.root} run --bundle ${b.dir} ${s.id('ttyrun')}; echo rc=$?`, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  await waitFor(() => out.includes('21 77'), 15000, 'the container printed its terminal size');
  child.stdin.write('hello\n');
  await new Promise((r) => child.once('close', r));
  assert.match(out, /\/dev\/pts\/\d+/);
  assert.match(out, /got:hello/);
  assert.match(out, /rc=3/);
});
