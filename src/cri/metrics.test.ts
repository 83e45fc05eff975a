import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry, startMetricsServer, EXPOSITION_CONTENT_TYPE, CriMetrics } from './metrics.ts';

test('exposition text: HELP/TYPE lines, labels escaped, cumulative histogram buckets', () => {
  const r = new Registry();
  const c = r.counter('x_total', 'Things.\nSecond line', ['kind']);
  c.inc({ kind: 'a"b\\c\nd' }, 2);
  const g = r.gauge('y', 'A gauge.');
  g.set(3);
  g.dec();
  const h = r.histogram('z_seconds', 'Latency.', ['m'], [0.1, 1]);
  h.observe(0.05, { m: 'V' });
  h.observe(0.5, { m: 'V' });
  h.observe(5, { m: 'V' });
  assert.equal(
    r.render(),
    [
      '# HELP x_total Things.\\nSecond line',
      '# TYPE x_total counter',
      'x_total{kind="a\\"b\\\\c\\nd"} 2',
      '# HELP y A gauge.',
      '# TYPE y gauge',
      'y 2',
      '# HELP z_seconds Latency.',
      '# TYPE z_seconds histogram',
      'z_seconds_bucket{m="V",le="0.1"} 1',
      'z_seconds_bucket{m="V",le="1"} 2',
      'z_seconds_bucket{m="V",le="+Inf"} 3',
      'z_seconds_sum{m="V"} 5.55',
      'z_seconds_count{m="V"} 3',
      '',
    ].join('\n'),
  );
  assert.throws(() => c.inc({ kind: 'a' }, -1), /only go up/);
  assert.throws(() => c.inc({ other: 'a' }), /unknown label/);
  assert.throws(() => r.counter('x_total', 'again'), /twice/);
  assert.throws(() => r.counter('bad-name', 'x'), /invalid metric name/);
});

test('label-less metrics with no samples still expose 0; collected gauges are read at scrape', () => {
  const m = new CriMetrics();
  let running = 4;
  m.runningContainers.collect(() => running);
  running = 5;
  const text = m.registry.render();
  assert.match(text, /^corral_running_containers 5$/m);
  assert.match(text, /^corral_image_pull_bytes_total 0$/m);
});

test('the /metrics endpoint serves the registry with the exposition content type', async () => {
  const r = new Registry();
  r.counter('hits_total', 'Hits.').inc();
  const s = await startMetricsServer('127.0.0.1:0', r);
  try {
    const res = await fetch(s.url);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), EXPOSITION_CONTENT_TYPE);
    assert.match(await res.text(), /^hits_total 1$/m);
    assert.equal((await fetch(s.url.replace('/metrics', '/other'))).status, 404);
  } finally {
    await s.close();
  }
});
