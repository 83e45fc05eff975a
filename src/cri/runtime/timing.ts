/** Phase timings of one RPC, logged at debug level (what a profile of corrald starts from). */
import { performance } from 'node:perf_hooks';
import type { Logger } from '../log.ts';

export class Phases {
  private readonly t0 = performance.now();
  private last = this.t0;
  private readonly ms: Record<string, number> = {};

  /** Time since the previous mark (or the start), under `name` (added up if repeated). */
  mark(name: string): void {
    const t = performance.now();
    this.ms[name] = Math.round(((this.ms[name] ?? 0) + t - this.last) * 100) / 100;
    this.last = t;
  }

  /** A snapshot of the phases so far plus the total. */
  result(): Record<string, number> {
    return { ...this.ms, total: Math.round((performance.now() - this.t0) * 100) / 100 };
  }

  log(log: Logger, what: string, fields: Record<string, unknown> = {}): void {
    log.debug(`${what} timing`, { ...fields, ms: this.result() });
  }
}
