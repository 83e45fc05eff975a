// CRI config → OCI spec pieces: command merge, env merge, user resolution in the image
// rootfs, capabilities, oom_score_adj clamping, resources.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clampOomScoreAdj, criResources, mergeCommand, mergeEnv, normalizeCap } from '../../../src/cri/spec/container.ts';
import { resolveUser } from '../../../src/cri/spec/user.ts';
import { resolvConf, sysctlNamespace } from '../../../src/cri/spec/sandbox-files.ts';

test('command/args merge with Kubernetes semantics', () => {
  const img = { Entrypoint: ['/ep'], Cmd: ['c1'] };
  assert.deepEqual(mergeCommand(img, [], []), ['/ep', 'c1']);
  assert.deepEqual(mergeCommand(img, ['/x'], []), ['/x']);
  assert.deepEqual(mergeCommand(img, [], ['a']), ['/ep', 'a']);
  assert.deepEqual(mergeCommand(img, ['/x'], ['a']), ['/x', 'a']);
});

test('env: image first, CRI overrides by name, defaults only when missing', () => {
  assert.deepEqual(mergeEnv(['PATH=/img', 'A=1'], [{ key: 'A', value: '2' }, { key: 'B', value: 'x=y' }], { PATH: '/def', HOSTNAME: 'h' }), ['PATH=/img', 'A=2', 'HOSTNAME=h', 'B=x=y']);
  assert.throws(() => mergeEnv([], [{ key: '', value: '' }], {}), /empty key/);
});

test('users and groups are resolved in the rootfs, symlinks cannot escape it', () => {
  const root = mkdtempSync(join(tmpdir(), 'crt-user-'));
  try {
    mkdirSync(join(root, 'etc'));
    writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n');
    writeFileSync(join(root, 'etc/group'), 'root:x:0:\napp:x:1001:\nextra:x:2000:app,other\n');
    assert.deepEqual(resolveUser(root, { imageUser: '' }), { uid: 0, gid: 0, additionalGids: [], username: 'root', home: '/root' });
    assert.deepEqual(resolveUser(root, { imageUser: 'app' }), { uid: 1000, gid: 1001, additionalGids: [2000], username: 'app', home: '/home/app' });
    assert.deepEqual(resolveUser(root, { imageUser: 'app:root' }).gid, 0);
    assert.deepEqual(resolveUser(root, { imageUser: 'app', runAsUser: 5, runAsGroup: 6, supplementalGroups: [7, 6] }), { uid: 5, gid: 6, additionalGids: [7], username: undefined, home: '/' });
    assert.throws(() => resolveUser(root, { imageUser: 'ghost' }), /not in the image's \/etc\/passwd/);
    // An image whose /etc/passwd is an absolute symlink resolves inside the rootfs, not on the host.
    rmSync(join(root, 'etc/passwd'));
    symlinkSync('/etc/shadow-not-here', join(root, 'etc/passwd'));
    assert.throws(() => resolveUser(root, { imageUser: 'root' }), /not in the image/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('capabilities, oom_score_adj, resources, sysctls, resolv.conf', () => {
  assert.equal(normalizeCap('net_admin', 'x'), 'CAP_NET_ADMIN');
  assert.throws(() => normalizeCap('BOGUS', 'where'), /where: unknown capability/);
  const w: string[] = [];
  assert.equal(clampOomScoreAdj(-998, 0, w), 0);
  assert.match(w[0]!, /CAP_SYS_RESOURCE/);
  assert.equal(clampOomScoreAdj(500, 0, w), 500);
  const r = criResources({ cpu_period: '100000', cpu_quota: '50000', cpu_shares: '256', memory_limit_in_bytes: '1048576', oom_score_adj: '0', cpuset_cpus: '0', cpuset_mems: '', hugepage_limits: [{ page_size: '2MB', limit: '0' }], unified: {}, memory_swap_limit_in_bytes: '0' }, false, []);
  assert.deepEqual(r, { cpu: { shares: 256, quota: 50000, period: 100000, cpus: '0' }, memory: { limit: 1048576 }, hugepageLimits: [{ pageSize: '2MB', limit: 0 }] });
  assert.equal(sysctlNamespace('net.core.somaxconn'), 'net');
  assert.equal(sysctlNamespace('kernel.shmmax'), 'ipc');
  assert.equal(sysctlNamespace('vm.swappiness'), null);
  assert.equal(resolvConf({ servers: ['1.1.1.1'], searches: ['a.b'], options: ['ndots:5'] }), 'nameserver 1.1.1.1\nsearch a.b\noptions ndots:5\n');
  assert.throws(() => resolvConf({ servers: ['not an ip'], searches: [], options: [] }), /not an IP/);
});
