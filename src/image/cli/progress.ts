/**
 * Pull progress for the corral CLI: one live bar per layer on a terminal (redrawn in place,
 * at most 10 times a second), plain lines otherwise (one per layer state change, never per
 * chunk), and totals for the summary.
 */
import type { PullEvent } from '../service.ts';
import { humanSize, shortId } from './format.ts';

type LayerState = 'waiting' | 'downloading' | 'downloaded' | 'unpacked' | 'cached';

interface Layer {
  digest: string;
  size: number;
  done: number;
  state: LayerState;
}

export interface PullTotals {
  layers: number;
  cached: number;
  downloadedBytes: number;
  ms: number;
}

const labels: Record<LayerState, string> = {
  waiting: 'Waiting',
  downloading: 'Downloading',
  downloaded: 'Unpacking',
  unpacked: 'Pull complete',
  cached: 'Already exists',
};

export class PullProgress {
  readonly #out: NodeJS.WritableStream;
  readonly #tty: boolean;
  readonly #width: number;
  readonly #layers = new Map<string, Layer>();
  readonly #started = Date.now();
  #drawn = 0;
  #timer: NodeJS.Timeout | undefined;
  #dirty = false;
  #quiet: boolean;

  constructor(out: NodeJS.WritableStream & { isTTY?: boolean; columns?: number }, opts: { tty?: boolean; quiet?: boolean } = {}) {
    this.#out = out;
    this.#tty = opts.tty ?? out.isTTY === true;
    this.#width = out.columns ?? 80;
    this.#quiet = opts.quiet ?? false;
  }

  #line(s: string): void {
    if (!this.#quiet) this.#out.write(s + '\n');
  }

  event = (e: PullEvent): void => {
    switch (e.type) {
      case 'resolved':
        this.#line(`Resolved ${e.ref} to ${e.digest}`);
        return;
      case 'manifest':
        return;
      case 'layer': {
        if (this.#layers.has(e.digest)) return;
        const l: Layer = { digest: e.digest, size: e.size, done: 0, state: e.status === 'cached' ? 'cached' : 'waiting' };
        this.#layers.set(e.digest, l);
        if (!this.#tty) this.#line(`${shortId(e.digest)}: ${e.status === 'cached' ? 'already exists' : `waiting (${humanSize(e.size)})`}`);
        break;
      }
      case 'progress': {
        const l = this.#layers.get(e.digest);
        if (!l) return;
        l.done = e.done;
        if (l.state === 'waiting') l.state = 'downloading';
        break;
      }
      case 'downloaded': {
        const l = this.#layers.get(e.digest);
        if (!l || l.state === 'cached' || l.state === 'unpacked') return;
        if (l.state === 'waiting' && l.done === 0) {
          // no byte moved: the blob was already in the store (its layer was not unpacked yet)
          l.state = 'downloaded';
          break;
        }
        l.done = l.size;
        l.state = 'downloaded';
        if (!this.#tty) this.#line(`${shortId(e.digest)}: downloaded ${humanSize(l.size)}`);
        break;
      }
      case 'unpacked': {
        const l = this.#layers.get(e.digest);
        if (!l) return;
        l.state = 'unpacked';
        if (!this.#tty) this.#line(`${shortId(e.digest)}: unpacked`);
        break;
      }
      case 'done':
        this.#render();
        return;
    }
    this.#schedule();
  };

  #schedule(): void {
    if (!this.#tty || this.#quiet) return;
    this.#dirty = true;
    if (this.#timer) return;
    this.#render();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#dirty) this.#render();
    }, 100);
  }

  #bar(l: Layer): string {
    const width = Math.max(10, Math.min(40, this.#width - 60));
    const frac = l.size > 0 ? Math.min(1, l.done / l.size) : 1;
    const full = Math.floor(frac * width);
    return '[' + '='.repeat(full) + (full < width ? '>' : '') + ' '.repeat(Math.max(0, width - full - 1)) + ']';
  }

  #render(): void {
    if (!this.#tty || this.#quiet) return;
    this.#dirty = false;
    let s = this.#drawn ? `\x1b[${this.#drawn}A` : '';
    for (const l of this.#layers.values()) {
      let line = `${shortId(l.digest)}: ${labels[l.state].padEnd(14)}`;
      if (l.state === 'downloading') line += ` ${this.#bar(l)} ${humanSize(l.done)}/${humanSize(l.size)}`;
      s += `\x1b[2K${line.slice(0, this.#width - 1)}\n`;
    }
    this.#drawn = this.#layers.size;
    this.#out.write(s);
  }

  /** Stop redrawing; the totals for the summary. */
  finish(): PullTotals {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#render();
    const ls = [...this.#layers.values()];
    return {
      layers: ls.length,
      cached: ls.filter((l) => l.state === 'cached').length,
      downloadedBytes: ls.reduce((a, l) => a + (l.state === 'cached' ? 0 : l.done), 0),
      ms: Date.now() - this.#started,
    };
  }
}
