import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createCgroupManager, defaultCgroupsPath, normalizeCgroupsPath } from './manager.ts';
import { findCgroupMounts } from './detect.ts';
import { DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, SpecError, UnimplementedError } from '../../errors.ts';
import { blkioWeightToIoWeight, parseControllers, sharesToWeight, swapToV2, V2Manager } from './v2.ts';
import { UNLIMITED } from './types.ts';
import { leakedTestCgroups, spawnSleeper, testParentName, waitFor, killQuietly } from './testutil.ts';

const v2mount = findCgroupMounts().v2;

test('cgroupsPath rules', () => {
  assert.equal(normalizeCgroupsPath('/a//b/./c/'), '/a/b/c');
  assert.equal(normalizeCgroupsPath('a/b'), 'a/b');
  assert.equal(defaultCgroupsPath('ctr-1'), 'ctr-1');
  assert.throws(() => defaultCgroupsPath('a/b'), InvalidArgumentError);
  assert.throws(() => normalizeCgroupsPath('/a/../b'), InvalidArgumentError);
  assert.throws(() => normalizeCgroupsPath(''), InvalidArgumentError);
  assert.throws(() => normalizeCgroupsPath('/'), InvalidArgumentError);
  assert.throws(() => normalizeCgroupsPath('system.slice:corral:abc'), UnimplementedError);
  assert.throws(() => createCgroupManager({ cgroupsPath: '/x', systemd: true }), (e: Error) => e instanceof UnimplementedError && /systemd/.test(e.message) && /cgroupfs/.test(e.message));
});

test('conversions', () => {
  assert.equal(sharesToWeight(2), 1);
  assert.equal(sharesToWeight(1024), 39);
  assert.equal(sharesToWeight(262144), 10000);
  assert.equal(blkioWeightToIoWeight(10), 1);
  assert.equal(blkioWeightToIoWeight(1000), 10000);
  assert.equal(blkioWeightToIoWeight(500), 4950);
  assert.equal(swapToV2(300, 100), 200);
  assert.equal(swapToV2(0, -1), -1);
  assert.equal(swapToV2(-1, 100), -1);
  assert.equal(swapToV2(0, 100), 0);
  assert.throws(() => swapToV2(50, 100), SpecError);
  assert.throws(() => swapToV2(50, 0), SpecError);
  assert.deepEqual([...parseControllers('+cpu +memory -cpu io')], ['memory', 'io']);
});

test('v2 on the real cgroup2 mount', { skip: v2mount ? false : 'no cgroup2 mount' }, async (t) => {
  const root = v2mount!.mountPoint;
  const subtreeBefore = fs.readFileSync(path.join(root, 'cgroup.subtree_control'), 'utf8');
  const parent = `/${testParentName()}`;
  const parentMgr = createCgroupManager({ cgroupsPath: parent, mode: 'v2', root });
  const mgr = createCgroupManager({ cgroupsPath: `${parent}/c1`, mode: 'v2', root }) as V2Manager;
  const sleeper = spawnSleeper();
  const events = (): string => fs.readFileSync(path.join(mgr.dir, 'cgroup.events'), 'utf8');
  try {
    await t.test('create and apply', async () => {
      mgr.create();
      assert.equal(mgr.dir, path.join(root, parent, 'c1'));
      assert.ok(mgr.exists());
      assert.deepEqual(mgr.cgroupProcsPaths(), [path.join(mgr.dir, 'cgroup.procs')]);
      await mgr.apply(sleeper.child.pid!);
      sleeper.go();
      await waitFor(() => mgr.pids().length === 3, 'shell + 2 children');
      assert.match(fs.readFileSync(`/proc/${sleeper.child.pid}/cgroup`, 'utf8'), new RegExp(`^0::${parent}/c1$`, 'm'));
      assert.match(events(), /^populated 1$/m);
    });

    await t.test('set: needs only available controllers; devices come back as a program', () => {
      const offered = parseControllers(fs.readFileSync(path.join(root, 'cgroup.controllers'), 'utf8'));
      const r = mgr.set({ devices: [{ allow: false }, { allow: true, type: 'c', major: 1, minor: 3 }] });
      assert.ok(r.deviceProgram && r.deviceProgram.length > 0 && r.deviceProgram.length % 8 === 0);
      assert.deepEqual(mgr.set({}), { warnings: [] });
      if (!offered.has('pids')) {
        assert.throws(() => mgr.set({ pids: { limit: 10 } }), (e: Error) => e instanceof FailedPreconditionError && /pids/.test(e.message));
      }
      assert.throws(() => mgr.set({ unified: { 'nosuchctl.max': '1' } }), (e: Error) => e instanceof FailedPreconditionError && /nosuchctl/.test(e.message));
      assert.throws(() => mgr.set({ unified: { '../cgroup.procs': '1' } }), SpecError);
      // core files need no controller
      mgr.set({ unified: { 'cgroup.max.descendants': '5' } });
      assert.equal(fs.readFileSync(path.join(mgr.dir, 'cgroup.max.descendants'), 'utf8').trim(), '5');
    });

    await t.test('freeze waits for "frozen 1"; thaw', async () => {
      await mgr.freeze();
      assert.match(events(), /^frozen 1$/m);
      assert.equal(mgr.state(), 'paused');
      assert.match(fs.readFileSync(`/proc/${sleeper.child.pid}/status`, 'utf8'), /^State:\s+S/m);
      mgr.thaw();
      await waitFor(() => /^frozen 0$/m.test(events()), 'thawed');
      assert.equal(mgr.state(), 'running');
    });

    await t.test('stats', () => {
      const s = mgr.stats();
      assert.ok(s.cpu.usage.total > 0, 'cpu.stat usage_usec is reported in ns');
      assert.equal(s.cpu.usage.total % 1000, 0);
      assert.deepEqual(s.cpu.usage.percpu, []);
    });

    await t.test('killAll via cgroup.kill; destroy of a frozen cgroup', async () => {
      await mgr.freeze();
      mgr.killAll('SIGKILL'); // cgroup v2 kills frozen tasks too
      assert.equal(await sleeper.exited, 'SIGKILL');
      await mgr.destroy();
      assert.equal(fs.existsSync(mgr.dir), false);
      assert.equal(mgr.state(), 'absent');
    });

    await t.test('destroy kills what is left, nested first', async () => {
      const m2 = createCgroupManager({ cgroupsPath: `${parent}/c2`, mode: 'v2', root });
      const n2 = createCgroupManager({ cgroupsPath: `${parent}/c2/inner`, mode: 'v2', root });
      const s2 = spawnSleeper(1);
      await m2.apply(s2.child.pid!);
      s2.go();
      await waitFor(() => m2.pids().length === 2, 'two processes');
      await n2.apply(m2.pids().find((p) => p !== s2.child.pid)!);
      await m2.freeze();
      await m2.destroy();
      assert.equal(await s2.exited, 'SIGKILL');
      assert.equal(fs.existsSync(m2.dirs()[0]), false);
    });
  } finally {
    killQuietly(sleeper.child.pid);
    await mgr.destroy().catch(() => {});
    await parentMgr.destroy();
  }
  assert.equal(fs.readFileSync(path.join(root, 'cgroup.subtree_control'), 'utf8'), subtreeBefore, 'root subtree_control untouched');
  assert.deepEqual(leakedTestCgroups(), []);
});

// ---- fake cgroupfs

const LEAF_FILES: Record<string, string> = {
  'cgroup.procs': '', 'cgroup.subtree_control': '', 'cgroup.freeze': '0', 'cgroup.events': 'populated 0\nfrozen 0\n', 'cgroup.kill': '',
  'memory.max': 'max', 'memory.swap.max': 'max', 'memory.low': '0', 'memory.high': 'max', 'memory.oom.group': '0', 'memory.current': '4096',
  'memory.events': 'low 0\nhigh 0\nmax 7\noom 1\noom_kill 3\n', 'memory.stat': 'anon 100\nfile 200\nkernel 300\nsock 4\n', 'memory.peak': '8192',
  'memory.swap.current': '1000', 'memory.swap.events': 'high 0\nmax 0\nfail 2\n',
  'cpu.weight': '100', 'cpu.max': '50000 100000', 'cpu.max.burst': '0', 'cpu.idle': '0',
  'cpu.stat': 'usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 3\nnr_throttled 1\nthrottled_usec 5\n',
  'cpuset.cpus': '', 'cpuset.mems': '', 'pids.max': 'max', 'pids.current': '2', 'io.weight': 'default 100', 'io.max': '',
  'io.stat': '8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n',
  'hugetlb.2MB.max': 'max', 'hugetlb.2MB.rsvd.max': 'max', 'hugetlb.2MB.current': '0', 'hugetlb.2MB.events': 'max 1\n', 'hugetlb.1GB.max': 'max',
  'rdma.max': '',
};

function fakeV2(): { root: string; proc: string; populate: (rel: string, files?: Record<string, string>) => void; cleanup: () => void } {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-fakev2-'));
  const root = path.join(tmp, 'cg');
  fs.mkdirSync(root);
  fs.writeFileSync(path.join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids rdma misc\n');
  fs.writeFileSync(path.join(root, 'cgroup.subtree_control'), '');
  fs.writeFileSync(path.join(root, 'cgroup.procs'), '');
  const populate = (rel: string, files = LEAF_FILES): void => {
    const d = path.join(root, rel);
    fs.mkdirSync(d, { recursive: true });
    for (const [f, v] of Object.entries(files)) if (!fs.existsSync(path.join(d, f))) fs.writeFileSync(path.join(d, f), v);
  };
  const proc = path.join(tmp, 'proc');
  fs.mkdirSync(path.join(proc, 'self'), { recursive: true });
  fs.writeFileSync(path.join(proc, 'self', 'cgroup'), '0::/runtime.slice\n');
  return { root, proc, populate, cleanup: () => fs.rmSync(tmp, { recursive: true, force: true }) };
}

test('v2 fake cgroupfs: every write and subtree_control enabling', async () => {
  const f = fakeV2();
  try {
    const m = createCgroupManager({ cgroupsPath: '/k8s/pod/ctr', root: f.root, procfs: f.proc, warn: () => {} }) as V2Manager;
    assert.equal(m.mode, 'v2'); // from the layout
    assert.throws(() => m.set({ pids: { limit: 1 } }), FailedPreconditionError); // not created yet
    m.create();
    for (const rel of ['k8s', 'k8s/pod']) f.populate(rel, { 'cgroup.subtree_control': '', 'cgroup.procs': '' });
    f.populate('k8s/pod/ctr');
    const rd = (file: string, rel = 'k8s/pod/ctr'): string => fs.readFileSync(path.join(f.root, rel, file), 'utf8');

    const res = m.set({
      memory: { limit: 1 << 30, swap: 3 << 29, reservation: 1 << 28, kernel: 5, swappiness: 10, disableOOMKiller: true, checkBeforeUpdate: true },
      cpu: { shares: 1024, quota: 20000, period: 100000, burst: 500, idle: 1, cpus: '0-1', mems: '0' },
      pids: { limit: 0 },
      blockIO: {
        weight: 500,
        weightDevice: [{ major: 8, minor: 0, weight: 1000 }],
        throttleReadBpsDevice: [{ major: 8, minor: 0, rate: 1048576 }],
        throttleWriteIOPSDevice: [{ major: 8, minor: 16, rate: 0 }],
      },
      hugepageLimits: [{ pageSize: '2MB', limit: 4194304 }],
      rdma: { mlx5_0: { hcaHandles: 3, hcaObjects: 100 } },
      unified: { 'memory.high': '805306368' },
      devices: [{ allow: false }],
    });
    // subtree_control: exactly the needed controllers, in every ancestor, not in the leaf
    const need = ['cpu', 'cpuset', 'hugetlb', 'io', 'memory', 'pids', 'rdma'];
    for (const rel of ['', 'k8s', 'k8s/pod']) assert.deepEqual([...parseControllers(rd('cgroup.subtree_control', rel))].sort(), need, `subtree_control of /${rel}`);
    assert.equal(rd('cgroup.subtree_control'), '');
    assert.equal(rd('memory.max'), String(1 << 30));
    assert.equal(rd('memory.swap.max'), String((3 << 29) - (1 << 30)));
    assert.equal(rd('memory.low'), String(1 << 28));
    assert.equal(rd('memory.high'), '805306368');
    assert.equal(rd('memory.oom.group'), '0'); // oomGroup option is off
    assert.equal(rd('cpu.weight'), '39');
    assert.equal(rd('cpu.max'), '20000 100000');
    assert.equal(rd('cpu.max.burst'), '500');
    assert.equal(rd('cpu.idle'), '1');
    assert.equal(rd('cpuset.cpus'), '0-1');
    assert.equal(rd('cpuset.mems'), '0');
    assert.equal(rd('pids.max'), 'max');
    assert.equal(rd('io.weight'), '8:0 10000'); // each write replaces the fake file; the device weight came last
    assert.equal(rd('io.max'), '8:16 wiops=max');
    assert.equal(rd('hugetlb.2MB.max'), '4194304');
    assert.equal(rd('hugetlb.2MB.rsvd.max'), '4194304');
    assert.equal(rd('rdma.max'), 'mlx5_0 hca_handle=3 hca_object=100');
    assert.ok(res.deviceProgram);
    assert.deepEqual(res.warnings.map((w) => w.split(' ')[0]), [
      'linux.resources.memory.kernel', 'linux.resources.memory.swappiness', 'linux.resources.memory.disableOOMKiller',
    ]);

    // one write at a time, to see values that a later write in the same set() replaces
    m.set({ blockIO: { weight: 500 } });
    assert.equal(rd('io.weight'), '4950');
    m.set({ blockIO: { throttleReadBpsDevice: [{ major: 8, minor: 0, rate: 1048576 }] } });
    assert.equal(rd('io.max'), '8:0 rbps=1048576');
    fs.writeFileSync(path.join(f.root, 'k8s/pod/ctr', 'io.bfq.weight'), '100');
    m.set({ blockIO: { weight: 300 } });
    assert.equal(rd('io.bfq.weight'), '300');
    // period only: the quota is kept
    fs.writeFileSync(path.join(f.root, 'k8s/pod/ctr', 'cpu.max'), '30000 100000');
    m.set({ cpu: { period: 50000 } });
    assert.equal(rd('cpu.max'), '30000 50000');
    m.set({ cpu: { quota: -1 } });
    assert.equal(rd('cpu.max'), 'max');
    m.set({ memory: { limit: -1 } });
    assert.equal(rd('memory.max'), 'max');
    assert.equal(rd('memory.swap.max'), 'max');
    m.set({ pids: { limit: 42 } });
    assert.equal(rd('pids.max'), '42');

    assert.throws(() => m.set({ memory: { limit: 1024, checkBeforeUpdate: true } }), FailedPreconditionError); // current 4096
    assert.throws(() => m.set({ cpu: { realtimeRuntime: 1000 } }), FailedPreconditionError);
    assert.throws(() => m.set({ network: { classID: 1 } }), FailedPreconditionError);
    assert.throws(() => m.set({ unified: { 'cgroup.procs': '1' } }), SpecError);
    assert.throws(() => m.set({ unified: { 'memory/../x': '1' } }), SpecError);
    assert.throws(() => m.set({ unified: { 'memory.nonexistent': '1' } }), FailedPreconditionError);
    assert.throws(() => m.set({ hugepageLimits: [{ pageSize: '64KB', limit: 1 }] }), FailedPreconditionError);
    assert.throws(() => m.set({ memory: { swap: 100, limit: 200 } }), SpecError);

    // a controller the hierarchy does not offer
    fs.writeFileSync(path.join(f.root, 'cgroup.controllers'), 'cpu memory\n');
    fs.writeFileSync(path.join(f.root, 'cgroup.subtree_control'), 'cpu memory\n');
    fs.writeFileSync(path.join(f.root, 'k8s', 'cgroup.subtree_control'), 'cpu memory\n');
    assert.throws(() => m.set({ pids: { limit: 5 } }), (e: Error) => e instanceof FailedPreconditionError && /pids/.test(e.message) && /not available/.test(e.message));

    // stats
    const s = m.stats();
    assert.deepEqual(s.cpu.usage, { total: 10000, percpu: [], percpuKernel: [], percpuUser: [], kernel: 4000, user: 6000 });
    assert.deepEqual(s.cpu.throttling, { periods: 3, throttledPeriods: 1, throttledTime: 5000 });
    assert.deepEqual(s.memory.usage, { usage: 4096, limit: UNLIMITED, max: 8192, failcnt: 7 });
    assert.equal(s.memory.swap.usage, 1000 + 4096);
    assert.equal(s.memory.swap.failcnt, 2);
    assert.equal(s.memory.cache, 200);
    assert.equal(s.memory.raw.anon, 100);
    assert.equal(s.memory.oomKill, 3);
    assert.equal(m.oomKillCount(), 3);
    assert.deepEqual(s.pids, { current: 2, limit: 42 });
    assert.deepEqual(s.blkio.ioServiceBytesRecursive.filter((e) => e.value > 0), [{ major: 8, minor: 0, op: 'Read', value: 10 }, { major: 8, minor: 0, op: 'Write', value: 20 }]);
    assert.deepEqual(s.hugetlb, { '1GB': { usage: 0, max: 0, failcnt: 0 }, '2MB': { usage: 0, max: 0, failcnt: 1 } });

    // kill uses cgroup.kill
    m.killAll('SIGKILL');
    assert.equal(rd('cgroup.kill'), '1');

    // freeze: the fake "kernel" completes it a moment later
    const p = m.freeze();
    assert.equal(rd('cgroup.freeze'), '1');
    assert.equal(m.state(), 'freezing');
    setTimeout(() => fs.writeFileSync(path.join(f.root, 'k8s/pod/ctr', 'cgroup.events'), 'populated 0\nfrozen 1\n'), 5);
    await p;
    assert.equal(m.state(), 'paused');
    m.thaw();
    assert.equal(rd('cgroup.freeze'), '0');
    fs.writeFileSync(path.join(f.root, 'k8s/pod/ctr', 'cgroup.events'), 'populated 0\nfrozen 0\n');

    // a freeze that never completes: deadline, and the cgroup is thawed again
    const slow = createCgroupManager({ cgroupsPath: '/k8s/pod/ctr', root: f.root, procfs: f.proc, timeoutMs: 50 });
    await assert.rejects(slow.freeze(), DeadlineExceededError);
    assert.equal(rd('cgroup.freeze'), '0');

    await m.destroy();
    assert.equal(fs.existsSync(path.join(f.root, 'k8s/pod/ctr')), false);
    assert.ok(fs.existsSync(path.join(f.root, 'k8s/pod')));
  } finally {
    f.cleanup();
  }
});

test('v2 fake: oomGroup option and relative paths', () => {
  const f = fakeV2();
  try {
    const m = createCgroupManager({ cgroupsPath: 'ctr', root: f.root, procfs: f.proc, oomGroup: true }) as V2Manager;
    assert.equal(m.dir, path.join(f.root, 'runtime.slice', 'ctr'));
    m.create();
    f.populate('runtime.slice', { 'cgroup.subtree_control': '', 'cgroup.procs': '' });
    f.populate('runtime.slice/ctr');
    m.set({ memory: { limit: 1 << 20 } });
    assert.equal(fs.readFileSync(path.join(m.dir, 'memory.oom.group'), 'utf8'), '1');
    assert.deepEqual([...parseControllers(fs.readFileSync(path.join(f.root, 'runtime.slice', 'cgroup.subtree_control'), 'utf8'))], ['memory']);
  } finally {
    f.cleanup();
  }
});
