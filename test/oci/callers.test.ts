// The callers corral-oci must work under, all from Debian packages: conmon, podman --runtime,
// and containerd (ctr run --runc-binary) through containerd-shim-runc-v2.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite, CORRAL_OCI, removeCgroupTree } from '../helpers/oci.ts';
import { waitFor } from '../helpers/wait.ts';

const s = suite('call');
after(() => s.finish());

test('conmon supervises a corral-oci container: CRI log, exit file, pid files', { skip: !existsSync('/usr/bin/conmon') && 'conmon not installed' }, async () => {
  const b = s.bundle(['/bin/sh', '-c', 'echo out-line; echo err-line >&2; exit 3']);
  const id = s.id('conmon');
  const dir = join(s.work, 'conmon');
  mkdirSync(join(dir, 'exits'), { recursive: true });
  mkdirSync(join(dir, 'sockets'), { recursive: true });
  const log = join(dir, 'ctr.log');
  const r = spawnSync('conmon', [
    '--api-version', '1', '-c', id, '-u', id, '-n', id, '-r', CORRAL_OCI, '--runtime-arg', '--root', '--runtime-arg', s.root,
    '-b', b.dir, '-p', join(dir, 'pid'), '--exit-dir', join(dir, 'exits'), '--socket-dir-path', join(dir, 'sockets'),
    '-l', `k8s-file:${log}`, '--conmon-pidfile', join(dir, 'conmon.pid'),
  ], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30000 });
  assert.equal(r.status, 0, `conmon: ${r.stdout} ${r.stderr}`);
  // conmon's parent returns at once; its daemonized child runs `corral-oci create` and then writes the pid file.
  await waitFor(() => existsSync(join(dir, 'pid')), 15000, 'container pid file');
  const pid = Number(readFileSync(join(dir, 'pid'), 'utf8'));
  assert.ok(pid > 0);
  assert.equal(JSON.parse(s.oci(['state', id]).stdout).status, 'created');
  assert.equal(s.oci(['start', id]).status, 0);
  await waitFor(() => existsSync(join(dir, 'exits', id)), 15000, 'conmon exit file');
  assert.equal(readFileSync(join(dir, 'exits', id), 'utf8').trim(), '3');
  const lines = readFileSync(log, 'utf8').trim().split('\n');
  // CRI log format: RFC 3339 nano timestamp, stream, P/F tag, content.
  const re = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+([+-]\d\d:\d\d|Z) (stdout|stderr) F (.*)$/;
  const parsed = lines.map((l) => re.exec(l)).filter(Boolean).map((m) => `${m![2]} ${m![3]}`).sort();
  assert.deepEqual(parsed, ['stderr err-line', 'stdout out-line']);
  assert.equal(JSON.parse(s.oci(['state', id]).stdout).status, 'stopped');
  assert.equal(s.oci(['delete', id]).status, 0);
});

test('podman runs a container with --runtime corral-oci', { skip: !existsSync('/usr/bin/podman') && 'podman not installed' }, () => {
  const b = s.bundle(['/bin/true']);
  const store = join(s.work, 'podman');
  const cgroupParent = `${s.cgroupParent}/podman`;
  const args = [
    '--runtime', CORRAL_OCI, '--root', join(store, 'root'), '--runroot', join(store, 'run'), '--tmpdir', join(store, 'tmp'),
    '--cgroup-manager=cgroupfs', '--events-backend=file', '--storage-driver', 'vfs',
    'run', '--rm', '--network', 'none', '--cgroup-parent', cgroupParent, '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024',
    '--rootfs', b.rootfs, '/bin/sh', '-c', 'echo podman-says-$(hostname | wc -c); exit 5',
  ];
  mkdirSync(store, { recursive: true });
  writeFileSync(join(store, 'none.conf'), '');
  const r = spawnSync('podman', args, { encoding: 'utf8', timeout: 60000, env: { ...process.env, CONTAINERS_CONF: join(store, 'none.conf') } });
  assert.equal(r.status, 5, `podman: ${r.stdout} ${r.stderr}`);
  assert.match(r.stdout, /^podman-says-\d+$/m);
  spawnSync('podman', ['--root', join(store, 'root'), '--runroot', join(store, 'run'), '--storage-driver', 'vfs', 'system', 'reset', '--force'], { timeout: 60000 });
  spawnSync('umount', ['-R', join(store, 'root')]);
  removeCgroupTree(cgroupParent);
});

test('containerd runs a container through containerd-shim-runc-v2 with --runc-binary corral-oci', { skip: !existsSync('/usr/bin/containerd') && 'containerd not installed' }, async () => {
  const b = s.bundle(['/bin/true']);
  const base = join(s.work, 'ctrd');
  mkdirSync(base, { recursive: true });
  const sock = join(base, 'containerd.sock');
  writeFileSync(join(base, 'config.toml'), [
    'version = 2', `root = "${base}/root"`, `state = "${base}/state"`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]',
    '[grpc]', `  address = "${sock}"`, '[ttrpc]', `  address = "${sock}.ttrpc"`,
    '[plugins."io.containerd.internal.v1.opt"]', `  path = "${base}/opt"`,
  ].join('\n') + '\n');
  const daemon = spawn('containerd', ['--config', join(base, 'config.toml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let dlog = '';
  daemon.stderr.on('data', (d) => { dlog += d; });
  try {
    await waitFor(() => existsSync(sock), 20000, 'containerd socket');
    const ctr = (...a: string[]) => spawnSync('ctr', ['--address', sock, '--namespace', s.marker, ...a], { encoding: 'utf8', timeout: 60000 });
    const id = s.id('ctr');
    const r = ctr('run', '--rm', '--runc-binary', CORRAL_OCI, '--cgroup', `${s.cgroupParent}/ctr`, '--rootfs', b.rootfs, id, '/bin/sh', '-c', 'echo via-containerd; exit 4');
    assert.equal(r.stdout.trim(), 'via-containerd', `${r.stderr}\n${dlog.slice(-2000)}`);
    assert.equal(r.status, 4);
    assert.equal(ctr('containers', 'ls', '-q').stdout.trim(), '');
  } finally {
    daemon.kill('SIGTERM');
    await new Promise((res) => daemon.once('exit', res));
    spawnSync('umount', ['-R', join(base, 'state')]);
    removeCgroupTree(`${s.cgroupParent}/ctr`);
  }
});
