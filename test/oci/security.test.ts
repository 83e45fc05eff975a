// Security properties: runtime binary unreachable (CVE-2019-5736 class), no leaked fds and cwd inside
// the rootfs (CVE-2024-21626 class), mount targets resolved inside the rootfs (CVE-2021-30465 class),
// and capabilities/no_new_privs/seccomp applied in the right order.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, openSync, closeSync, readFileSync, readlinkSync, symlinkSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { suite, runToEnd, CORRAL_OCI } from '../helpers/oci.ts';

const s = suite('sec');
after(() => s.finish());
const sh = (script: string) => ['/bin/sh', '-c', script];

test('a waiting init runs from a sealed memfd, not from the runtime binary', () => {
  const b = s.bundle(['/bin/true']);
  const id = s.id('exe');
  const pidFile = join(s.work, 'exe.pid');
  assert.equal(s.oci(['create', '--bundle', b.dir, '--pid-file', pidFile, id]).status, 0);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  const exe = readlinkSync(`/proc/${pid}/exe`);
  assert.match(exe, /^\/memfd:/, `init exe is ${exe}`);
  assert.throws(() => closeSync(openSync(`/proc/${pid}/exe`, 'r+')), /EPERM|EACCES|ETXTBSY/);
  assert.equal(s.oci(['delete', '--force', id]).status, 0);
});

test('no runtime fd reaches the container and its cwd is inside the rootfs', () => {
  const r = runToEnd(s, 'fds', sh('ls /proc/self/fd | sort -n | tr "\\n" " "; echo; readlink /proc/1/cwd; cd -P /proc/self/cwd/.. && pwd -P'));
  assert.equal(r.status, 0, r.stderr);
  const [fds, cwd, parent] = r.stdout.trim().split('\n');
  // 0,1,2 and the fd ls itself opens for /proc/self/fd (3).
  assert.deepEqual(fds.trim().split(' '), ['0', '1', '2', '3']);
  assert.equal(cwd, '/');
  assert.equal(parent, '/');
});

test('--preserve-fds passes exactly the requested extra fds', () => {
  const b = s.bundle(sh('ls /proc/self/fd | sort -n | tr "\\n" " "'));
  const extra = openSync('/dev/null', 'r');
  const r = spawnSync(CORRAL_OCI, ['--root', s.root, 'run', '--preserve-fds', '1', '--bundle', b.dir, s.id('pfd')], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe', extra],
  });
  closeSync(extra);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split(' '), ['0', '1', '2', '3', '4']);
});

test('a mount destination through a symlink pointing outside the rootfs stays inside it', () => {
  const outside = join(s.work, 'outside-target');
  mkdirSync(outside);
  const b = s.bundle(sh('ls /evil; cat /proc/self/mountinfo | grep -c " /outside-target " || true'));
  // rootfs/evil -> <absolute host path>; a naive runtime would mount on the host's directory.
  symlinkSync(outside, join(b.rootfs, 'evil'));
  b.spec.mounts!.push({ destination: '/evil', type: 'tmpfs', source: 'tmpfs', options: ['size=64k'] });
  b.write();
  const r = s.oci(['run', '--bundle', b.dir, s.id('symlink')]);
  assert.equal(r.status, 0, r.stderr);
  // The host directory received no mount, and the rootfs got a directory at <rootfs><outside>.
  assert.equal(readFileSync('/proc/self/mountinfo', 'utf8').includes(outside), false);
  assert.ok(existsSync(join(b.rootfs, outside)), 'the mount was created inside the rootfs');
  rmSync(outside, { recursive: true });
});

test('".." in a mount destination is refused', () => {
  const b = s.bundle(['/bin/true'], (sp) => { sp.mounts!.push({ destination: '/../../etc', type: 'tmpfs', source: 'tmpfs' }); });
  const r = s.oci(['create', '--bundle', b.dir, s.id('dotdot')]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /mounts\[\d+\]\.destination: must not contain "\.\."/);
});

test('seccomp is applied after capabilities are dropped and with no_new_privs: the process cannot undo it', () => {
  const r = runToEnd(s, 'order', sh('grep -E "^(Seccomp|NoNewPrivs|CapEff)" /proc/self/status | cut -f2 | tr "\\n" " "; mkdir /tmp/x 2>&1 || true'), (sp) => {
    sp.process!.noNewPrivileges = true;
    sp.process!.capabilities = { bounding: ['CAP_KILL'], effective: ['CAP_KILL'], permitted: ['CAP_KILL'] };
    sp.linux!.seccomp = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO' }] };
  });
  assert.equal(r.status, 0, r.stderr);
  // /proc/self/status order: CapEff, NoNewPrivs, Seccomp, Seccomp_filters.
  const [capEff, nnp, seccomp] = r.stdout.trim().split(' ');
  assert.equal(seccomp, '2', 'seccomp filter mode');
  assert.equal(nnp, '1');
  assert.equal(BigInt(`0x${capEff}`), 1n << 5n);
  assert.match(r.stdout, /Operation not permitted/);
});

test('seccomp without no_new_privs is loaded while CAP_SYS_ADMIN is still held, then caps drop', () => {
  const r = runToEnd(s, 'order2', sh('grep -E "^(Seccomp|NoNewPrivs)" /proc/self/status | cut -f2 | tr "\\n" " "'), (sp) => {
    sp.process!.noNewPrivileges = false;
    sp.process!.user = { uid: 1000, gid: 1000 };
    sp.linux!.seccomp = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO' }] };
  });
  assert.equal(r.status, 0, r.stderr);
  // NoNewPrivs 0, Seccomp 2 (filter), one filter.
  assert.deepEqual(r.stdout.trim().split(' '), ['0', '2', '1']);
});

test('a seccomp allowlist without close_range still gets the fds marked close-on-exec (fallback)', () => {
  const r = runToEnd(s, 'noclose', sh('ls /proc/self/fd | sort -n | tr "\\n" " "'), (sp) => {
    sp.process!.noNewPrivileges = false;
    sp.linux!.seccomp = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['close_range'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }] };
  });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split(' '), ['0', '1', '2', '3']);
});
