import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checks, validateSpec } from './validate.ts';
import { exampleSpec } from './defaults.ts';
import { SpecError } from '../../errors.ts';
import type { Spec } from './types.ts';

function rejects(tweak: (s: any) => void, path: string, reason: RegExp): void {
  const spec = exampleSpec() as any;
  tweak(spec);
  assert.throws(() => validateSpec(spec, { requireProcess: true }), (e: unknown) => {
    assert.ok(e instanceof SpecError, String(e));
    assert.equal(e.path, path);
    assert.match(e.reason, reason);
    assert.equal(e.code, 'INVALID_ARGUMENT');
    return true;
  });
}

test('the template spec is valid', () => {
  validateSpec(exampleSpec(), { requireProcess: true });
  validateSpec(exampleSpec({ rootless: true }), { requireProcess: true });
});

test('every check has a name', () => {
  assert.deepEqual(checks.map((c) => c.name), ['ociVersion', 'root', 'process', 'mounts', 'namespaces', 'devices', 'sysctl', 'paths', 'hooks', 'seccomp']);
});

test('errors name the JSON path and the reason', () => {
  rejects((s) => { delete s.root; }, 'root', /required/);
  rejects((s) => { s.process.user.uid = -1; }, 'process.user.uid', /unsigned/);
  rejects((s) => { s.process.env.push('NOEQUALS'); }, 'process.env[2]', /KEY=VALUE/);
  rejects((s) => { s.process.rlimits.push({ type: 'RLIMIT_NOFILE', soft: 1, hard: 1 }); }, 'process.rlimits[1].type', /duplicate/);
  rejects((s) => { s.process.rlimits = [{ type: 'RLIMIT_BOGUS', soft: 1, hard: 1 }]; }, 'process.rlimits[0].type', /unknown rlimit/);
  rejects((s) => { s.process.oomScoreAdj = 5000; }, 'process.oomScoreAdj', /-1000 and 1000/);
  rejects((s) => { s.process.apparmorProfile = 'x'; }, 'process.apparmorProfile', /AppArmor/);
  rejects((s) => { s.mounts[0].destination = 'a/../../b'; }, 'mounts[0].destination', /\.\./);
  rejects((s) => { s.mounts.push({ destination: '/x', type: 'bind', options: ['bind'] }); }, 'mounts[7].source', /required for a bind/);
  rejects((s) => { s.linux.namespaces.push({ type: 'pid' }); }, 'linux.namespaces[6].type', /listed twice/);
  rejects((s) => { s.root.readonly = true; s.linux.namespaces = s.linux.namespaces.filter((n: any) => n.type !== 'mount'); }, 'root.readonly', /needs a mount namespace/);
  rejects((s) => { s.linux.namespaces.push({ type: 'user' }); }, 'linux.uidMappings', /needs both/);
  rejects((s) => { s.linux.uidMappings = [{ containerID: 0, hostID: 1, size: 1 }]; }, 'linux.uidMappings', /need a new user namespace/);
  rejects((s) => { s.linux.namespaces = s.linux.namespaces.filter((n: any) => n.type !== 'uts'); }, 'hostname', /uts namespace/);
  rejects((s) => { s.linux.devices = [{ path: '/dev/x', type: 'q' }]; }, 'linux.devices[0].type', /one of c, b, u, p/);
  rejects((s) => { s.linux.devices = [{ path: '/dev/x', type: 'c' }]; }, 'linux.devices[0].major', /required/);
  rejects((s) => { s.linux.sysctl = { 'net.ipv4.ip_forward': 1 }; }, 'linux.sysctl["net.ipv4.ip_forward"]', /string/);
  rejects((s) => { s.linux.namespaces = s.linux.namespaces.filter((n: any) => n.type !== 'network'); s.linux.sysctl = { 'net.core.somaxconn': '1' }; }, 'linux.sysctl["net.core.somaxconn"]', /network namespace/);
  rejects((s) => { s.linux.maskedPaths.push('relative'); }, 'linux.maskedPaths[10]', /absolute/);
  rejects((s) => { s.linux.rootfsPropagation = 'sideways'; }, 'linux.rootfsPropagation', /must be one of/);
  rejects((s) => { s.hooks = { poststart: [{ path: 'rel' }] }; }, 'hooks.poststart[0].path', /absolute/);
  rejects((s) => { s.hooks = { prestart: [{ path: '/x', timeout: 0 }] }; }, 'hooks.prestart[0].timeout', /positive/);
  rejects((s) => { s.hooks = { onFire: [] }; }, 'hooks.onFire', /not a known hook/);
  rejects((s) => { s.linux.seccomp = { defaultAction: 'SCMP_ACT_MAYBE' }; }, 'linux.seccomp.defaultAction', /./);
  rejects((s) => { s.process.args = []; }, 'process.args', /name the program/);
});

test('a non-object document is refused', () => {
  assert.throws(() => validateSpec([] as unknown as Spec), /config\.json must contain a JSON object/);
});
