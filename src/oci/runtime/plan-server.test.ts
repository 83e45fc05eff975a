import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CorralError } from '../../errors.ts';
import { MS } from '../plan/ops.ts';
import { isOpError } from './executor.ts';
import { PlanServer } from './plan-server.ts';

const mounted = (p: string) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === p);

test('plan server: plans run in fresh children; op failures name the op; it survives a malformed plan and its own death', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'corral-plan-server-'));
  const target = join(dir, 'mnt');
  mkdirSync(target);
  const server = new PlanServer();
  try {
    // mount, then (a separate plan, once the first is done) make a fifo in it
    await server.run({ ops: [{ op: 'mount', source: 'corral-test', target, fstype: 'tmpfs', flags: MS.NOSUID, data: 'size=64k', extra: 0, origin: 'test tmpfs' }] });
    await server.run({ ops: [{ op: 'mkfifo', path: join(target, 'f'), mode: 0o600, origin: 'make a fifo in it' }] });
    assert.ok(mounted(target), 'tmpfs mounted in the host mount namespace');
    assert.ok(statSync(join(target, 'f')).isFIFO(), 'the second plan ran after the mount');
    // a plan's cwd does not leak into the next one
    await server.run({ ops: [{ op: 'chdir', path: target }] });
    await server.run({ ops: [{ op: 'umount', path: target, flags: 0, missingOk: false, origin: 'unmount it' }] });
    assert.ok(!mounted(target), 'unmounted (the previous plan\'s chdir did not keep it busy)');
    // missingOk: not a mount point is fine
    await server.run({ ops: [{ op: 'umount', path: target, flags: 0, missingOk: true }] });

    // the first failing op is reported with its origin and errno; later ops do not run
    const later = join(dir, 'later');
    await assert.rejects(
      server.run({ ops: [
        { op: 'umount', path: target, flags: 0, missingOk: false, origin: 'unmount what is not mounted' },
        { op: 'mkfifo', path: later, mode: 0o600 },
      ] }),
      (e: unknown) => isOpError(e) && e.opIndex === 0 && /unmount what is not mounted/.test((e as Error).message) && (e as CorralError).code === 'INVALID_ARGUMENT',
    );
    assert.throws(() => statSync(later), /ENOENT/, 'ops after the failure did not run');

    // an op the encoder refuses never reaches the server
    await assert.rejects(server.run({ ops: [{ op: 'chdir', path: 'a\0b' }] }), (e: unknown) => e instanceof CorralError && e.code === 'INVALID_ARGUMENT');

    // the server is restarted after it died
    const pid = (server as unknown as { child: { pid: number } }).child.pid;
    process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 50));
    await server.run({ ops: [{ op: 'mkfifo', path: join(dir, 'after'), mode: 0o600 }] });
    assert.ok(statSync(join(dir, 'after')).isFIFO());
    assert.notEqual((server as unknown as { child: { pid: number } }).child.pid, pid);
  } finally {
    server.close();
    if (mounted(target)) spawnSync('umount', ['-l', target]);
    rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(!mounted(target), 'no mount leaked');
});

test('plan server: a plan with a clone (pinning style) is reported when all its processes are gone', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'corral-plan-server-'));
  const server = new PlanServer();
  const pin = join(dir, 'uts');
  writeFileSync(pin, '');
  try {
    await server.run({ ops: [
      { op: 'clone', flags: 0x04000000 /* CLONE_NEWUTS */, parentMode: 'wait', origin: 'new uts namespace' },
      { op: 'sethostname', name: 'plan-server-test' },
      { op: 'mount', source: '/proc/self/ns/uts', target: pin, fstype: '', flags: MS.BIND, data: '', extra: 0, origin: 'pin it' },
    ] });
    assert.ok(mounted(pin), 'the namespace file is pinned in the host mount namespace');
    await server.run({ ops: [{ op: 'umount', path: pin, flags: 0, missingOk: false }] });
    assert.ok(!mounted(pin));
  } finally {
    server.close();
    if (mounted(pin)) spawnSync('umount', ['-l', pin]);
    rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(!mounted(pin), 'no mount leaked');
});

test('plan server: exec captures stdin, stdout, stderr and the exit status; jobs run concurrently; a timeout kills the job', async () => {
  const server = new PlanServer();
  try {
    const cat = await server.exec({ path: '/bin/cat', args: [], env: {}, stdin: 'hello\n'.repeat(20000) });
    assert.equal(cat.code, 0);
    assert.equal(cat.stdout.toString(), 'hello\n'.repeat(20000), 'stdin reached the program, stdout came back whole');
    const sh = await server.exec({ path: '/bin/sh', args: ['-c', 'echo "$GREETING" >&2; echo out; exit 3'], env: { GREETING: 'from env' } });
    assert.deepEqual([sh.code, sh.signal, sh.stdout.toString(), sh.stderr, sh.timedOut], [3, null, 'out\n', 'from env\n', false]);
    await assert.rejects(server.exec({ path: '/nonexistent/plugin', args: [], env: {} }), (e: unknown) => isOpError(e) && (e as CorralError).code === 'NOT_FOUND');

    // a long job does not hold up a short one; its timeout kills its whole process group
    const started = Date.now();
    const slow = server.exec({ path: '/bin/sh', args: ['-c', 'sleep 30 & sleep 30; echo never'], env: {}, timeoutMs: 300 });
    await server.run({ ops: [{ op: 'umask', mask: 0o22 }] });
    assert.ok(Date.now() - started < 250, 'the short job finished while the long one ran');
    const r = await slow;
    assert.deepEqual([r.timedOut, r.code, r.signal, r.stdout.toString()], [true, null, 9, '']);
    assert.ok(Date.now() - started < 5000);
  } finally {
    server.close();
  }
});
