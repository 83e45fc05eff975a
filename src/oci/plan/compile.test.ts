import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileCreatePlan, compileExecPlan } from './compile.ts';
import type { CreatePlanInput } from './compile.ts';
import { CLONE, MS, SYNC } from './ops.ts';
import type { Op } from './ops.ts';
import { exampleSpec } from '../spec/defaults.ts';
import type { Spec } from '../spec/types.ts';

const bundle = mkdtempSync(join(tmpdir(), 'corral-compile-'));
mkdirSync(join(bundle, 'rootfs'));
mkdirSync(join(bundle, 'data'));
writeFileSync(join(bundle, 'file'), '');
test.after(() => rmSync(bundle, { recursive: true }));

function input(tweak: (s: Spec) => void = () => {}): CreatePlanInput {
  const spec = exampleSpec();
  spec.process!.terminal = false;
  tweak(spec);
  return {
    spec, bundle, rootfs: join(bundle, 'rootfs'), parentMode: 'exit', startFifo: join(bundle, 'fifo'),
    cgroupMode: 'v1', cgroupMounts: [{ name: 'memory', hostPath: '/sys/fs/cgroup/memory/x', options: 'memory' }],
  };
}
const names = (ops: Op[]) => ops.map((o) => o.op);
const index = (ops: Op[], pred: (o: Op) => boolean) => ops.findIndex(pred);

test('clone gets the new namespaces except cgroup, which is unshared after the runtime says go', () => {
  const { ops } = compileCreatePlan(input());
  const clone = ops.find((o) => o.op === 'clone') as Extract<Op, { op: 'clone' }>;
  assert.equal(clone.flags, CLONE.NEWPID | CLONE.NEWNET | CLONE.NEWIPC | CLONE.NEWUTS | CLONE.NEWNS);
  const go = index(ops, (o) => o.op === 'syncWait' && o.message === SYNC.GO);
  const unshare = index(ops, (o) => o.op === 'unshare' && o.flags === CLONE.NEWCGROUP);
  assert.ok(go > index(ops, (o) => o.op === 'clone') && unshare > go);
});

test('with no_new_privs, seccomp is the last thing before exec, after caps and the user switch', () => {
  const { ops } = compileCreatePlan(input((s) => {
    s.process!.noNewPrivileges = true;
    s.linux!.seccomp = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO' }] };
  }));
  const n = names(ops);
  const at = (x: Op['op']) => n.indexOf(x);
  assert.ok(at('capsBounding') < at('setUser') && at('setUser') < at('capsSet') && at('capsSet') < at('noNewPrivs'));
  assert.ok(at('noNewPrivs') < at('waitStart') && at('waitStart') < at('seccomp'));
  assert.equal(n.at(-2), 'seccomp');
  assert.equal(n.at(-1), 'exec');
});

test('without no_new_privs, seccomp is loaded before capabilities are dropped', () => {
  const { ops } = compileCreatePlan(input((s) => {
    s.process!.noNewPrivileges = false;
    s.linux!.seccomp = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO' }] };
  }));
  const n = names(ops);
  assert.ok(n.indexOf('seccomp') < n.indexOf('capsBounding'));
  assert.equal(n.filter((x) => x === 'seccomp').length, 1);
});

test('a read-only bind mount is a bind then a remount keeping locked flags; propagation is its own op', () => {
  const { ops } = compileCreatePlan(input((s) => {
    s.mounts!.push({ destination: '/data', source: 'data', type: 'bind', options: ['rbind', 'ro', 'rprivate'] });
    s.mounts!.push({ destination: '/etc/file', source: join(bundle, 'file'), type: 'bind', options: ['bind'] });
  }));
  const data = ops.filter((o) => o.op === 'mountInRoot' && o.target === 'data') as Array<Extract<Op, { op: 'mountInRoot' }>>;
  assert.equal(data.length, 3);
  assert.equal(data[0].source, join(bundle, 'data'));
  assert.equal(data[0].flags, MS.BIND | MS.REC);
  assert.equal(data[0].mkdir, 1);
  assert.equal(data[1].flags, MS.REMOUNT | MS.BIND | MS.RDONLY);
  assert.equal(data[1].extra, 1);
  assert.equal(data[2].flags, MS.PRIVATE | MS.REC);
  const file = ops.find((o) => o.op === 'mountInRoot' && o.target === 'etc/file') as Extract<Op, { op: 'mountInRoot' }>;
  assert.equal(file.mkdir, 2, 'a file source gets a file mount point');
});

test('in a user namespace: switch to the namespace root after go, and bind devices instead of mknod', () => {
  const { ops } = compileCreatePlan(input((s) => {
    s.linux!.namespaces!.push({ type: 'user' });
    s.linux!.uidMappings = [{ containerID: 0, hostID: 1000, size: 1 }];
    s.linux!.gidMappings = [{ containerID: 0, hostID: 1000, size: 1 }];
  }));
  const go = index(ops, (o) => o.op === 'syncWait' && o.message === SYNC.GO);
  assert.deepEqual(ops[go + 1], { op: 'setUser', uid: 0, gid: 0, groups: [], setgroups: true, origin: 'linux.uidMappings (container root)' });
  assert.equal(ops.filter((o) => o.op === 'mknodInRoot').length, 0);
  assert.ok(ops.some((o) => o.op === 'mountInRoot' && o.source === '/dev/null' && o.target === 'dev/null'));
});

test('namespaces given by path are joined before clone, user first and mount never', () => {
  const { ops } = compileCreatePlan(input((s) => {
    s.linux!.namespaces = [{ type: 'mount' }, { type: 'network', path: '/run/netns/x' }, { type: 'ipc', path: '/proc/9/ns/ipc' }, { type: 'pid' }];
  }));
  const setns = ops.filter((o) => o.op === 'setns') as Array<Extract<Op, { op: 'setns' }>>;
  assert.deepEqual(setns.map((o) => [o.path, o.origin]), [['/proc/9/ns/ipc', 'linux.namespaces[2].path'], ['/run/netns/x', 'linux.namespaces[1].path']]);
  assert.ok(index(ops, (o) => o.op === 'setns') < index(ops, (o) => o.op === 'clone'));
});

test('sysctls, hostname, masked and read-only paths come after pivot_root', () => {
  const { ops } = compileCreatePlan(input((s) => { s.linux!.sysctl = { 'net.ipv4.ip_forward': '1' }; }));
  const pivot = index(ops, (o) => o.op === 'pivotRoot');
  assert.ok(index(ops, (o) => o.op === 'writeFile' && o.path === '/proc/sys/net/ipv4/ip_forward') > pivot);
  assert.ok(index(ops, (o) => o.op === 'sethostname') > pivot);
  assert.ok(index(ops, (o) => o.op === 'maskPath') > pivot);
  assert.ok(index(ops, (o) => o.op === 'readonlyPath') > pivot);
  assert.ok(index(ops, (o) => o.op === 'openStartFifo') < pivot, 'the fifo is opened while host paths are reachable');
});

test('exec plans join cgroups, then namespaces (mount last), then fork', () => {
  const spec = exampleSpec();
  const { ops } = compileExecPlan({
    process: { ...spec.process!, terminal: false, args: ['/bin/true'] }, initPid: 1234, namespaces: ['mount', 'pid', 'network', 'user'],
    cgroupProcs: ['/sys/fs/cgroup/pids/x/cgroup.procs'], detach: false,
  });
  assert.deepEqual(ops.slice(0, 6).map((o) => (o.op === 'setns' ? `setns ${o.path}` : o.op)), [
    'writeFile', 'setns /proc/1234/ns/user', 'setns /proc/1234/ns/net', 'setns /proc/1234/ns/pid', 'setns /proc/1234/ns/mnt', 'clone',
  ]);
  assert.equal((ops[5] as Extract<Op, { op: 'clone' }>).parentMode, 'wait');
});
