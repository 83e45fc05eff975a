import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenCache } from './tokens.ts';

test('tokens are random, single-use and expire (injected clock)', () => {
  let now = 1000;
  const c = new TokenCache<string>({ ttlMs: 100, maxPending: 10, now: () => now });
  const a = c.insert('a');
  const b = c.insert('b');
  assert.match(a, /^[A-Za-z0-9_-]{22}$/);
  assert.notEqual(a, b);
  assert.equal(c.consume(a), 'a');
  assert.equal(c.consume(a), undefined);
  now += 100;
  assert.equal(c.consume(b), undefined, 'expired exactly at the ttl');
  assert.equal(c.consume('nope'), undefined);
});

test('pending tokens are capped; expired ones free their slot', () => {
  let now = 0;
  const c = new TokenCache<number>({ ttlMs: 10, maxPending: 2, now: () => now });
  c.insert(1);
  c.insert(2);
  assert.throws(() => c.insert(3), { code: 'RESOURCE_EXHAUSTED' });
  now = 10;
  assert.equal(c.size, 0);
  c.insert(4);
});
