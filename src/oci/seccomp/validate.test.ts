import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SpecError } from '../../errors.ts';
import { seccompIssues, validateSeccomp } from './validate.ts';

function fails(spec: unknown, path: string, check: string, reason?: RegExp) {
  const issues = seccompIssues(spec);
  const hit = issues.find((i) => i.path === path);
  assert.ok(hit, `expected an issue at ${path}, got ${JSON.stringify(issues)}`);
  assert.equal(hit.check, check);
  if (reason) assert.match(hit.reason, reason);
  assert.throws(() => validateSeccomp(spec), (e: unknown) => e instanceof SpecError && e.path === issues[0].path);
}

describe('validateSeccomp', () => {
  it('accepts a full, valid profile', () => {
    const spec = {
      defaultAction: 'SCMP_ACT_ERRNO',
      defaultErrnoRet: 1,
      architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
      flags: ['SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW'],
      syscalls: [
        { names: ['read', 'write'], action: 'SCMP_ACT_ALLOW' },
        { names: ['clone'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 2114060288, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }] },
        { names: ['personality'], action: 'SCMP_ACT_TRACE', errnoRet: 7, args: [{ index: 5, value: (1n << 64n) - 1n, op: 'SCMP_CMP_LE' }] },
      ],
    };
    assert.deepEqual(seccompIssues(spec), []);
    validateSeccomp(spec);
  });

  it('names the JSON path of each problem', () => {
    fails(null, 'linux.seccomp', 'object');
    fails({}, 'linux.seccomp.defaultAction', 'default-action', /required/);
    fails({ defaultAction: 'SCMP_ACT_DENY' }, 'linux.seccomp.defaultAction', 'action', /unknown action "SCMP_ACT_DENY"/);
    fails({ defaultAction: 'SCMP_ACT_NOTIFY' }, 'linux.seccomp.defaultAction', 'notify-default');
    fails({ defaultAction: 'SCMP_ACT_ALLOW', defaultErrnoRet: 1 }, 'linux.seccomp.defaultErrnoRet', 'errno-action', /only allowed with SCMP_ACT_ERRNO, SCMP_ACT_TRACE/);
    fails({ defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: -1 }, 'linux.seccomp.defaultErrnoRet', 'errno-range');
    fails({ defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 70000 }, 'linux.seccomp.defaultErrnoRet', 'errno-range');
    fails({ defaultAction: 'SCMP_ACT_ALLOW', architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_Z80'] }, 'linux.seccomp.architectures[1]', 'arch', /SCMP_ARCH_Z80/);
    fails({ defaultAction: 'SCMP_ACT_ALLOW', architectures: 'SCMP_ARCH_X86_64' }, 'linux.seccomp.architectures', 'architectures');
    fails({ defaultAction: 'SCMP_ACT_ALLOW', flags: ['SECCOMP_FILTER_FLAG_NEW_LISTENER'] }, 'linux.seccomp.flags[0]', 'flag');
    fails({ defaultAction: 'SCMP_ACT_ALLOW', listenerPath: 3 }, 'linux.seccomp.listenerPath', 'listener');
    const sc = (x: unknown) => ({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['read'], action: 'SCMP_ACT_ERRNO' }, x] });
    fails(sc('read'), 'linux.seccomp.syscalls[1]', 'syscall');
    fails(sc({ action: 'SCMP_ACT_ERRNO' }), 'linux.seccomp.syscalls[1].names', 'names', /required/);
    fails(sc({ names: [], action: 'SCMP_ACT_ERRNO' }), 'linux.seccomp.syscalls[1].names', 'names', /at least one/);
    fails(sc({ names: ['read', ''], action: 'SCMP_ACT_ERRNO' }), 'linux.seccomp.syscalls[1].names[1]', 'name');
    fails(sc({ names: ['re ad'], action: 'SCMP_ACT_ERRNO' }), 'linux.seccomp.syscalls[1].names[0]', 'name');
    fails(sc({ names: ['read'] }), 'linux.seccomp.syscalls[1].action', 'action', /required/);
    fails(sc({ names: ['read'], action: 'ALLOW' }), 'linux.seccomp.syscalls[1].action', 'action');
    fails(sc({ names: ['read'], action: 'SCMP_ACT_KILL', errnoRet: 1 }), 'linux.seccomp.syscalls[1].errnoRet', 'errno-action');
    fails(sc({ names: ['read'], action: 'SCMP_ACT_ERRNO', errnoRet: 1.5 }), 'linux.seccomp.syscalls[1].errnoRet', 'errno-range');
    fails(sc({ names: ['read'], action: 'SCMP_ACT_ERRNO', args: {} }), 'linux.seccomp.syscalls[1].args', 'args');
    const arg = (a: unknown) => sc({ names: ['read'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 1, op: 'SCMP_CMP_EQ' }, a] });
    fails(arg({ index: 6, value: 0, op: 'SCMP_CMP_EQ' }), 'linux.seccomp.syscalls[1].args[1].index', 'arg-index', /0 to 5/);
    fails(arg({ value: 0, op: 'SCMP_CMP_EQ' }), 'linux.seccomp.syscalls[1].args[1].index', 'arg-index');
    fails(arg({ index: 0, op: 'SCMP_CMP_EQ' }), 'linux.seccomp.syscalls[1].args[1].value', 'arg-value');
    fails(arg({ index: 0, value: -1, op: 'SCMP_CMP_EQ' }), 'linux.seccomp.syscalls[1].args[1].value', 'arg-value');
    fails(arg({ index: 0, value: 1n << 64n, op: 'SCMP_CMP_EQ' }), 'linux.seccomp.syscalls[1].args[1].value', 'arg-value');
    fails(arg({ index: 0, value: 18446744073709551615, op: 'SCMP_CMP_EQ' }), 'linux.seccomp.syscalls[1].args[1].value', 'arg-value', /bigint/);
    fails(arg({ index: 0, value: 1, valueTwo: 'x', op: 'SCMP_CMP_MASKED_EQ' }), 'linux.seccomp.syscalls[1].args[1].valueTwo', 'arg-value');
    fails(arg({ index: 0, value: 1, op: 'SCMP_CMP_LIKE' }), 'linux.seccomp.syscalls[1].args[1].op', 'arg-op', /SCMP_CMP_MASKED_EQ/);
    fails(arg({ index: 0, value: 1 }), 'linux.seccomp.syscalls[1].args[1].op', 'arg-op', /required/);
    fails(sc({ names: ['write'], action: 'SCMP_ACT_NOTIFY' }), 'linux.seccomp.syscalls[1].names', 'notify-write');
    fails(sc({ names: ['mkdir'], action: 'SCMP_ACT_NOTIFY' }), 'linux.seccomp.listenerPath', 'listener-path');
  });

  it('uses the caller-supplied path prefix', () => {
    assert.throws(() => validateSeccomp({ defaultAction: 'x' }, 'spec.linux.seccomp'), (e: unknown) => e instanceof SpecError && e.path === 'spec.linux.seccomp.defaultAction');
  });

  it('reports every problem, in document order', () => {
    const issues = seccompIssues({ defaultAction: 'SCMP_ACT_X', architectures: ['bad'], syscalls: [{ names: [], action: 'SCMP_ACT_ALLOW', args: [{ index: 9, value: 0, op: 'SCMP_CMP_EQ' }] }] });
    assert.deepEqual(issues.map((i) => i.path), [
      'linux.seccomp.defaultAction',
      'linux.seccomp.architectures[0]',
      'linux.seccomp.syscalls[0].names',
      'linux.seccomp.syscalls[0].args[0].index',
    ]);
  });
});
