// What the container sees: namespaces, hostname, mounts, devices, masked/read-only paths, capabilities, users, rlimits.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { waitFor } from '../helpers/wait.ts';
import { suite, runToEnd } from '../helpers/oci.ts';

const s = suite('iso');
after(() => s.finish());

const sh = (script: string) => ['/bin/sh', '-c', script];

test('every configured namespace is new; hostname and domainname are set', () => {
  const r = runToEnd(s, 'ns', sh('for n in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$n; done; echo $$; hostname; cat /proc/sys/kernel/domainname'), (sp) => {
    sp.hostname = 'nsbox';
    sp.domainname = 'example.test';
  });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  const host = ['pid', 'net', 'ipc', 'uts', 'mnt', 'cgroup'].map((n) => readlinkSync(`/proc/self/ns/${n}`));
  for (let i = 0; i < 6; i++) assert.notEqual(lines[i], host[i], `namespace ${lines[i]} differs from the host's`);
  assert.equal(lines[6], '1', 'the process is pid 1 of its pid namespace');
  assert.equal(lines[7], 'nsbox');
  assert.equal(lines[8], 'example.test');
});

test('joining a namespace by path shares it', async () => {
  // A network namespace of our own, held by a sleeping process.
  const holder = spawn('unshare', ['--net', 'sleep', '60'], { stdio: 'ignore' });
  await waitFor(() => readlinkSync(`/proc/${holder.pid}/ns/net`) !== readlinkSync('/proc/self/ns/net'), 5000, 'holder in its netns');
  const nsPath = `/proc/${holder.pid}/ns/net`;
  try {
    const r = runToEnd(s, 'joinns', sh('readlink /proc/self/ns/net'), (sp) => {
      sp.linux!.namespaces = sp.linux!.namespaces!.map((n) => (n.type === 'network' ? { type: 'network', path: nsPath } : n));
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), readlinkSync(nsPath));
  } finally {
    holder.kill('SIGKILL');
  }
});

test('a user namespace maps ids', () => {
  // The container's root (host uid 100000) must be able to reach the bundle, as with runc.
  chmodSync(s.work, 0o755);
  const r = runToEnd(s, 'userns', sh('cat /proc/self/uid_map /proc/self/gid_map; id -u'), (sp) => {
    sp.linux!.namespaces!.push({ type: 'user' });
    sp.linux!.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
    sp.linux!.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
    sp.mounts = sp.mounts!.filter((m) => m.type !== 'cgroup');
  });
  assert.equal(r.status, 0, r.stderr);
  const [uid, gid, me] = r.stdout.trim().split('\n');
  assert.deepEqual(uid.trim().split(/\s+/), ['0', '100000', '65536']);
  assert.deepEqual(gid.trim().split(/\s+/), ['0', '100000', '65536']);
  assert.equal(me, '0');
});

test('default devices, /dev links, /dev/pts and /dev/shm exist', () => {
  const r = runToEnd(s, 'dev', sh('ls -l /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty | cut -c1; for l in /dev/fd /dev/stdin /dev/ptmx; do readlink $l; done; echo x > /dev/null && echo null-ok; head -c 4 /dev/zero | od -An -tx1; mount | grep -E " /dev/(pts|shm) " | cut -d" " -f3'));
  assert.equal(r.status, 0, r.stderr);
  const out = r.stdout.split('\n');
  assert.deepEqual(out.slice(0, 6), ['c', 'c', 'c', 'c', 'c', 'c']);
  assert.deepEqual(out.slice(6, 9), ['/proc/self/fd', '/proc/self/fd/0', 'pts/ptmx']);
  assert.equal(out[9], 'null-ok');
  assert.equal(out[10].trim(), '00 00 00 00');
  assert.deepEqual(out.slice(11, 13).sort(), ['/dev/pts', '/dev/shm']);
});

test('masked paths are empty and read-only paths refuse writes', () => {
  // Mask a file and a directory that exist on this host (some kernels have no /proc/kcore).
  const maskedFile = ['/proc/kcore', '/proc/keys', '/proc/timer_list'].find((p) => existsSync(p))!;
  const r = runToEnd(s, 'mask', sh(`wc -c < ${maskedFile}; ls /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo writable || echo ro; echo x > /etc/probe && echo rootfs-writable`), (sp) => {
    sp.linux!.readonlyPaths = ['/proc/sys'];
    sp.linux!.maskedPaths = [maskedFile, '/sys/firmware'];
  });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n').map((l) => l.trim()), ['0', '0', 'ro', 'rootfs-writable']);
});

test('root.readonly makes the rootfs read-only', () => {
  const r = runToEnd(s, 'rofs', sh('touch /probe 2>/dev/null && echo writable || echo readonly'), (sp) => { sp.root!.readonly = true; });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'readonly');
});

test('bind mounts (file and dir, ro) and tmpfs options apply', () => {
  const b = s.bundle(sh('cat /etc/hostfile; ls /data; touch /data/x 2>/dev/null && echo rw || echo ro; mount | grep " /scratch " | grep -o "size=[0-9]*k"'));
  mkdirSync(`${b.dir}/data`);
  writeFileSync(`${b.dir}/data/inside`, '');
  writeFileSync(`${b.dir}/hostfile`, 'from-host\n');
  b.spec.mounts!.push(
    { destination: '/etc/hostfile', type: 'bind', source: `${b.dir}/hostfile`, options: ['bind', 'ro'] },
    { destination: '/data', type: 'bind', source: 'data', options: ['rbind', 'ro'] },
    { destination: '/scratch', type: 'tmpfs', source: 'tmpfs', options: ['size=1024k', 'mode=700'] },
  );
  b.write();
  const r = s.oci(['run', '--bundle', b.dir, s.id('binds')]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n'), ['from-host', 'inside', 'ro', 'size=1024k']);
});

test('capabilities are reduced to the configured sets', () => {
  const r = runToEnd(s, 'caps', sh('grep -E "^Cap(Inh|Prm|Eff|Bnd|Amb)" /proc/self/status'), (sp) => {
    sp.process!.capabilities = { bounding: ['CAP_KILL', 'CAP_CHOWN'], effective: ['CAP_KILL'], permitted: ['CAP_KILL'], inheritable: [], ambient: [] };
  });
  assert.equal(r.status, 0, r.stderr);
  const caps = Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split(':\t')));
  assert.equal(BigInt(`0x${caps.CapBnd}`), (1n << 5n) | 1n);
  assert.equal(BigInt(`0x${caps.CapEff}`), 1n << 5n);
  assert.equal(BigInt(`0x${caps.CapPrm}`), 1n << 5n);
  assert.equal(BigInt(`0x${caps.CapInh}`), 0n);
  assert.equal(BigInt(`0x${caps.CapAmb}`), 0n);
});

test('user, groups, umask, cwd, env, rlimits and no_new_privs apply', () => {
  const r = runToEnd(s, 'user', sh('id -u; id -g; id -G; umask; pwd; echo $GREETING; ulimit -n; grep NoNewPrivs /proc/self/status | cut -f2'), (sp) => {
    sp.process!.user = { uid: 1000, gid: 1001, additionalGids: [2000, 2001], umask: 0o027 };
    sp.process!.cwd = '/tmp';
    sp.process!.env!.push('GREETING=hello');
    sp.process!.rlimits = [{ type: 'RLIMIT_NOFILE', soft: 321, hard: 654 }];
    sp.process!.noNewPrivileges = true;
  });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n'), ['1000', '1001', '1001 2000 2001', '0027', '/tmp', 'hello', '321', '1']);
});

test('sysctls in owned namespaces are written', () => {
  const r = runToEnd(s, 'sysctl', sh('cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni'), (sp) => {
    sp.linux!.sysctl = { 'net.ipv4.ip_forward': '1', 'kernel.shmmni': '1234' };
  });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n'), ['1', '1234']);
});

test('the container sees its own cgroup at /sys/fs/cgroup', () => {
  const r = runToEnd(s, 'cgview', sh('ls /sys/fs/cgroup/memory/memory.limit_in_bytes && cat /sys/fs/cgroup/memory/memory.limit_in_bytes'), (sp) => {
    sp.linux!.resources = { ...sp.linux!.resources, memory: { limit: 64 * 1024 * 1024 } };
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n')[1], String(64 * 1024 * 1024));
});

test('mount and uts namespaces joined by path are used (and the hostname is set in the joined uts namespace)', async () => {
  const holder = spawn('unshare', ['--mount', '--uts', 'sleep', '60'], { stdio: 'ignore' });
  await waitFor(() => readlinkSync(`/proc/${holder.pid}/ns/uts`) !== readlinkSync('/proc/self/ns/uts'), 5000, 'holder in its namespaces');
  try {
    const r = runToEnd(s, 'joinmnt', sh('readlink /proc/self/ns/mnt; readlink /proc/self/ns/uts; hostname'), (sp) => {
      sp.hostname = 'joined-uts';
      sp.linux!.namespaces = sp.linux!.namespaces!.map((n) =>
        n.type === 'mount' ? { type: 'mount', path: `/proc/${holder.pid}/ns/mnt` } : n.type === 'uts' ? { type: 'uts', path: `/proc/${holder.pid}/ns/uts` } : n);
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [readlinkSync(`/proc/${holder.pid}/ns/mnt`), readlinkSync(`/proc/${holder.pid}/ns/uts`), 'joined-uts']);
  } finally {
    holder.kill('SIGKILL');
  }
});

test('without a mount namespace the init chroots, and delete removes the mounts it made under the rootfs', () => {
  const b = s.bundle(sh('ls /proc/self >/dev/null && echo proc-ok; readlink /proc/self/ns/mnt'), (sp) => {
    sp.linux!.namespaces = sp.linux!.namespaces!.filter((n) => n.type !== 'mount' && n.type !== 'cgroup');
    sp.mounts = sp.mounts!.filter((m) => ['/proc', '/dev', '/dev/pts'].includes(m.destination));
    sp.linux!.maskedPaths = [];
    sp.linux!.readonlyPaths = [];
  });
  const id = s.id('nomntns');
  assert.equal(s.oci(['create', '--bundle', b.dir, id]).status, 0);
  const mountsWhileCreated = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(b.rootfs)).length;
  assert.ok(mountsWhileCreated >= 3, 'proc, dev and dev/pts are mounted under the rootfs in the host namespace');
  const r = s.oci(['start', id]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(s.oci(['delete', '--force', id]).status, 0);
  assert.equal(readFileSync('/proc/self/mountinfo', 'utf8').includes(b.rootfs), false, 'no mount left under the rootfs');
});

test('device nodes get exactly the configured mode, owner and numbers', () => {
  const r = runToEnd(s, 'devmode', sh('stat -c "%a %u %g %t %T %F" /dev/fuse /dev/net/tun'), (sp) => {
    sp.linux!.devices = [
      { path: '/dev/fuse', type: 'c', major: 10, minor: 229, fileMode: 0o660, uid: 7, gid: 8 },
      { path: '/dev/net/tun', type: 'c', major: 10, minor: 200, fileMode: 0o600 },
    ];
  });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n'), ['660 7 8 a e5 character special file', '600 0 0 a c8 character special file']);
});

test('rshared root propagation: a bidirectional bind mount carries mounts both ways, the rootfs leaks nothing', async () => {
  const shared = join(s.work, 'shared-dir');
  mkdirSync(shared);
  // The host side: a shared mount of our own.
  execFileSync('mount', ['--bind', shared, shared]);
  execFileSync('mount', ['--make-rshared', shared]);
  try {
    const b = s.bundle(sh('mkdir -p /shared/inner && mount -t tmpfs -o size=64k tmpfs /shared/inner && touch /shared/inner/ok && sleep 100'), (sp) => {
      sp.linux!.rootfsPropagation = 'rshared';
      sp.mounts!.push({ destination: '/shared', type: 'bind', source: shared, options: ['rbind', 'rshared'] });
      sp.process!.capabilities = { bounding: ['CAP_SYS_ADMIN'], effective: ['CAP_SYS_ADMIN'], permitted: ['CAP_SYS_ADMIN'] };
    });
    const id = s.id('rshared');
    const r = s.oci(['run', '-d', '--bundle', b.dir, id]);
    assert.equal(r.status, 0, r.stderr);
    await waitFor(() => existsSync(join(shared, 'inner/ok')), 10000, 'the container mounted inside the shared dir');
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
    assert.ok(mounts.includes(`${shared}/inner `), 'the container\'s mount reached the host');
    assert.equal(mounts.includes(`${b.rootfs}/proc `), false, 'mounts under the rootfs stay in the container');
    assert.equal(s.oci(['delete', '--force', id]).status, 0);
    execFileSync('umount', [join(shared, 'inner')]);
  } finally {
    execFileSync('umount', ['-R', shared]);
  }
});

test('a new time namespace with a boottime offset', () => {
  const hostUptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  const r = runToEnd(s, 'timens', sh('readlink /proc/self/ns/time; cut -d" " -f1 /proc/uptime'), (sp) => {
    sp.linux!.namespaces!.push({ type: 'time' });
    sp.linux!.timeOffsets = { boottime: { secs: 86400 * 365, nanosecs: 0 } };
  });
  assert.equal(r.status, 0, r.stderr);
  const [ns, uptime] = r.stdout.trim().split('\n');
  assert.notEqual(ns, readlinkSync('/proc/self/ns/time'));
  assert.ok(Number(uptime) >= hostUptime + 86400 * 365, `container uptime ${uptime} includes the offset`);
});
