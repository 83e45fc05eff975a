import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Phases } from './timing.ts';
import type { Logger } from '../log.ts';

test('Phases: marks add up per name, the total covers them, the log line is debug', async () => {
  const ph = new Phases();
  await new Promise((r) => setTimeout(r, 5));
  ph.mark('a');
  ph.mark('b');
  await new Promise((r) => setTimeout(r, 5));
  ph.mark('a');
  const r = ph.result();
  assert.deepEqual(Object.keys(r), ['a', 'b', 'total']);
  assert.ok(r.a! >= 9, `a accumulates both waits (${r.a})`);
  assert.ok(r.total! >= r.a! + r.b! - 0.05);
  const lines: unknown[][] = [];
  const log = { debug: (...a: unknown[]) => lines.push(['debug', ...a]), info: () => assert.fail('info'), warn: () => assert.fail('warn'), error: () => assert.fail('error') } as unknown as Logger;
  ph.log(log, 'X', { id: '1' });
  assert.equal(lines.length, 1);
  assert.equal(lines[0]![1], 'X timing');
  assert.equal((lines[0]![2] as { id: string }).id, '1');
});
