import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  cgroupDirOnMount, cgroupMountsFromLayout, cgroupMountsFromMountInfo, detectCgroupMode, detectCgroupModeByStatfs,
  findCgroupMounts, modeFromMounts, ownCgroup, parseMountInfo, parseProcCgroup,
} from './detect.ts';
import { FailedPreconditionError } from '../../errors.ts';

const PURE_V2 = `22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
26 23 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
27 25 0:40 / /mnt/with\\040space rw,relatime shared:20 - tmpfs tmpfs rw
`;

const HYBRID = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;

const V1 = `24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
28 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
29 24 0:25 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,net_cls,net_prio
30 24 0:26 /docker/abc /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
31 24 0:27 / /sys/fs/cgroup/hugetlb rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,hugetlb
`;

test('parseMountInfo reads fields and unescapes octal', () => {
  const e = parseMountInfo(PURE_V2);
  assert.equal(e.length, 4);
  assert.deepEqual(
    { id: e[2].mountId, parent: e[2].parentId, mm: e[2].majorMinor, root: e[2].root, mp: e[2].mountPoint, fs: e[2].fsType, so: e[2].superOptions },
    { id: 26, parent: 23, mm: '0:23', root: '/', mp: '/sys/fs/cgroup', fs: 'cgroup2', so: 'rw,nsdelegate,memory_recursiveprot' },
  );
  assert.equal(e[3].mountPoint, '/mnt/with space');
});

test('pure v2 fixture', () => {
  const m = cgroupMountsFromMountInfo(PURE_V2);
  assert.equal(m.v1.size, 0);
  assert.equal(m.v2?.mountPoint, '/sys/fs/cgroup');
  assert.equal(modeFromMounts(m), 'v2');
});

test('hybrid fixture: cpu and cpuacct are separate hierarchies', () => {
  const m = cgroupMountsFromMountInfo(HYBRID);
  assert.equal(modeFromMounts(m), 'hybrid');
  assert.equal(m.v1.get('cpu')?.mountPoint, '/sys/fs/cgroup/cpu');
  assert.equal(m.v1.get('cpuacct')?.mountPoint, '/sys/fs/cgroup/cpuacct');
  assert.notEqual(m.v1.get('cpu'), m.v1.get('cpuacct'));
  assert.equal(m.v1.get('name=systemd')?.mountPoint, '/sys/fs/cgroup/systemd');
  assert.equal(m.v2?.mountPoint, '/sys/fs/cgroup/unified');
  assert.equal(m.v1.has('hugetlb'), false);
});

test('v1 fixture: co-mounted controllers share one hierarchy; mount root is kept', () => {
  const m = cgroupMountsFromMountInfo(V1);
  assert.equal(modeFromMounts(m), 'v1');
  assert.equal(m.v1.get('cpu'), m.v1.get('cpuacct'));
  assert.deepEqual(m.v1.get('cpu')?.controllers, ['cpu', 'cpuacct']);
  assert.equal(m.v1.get('net_prio')?.mountPoint, '/sys/fs/cgroup/net_cls,net_prio');
  const mem = m.v1.get('memory');
  assert.ok(mem);
  assert.equal(mem.root, '/docker/abc');
  // /proc/self/cgroup paths are hierarchy paths; map them through the mount root
  assert.equal(cgroupDirOnMount(mem, '/docker/abc/sub'), '/sys/fs/cgroup/memory/sub');
  assert.equal(cgroupDirOnMount(mem, '/other'), '/sys/fs/cgroup/memory');
  assert.equal(m.v2, undefined);
});

test('no cgroup mounts → FailedPrecondition', () => {
  assert.throws(() => modeFromMounts(cgroupMountsFromMountInfo('22 1 0:21 / /proc rw - proc proc rw\n')), FailedPreconditionError);
});

test('parseProcCgroup: v1 lines, co-mounted, named and the v2 line', () => {
  const c = parseProcCgroup('12:cpu,cpuacct:/a\n4:memory:/process_api/x\n1:name=systemd:/init.scope\n0::/user.slice\n');
  assert.equal(c.v1.get('cpu'), '/a');
  assert.equal(c.v1.get('cpuacct'), '/a');
  assert.equal(c.v1.get('memory'), '/process_api/x');
  assert.equal(c.v1.get('name=systemd'), '/init.scope');
  assert.equal(c.v2, '/user.slice');
  assert.equal(parseProcCgroup('0::/\n').v1.size, 0);
});

test('functions take procfs / root parameters', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-detect-'));
  try {
    fs.mkdirSync(path.join(tmp, 'proc', 'self'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'proc', 'self', 'mountinfo'), V1);
    fs.writeFileSync(path.join(tmp, 'proc', 'self', 'cgroup'), '3:memory:/docker/abc\n0::/\n');
    assert.equal(detectCgroupMode(path.join(tmp, 'proc')), 'v1');
    assert.equal(ownCgroup(path.join(tmp, 'proc')).v1.get('memory'), '/docker/abc');
    assert.equal(findCgroupMounts({ procfs: path.join(tmp, 'proc') }).v1.get('hugetlb')?.mountPoint, '/sys/fs/cgroup/hugetlb');
    // A fake cgroupfs directory layout
    const root = path.join(tmp, 'cg');
    for (const d of ['cpu,cpuacct', 'memory', 'systemd', 'unified']) fs.mkdirSync(path.join(root, d), { recursive: true });
    fs.symlinkSync('cpu,cpuacct', path.join(root, 'cpu'));
    fs.writeFileSync(path.join(root, 'unified', 'cgroup.controllers'), '');
    const lay = cgroupMountsFromLayout(root);
    assert.equal(lay.v1.get('cpuacct')?.mountPoint, path.join(root, 'cpu,cpuacct'));
    assert.equal(lay.v1.get('name=systemd')?.mountPoint, path.join(root, 'systemd'));
    assert.equal(modeFromMounts(lay), 'hybrid');
    assert.equal(modeFromMounts(findCgroupMounts({ root, procfs: path.join(tmp, 'proc') })), 'hybrid');
    const v2root = path.join(tmp, 'v2');
    fs.mkdirSync(v2root);
    fs.writeFileSync(path.join(v2root, 'cgroup.controllers'), 'cpu memory');
    assert.equal(modeFromMounts(cgroupMountsFromLayout(v2root)), 'v2');
    assert.equal(detectCgroupModeByStatfs(tmp), undefined);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('real host: mountinfo and statfs agree', () => {
  const byMountinfo = detectCgroupMode();
  const byStatfs = detectCgroupModeByStatfs();
  if (byStatfs !== undefined) assert.equal(byStatfs, byMountinfo);
  const own = ownCgroup();
  if (byMountinfo === 'v2') assert.ok(own.v2 !== undefined);
  else assert.ok(own.v1.size > 0);
});
