import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createCgroupManager, type CgroupManager } from './manager.ts';
import { findCgroupMounts, modeFromMounts } from './detect.ts';
import { FailedPreconditionError, SpecError } from '../../errors.ts';
import { V1Manager } from './v1.ts';
import type { LinuxResources } from './types.ts';
import { killQuietly, leakedTestCgroups, spawnSleeper, testParentName, waitFor } from './testutil.ts';

const mounts = findCgroupMounts();
const hostMode = modeFromMounts(mounts);
const onV1 = hostMode === 'v1' || hostMode === 'hybrid';

const read = (dir: string | undefined, f: string): string => fs.readFileSync(path.join(dir!, f), 'utf8').trim();
const MiB = 1024 * 1024;

function wholeDisk(): string | undefined {
  for (const b of fs.readdirSync('/sys/block')) {
    if (/^(loop|ram|zram|dm-|sr)/.test(b)) continue;
    return fs.readFileSync(`/sys/block/${b}/dev`, 'utf8').trim();
  }
  return undefined;
}

test('v1 on the real host', { skip: onV1 ? false : `host runs cgroup ${hostMode}` }, async (t) => {
  const parent = `/${testParentName()}`;
  const parentMgr = createCgroupManager({ cgroupsPath: parent });
  const mgr = createCgroupManager({ cgroupsPath: `${parent}/c1`, warn: () => {} }) as V1Manager;
  const sub = createCgroupManager({ cgroupsPath: `${parent}/c1/nested` });
  const sleeper = spawnSleeper();
  const pids: number[] = [];
  try {
    await t.test('create: one directory per hierarchy; cpuset filled from the parent', () => {
      assert.equal(mgr.mode, hostMode);
      mgr.create();
      for (const d of mgr.dirs()) assert.ok(fs.statSync(d).isDirectory(), d);
      assert.equal(new Set(mgr.dirs()).size, mgr.dirs().length);
      if (mounts.v1.get('cpu') !== mounts.v1.get('cpuacct')) assert.notEqual(mgr.controllerDir('cpu'), mgr.controllerDir('cpuacct'));
      const cs = mgr.controllerDir('cpuset');
      if (cs) {
        const root = mounts.v1.get('cpuset')!.mountPoint;
        assert.equal(read(cs, 'cpuset.cpus'), read(root, 'cpuset.cpus'));
        assert.equal(read(cs, 'cpuset.mems'), read(root, 'cpuset.mems'));
        assert.equal(read(path.dirname(cs), 'cpuset.cpus'), read(root, 'cpuset.cpus'));
      }
      assert.ok(mgr.exists());
      assert.equal(mgr.state(), 'running');
      assert.deepEqual(mgr.cgroupProcsPaths(), mgr.dirs().map((d) => path.join(d, 'cgroup.procs')));
    });

    await t.test('apply: the process and its later children are in every hierarchy', async () => {
      await mgr.apply(sleeper.child.pid!);
      sleeper.go();
      await waitFor(() => mgr.pids().length === 3, 'shell + 2 children in the cgroup');
      pids.push(...mgr.pids());
      assert.ok(pids.includes(sleeper.child.pid!));
      const own = fs.readFileSync(`/proc/${sleeper.child.pid}/cgroup`, 'utf8');
      let checked = 0;
      for (const line of own.trim().split('\n')) {
        const [, ctrls, p] = line.split(':');
        if (ctrls === '' || !mgr.controllerDir(ctrls.split(',')[0])) continue;
        assert.equal(p, `${parent}/c1`, `${ctrls} membership`);
        checked++;
      }
      assert.equal(checked, mgr.dirs().length);
    });

    await t.test('set: memory (with memsw ordering), cpu, pids, cpuset, blkio, devices', () => {
      const mem = mgr.controllerDir('memory')!;
      const memsw = fs.existsSync(path.join(mem, 'memory.memsw.limit_in_bytes'));
      const res = mgr.set({
        memory: { limit: 64 * MiB, swap: memsw ? 128 * MiB : undefined, reservation: 32 * MiB, swappiness: 10, disableOOMKiller: false },
        cpu: { shares: 512, quota: 25000, period: 50000, cpus: '0', mems: '0' },
        pids: { limit: 20 },
        devices: [
          { allow: false, access: 'rwm' },
          { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' },
          { allow: true, type: 'c', major: 1, minor: 5, access: 'rw' },
          { allow: true, type: 'c', access: 'm' },
        ],
      });
      assert.deepEqual(res.warnings, []);
      assert.equal(res.deviceProgram, undefined);
      assert.equal(read(mem, 'memory.limit_in_bytes'), String(64 * MiB));
      if (memsw) assert.equal(read(mem, 'memory.memsw.limit_in_bytes'), String(128 * MiB));
      assert.equal(read(mem, 'memory.soft_limit_in_bytes'), String(32 * MiB));
      assert.equal(read(mem, 'memory.swappiness'), '10');
      assert.match(read(mem, 'memory.oom_control'), /oom_kill_disable 0/);
      const cpu = mgr.controllerDir('cpu')!;
      assert.equal(read(cpu, 'cpu.shares'), '512');
      assert.equal(read(cpu, 'cpu.cfs_quota_us'), '25000');
      assert.equal(read(cpu, 'cpu.cfs_period_us'), '50000');
      assert.equal(read(mgr.controllerDir('pids'), 'pids.max'), '20');
      assert.equal(read(mgr.controllerDir('cpuset'), 'cpuset.cpus'), '0');
      assert.equal(read(mgr.controllerDir('cpuset'), 'cpuset.mems'), '0');
      const dev = mgr.controllerDir('devices')!;
      assert.deepEqual(read(dev, 'devices.list').split('\n').sort(), ['c *:* m', 'c 1:3 rwm', 'c 1:5 rw']);

      if (memsw) {
        // Raising both needs memsw first, lowering both needs memory first: the kernel
        // rejects the other orders (memory.limit <= memsw.limit at every step).
        mgr.set({ memory: { limit: 256 * MiB, swap: 512 * MiB } });
        assert.equal(read(mem, 'memory.limit_in_bytes'), String(256 * MiB));
        assert.equal(read(mem, 'memory.memsw.limit_in_bytes'), String(512 * MiB));
        mgr.set({ memory: { limit: 32 * MiB, swap: 48 * MiB } });
        assert.equal(read(mem, 'memory.limit_in_bytes'), String(32 * MiB));
        assert.equal(read(mem, 'memory.memsw.limit_in_bytes'), String(48 * MiB));
        assert.throws(() => mgr.set({ memory: { limit: 64 * MiB, swap: 32 * MiB } }), SpecError);
      }
      // Period shorter + quota in one update (period may need a retry after the quota)
      mgr.set({ cpu: { quota: 5000, period: 10000 } });
      assert.equal(read(cpu, 'cpu.cfs_quota_us'), '5000');
      assert.equal(read(cpu, 'cpu.cfs_period_us'), '10000');
      mgr.set({ cpu: { quota: -1 }, pids: { limit: -1 } });
      assert.equal(read(cpu, 'cpu.cfs_quota_us'), '-1');
      assert.equal(read(mgr.controllerDir('pids'), 'pids.max'), 'max');
      // devices update: only the difference is written
      mgr.set({ devices: [{ allow: false }, { allow: true, type: 'c', major: 1, minor: 3, access: 'r' }] });
      assert.equal(read(dev, 'devices.list'), 'c 1:3 r');

      const disk = wholeDisk();
      const blk = mgr.controllerDir('blkio');
      if (disk && blk) {
        const [major, minor] = disk.split(':').map(Number);
        mgr.set({ blockIO: { throttleReadBpsDevice: [{ major, minor, rate: MiB }], throttleWriteIOPSDevice: [{ major, minor, rate: 100 }] } });
        assert.equal(read(blk, 'blkio.throttle.read_bps_device'), `${disk} ${MiB}`);
        assert.equal(read(blk, 'blkio.throttle.write_iops_device'), `${disk} 100`);
        const weightFile = ['blkio.bfq.weight', 'blkio.weight'].find((f) => fs.existsSync(path.join(blk, f)));
        if (weightFile) {
          mgr.set({ blockIO: { weight: 300 } });
          assert.match(read(blk, weightFile), /300/);
        } else {
          assert.throws(() => mgr.set({ blockIO: { weight: 300 } }), (e: Error) => e instanceof FailedPreconditionError && /blkio weight/.test(e.message));
        }
      }
    });

    await t.test('set: deprecated kernel memory is skipped with a warning; unsupported controllers are named', () => {
      const warnings: string[] = [];
      const w = createCgroupManager({ cgroupsPath: `${parent}/c1`, warn: (m) => warnings.push(m) });
      const res = w.set({ memory: { kernel: 64 * MiB } });
      assert.equal(res.warnings.length, 1);
      assert.match(res.warnings[0], /kernel/);
      assert.deepEqual(warnings, res.warnings);
      assert.throws(() => w.set({ unified: { 'memory.high': '1' } }), FailedPreconditionError);
      const cases: Array<[string, LinuxResources]> = [
        ['hugetlb', { hugepageLimits: [{ pageSize: '2MB', limit: 2 * MiB }] }],
        ['net_cls', { network: { classID: 0x100001 } }],
        ['rdma', { rdma: { mlx5_0: { hcaHandles: 1 } } }],
      ];
      for (const [ctrl, r] of cases) {
        if (mounts.v1.has(ctrl)) continue;
        assert.throws(() => w.set(r), (e: Error) => e instanceof FailedPreconditionError && e.message.includes(`"${ctrl}"`), ctrl);
      }
    });

    await t.test('nested cgroup: pids() is recursive', async () => {
      await sub.apply(pids.find((p) => p !== sleeper.child.pid)!);
      assert.equal(mgr.pids().length, 3);
      assert.deepEqual(sub.pids(), [pids.find((p) => p !== sleeper.child.pid)]);
    });

    await t.test('freeze / thaw', async () => {
      await mgr.freeze();
      assert.equal(mgr.state(), 'paused');
      assert.equal(read(mgr.controllerDir('freezer'), 'freezer.state'), 'FROZEN');
      assert.equal(read(sub.dirs().find((d) => d.includes('freezer'))!, 'freezer.state'), 'FROZEN'); // children freeze too
      mgr.thaw();
      await waitFor(() => mgr.state() === 'running', 'thawed');
      assert.equal(read(mgr.controllerDir('freezer'), 'freezer.state'), 'THAWED');
    });

    await t.test('stats', () => {
      const s = mgr.stats();
      assert.equal(s.pids.current, 3);
      assert.equal(s.pids.limit, 0); // unlimited after pids.max=max
      assert.ok(s.cpu.usage.total > 0, 'the shell ran');
      assert.equal(s.cpu.usage.percpu.length, os.cpus().length);
      assert.ok(s.memory.usage.limit === 32 * MiB || s.memory.usage.limit === 64 * MiB);
      assert.ok('total_rss' in s.memory.raw || 'rss' in s.memory.raw);
      assert.equal(typeof s.cpu.throttling.periods, 'number');
      assert.equal(mgr.oomKillCount(), 0);
    });

    await t.test('killAll, then destroy removes every directory (nested first)', async () => {
      mgr.killAll('SIGKILL');
      assert.equal(await sleeper.exited, 'SIGKILL');
      await waitFor(() => mgr.pids().length === 0, 'all processes gone');
      await mgr.destroy();
      assert.equal(mgr.exists(), false);
      for (const d of [...mgr.dirs(), ...sub.dirs()]) assert.equal(fs.existsSync(d), false, d);
      assert.equal(mgr.state(), 'absent');
      await mgr.destroy(); // idempotent
    });

    await t.test('OOM kill is counted', async () => {
      const oom = createCgroupManager({ cgroupsPath: `${parent}/oom` });
      try {
        oom.create();
        oom.set({ memory: { limit: 16 * MiB, swap: fs.existsSync(path.join(oom.dirs().find((d) => d.includes('/memory/'))!, 'memory.memsw.limit_in_bytes')) ? 16 * MiB : undefined } });
        const big = spawnBig(oom);
        assert.equal(await big, 'SIGKILL');
        assert.ok(oom.oomKillCount() >= 1);
        assert.ok(oom.stats().memory.oomKill >= 1);
      } finally {
        await oom.destroy();
      }
    });
  } finally {
    for (const p of [sleeper.child.pid, ...pids]) killQuietly(p);
    await mgr.destroy().catch(() => {});
    await parentMgr.destroy();
  }
  assert.deepEqual(leakedTestCgroups(), []);
});

/** Start a shell inside `m` that allocates 64 MiB; resolves with how it ended. */
async function spawnBig(m: CgroupManager): Promise<NodeJS.Signals | number | null> {
  const { spawn } = await import('node:child_process');
  const c = spawn('/bin/busybox', ['sh', '-c', 'read x; x=$(/bin/busybox head -c 67108864 /dev/zero | /bin/busybox tr "\\0" a); echo ${#x}'], { stdio: ['pipe', 'ignore', 'ignore'] });
  const done = new Promise<NodeJS.Signals | number | null>((r) => c.on('exit', (code, sig) => r(sig ?? code)));
  await m.apply(c.pid!);
  c.stdin!.write('go\n');
  return done;
}

// ---- fake cgroupfs: every write lands where it should

function fakeV1(): { root: string; proc: string; cleanup: () => void; populate: (p: string) => void } {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-fakev1-'));
  const root = path.join(tmp, 'cg');
  const files: Record<string, Record<string, string>> = {
    memory: {
      'memory.limit_in_bytes': '9223372036854771712', 'memory.memsw.limit_in_bytes': '9223372036854771712', 'memory.soft_limit_in_bytes': '',
      'memory.swappiness': '60', 'memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\noom_kill 2\n', 'memory.use_hierarchy': '1',
      'memory.kmem.tcp.limit_in_bytes': '', 'memory.usage_in_bytes': '1000', 'memory.max_usage_in_bytes': '2000', 'memory.failcnt': '3',
      'memory.stat': 'cache 10\nrss 20\ntotal_cache 11\n',
    },
    'cpu,cpuacct': {
      'cpu.shares': '1024', 'cpu.cfs_quota_us': '-1', 'cpu.cfs_period_us': '100000', 'cpu.cfs_burst_us': '0', 'cpu.rt_period_us': '1000000',
      'cpu.rt_runtime_us': '0', 'cpu.idle': '0', 'cpu.stat': 'nr_periods 5\nnr_throttled 2\nthrottled_time 777\n',
      'cpuacct.usage': '123456', 'cpuacct.usage_percpu': '100000 23456 ', 'cpuacct.stat': 'user 3\nsystem 1\n',
    },
    cpuset: { 'cpuset.cpus': '', 'cpuset.mems': '' },
    pids: { 'pids.max': 'max', 'pids.current': '4' },
    blkio: {
      'blkio.weight': '500', 'blkio.weight_device': '', 'blkio.leaf_weight': '', 'blkio.leaf_weight_device': '',
      'blkio.throttle.read_bps_device': '', 'blkio.throttle.write_bps_device': '', 'blkio.throttle.read_iops_device': '', 'blkio.throttle.write_iops_device': '',
      'blkio.throttle.io_service_bytes_recursive': '8:0 Read 4096\n8:0 Write 8192\nTotal 12288\n',
    },
    devices: { 'devices.allow': '', 'devices.deny': '', 'devices.list': 'a *:* rwm\n' },
    freezer: { 'freezer.state': 'THAWED' },
    hugetlb: { 'hugetlb.2MB.limit_in_bytes': '', 'hugetlb.2MB.usage_in_bytes': '0', 'hugetlb.1GB.limit_in_bytes': '' },
    net_cls: { 'net_cls.classid': '' },
    net_prio: { 'net_prio.ifpriomap': '' },
    systemd: {},
  };
  const populate = (rel: string): void => {
    for (const [h, fsmap] of Object.entries(files)) {
      const d = path.join(root, h, rel);
      fs.mkdirSync(d, { recursive: true });
      for (const [f, v] of Object.entries({ 'cgroup.procs': '', ...fsmap })) if (!fs.existsSync(path.join(d, f))) fs.writeFileSync(path.join(d, f), v);
    }
  };
  populate('');
  fs.writeFileSync(path.join(root, 'cpuset', 'cpuset.cpus'), '0-3');
  fs.writeFileSync(path.join(root, 'cpuset', 'cpuset.mems'), '0');
  const proc = path.join(tmp, 'proc');
  fs.mkdirSync(path.join(proc, 'self'), { recursive: true });
  fs.writeFileSync(path.join(proc, 'self', 'cgroup'), '5:memory:/runtime/x\n4:cpu,cpuacct:/\n0::/\n');
  return { root, proc, cleanup: () => fs.rmSync(tmp, { recursive: true, force: true }), populate };
}

test('v1 fake cgroupfs: every write', async () => {
  const f = fakeV1();
  try {
    f.populate('a');
    f.populate('a/b');
    const m = createCgroupManager({ cgroupsPath: '/a/b', mode: 'v1', root: f.root, procfs: f.proc, warn: () => {} }) as V1Manager;
    assert.equal(m.controllerDir('cpu'), path.join(f.root, 'cpu,cpuacct', 'a/b'));
    assert.equal(m.controllerDir('cpuacct'), m.controllerDir('cpu'));
    assert.equal(m.controllerDir('name=systemd'), path.join(f.root, 'systemd', 'a/b'));
    m.create();
    const rd = (h: string, file: string): string => fs.readFileSync(path.join(f.root, h, 'a/b', file), 'utf8');
    assert.equal(rd('cpuset', 'cpuset.cpus'), '0-3');
    assert.equal(fs.readFileSync(path.join(f.root, 'cpuset', 'a', 'cpuset.mems'), 'utf8'), '0');
    const res = m.set({
      memory: { limit: 1000 * 4096, swap: 2000 * 4096, reservation: 500 * 4096, swappiness: 0, disableOOMKiller: true, kernel: 4096, kernelTCP: 8192, useHierarchy: true },
      cpu: { shares: 1024, quota: 50000, period: 100000, burst: 1000, realtimePeriod: 1000000, realtimeRuntime: 950000, idle: 1, cpus: '1-2', mems: '0' },
      pids: { limit: 0 },
      blockIO: {
        weight: 500, leafWeight: 300,
        weightDevice: [{ major: 8, minor: 0, weight: 600, leafWeight: 200 }],
        throttleReadBpsDevice: [{ major: 8, minor: 0, rate: 1048576 }],
        throttleWriteBpsDevice: [{ major: 8, minor: 0, rate: 2097152 }],
        throttleReadIOPSDevice: [{ major: 8, minor: 0, rate: 100 }],
        throttleWriteIOPSDevice: [{ major: 8, minor: 0, rate: 200 }],
      },
      hugepageLimits: [{ pageSize: '2MB', limit: 4194304 }],
      network: { classID: 1048577, priorities: [{ name: 'eth0', priority: 5 }] },
    });
    assert.equal(rd('memory', 'memory.limit_in_bytes'), String(1000 * 4096));
    assert.equal(rd('memory', 'memory.memsw.limit_in_bytes'), String(2000 * 4096));
    assert.equal(rd('memory', 'memory.soft_limit_in_bytes'), String(500 * 4096));
    assert.equal(rd('memory', 'memory.swappiness'), '0');
    assert.equal(rd('memory', 'memory.oom_control'), '1');
    assert.equal(rd('memory', 'memory.kmem.tcp.limit_in_bytes'), '8192');
    assert.equal(rd('memory', 'memory.use_hierarchy'), '1');
    assert.deepEqual(res.warnings.length, 1); // memory.kmem.limit_in_bytes is absent
    assert.match(res.warnings[0], /linux\.resources\.memory\.kernel/);
    for (const [file, v] of [['cpu.shares', '1024'], ['cpu.cfs_quota_us', '50000'], ['cpu.cfs_period_us', '100000'], ['cpu.cfs_burst_us', '1000'],
      ['cpu.rt_period_us', '1000000'], ['cpu.rt_runtime_us', '950000'], ['cpu.idle', '1']]) assert.equal(rd('cpu,cpuacct', file), v, file);
    assert.equal(rd('cpuset', 'cpuset.cpus'), '1-2');
    assert.equal(rd('pids', 'pids.max'), 'max');
    assert.equal(rd('blkio', 'blkio.weight'), '500');
    assert.equal(rd('blkio', 'blkio.leaf_weight'), '300');
    assert.equal(rd('blkio', 'blkio.weight_device'), '8:0 600');
    assert.equal(rd('blkio', 'blkio.leaf_weight_device'), '8:0 200');
    assert.equal(rd('blkio', 'blkio.throttle.read_bps_device'), '8:0 1048576');
    assert.equal(rd('blkio', 'blkio.throttle.write_bps_device'), '8:0 2097152');
    assert.equal(rd('blkio', 'blkio.throttle.read_iops_device'), '8:0 100');
    assert.equal(rd('blkio', 'blkio.throttle.write_iops_device'), '8:0 200');
    assert.equal(rd('hugetlb', 'hugetlb.2MB.limit_in_bytes'), '4194304');
    assert.equal(rd('net_cls', 'net_cls.classid'), '1048577');
    assert.equal(rd('net_prio', 'net_prio.ifpriomap'), 'eth0 5');
    assert.throws(() => m.set({ hugepageLimits: [{ pageSize: '64KB', limit: 1 }] }), FailedPreconditionError);
    assert.throws(() => m.set({ hugepageLimits: [{ pageSize: '2M', limit: 1 }] }), SpecError);
    assert.throws(() => m.set({ memory: { swappiness: 101 } }), SpecError);
    assert.throws(() => m.set({ rdma: { mlx: {} } }), (e: Error) => e instanceof FailedPreconditionError && /"rdma"/.test(e.message));
    // stats from the fake files
    fs.writeFileSync(path.join(f.root, 'memory', 'a/b', 'memory.oom_control'), 'oom_kill_disable 1\nunder_oom 0\noom_kill 2\n');
    const s = m.stats();
    assert.equal(s.cpu.usage.total, 123456);
    assert.deepEqual(s.cpu.usage.percpu, [100000, 23456]);
    assert.equal(s.cpu.usage.user, 3e7);
    assert.equal(s.cpu.usage.kernel, 1e7);
    assert.deepEqual(s.cpu.throttling, { periods: 5, throttledPeriods: 2, throttledTime: 777 });
    assert.deepEqual(s.memory.usage, { usage: 1000, max: 2000, limit: 1000 * 4096, failcnt: 3 });
    assert.equal(s.memory.cache, 11);
    assert.equal(s.memory.raw.rss, 20);
    assert.equal(s.memory.oomKill, 2);
    assert.deepEqual(s.pids, { current: 4, limit: 0 });
    assert.deepEqual(s.blkio.ioServiceBytesRecursive, [{ major: 8, minor: 0, op: 'Read', value: 4096 }, { major: 8, minor: 0, op: 'Write', value: 8192 }]);
    assert.deepEqual(Object.keys(s.hugetlb), ['1GB', '2MB']);
    assert.equal(m.oomKillCount(), 2);
    // freeze against a fake that "completes" the freeze
    const fz = path.join(f.root, 'freezer', 'a/b', 'freezer.state');
    const p = m.freeze();
    assert.equal(fs.readFileSync(fz, 'utf8'), 'FROZEN'); // requested synchronously; the fake reads FROZEN at once
    await p;
    assert.equal(m.state(), 'paused');
    m.thaw();
    assert.equal(m.state(), 'running');
    await m.destroy();
    for (const d of m.dirs()) assert.equal(fs.existsSync(d), false);
    assert.ok(fs.existsSync(path.join(f.root, 'memory', 'a')));
  } finally {
    f.cleanup();
  }
});

test('v1 fake: relative cgroupsPath is under the runtime\'s own cgroup, per hierarchy', () => {
  const f = fakeV1();
  try {
    const m = createCgroupManager({ cgroupsPath: 'ctr1', mode: 'v1', root: f.root, procfs: f.proc }) as V1Manager;
    assert.equal(m.controllerDir('memory'), path.join(f.root, 'memory', 'runtime/x/ctr1'));
    assert.equal(m.controllerDir('cpu'), path.join(f.root, 'cpu,cpuacct', 'ctr1'));
    // not in /proc/self/cgroup → the hierarchy root
    assert.equal(m.controllerDir('pids'), path.join(f.root, 'pids', 'ctr1'));
  } finally {
    f.cleanup();
  }
});
