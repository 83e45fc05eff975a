/**
 * The C executor (src/executor/corral-exec.c) and its Node driver, tested with real plans as
 * root. Every container-side mount happens in the child's own mount namespace, which each plan
 * makes private first; the suite checks at the end that no mount and no temp dir leaked.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { DeadlineExceededError, FailedPreconditionError, InternalError, NotFoundError, PermissionDeniedError } from '../../errors.ts';
import { encodePlan } from '../plan/encode.ts';
import { CLONE, MKDIR, MS, type Op } from '../plan/ops.ts';
import { compileDeviceFilterInsns, encodeInsns } from '../cgroups/v2-devices.ts';
import { executorPath, isOpError, startExecutor, type ExecutorOptions, type LauncherExit } from './executor.ts';

const repo = path.resolve(import.meta.dirname, '../../..');
const build = path.join(repo, 'build');
const BB = '/bin/busybox';
const exe = () => process.env.CORRAL_EXECUTOR || path.join(build, 'corral-exec');
const consoleRecv = path.join(build, 'console-recv');
let tmp = '';

const mountLines = (needle: string) => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(needle));
const collect = (s: Readable | null) =>
  new Promise<string>((resolve) => {
    if (!s) return resolve('');
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (c: string) => (out += c));
    s.on('end', () => resolve(out));
    s.on('error', () => resolve(out));
  });

interface Run {
  stdout: string;
  stderr: string;
  exit: LauncherExit;
  error?: unknown;
  pid?: number;
}

/** Run a plan to completion, capturing the container's stdout/stderr. */
async function run(ops: Op[], opts: Partial<ExecutorOptions> = {}): Promise<Run> {
  const ex = startExecutor({ plan: { ops }, stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  const stdout = collect(ex.launcher.stdout);
  const stderr = collect(ex.launcher.stderr);
  let error: unknown;
  let pid: number | undefined;
  if (ops.some((o) => o.op === 'clone')) pid = await ex.childPid().catch(() => undefined);
  await ex.waitExec().catch((e: unknown) => (error = e));
  const exit = await ex.launcherExit();
  ex.close();
  return { stdout: await stdout, stderr: await stderr, exit, error, pid };
}

/** Start the executor binary directly with raw plan bytes. */
async function runRaw(bytes: Uint8Array | Buffer, args = ['3', '4']) {
  const child = spawn(exe(), args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
  const stderr = collect(child.stderr);
  const sync = collect(child.stdio[4] as Readable);
  const planSock = child.stdio[3] as NodeJS.WritableStream & { on: (e: string, f: () => void) => void };
  planSock.on('error', () => {});
  planSock.end(bytes);
  const exit = await new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { exit, stderr: await stderr, sync: await sync };
}

const nsFlags = CLONE.NEWUTS | CLONE.NEWNS | CLONE.NEWPID | CLONE.NEWIPC;
const clone = (parentMode: 'exit' | 'wait' = 'wait', flags: number = nsFlags): Op => ({ op: 'clone', flags, parentMode });
const privateRoot: Op = { op: 'mount', source: '', target: '/', fstype: '', flags: MS.REC | MS.PRIVATE, data: '', extra: 0 };
const bb = (...argv: string[]): Op => ({ op: 'exec', path: BB, argv: ['busybox', ...argv], env: ['PATH=/bin'], searchPath: false });
const sh = (script: string): Op => bb('sh', '-c', script);

/** A minimal rootfs: bin/busybox plus applet symlinks. */
function makeRootfs(dir: string): string {
  fs.mkdirSync(path.join(dir, 'bin'), { recursive: true });
  fs.copyFileSync(BB, path.join(dir, 'bin/busybox'));
  fs.chmodSync(path.join(dir, 'bin/busybox'), 0o755);
  for (const a of ['sh', 'ls', 'cat', 'echo', 'hostname', 'tty', 'stty', 'readlink', 'wc', 'stat', 'pwd', 'true']) {
    fs.symlinkSync('busybox', path.join(dir, 'bin', a));
  }
  return dir;
}

before(() => {
  execFileSync('make', ['-s', '-C', path.join(repo, 'src/executor'), `OUT=${build}`], { stdio: 'inherit' });
  tmp = fs.mkdtempSync('/tmp/corral-exec-test-');
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  assert.deepEqual(mountLines(tmp), [], 'no mount under the test directory leaked');
  assert.equal(fs.existsSync(tmp), false, 'the test directory was removed');
});

describe('executor', () => {
  it('resolves its binary in build/ unless CORRAL_EXECUTOR overrides it', () => {
    const saved = process.env.CORRAL_EXECUTOR;
    delete process.env.CORRAL_EXECUTOR;
    assert.equal(executorPath(), path.join(build, 'corral-exec'));
    process.env.CORRAL_EXECUTOR = '/x/y';
    assert.equal(executorPath(), '/x/y');
    if (saved === undefined) delete process.env.CORRAL_EXECUTOR;
    else process.env.CORRAL_EXECUTOR = saved;
  });

  for (const mode of ['exit', 'wait'] as const) {
    it(`clones new namespaces (parentMode ${mode}), sets the hostname and execs`, async () => {
      const r = await run([clone(mode), privateRoot, { op: 'sethostname', name: `corral-${mode}` }, bb('hostname')]);
      assert.equal(r.error, undefined);
      assert.equal(r.stdout, `corral-${mode}\n`);
      assert.ok(r.pid && r.pid > 1);
      assert.deepEqual(r.exit, { code: 0, signal: null });
      assert.notEqual(fs.readFileSync('/proc/sys/kernel/hostname', 'utf8').trim(), `corral-${mode}`);
    });
  }

  it('in parentMode wait exits with the child status and forwards signals', async () => {
    const r = await run([clone('wait'), sh('exit 7')]);
    assert.deepEqual(r.exit, { code: 7, signal: null });

    const ex = startExecutor({ plan: { ops: [clone('wait', CLONE.NEWUTS), bb('sleep', '1000')] }, stdio: ['ignore', 'ignore', 'inherit'] });
    const pid = await ex.childPid();
    await ex.waitExec();
    assert.match(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /sleep/);
    ex.launcher.kill('SIGTERM');
    assert.deepEqual(await ex.launcherExit(), { code: 128 + 15, signal: null });
  });

  it('attachDeviceFilter puts a cgroup v2 device program on a cgroup, replacing the previous one', async () => {
    const dir = `/sys/fs/cgroup/unified/corral-exectest-${process.pid}`;
    fs.mkdirSync(dir);
    try {
      const allowNullOnly = encodeInsns(compileDeviceFilterInsns([{ allow: false, access: 'rwm' }, { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' }]));
      const allowZeroOnly = encodeInsns(compileDeviceFilterInsns([{ allow: false, access: 'rwm' }, { allow: true, type: 'c', major: 1, minor: 5, access: 'rwm' }]));
      const probe = sh('cat /dev/null && echo null-ok; head -c1 /dev/zero >/dev/null 2>&1 && echo zero-ok || echo zero-denied');
      let r = await run([
        { op: 'attachDeviceFilter', cgroupDir: dir, program: allowNullOnly },
        { op: 'writeFile', path: `${dir}/cgroup.procs`, data: '0' },
        clone('wait', 0), probe,
      ]);
      assert.equal(r.error, undefined, String(r.error));
      assert.equal(r.stdout, 'null-ok\nzero-denied\n');
      // A second attach replaces the first: now /dev/zero is allowed and /dev/null denied.
      r = await run([
        { op: 'attachDeviceFilter', cgroupDir: dir, program: allowZeroOnly },
        { op: 'writeFile', path: `${dir}/cgroup.procs`, data: '0' },
        clone('wait', 0), sh('cat /dev/null 2>&- && echo null-ok || echo null-denied; [ "$(head -c1 /dev/zero | wc -c)" = 1 ] && echo zero-ok'),
      ]);
      assert.equal(r.stdout, 'null-denied\nzero-ok\n');
      const bad = await run([{ op: 'attachDeviceFilter', cgroupDir: dir, program: new Uint8Array(12) }]);
      assert.match(String(bad.error), /not a multiple of 8/);
    } finally {
      fs.rmdirSync(dir);
    }
  });

  it('syncRecvState hands the runtime-sent state to hooks with an empty stdin', async () => {
    const out = path.join(tmp, 'hook-state');
    const ex = startExecutor({
      plan: { ops: [
        { op: 'syncRecvState' },
        { op: 'runHook', path: BB, args: ['busybox', 'sh', '-c', `cat > ${out}`], env: [], timeoutSec: 5, stdin: '' },
        sh('true'),
      ] },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    ex.send('{"ociVersion":"1.2.0","id":"x","status":"creating","pid":42}');
    await ex.waitExec();
    await ex.launcherExit();
    ex.close();
    assert.equal(fs.readFileSync(out, 'utf8'), '{"ociVersion":"1.2.0","id":"x","status":"creating","pid":42}');
  });

  it('runs a plan without clone in the launcher itself (unshare, writeFile, setdomainname)', async () => {
    const file = path.join(tmp, 'written');
    fs.writeFileSync(file, '');
    const r = await run([
      { op: 'unshare', flags: CLONE.NEWUTS },
      { op: 'sethostname', name: 'no-clone' },
      { op: 'setdomainname', name: 'corral.test' },
      { op: 'writeFile', path: file, data: 'data\n' },
      sh('hostname; cat /proc/sys/kernel/domainname'),
    ]);
    assert.equal(r.error, undefined);
    assert.equal(r.stdout, 'no-clone\ncorral.test\n');
    assert.equal(fs.readFileSync(file, 'utf8'), 'data\n');

    const missing = await run([{ op: 'writeFile', path: path.join(tmp, 'nope'), data: 'x', origin: 'linux.sysctl' }]);
    assert.ok(missing.error instanceof NotFoundError);
    assert.equal(fs.existsSync(path.join(tmp, 'nope')), false, 'writeFile does not create files');
  });

  it('does the syncSend/syncWait handshake', async () => {
    const ops: Op[] = [clone('wait'), { op: 'syncSend', message: 'hooks' }, { op: 'syncWait', message: 'go' }, bb('echo', 'after-go')];
    const ex = startExecutor({ plan: { ops }, stdio: ['ignore', 'pipe', 'inherit'] });
    const out = collect(ex.launcher.stdout);
    await ex.childPid();
    await ex.expect('hooks');
    ex.send('go');
    await ex.waitExec();
    assert.equal(await out, 'after-go\n');
    assert.equal((await ex.launcherExit()).code, 0);
    assert.throws(() => ex.send('late'), FailedPreconditionError);
  });

  it('reports an abort and an unexpected sync message as the failing op', async () => {
    for (const [reply, pattern] of [
      ['abort cgroup setup failed', /aborted by the runtime: cgroup setup failed/],
      ['nope', /expected "go".*got "nope"/],
    ] as const) {
      const ops: Op[] = [clone('wait'), { op: 'syncWait', message: 'go', origin: 'sync.go' }, bb('true')];
      const ex = startExecutor({ plan: { ops }, stdio: ['ignore', 'ignore', 'inherit'] });
      await ex.childPid();
      ex.send(reply);
      const err = await ex.waitExec().then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof FailedPreconditionError, String(err));
      assert.match(err.message, pattern);
      assert.ok(isOpError(err) && err.opIndex === 1 && err.origin === 'sync.go');
      assert.equal((await ex.launcherExit()).code, 1);
    }
  });

  it('reports a failing op with its origin and errno', async () => {
    const r = await run([
      clone('wait'),
      privateRoot,
      { op: 'mount', source: path.join(tmp, 'no-such-source'), target: tmp, fstype: '', flags: MS.BIND, data: '', extra: 0, origin: 'mounts[3]' },
      bb('true'),
    ]);
    assert.ok(r.error instanceof NotFoundError, String(r.error));
    assert.ok(isOpError(r.error));
    assert.equal(r.error.opIndex, 2);
    assert.equal(r.error.origin, 'mounts[3]');
    assert.equal(r.error.errno, 'ENOENT');
    assert.match(r.error.message, /^mounts\[3\] \(mount\): ENOENT/);
    assert.deepEqual(r.exit, { code: 1, signal: null });

    // An error in the launcher (before clone): childPid rejects too.
    const ex = startExecutor({ plan: { ops: [{ op: 'setns', path: '/proc/self/ns/nope', nstype: 0, origin: 'linux.namespaces[0]' }, clone()] } });
    await assert.rejects(ex.childPid(), (e: unknown) => e instanceof NotFoundError && /^linux\.namespaces\[0\] \(setns\)/.test(e.message));
    await assert.rejects(ex.waitExec(), NotFoundError);

    const opt = await run([clone(), privateRoot, { op: 'mount', source: 'tmpfs', target: path.join(tmp, 'absent'), fstype: 'tmpfs', flags: 0, data: '', extra: 2 }, bb('true')]);
    assert.equal(opt.error, undefined, 'MOUNT_EXTRA.OPTIONAL ignores a missing target');
  });

  it('rejects malformed plans with exit 2 before doing anything', async () => {
    const marker = path.join(tmp, 'marker');
    fs.writeFileSync(marker, 'orig');
    const good = Buffer.from(encodePlan({ ops: [{ op: 'writeFile', path: marker, data: 'touched' }, clone('wait'), bb('true')] }));
    // Layout: header 12 bytes; op 0 at 12: u16 code, u16 argc, then arg 0: u8 type at 16, u32 length at 17, path at 21.
    const patch = (f: (b: Buffer) => Buffer | void) => {
      const b = Buffer.from(good);
      return f(b) ?? b;
    };
    const cases: Array<[string, Buffer, RegExp]> = [
      ['empty', Buffer.alloc(0), /bad magic/],
      ['magic', patch((b) => void (b[0] = 0x58)), /bad magic/],
      ['version', patch((b) => void b.writeUInt32LE(2, 4)), /unsupported version 2/],
      ['op count', patch((b) => void b.writeUInt32LE(2, 8)), /trailing bytes/],
      ['op count', patch((b) => void b.writeUInt32LE(0xffffffff, 8)), /ops exceed/],
      ['opcode', patch((b) => void b.writeUInt16LE(999, 12)), /unknown opcode 999/],
      ['opcode 0', patch((b) => void b.writeUInt16LE(0, 12)), /unknown opcode 0/],
      ['argc', patch((b) => void b.writeUInt16LE(3, 14)), /3 arguments, want 2/],
      ['arg type', patch((b) => void (b[16] = 1)), /argument type 1, want 2/],
      ['NUL in string', patch((b) => void (b[22] = 0)), /NUL/],
      ['length', patch((b) => void b.writeUInt32LE(0xffffffff, 17)), /exceed/],
      ['truncated', good.subarray(0, good.length - 3), /truncated/],
      ['trailing', Buffer.concat([good, Buffer.from([0])]), /1 trailing bytes/],
      ['int range', Buffer.from(encodePlan({ ops: [clone('wait')] })).fill(2, 12 + 4 + 9 + 1, 12 + 4 + 9 + 2), /out of range/],
      ['two clones', Buffer.concat([Buffer.from(encodePlan({ ops: [clone()] })).subarray(0, 12), ...[0, 1].map(() => Buffer.from(encodePlan({ ops: [clone()] })).subarray(12))]).fill(0, 8, 12).fill(2, 8, 9), /more than one clone/],
    ];
    for (const [name, bytes, pattern] of cases) {
      const r = await runRaw(bytes);
      assert.equal(r.exit, 2, `${name}: exit status`);
      assert.match(r.stderr, /invalid plan/, `${name}: ${r.stderr}`);
      assert.match(r.stderr, pattern, `${name}: ${r.stderr}`);
      assert.equal(r.sync, '', `${name}: nothing on the sync fd`);
      assert.equal(fs.readFileSync(marker, 'utf8'), 'orig', `${name}: nothing was done`);
    }
    assert.equal((await runRaw(good, ['3'])).exit, 2, 'usage');
    assert.equal((await runRaw(good, ['3', '99'])).exit, 2, 'a closed sync fd');
    const ok = await runRaw(good);
    assert.equal(ok.exit, 0);
    assert.equal(fs.readFileSync(marker, 'utf8'), 'touched', 'the unpatched plan does run');
  });

  it('resolves mountInRoot targets inside the root even through symlinks and ".." (CVE-2021-30465)', async () => {
    const base = path.join(tmp, 'escape');
    const rootfs = makeRootfs(path.join(base, 'rootfs'));
    const outside = path.join(base, 'outside');
    const existing = path.join(base, 'existing');
    fs.mkdirSync(existing);
    fs.symlinkSync(outside, path.join(rootfs, 'evil')); // dangling absolute symlink
    fs.symlinkSync('../../..', path.join(rootfs, 'up')); // relative symlink climbing out
    fs.symlinkSync(existing, path.join(rootfs, 'there')); // points at a host dir that exists
    fs.symlinkSync(path.join(outside + '-f', 'file'), path.join(rootfs, 'evilfile'));
    const tmpfsAt = (target: string, mkdir: number, extra = 0): Op => ({ op: 'mountInRoot', source: 'tmpfs', target, fstype: 'tmpfs', flags: 0, data: '', mkdir, extra });
    const r = await run([
      clone('wait', CLONE.NEWNS),
      privateRoot,
      { op: 'openRoot', path: rootfs },
      tmpfsAt('evil', MKDIR.DIR),
      tmpfsAt('up/rel', MKDIR.DIR),
      tmpfsAt('../../../../dotdot', MKDIR.DIR),
      tmpfsAt('there', MKDIR.NONE, 2), // optional: "there" does not exist inside the root, so it is skipped
      { op: 'mountInRoot', source: '/dev/null', target: 'evilfile', fstype: '', flags: MS.BIND, data: '', mkdir: MKDIR.FILE, extra: 0 },
      bb('cat', '/proc/self/mountinfo'),
    ]);
    assert.equal(r.error, undefined, String(r.error));
    const points = r.stdout.split('\n').filter(Boolean).map((l) => l.split(' ')[4]);
    for (const p of [rootfs + outside, path.join(rootfs, 'rel'), path.join(rootfs, 'dotdot'), path.join(rootfs, outside + '-f', 'file')]) {
      assert.ok(points.includes(p), `mounted at ${p}`);
    }
    for (const p of [outside, existing, path.join(base, 'rel'), '/dotdot', path.join(outside + '-f', 'file')]) {
      assert.ok(!points.includes(p), `nothing mounted at ${p}`);
    }
    assert.equal(fs.existsSync(outside), false, 'nothing created outside the root');
    assert.equal(fs.existsSync(outside + '-f'), false, 'nothing created outside the root');
    assert.ok(fs.statSync(path.join(rootfs, outside)).isDirectory());
    assert.ok(fs.statSync(path.join(rootfs, outside + '-f', 'file')).isFile());

    const noTarget = await run([clone('wait', CLONE.NEWNS), privateRoot, { op: 'openRoot', path: rootfs }, tmpfsAt('there', MKDIR.NONE), bb('true')]);
    assert.ok(noTarget.error instanceof NotFoundError, 'a symlink to an existing host dir does not resolve outside');
  });

  it('keeps the flags a less privileged mount namespace locks when remounting (KEEP_LOCKED_FLAGS)', async () => {
    const base = path.join(tmp, 'locked');
    fs.mkdirSync(path.join(base, 'x'), { recursive: true });
    // After unshare(NEWUSER) we are an unmapped uid: directories must be searchable by others.
    for (const d of [tmp, base, path.join(base, 'x')]) fs.chmodSync(d, 0o755);
    const x = path.join(base, 'x');
    const locked = MS.NOSUID | MS.NODEV | MS.NOEXEC | MS.NOATIME;
    const remountRo = (keep: boolean, inRoot: boolean): Op =>
      inRoot
        ? { op: 'mountInRoot', source: '', target: 'x', fstype: '', flags: MS.BIND | MS.REMOUNT | MS.RDONLY, data: '', mkdir: MKDIR.NONE, extra: keep ? 1 : 0, origin: 'remount' }
        : { op: 'mount', source: '', target: x, fstype: '', flags: MS.BIND | MS.REMOUNT | MS.RDONLY, data: '', extra: keep ? 1 : 0, origin: 'remount' };
    for (const inRoot of [false, true]) {
      const plan = (keep: boolean): Op[] => [
        clone('wait', CLONE.NEWNS),
        privateRoot,
        { op: 'mount', source: 'tmpfs', target: x, fstype: 'tmpfs', flags: locked, data: '', extra: 0 },
        { op: 'unshare', flags: CLONE.NEWUSER | CLONE.NEWNS },
        { op: 'openRoot', path: base }, // after unshare: the fd must belong to the new mount ns
        remountRo(keep, inRoot),
        bb('cat', '/proc/self/mountinfo'),
      ];
      const denied = await run(plan(false));
      assert.ok(denied.error instanceof PermissionDeniedError, `inRoot=${inRoot}: ${String(denied.error)}`);
      const kept = await run(plan(true));
      assert.equal(kept.error, undefined, String(kept.error));
      const line = kept.stdout.split('\n').find((l) => l.split(' ')[4] === x);
      assert.ok(line, `mountinfo has ${x}`);
      assert.deepEqual(line.split(' ')[5].split(',').sort(), ['noatime', 'nodev', 'noexec', 'nosuid', 'ro']);
    }
  });

  it('marks fds from cloexecFrom close-on-exec and leaves stdio and preserved fds alone', async () => {
    const a = fs.openSync('/dev/null', 'r');
    const b = fs.openSync('/dev/null', 'r');
    try {
      const list = (ops: Op[]) => run(ops, { preserveFds: [a, b] }).then((r) => r.stdout.split(/\s+/).filter(Boolean).map(Number).sort((x, y) => x - y));
      const script = sh('ls /proc/$$/fd; true');
      // No new pid ns here: $$ must be a pid of the host /proc the shell sees.
      assert.deepEqual(await list([clone('wait', CLONE.NEWUTS), { op: 'cloexecFrom', from: 4 }, script]), [0, 1, 2, 3]);
      // Without it the preserved fds stay (and whatever the test runner itself inherited without
      // O_CLOEXEC); the plan fd (5) and the sync fd (6) never reach the container.
      const plain = await list([clone('wait', CLONE.NEWUTS), script]);
      assert.deepEqual(plain.slice(0, 5), [0, 1, 2, 3, 4]);
      assert.ok(!plain.includes(5) && !plain.includes(6), `fds ${plain}`);
    } finally {
      fs.closeSync(a);
      fs.closeSync(b);
    }
  });

  it('runs from a sealed memfd that cannot be written (CVE-2019-5736)', async () => {
    const ex = startExecutor({ plan: { ops: [clone('wait'), { op: 'syncWait', message: 'go' }, bb('true')] }, stdio: ['ignore', 'ignore', 'inherit'] });
    const pid = await ex.childPid();
    for (const p of [pid, ex.launcher.pid!]) {
      assert.match(fs.readlinkSync(`/proc/${p}/exe`), /^\/memfd:corral-exec/);
      let fd: number | undefined;
      try {
        fd = fs.openSync(`/proc/${p}/exe`, 'r+');
      } catch (e) {
        assert.match((e as NodeJS.ErrnoException).code!, /^(ETXTBSY|EPERM|EACCES)$/);
      }
      if (fd !== undefined) {
        assert.throws(() => fs.writeSync(fd, 'x'), /EPERM/);
        assert.throws(() => fs.ftruncateSync(fd, 0), /EPERM/);
        fs.closeSync(fd);
      }
    }
    ex.send('go');
    await ex.waitExec();
    assert.equal((await ex.launcherExit()).code, 0);
  });

  it('sets up a console: the pty master goes over the console socket (full rootfs with pivot_root)', async () => {
    const base = path.join(tmp, 'console');
    const rootfs = makeRootfs(path.join(base, 'rootfs'));
    const sock = path.join(base, 'console.sock');
    fs.writeFileSync(path.join(rootfs, 'secret'), 'secret');
    const recv = spawn(consoleRecv, [sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    const recvOut = collect(recv.stdout);
    const recvExit = new Promise((resolve) => recv.on('exit', resolve));
    await new Promise<void>((resolve, reject) => {
      recv.stdout!.once('data', (c: Buffer) => (String(c).startsWith('ready') ? resolve() : reject(new Error(String(c)))));
    });
    const inRoot = (source: string, target: string, fstype: string, flags: number, data: string, mkdir: number): Op => ({ op: 'mountInRoot', source, target, fstype, flags, data, mkdir, extra: 0 });
    const r = await run([
      clone('wait'),
      privateRoot,
      { op: 'mount', source: rootfs, target: rootfs, fstype: '', flags: MS.BIND | MS.REC, data: '', extra: 0 },
      { op: 'openRoot', path: rootfs },
      inRoot('proc', 'proc', 'proc', MS.NOSUID | MS.NODEV | MS.NOEXEC, '', MKDIR.DIR),
      inRoot('tmpfs', 'dev', 'tmpfs', MS.NOSUID, 'mode=755', MKDIR.DIR),
      { op: 'mkdirInRoot', path: 'dev/pts', mode: 0o755 },
      inRoot('devpts', 'dev/pts', 'devpts', MS.NOSUID | MS.NOEXEC, 'newinstance,ptmxmode=0666,mode=620', MKDIR.NONE),
      { op: 'symlinkInRoot', target: 'pts/ptmx', linkpath: 'dev/ptmx' },
      { op: 'symlinkInRoot', target: 'pts/ptmx', linkpath: 'dev/ptmx' }, // EEXIST is ignored
      { op: 'mknodInRoot', path: 'dev/null', mode: 0o20666, major: 1, minor: 3, uid: 0, gid: 0 },
      { op: 'mknodInRoot', path: 'dev/null', mode: 0o20666, major: 1, minor: 5, uid: 0, gid: 0 }, // left as is
      inRoot('/dev/null', 'dev/console', '', MS.BIND, '', MKDIR.FILE),
      { op: 'consoleConnect', path: sock },
      { op: 'sethostname', name: 'full' },
      { op: 'pivotRoot', path: rootfs },
      { op: 'maskPath', path: '/secret' },
      { op: 'maskPath', path: '/proc/tty' },
      { op: 'maskPath', path: '/no/such/path' },
      { op: 'readonlyPath', path: '/proc/sys' },
      { op: 'setupConsole', rows: 24, cols: 80, mountConsole: true },
      {
        op: 'exec',
        path: 'sh',
        argv: ['sh', '-c', 'tty; stty size; hostname; wc -c < /secret; ls /proc/tty | wc -l; (echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo rw || echo ro; stat -c "%t,%T" /dev/null /dev/console; readlink /dev/ptmx; echo $$; ls -1 /; echo done'],
        env: ['PATH=/bin'],
        searchPath: true,
      },
    ]);
    assert.equal(r.error, undefined, String(r.error));
    assert.deepEqual(r.exit, { code: 0, signal: null });
    assert.equal(await recvExit, 0);
    const lines = (await recvOut).replace(/\r/g, '').split('\n');
    assert.deepEqual(lines.slice(1, 10), ['payload console', '/dev/pts/0', '24 80', 'full', '0', '0', 'ro', '1,3', '88,0']);
    assert.deepEqual(lines.slice(10), ['pts/ptmx', '1', 'bin', 'dev', 'proc', 'secret', 'done', '']);
    assert.equal(r.stdout, '', 'the container wrote to the console, not to the original stdout');
    fs.rmSync(sock);
  });

  it('moveRoot makes the rootfs the root without pivot_root', async () => {
    const rootfs = makeRootfs(path.join(tmp, 'moveroot'));
    const r = await run([
      clone('wait'),
      privateRoot,
      { op: 'mount', source: rootfs, target: rootfs, fstype: '', flags: MS.BIND | MS.REC, data: '', extra: 0 },
      { op: 'moveRoot', path: rootfs },
      { op: 'exec', path: '/bin/sh', argv: ['sh', '-c', 'ls /; pwd'], env: [], searchPath: false },
    ]);
    assert.equal(r.error, undefined, String(r.error));
    assert.equal(r.stdout, 'bin\n/\n');
  });

  it('waits for start on the fifo', async () => {
    const fifo = path.join(tmp, 'start.fifo');
    execFileSync(BB, ['mkfifo', fifo]);
    const ops: Op[] = [clone('exit'), { op: 'openStartFifo', path: fifo }, { op: 'syncSend', message: 'ready' }, { op: 'waitStart' }, bb('echo', 'started')];
    const ex = startExecutor({ plan: { ops }, stdio: ['ignore', 'pipe', 'inherit'] });
    const out = collect(ex.launcher.stdout);
    await ex.expect('ready');
    assert.deepEqual(await ex.launcherExit(), { code: 0, signal: null }, 'the exit-mode launcher is gone');
    assert.equal(await fs.promises.readFile(fifo, 'utf8'), '0');
    await ex.waitExec();
    assert.equal(await out, 'started\n');
    fs.rmSync(fifo);
  });

  it('runs hooks with stdin and env, fails on non-zero exit and kills them on timeout', async () => {
    const out = path.join(tmp, 'hook.out');
    const pidFile = path.join(tmp, 'hook.pid');
    const hook = (script: string, timeoutSec = 0, origin = 'hooks.prestart[0]'): Op => ({
      op: 'runHook', path: BB, args: ['busybox', 'sh', '-c', script], env: ['FOO=bar'], timeoutSec, stdin: '{"id":"c1"}', origin,
    });
    const ok = await run([hook(`cat > ${out}; echo " $FOO" >> ${out}`), clone(), hook(`echo in-child >> ${out}`, 5), bb('true')]);
    assert.equal(ok.error, undefined, String(ok.error));
    assert.equal(fs.readFileSync(out, 'utf8'), '{"id":"c1"} bar\nin-child\n');

    const failed = await run([clone(), hook('exit 3', 0, 'hooks.poststart[1]'), bb('true')]);
    assert.ok(failed.error instanceof FailedPreconditionError);
    assert.match(failed.error.message, /^hooks\.poststart\[1\] \(runHook\): hook \/bin\/busybox exited with status 3/);

    const ignoresStdin = await run([{ ...(hook('exec 0<&-; exit 0') as Extract<Op, { op: 'runHook' }>), stdin: 'x'.repeat(1 << 20) }, bb('true')]);
    assert.equal(ignoresStdin.error, undefined, 'a hook that closes its stdin early is not a failure');

    const slow = await run([clone('wait', CLONE.NEWUTS), hook(`echo $$ > ${pidFile}; exec busybox sleep 1000`, 1), bb('true')]);
    assert.ok(slow.error instanceof DeadlineExceededError, String(slow.error));
    assert.ok(isOpError(slow.error) && slow.error.errno === 'ETIMEDOUT' && slow.error.opIndex === 1);
    const hookPid = Number(fs.readFileSync(pidFile, 'utf8'));
    assert.ok(hookPid > 0);
    assert.equal(fs.existsSync(`/proc/${hookPid}`), false, 'the timed-out hook was killed and reaped');
  });

  it('sets the user, groups, bounding/ambient caps and no_new_privs', async () => {
    const KILL = 5n, NET_BIND = 10n, CHOWN = 0n;
    const set = (1n << KILL) | (1n << NET_BIND);
    const r = await run([
      clone('wait'),
      { op: 'capsBounding', keep: set | (1n << CHOWN) },
      { op: 'setUser', uid: 1000, gid: 1001, groups: [1001, 2000], setgroups: true },
      { op: 'capsSet', effective: set, permitted: set, inheritable: set, ambient: set },
      { op: 'noNewPrivs' },
      bb('cat', '/proc/self/status'),
    ]);
    assert.equal(r.error, undefined, String(r.error));
    const status = Object.fromEntries(r.stdout.split('\n').filter(Boolean).map((l) => l.split(/:\s*/, 2) as [string, string]));
    const hex = (v: bigint) => v.toString(16).padStart(16, '0');
    assert.equal(status.Uid, '1000\t1000\t1000\t1000');
    assert.equal(status.Gid, '1001\t1001\t1001\t1001');
    assert.equal(status.Groups.trim(), '1001 2000');
    assert.equal(status.CapInh, hex(set));
    assert.equal(status.CapPrm, hex(set));
    assert.equal(status.CapEff, hex(set));
    assert.equal(status.CapAmb, hex(set));
    assert.equal(status.CapBnd, hex(set | (1n << CHOWN)));
    assert.equal(status.NoNewPrivs, '1');

    const denied = await run([clone('wait'), { op: 'setUser', uid: 1000, gid: 1000, groups: [], setgroups: false }, { op: 'sethostname', name: 'x', origin: 'hostname' }, bb('true')]);
    assert.ok(denied.error instanceof PermissionDeniedError, 'without capabilities sethostname fails with EPERM');
  });

  it('loads a seccomp filter that returns EPERM for sethostname', async () => {
    const arch = { x64: [0xc000003e, 170], arm64: [0xc00000b7, 161] }[process.arch as 'x64' | 'arm64'];
    assert.ok(arch, `no seccomp test data for ${process.arch}`);
    const [AUDIT_ARCH, NR_sethostname] = arch;
    const insns: Array<[number, number, number, number]> = [
      [0x20, 0, 0, 4], // ld [arch]
      [0x15, 0, 3, AUDIT_ARCH], // jeq arch ? next : allow
      [0x20, 0, 0, 0], // ld [nr]
      [0x15, 0, 1, NR_sethostname], // jeq sethostname ? next : allow
      [0x06, 0, 0, 0x00050000 | 1], // ret ERRNO(EPERM)
      [0x06, 0, 0, 0x7fff0000], // ret ALLOW
    ];
    const program = new Uint8Array(insns.length * 8);
    const dv = new DataView(program.buffer);
    insns.forEach(([code, jt, jf, k], i) => {
      dv.setUint16(i * 8, code, true);
      dv.setUint8(i * 8 + 2, jt);
      dv.setUint8(i * 8 + 3, jf);
      dv.setUint32(i * 8 + 4, k, true);
    });
    const filtered = await run([clone('wait'), { op: 'noNewPrivs' }, { op: 'seccomp', program, flags: 0 }, sh('hostname blocked; echo rc=$?; hostname')]);
    assert.equal(filtered.error, undefined, String(filtered.error));
    assert.match(filtered.stderr, /Operation not permitted/);
    assert.match(filtered.stdout, /^rc=1\n/);
    assert.doesNotMatch(filtered.stdout, /blocked/);
    const unfiltered = await run([clone('wait'), sh('hostname allowed; echo rc=$?; hostname')]);
    assert.equal(unfiltered.stdout, 'rc=0\nallowed\n');
  });

  it('sets rlimits, umask, personality and cwd, and searches PATH', async () => {
    const INF = (1n << 64n) - 1n;
    const r = await run([
      clone('wait'),
      { op: 'setrlimit', resource: 7, soft: 123n, hard: 456n },
      { op: 'setrlimit', resource: 4, soft: INF, hard: INF },
      { op: 'umask', mask: 0o027 },
      { op: 'personality', domain: 0x0040000 },
      { op: 'chdir', path: tmp },
      { op: 'exec', path: 'busybox', argv: ['sh', '-c', 'ulimit -n; ulimit -Hn; ulimit -c; umask; pwd; cat /proc/self/personality'], env: [`PATH=/nonexistent::/bin`], searchPath: true },
    ]);
    assert.equal(r.error, undefined, String(r.error));
    assert.equal(r.stdout, `123\n456\nunlimited\n0027\n${tmp}\n00040000\n`);

    const notFound = await run([clone('wait'), { op: 'exec', path: 'no-such-program', argv: ['x'], env: ['PATH=/bin:/usr/bin'], searchPath: true, origin: 'process.args' }]);
    assert.ok(notFound.error instanceof NotFoundError);
    assert.match(notFound.error.message, /^process\.args \(exec\): ENOENT/);
  });

  it('joins the namespaces of another container with setns', async () => {
    const a = startExecutor({
      plan: { ops: [clone('wait', CLONE.NEWUTS), { op: 'sethostname', name: 'ns-a' }, { op: 'syncSend', message: 'ready' }, { op: 'syncWait', message: 'go' }, bb('true')] },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const pid = await a.childPid();
    await a.expect('ready');
    const b = await run([{ op: 'setns', path: `/proc/${pid}/ns/uts`, nstype: CLONE.NEWUTS }, bb('hostname')]);
    assert.equal(b.stdout, 'ns-a\n');
    a.send('go');
    await a.waitExec();
    assert.equal((await a.launcherExit()).code, 0);
  });

  describe('driver robustness (fake executors)', () => {
    const fake = (body: string) => {
      const p = path.join(tmp, `fake-${Math.random().toString(36).slice(2)}.sh`);
      fs.writeFileSync(p, `#!${BB} sh\nexec 2>/dev/null\n${body}\n`, { mode: 0o755 });
      return p;
    };
    const start = (body: string, ops: Op[] = [clone(), bb('true')]) => startExecutor({ plan: { ops }, executorPath: fake(body), stdio: ['ignore', 'ignore', 'inherit'] });

    it('rejects a garbage line where a sync message was expected', async () => {
      const ex = start('echo "pid 42" >&$2; echo "garbage!" >&$2; read x <&$2');
      assert.equal(await ex.childPid(), 42);
      await assert.rejects(ex.expect('hooks'), (e: unknown) => e instanceof InternalError && /expected sync message "hooks", got "garbage!"/.test(e.message));
      ex.close();
      await ex.launcherExit();
    });

    it('rejects everything when the executor crashes before reporting the pid', async () => {
      const ex = start('kill -SEGV $$');
      await assert.rejects(ex.childPid(), /killed by SIGSEGV before reporting the child pid/);
      await assert.rejects(ex.waitExec(), /SIGSEGV/);
      assert.deepEqual(await ex.launcherExit(), { code: null, signal: 'SIGSEGV' });
    });

    it('rejects expect on EOF and waitExec on unexpected messages or unknown errnos', async () => {
      const eof = start('echo "pid 7" >&$2');
      await assert.rejects(eof.expect('ready'), /sync fd closed while waiting for "ready"/);
      const extra = start('echo "pid 7" >&$2; echo "surprise" >&$2');
      await assert.rejects(extra.waitExec(), /unexpected sync message "surprise"/);
      const odd = start('echo "error 5 200 strange failure" >&$2');
      await assert.rejects(odd.waitExec(), (e: unknown) => isOpError(e) && e.errnoNumber === 200 && e.opIndex === 5 && /strange failure/.test(e.message));
      const long = start(`${BB} head -c 70000 /dev/zero | ${BB} tr '\\0' x >&$2`);
      await assert.rejects(long.waitExec(), /longer than/);
      const missing = startExecutor({ plan: { ops: [] }, executorPath: path.join(tmp, 'no-such-executor') });
      await assert.rejects(missing.launcherExit(), NotFoundError);
      await assert.rejects(missing.waitExec(), NotFoundError);
      for (const ex of [eof, extra, odd, long]) await ex.launcherExit();
    });
  });
});
