/**
 * Single-use, expiring tokens naming a pending streaming request: GetExec stores the request
 * and returns a URL with the token; the first HTTP request bearing it consumes it.
 */
import { randomBytes } from 'node:crypto';
import { ResourceExhaustedError } from '../../errors.ts';

export interface TokenCacheOptions {
  ttlMs: number;
  maxPending: number;
  /** Injectable clock (tests). */
  now?: () => number;
}

export class TokenCache<T> {
  private readonly entries = new Map<string, { value: T; expires: number }>();
  private readonly ttlMs: number;
  private readonly maxPending: number;
  private readonly now: () => number;

  constructor(options: TokenCacheOptions) {
    this.ttlMs = options.ttlMs;
    this.maxPending = options.maxPending;
    this.now = options.now ?? Date.now;
  }

  get size(): number {
    this.sweep();
    return this.entries.size;
  }

  insert(value: T): string {
    this.sweep();
    if (this.entries.size >= this.maxPending) {
      throw new ResourceExhaustedError(
        `too many pending streaming requests (${this.maxPending}); use or let expire the URLs already handed out`,
      );
    }
    let token: string;
    do token = randomBytes(16).toString('base64url');
    while (this.entries.has(token));
    this.entries.set(token, { value, expires: this.now() + this.ttlMs });
    return token;
  }

  /** Take the request for `token`; undefined when unknown, already used or expired. */
  consume(token: string): T | undefined {
    const e = this.entries.get(token);
    if (!e) return undefined;
    this.entries.delete(token);
    if (e.expires <= this.now()) return undefined;
    return e.value;
  }

  private sweep(): void {
    const now = this.now();
    for (const [k, e] of this.entries) if (e.expires <= now) this.entries.delete(k);
  }
}
