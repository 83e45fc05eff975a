import { test } from 'node:test';
import assert from 'node:assert/strict';
import { familiarName, normalizeReference, parseReference } from './reference.ts';

test('references normalize the way docker and containerd do', () => {
  const d = 'sha256:' + 'a'.repeat(64);
  const cases: Array<[string, string]> = [
    ['busybox', 'docker.io/library/busybox:latest'],
    ['busybox:1.36', 'docker.io/library/busybox:1.36'],
    ['library/busybox', 'docker.io/library/busybox:latest'],
    ['myorg/app:v1', 'docker.io/myorg/app:v1'],
    ['index.docker.io/library/x', 'docker.io/library/x:latest'],
    ['localhost/x', 'localhost/x:latest'],
    ['localhost:5000/a/b:c', 'localhost:5000/a/b:c'],
    ['registry.k8s.io/pause:3.9', 'registry.k8s.io/pause:3.9'],
    [`busybox@${d}`, `docker.io/library/busybox@${d}`],
    [`gcr.io/p/x:tag@${d}`, `gcr.io/p/x:tag@${d}`],
    ['[::1]:5000/x', '[::1]:5000/x:latest'],
  ];
  for (const [i, o] of cases) assert.equal(normalizeReference(i), o, i);
  assert.equal(familiarName(parseReference('busybox')), 'busybox:latest');
  assert.equal(familiarName(parseReference('localhost:5000/x:y')), 'localhost:5000/x:y');
});

test('invalid references are refused with a reason', () => {
  const bad: Array<[string, RegExp]> = [
    ['', /empty/],
    ['Busybox', /lowercase/],
    ['docker.io/Upper/x', /lowercase/],
    ['busybox:-bad', /bad tag/],
    ['busybox@sha256:abc', /bad digest/],
    ['busybox@md5:' + 'a'.repeat(32), /bad digest/],
    ['a//b', /path component/],
    ['x/' + 'a'.repeat(300), /longer than/],
    ['bad_host!:5000/x', /./],
  ];
  for (const [r, re] of bad) assert.throws(() => parseReference(r), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && re.test(e.message), r);
});
