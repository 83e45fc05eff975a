import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DevicesState, devicesTransition, normalizeDeviceRules } from './devices.ts';
import { SpecError } from '../../errors.ts';

test('normalize: defaults, wildcards, canonical access, narrow "a" split into b and c', () => {
  assert.deepEqual(normalizeDeviceRules([{ allow: false }]), [{ allow: false, type: 'a', major: -1, minor: -1, access: 'rwm' }]);
  assert.deepEqual(normalizeDeviceRules([{ allow: true, type: 'c', major: 1, minor: null, access: 'mr' }]), [
    { allow: true, type: 'c', major: 1, minor: -1, access: 'rm' },
  ]);
  assert.deepEqual(normalizeDeviceRules([{ allow: true, type: 'a', access: 'm' }]).map((r) => r.type), ['b', 'c']);
  assert.throws(() => normalizeDeviceRules([{ allow: true, type: 'x' }]), SpecError);
  assert.throws(() => normalizeDeviceRules([{ allow: true, type: 'c', access: 'rx' }]), SpecError);
  assert.throws(() => normalizeDeviceRules([{ allow: true, type: 'c', major: 1.5 }]), SpecError);
});

test('emulator follows kernel semantics', () => {
  const s = DevicesState.fromRules(normalizeDeviceRules([
    { allow: false, access: 'rwm' },
    { allow: true, type: 'c', major: 1, minor: 3, access: 'rw' },
    { allow: true, type: 'c', major: 1, minor: 3, access: 'm' },
    { allow: true, type: 'c', major: 1, minor: 5, access: 'rwm' },
    { allow: false, type: 'c', major: 1, minor: 5, access: 'w' },
    { allow: true, type: 'b', access: 'm' },
  ]));
  assert.equal(s.defaultAllow, false);
  assert.deepEqual(s.exceptionLines(), ['b *:* m', 'c 1:3 rwm', 'c 1:5 rm']);
  const list = DevicesState.fromList('c 1:3 rwm\nc 1:5 rm\nb *:* m\n');
  assert.ok(list.equals(s));
  assert.equal(DevicesState.fromList('a *:* rwm\n').defaultAllow, true);
});

test('transition: allow-list to allow-list writes only differences', () => {
  const cur = DevicesState.fromList('c 1:3 rwm\nc 1:5 rwm\n');
  const tgt = DevicesState.fromRules(normalizeDeviceRules([
    { allow: false }, { allow: true, type: 'c', major: 1, minor: 3, access: 'r' }, { allow: true, type: 'c', major: 1, minor: 9 },
  ]));
  assert.deepEqual(devicesTransition(cur, tgt), [
    { file: 'devices.deny', value: 'c 1:3 wm' },
    { file: 'devices.deny', value: 'c 1:5 rwm' },
    { file: 'devices.allow', value: 'c 1:9 rwm' },
  ]);
  // Apply the writes to the emulator: reaches the target
  for (const w of devicesTransition(cur, tgt)) {
    const [t, mm, acc] = w.value.split(' ');
    const [ma, mi] = mm.split(':');
    cur.apply({ allow: w.file === 'devices.allow', type: t as 'c', major: ma === '*' ? -1 : +ma, minor: mi === '*' ? -1 : +mi, access: acc });
  }
  assert.ok(cur.equals(tgt));
});

test('transition from allow-all resets with "a"; identical allow-all is a no-op', () => {
  const tgt = DevicesState.fromRules(normalizeDeviceRules([{ allow: false }, { allow: true, type: 'c', major: 1, minor: 3 }]));
  assert.deepEqual(devicesTransition(DevicesState.fromList('a *:* rwm'), tgt), [
    { file: 'devices.deny', value: 'a' },
    { file: 'devices.allow', value: 'c 1:3 rwm' },
  ]);
  const all = DevicesState.fromRules(normalizeDeviceRules([{ allow: true }]));
  assert.deepEqual(devicesTransition(DevicesState.fromList('a *:* rwm'), all), []);
  const denyList = DevicesState.fromRules(normalizeDeviceRules([{ allow: true }, { allow: false, type: 'b', major: 8 }]));
  assert.deepEqual(devicesTransition(DevicesState.fromList('c 1:3 rwm'), denyList), [
    { file: 'devices.allow', value: 'a' },
    { file: 'devices.deny', value: 'b 8:* rwm' },
  ]);
});
