/**
 * Prometheus metrics in the text exposition format (version 0.0.4), written by hand:
 *
 *   # HELP name help text
 *   # TYPE name counter|gauge|histogram
 *   name{label="value"} 42
 *
 * Histograms expose cumulative name_bucket{le="..."} series plus name_sum and name_count.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

type Labels = Record<string, string>;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}
function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}
function fmt(n: number): string {
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  if (Number.isNaN(n)) return 'NaN';
  return String(n);
}
function labelText(names: readonly string[], values: readonly string[], extra?: [string, string]): string {
  const parts = names.map((n, i) => `${n}="${escapeLabel(values[i] ?? '')}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabel(extra[1])}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

abstract class Metric {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  abstract readonly type: 'counter' | 'gauge' | 'histogram';
  constructor(name: string, help: string, labelNames: readonly string[]) {
    if (!NAME.test(name)) throw new Error(`invalid metric name ${name}`);
    for (const l of labelNames) if (!LABEL.test(l) || l === 'le') throw new Error(`invalid label name ${l}`);
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
  }
  protected key(labels: Labels | undefined): string[] {
    const values = this.labelNames.map((n) => labels?.[n] ?? '');
    for (const k of Object.keys(labels ?? {})) {
      if (!this.labelNames.includes(k)) throw new Error(`${this.name}: unknown label ${k}`);
    }
    return values;
  }
  abstract samples(): string[];
  render(): string {
    return [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`, ...this.samples()].join('\n');
  }
}

export class Counter extends Metric {
  readonly type = 'counter' as const;
  private readonly values = new Map<string, { labels: string[]; value: number }>();
  inc(labels?: Labels, by = 1): void {
    if (by < 0) throw new Error(`${this.name}: counters only go up`);
    const l = this.key(labels);
    const k = JSON.stringify(l);
    const e = this.values.get(k) ?? { labels: l, value: 0 };
    e.value += by;
    this.values.set(k, e);
  }
  get(labels?: Labels): number {
    return this.values.get(JSON.stringify(this.key(labels)))?.value ?? 0;
  }
  samples(): string[] {
    if (this.values.size === 0 && this.labelNames.length === 0) return [`${this.name} 0`];
    return [...this.values.values()].map((e) => `${this.name}${labelText(this.labelNames, e.labels)} ${fmt(e.value)}`);
  }
}

export class Gauge extends Metric {
  readonly type = 'gauge' as const;
  private readonly values = new Map<string, { labels: string[]; value: number }>();
  private collector: (() => number) | null = null;
  set(value: number, labels?: Labels): void {
    const l = this.key(labels);
    this.values.set(JSON.stringify(l), { labels: l, value });
  }
  inc(labels?: Labels, by = 1): void {
    this.set(this.get(labels) + by, labels);
  }
  dec(labels?: Labels, by = 1): void {
    this.set(this.get(labels) - by, labels);
  }
  get(labels?: Labels): number {
    if (this.collector && this.labelNames.length === 0) return this.collector();
    return this.values.get(JSON.stringify(this.key(labels)))?.value ?? 0;
  }
  /** Compute the (label-less) value at scrape time instead of storing it. */
  collect(fn: () => number): void {
    this.collector = fn;
  }
  samples(): string[] {
    if (this.collector && this.labelNames.length === 0) return [`${this.name} ${fmt(this.collector())}`];
    if (this.values.size === 0 && this.labelNames.length === 0) return [`${this.name} 0`];
    return [...this.values.values()].map((e) => `${this.name}${labelText(this.labelNames, e.labels)} ${fmt(e.value)}`);
  }
}

export const DEFAULT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export class Histogram extends Metric {
  readonly type = 'histogram' as const;
  readonly buckets: readonly number[];
  private readonly values = new Map<string, { labels: string[]; counts: number[]; sum: number; count: number }>();
  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[] = DEFAULT_BUCKETS) {
    super(name, help, labelNames);
    const sorted = [...buckets].sort((a, b) => a - b);
    if (sorted.some((b, i) => i > 0 && b === sorted[i - 1])) throw new Error(`${name}: duplicate bucket bounds`);
    this.buckets = sorted;
  }
  observe(value: number, labels?: Labels): void {
    const l = this.key(labels);
    const k = JSON.stringify(l);
    const e = this.values.get(k) ?? { labels: l, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) e.counts[i]!++;
    e.sum += value;
    e.count++;
    this.values.set(k, e);
  }
  /** Returns a function that records the seconds elapsed since this call. */
  startTimer(labels?: Labels): () => number {
    const t0 = process.hrtime.bigint();
    return () => {
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      this.observe(s, labels);
      return s;
    };
  }
  count(labels?: Labels): number {
    return this.values.get(JSON.stringify(this.key(labels)))?.count ?? 0;
  }
  samples(): string[] {
    const out: string[] = [];
    for (const e of this.values.values()) {
      this.buckets.forEach((b, i) => out.push(`${this.name}_bucket${labelText(this.labelNames, e.labels, ['le', fmt(b)])} ${e.counts[i]}`));
      out.push(`${this.name}_bucket${labelText(this.labelNames, e.labels, ['le', '+Inf'])} ${e.count}`);
      out.push(`${this.name}_sum${labelText(this.labelNames, e.labels)} ${fmt(e.sum)}`);
      out.push(`${this.name}_count${labelText(this.labelNames, e.labels)} ${e.count}`);
    }
    return out;
  }
}

export class Registry {
  private readonly metrics = new Map<string, Metric>();
  register<M extends Metric>(m: M): M {
    if (this.metrics.has(m.name)) throw new Error(`metric ${m.name} registered twice`);
    this.metrics.set(m.name, m);
    return m;
  }
  counter(name: string, help: string, labels: readonly string[] = []): Counter {
    return this.register(new Counter(name, help, labels));
  }
  gauge(name: string, help: string, labels: readonly string[] = []): Gauge {
    return this.register(new Gauge(name, help, labels));
  }
  histogram(name: string, help: string, labels: readonly string[] = [], buckets?: readonly number[]): Histogram {
    return this.register(new Histogram(name, help, labels, buckets));
  }
  render(): string {
    return [...this.metrics.values()].map((m) => m.render()).join('\n') + '\n';
  }
}

export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** The metrics corrald itself maintains; other parts of Corral update them through the daemon. */
export class CriMetrics {
  readonly registry = new Registry();
  readonly operationSeconds = this.registry.histogram(
    'corral_cri_operation_duration_seconds',
    'Time to answer one CRI call, by service and method.',
    ['service', 'method'],
  );
  readonly operationErrors = this.registry.counter(
    'corral_cri_operation_errors_total',
    'CRI calls that returned an error, by service, method and gRPC status code name.',
    ['service', 'method', 'code'],
  );
  readonly runningContainers = this.registry.gauge('corral_running_containers', 'Containers currently in the running state.');
  readonly pullBytes = this.registry.counter('corral_image_pull_bytes_total', 'Bytes downloaded from registries while pulling images.');
}

/** Serve GET /metrics. `address` is host:port (port 0 picks one). */
export async function startMetricsServer(address: string, registry: Registry): Promise<{ url: string; close(): Promise<void> }> {
  const { host, port } = splitHostPort(address);
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' });
      res.end();
      return;
    }
    const body = registry.render();
    res.writeHead(200, { 'Content-Type': EXPOSITION_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  const h = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return {
    url: `http://${h}:${a.port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export function splitHostPort(address: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:]*):(\d+)$/.exec(address);
  if (!m) throw new Error(`address ${JSON.stringify(address)} must be host:port`);
  const port = Number(m[2]);
  if (port > 65535) throw new Error(`address ${address}: port out of range`);
  return { host: m[1] || '0.0.0.0', port };
}
