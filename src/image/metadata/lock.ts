/**
 * The image store's cross-process lock. Every operation that changes the store (pull, import,
 * remove, prune, gc, push, the start-up reconcile) holds it, so two processes on one root
 * (corrald and the CLI, or two CLIs) never interleave: the second waits, and fails with a
 * clear error naming the holder after `timeoutMs`.
 *
 * The lock is SQLite's own: an EXCLUSIVE transaction on <root>/store.lock, a database that is
 * never written. SQLite locks with fcntl(2) byte-range locks, which the kernel drops when the
 * holding process dies (even by SIGKILL), so a crashed holder never leaves a stale lock, and
 * there is no pid-reuse problem. Within one process the lock is shared: concurrent operations of
 * one ImageService coordinate in memory (shared pull jobs), so the first acquires and the last
 * releases. Waiting polls asynchronously (busy_timeout 0), never blocking the event loop.
 */
import { DatabaseSync } from 'node:sqlite';
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnavailableError } from '../../errors.ts';

export interface StoreLockOptions {
  /** Give up waiting after this long (default 10 minutes). */
  timeoutMs?: number;
  /** Called once when the lock is busy and the caller starts waiting. */
  onWait?: (holder: string) => void;
}

export class StoreLockedError extends UnavailableError {}

export class StoreLock {
  readonly path: string;
  readonly #db: DatabaseSync;
  readonly opts: StoreLockOptions;
  #holders = 0;
  #locked = false;
  #acquiring: Promise<void> | undefined;
  #closed = false;

  constructor(path: string, opts: StoreLockOptions = {}) {
    this.path = path;
    this.opts = opts;
    this.#db = new DatabaseSync(path);
    // rollback journal (the default), so BEGIN EXCLUSIVE takes the file lock at once; no waiting inside SQLite
    this.#db.exec('PRAGMA busy_timeout=0;');
  }

  get held(): boolean {
    return this.#holders > 0;
  }

  /** The pid recorded by the current (or last) holder, for messages. */
  holder(): string {
    try {
      return readFileSync(`${this.path}.owner`, 'utf8').trim() || 'unknown';
    } catch {
      return 'unknown';
    }
  }

  #tryLock(): boolean {
    try {
      this.#db.exec('BEGIN EXCLUSIVE');
      return true;
    } catch (e) {
      const code = (e as { errcode?: number }).errcode;
      // SQLITE_BUSY (5) / SQLITE_LOCKED (6), with extended codes in the high bits
      if (code !== undefined && ((code & 0xff) === 5 || (code & 0xff) === 6)) return false;
      if (/locked|busy/i.test((e as Error).message)) return false;
      throw e;
    }
  }

  async #acquire(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let waited = false;
    for (let delay = 5; !this.#tryLock(); delay = Math.min(delay * 2, 200)) {
      if (!waited) {
        waited = true;
        this.opts.onWait?.(this.holder());
      }
      if (Date.now() >= deadline) {
        throw new StoreLockedError(`image store lock ${this.path} is held by another process (pid ${this.holder()}) for more than ${timeoutMs} ms; wait for it to finish or stop it`);
      }
      await sleep(delay);
      if (this.#closed) throw new StoreLockedError(`image store lock ${this.path}: the store was closed while waiting`);
    }
    this.#locked = true;
    try {
      writeFileSync(`${this.path}.owner`, `${process.pid}\n`);
    } catch {
      /* informational only */
    }
  }

  /** Run fn holding the store lock (shared with this process's other operations). */
  async with<T>(fn: () => Promise<T>, timeoutMs = this.opts.timeoutMs ?? 600_000): Promise<T> {
    while (!this.#locked) {
      this.#acquiring ??= this.#acquire(timeoutMs).finally(() => (this.#acquiring = undefined));
      await this.#acquiring;
    }
    this.#holders++;
    try {
      return await fn();
    } finally {
      if (--this.#holders === 0 && !this.#closed) {
        this.#locked = false;
        this.#db.exec('COMMIT');
      }
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#locked) {
      this.#locked = false;
      try {
        this.#db.exec('COMMIT');
      } catch {
        /* closing anyway */
      }
    }
    this.#db.close();
  }
}
