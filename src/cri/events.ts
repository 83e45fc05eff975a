/**
 * Container lifecycle events for GetContainerEvents. Whoever changes container state
 * publishes here; every open GetContainerEvents stream gets every event published after it
 * subscribed. A subscriber that falls more than `maxBacklog` events behind is cut off with an
 * error (the kubelet then reconnects and relists) rather than silently losing events.
 */
import { ResourceExhaustedError } from '../errors.ts';
import type { ContainerEventResponse } from './types.gen.ts';
import type { Reply } from './server.ts';

export type ContainerEvent = Reply<ContainerEventResponse>;

export interface Subscription extends AsyncIterable<ContainerEvent> {
  close(): void;
}

export class EventBus {
  private readonly subscribers = new Set<Sub>();
  private readonly maxBacklog: number;

  constructor(maxBacklog = 1000) {
    this.maxBacklog = maxBacklog;
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /** Fill created_at (now, in ns) when missing. */
  publish(event: ContainerEvent): void {
    const e: ContainerEvent = { ...event, created_at: event.created_at ?? (BigInt(Date.now()) * 1_000_000n).toString() };
    for (const s of this.subscribers) s.offer(e);
  }

  subscribe(): Subscription {
    const s = new Sub(this.maxBacklog, () => this.subscribers.delete(s));
    this.subscribers.add(s);
    return s;
  }
}

class Sub implements Subscription {
  private readonly queue: ContainerEvent[] = [];
  private failure: Error | null = null;
  private closed = false;
  private waiter: (() => void) | null = null;
  private readonly max: number;
  private readonly detach: () => void;

  constructor(max: number, detach: () => void) {
    this.max = max;
    this.detach = detach;
  }

  offer(e: ContainerEvent): void {
    if (this.closed) return;
    if (this.queue.length >= this.max) {
      this.failure = new ResourceExhaustedError(
        `container event stream fell more than ${this.max} events behind; reconnect and relist`,
      );
      this.close();
      return;
    }
    this.queue.push(e);
    this.wake();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.detach();
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ContainerEvent> {
    try {
      for (;;) {
        if (this.failure) throw this.failure;
        const next = this.queue.shift();
        if (next) {
          yield next;
          continue;
        }
        if (this.closed) return;
        await new Promise<void>((r) => (this.waiter = r));
      }
    } finally {
      this.close();
    }
  }
}
