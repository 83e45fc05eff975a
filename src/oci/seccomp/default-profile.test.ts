import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CLONE_NAMESPACE_FLAGS, runtimeDefaultProfile } from './default-profile.ts';
import { seccompIssues } from './validate.ts';

const allowed = (p: ReturnType<typeof runtimeDefaultProfile>) => new Set(p.syscalls!.filter((s) => s.action === 'SCMP_ACT_ALLOW' && !s.args).flatMap((s) => s.names));

describe('runtimeDefaultProfile', () => {
  it('is a valid OCI profile denying with EPERM, for each architecture', () => {
    for (const arch of ['x86_64', 'aarch64'] as const) {
      const p = runtimeDefaultProfile(arch);
      assert.deepEqual(seccompIssues(p), []);
      assert.equal(p.defaultAction, 'SCMP_ACT_ERRNO');
      assert.equal(p.defaultErrnoRet, 1);
    }
    assert.deepEqual(runtimeDefaultProfile('x86_64').architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
    assert.deepEqual(runtimeDefaultProfile('aarch64').architectures, ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
    assert.ok(allowed(runtimeDefaultProfile('x86_64')).has('arch_prctl'));
    assert.ok(!allowed(runtimeDefaultProfile('aarch64')).has('arch_prctl'));
    assert.ok(allowed(runtimeDefaultProfile('aarch64')).has('set_tls'));
  });

  it('grants privileged syscalls by capability (with or without the CAP_ prefix)', () => {
    const none = allowed(runtimeDefaultProfile({ arch: 'x86_64', capabilities: [] }));
    for (const n of ['mount', 'unshare', 'setns', 'reboot', 'chroot', 'init_module', 'kcmp', 'bpf', 'clone3']) assert.ok(!none.has(n), n);
    const admin = allowed(runtimeDefaultProfile({ arch: 'x86_64', capabilities: ['sys_admin', 'CAP_SYS_BOOT'] }));
    for (const n of ['mount', 'unshare', 'setns', 'clone', 'clone3', 'reboot']) assert.ok(admin.has(n), n);
    assert.ok(allowed(runtimeDefaultProfile({ arch: 'x86_64' })).has('chroot'), 'Docker default caps include CAP_SYS_CHROOT');
  });

  it('restricts clone namespace flags and clone3 without CAP_SYS_ADMIN', () => {
    const p = runtimeDefaultProfile({ arch: 'x86_64', capabilities: [] });
    const clone = p.syscalls!.find((s) => s.names.includes('clone') && s.args);
    assert.deepEqual(clone?.args, [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }]);
    assert.equal(CLONE_NAMESPACE_FLAGS, 2114060288);
    const clone3 = p.syscalls!.find((s) => s.names.includes('clone3'));
    assert.deepEqual(clone3, { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 });
    const admin = runtimeDefaultProfile({ arch: 'x86_64', capabilities: ['CAP_SYS_ADMIN'] });
    assert.equal(admin.syscalls!.some((s) => s.names.includes('clone') && s.args), false);
  });

  it('allows only the known personality values and ptrace from Linux 4.8', () => {
    const p = runtimeDefaultProfile({ arch: 'x86_64', capabilities: [], kernel: '4.4.0' });
    const pers = p.syscalls!.filter((s) => s.names.includes('personality')).map((s) => s.args![0].value);
    assert.deepEqual(pers, [0, 8, 131072, 131080, 4294967295]);
    assert.ok(!allowed(p).has('ptrace'));
    assert.ok(allowed(runtimeDefaultProfile({ arch: 'x86_64', capabilities: [], kernel: '6.1.0-18-amd64' })).has('ptrace'));
  });
});
