/**
 * What the streaming server needs from the rest of Corral. The lead's container layer
 * implements this; the protocol code here only moves bytes between the client and these calls.
 */
import type { Duplex, Readable, Writable } from 'node:stream';

export interface TerminalSize {
  width: number;
  height: number;
}

/** The client's requested stdio. A stream is null when the request did not ask for it; with a TTY, stderr is always null. */
export interface StdioStreams {
  /** Client keystrokes/bytes; ends when the client closes its stdin. */
  stdin: Readable | null;
  stdout: Writable | null;
  stderr: Writable | null;
}

export interface ExitResult {
  exitCode: number;
}

export interface StreamingBackend {
  /**
   * Run `cmd` in the container. Resolve once the process has exited AND all of its output has
   * been written to `streams` (do not end() them: the server ends them after you resolve).
   * `resize` yields terminal sizes (TTY sessions only; coalesced to the latest) and ends with
   * the session. `signal` aborts when the client goes away: stop the process then.
   * Throw a CorralError (e.g. NotFoundError) to report a failure to the client.
   */
  exec(containerId: string, cmd: string[], tty: boolean, streams: StdioStreams, resize: AsyncIterable<TerminalSize>, signal: AbortSignal): Promise<ExitResult>;

  /** Attach to the container's main process; same contract as exec. Resolve when the process exits or the client detaches (signal). */
  attach(containerId: string, tty: boolean, streams: StdioStreams, resize: AsyncIterable<TerminalSize>, signal: AbortSignal): Promise<ExitResult | void>;

  /**
   * Connect `stream` to TCP `port` inside the sandbox's network namespace: bytes read from it go
   * to the port, bytes from the port are written to it. end() it when the port's side is done;
   * resolve when both directions finished. Throw (CorralError) to send the client an error.
   */
  portForward(sandboxId: string, port: number, stream: Duplex, signal: AbortSignal): Promise<void>;

  /** Optional checks the Exec/Attach/PortForward RPCs run before handing out a URL (throw NotFoundError). */
  checkContainer?(containerId: string): Promise<void>;
  checkSandbox?(sandboxId: string): Promise<void>;
}

/** Coalescing queue of terminal sizes: a slow consumer sees the latest size, not a backlog. */
export class ResizeQueue implements AsyncIterable<TerminalSize> {
  private pending: TerminalSize | null = null;
  private ended = false;
  private waiter: (() => void) | null = null;

  push(size: TerminalSize): void {
    if (this.ended) return;
    this.pending = size;
    this.wake();
  }

  end(): void {
    this.ended = true;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TerminalSize> {
    for (;;) {
      if (this.pending) {
        const s = this.pending;
        this.pending = null;
        yield s;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }
}

/** Parse one resize message ({"Width":80,"Height":24}); returns null for anything malformed. */
export function parseResize(text: string): TerminalSize | null {
  try {
    const v = JSON.parse(text) as { Width?: unknown; Height?: unknown };
    const w = v.Width;
    const h = v.Height;
    if (typeof w !== 'number' || typeof h !== 'number' || !Number.isInteger(w) || !Number.isInteger(h)) return null;
    if (w < 0 || h < 0 || w > 65535 || h > 65535) return null;
    return { width: w, height: h };
  } catch {
    return null;
  }
}
