import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventBus } from './events.ts';

test('subscribers see events published after they subscribed, in order', async () => {
  const bus = new EventBus();
  bus.publish({ container_id: 'before' });
  const sub = bus.subscribe();
  assert.equal(bus.subscriberCount, 1);
  bus.publish({ container_id: 'a', container_event_type: 'CONTAINER_CREATED_EVENT' });
  bus.publish({ container_id: 'b', container_event_type: 'CONTAINER_STARTED_EVENT', created_at: '42' });
  const got: string[] = [];
  for await (const e of sub) {
    got.push(`${e.container_id}:${e.container_event_type}`);
    if (e.container_id === 'a') assert.match(String(e.created_at), /^\d{19}$/, 'nanoseconds filled in');
    if (e.container_id === 'b') {
      assert.equal(e.created_at, '42');
      break;
    }
  }
  assert.deepEqual(got, ['a:CONTAINER_CREATED_EVENT', 'b:CONTAINER_STARTED_EVENT']);
  assert.equal(bus.subscriberCount, 0, 'leaving the loop unsubscribes');
});

test('a subscriber that falls too far behind is cut off with RESOURCE_EXHAUSTED', async () => {
  const bus = new EventBus(2);
  const sub = bus.subscribe();
  for (let i = 0; i < 3; i++) bus.publish({ container_id: String(i) });
  await assert.rejects(
    (async () => {
      for await (const _ of sub) void _;
    })(),
    { code: 'RESOURCE_EXHAUSTED' },
  );
  assert.equal(bus.subscriberCount, 0);
});
