import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ResizeQueue, parseResize } from './backend.ts';

test('parseResize accepts the kubelet JSON shape only', () => {
  assert.deepEqual(parseResize('{"Width":80,"Height":24}'), { width: 80, height: 24 });
  assert.equal(parseResize('{"width":80,"height":24}'), null);
  assert.equal(parseResize('{"Width":-1,"Height":24}'), null);
  assert.equal(parseResize('{"Width":1.5,"Height":24}'), null);
  assert.equal(parseResize('nope'), null);
});

test('ResizeQueue coalesces to the latest size and ends', async () => {
  const q = new ResizeQueue();
  q.push({ width: 1, height: 1 });
  q.push({ width: 2, height: 2 });
  const it = q[Symbol.asyncIterator]();
  assert.deepEqual((await it.next()).value, { width: 2, height: 2 });
  const pending = it.next();
  q.push({ width: 3, height: 3 });
  assert.deepEqual((await pending).value, { width: 3, height: 3 });
  q.end();
  assert.equal((await it.next()).done, true);
});
