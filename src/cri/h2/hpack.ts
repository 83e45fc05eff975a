/**
 * A minimal HPACK (RFC 7541) decoder with the full dynamic table, and an encoder that never
 * indexes (static-table references and plain literals only), so the party we encode for needs
 * no dynamic-table state from us.
 */
import { InvalidArgumentError } from '../../errors.ts';
import { HUFFMAN_CODES, STATIC_TABLE } from './hpack-tables.ts';

export interface HeaderField {
  name: string;
  value: string;
  /** "never indexed" representation (sensitive values); preserved when re-encoding. */
  sensitive: boolean;
}

interface Node {
  sym: number; // -1 for inner nodes
  zero: Node | null;
  one: Node | null;
}

const HUFFMAN_ROOT: Node = (() => {
  const root: Node = { sym: -1, zero: null, one: null };
  HUFFMAN_CODES.forEach(([code, len], sym) => {
    let n = root;
    for (let i = len - 1; i >= 0; i--) {
      const bit = (code >>> i) & 1;
      const key = bit ? 'one' : 'zero';
      n[key] ??= { sym: -1, zero: null, one: null };
      n = n[key]!;
    }
    n.sym = sym;
  });
  return root;
})();

const bad = (what: string) => new InvalidArgumentError(`hpack: ${what}`);

export function huffmanDecode(buf: Uint8Array): Buffer {
  const out: number[] = [];
  let n = HUFFMAN_ROOT;
  let depth = 0;
  let allOnes = true;
  for (const byte of buf) {
    for (let i = 7; i >= 0; i--) {
      const bit = (byte >> i) & 1;
      const next = bit ? n.one : n.zero;
      if (!next) throw bad('invalid Huffman code');
      depth++;
      allOnes &&= bit === 1;
      if (next.sym >= 0) {
        out.push(next.sym);
        n = HUFFMAN_ROOT;
        depth = 0;
        allOnes = true;
      } else {
        n = next;
      }
    }
  }
  if (depth > 7 || !allOnes) throw bad('invalid Huffman padding');
  return Buffer.from(out);
}

export class HpackDecoder {
  private dynamic: [string, string][] = [];
  private size = 0;
  private maxSize: number;

  constructor(maxSize = 4096) {
    this.maxSize = maxSize;
  }

  decode(block: Buffer): HeaderField[] {
    const fields: HeaderField[] = [];
    let p = 0;
    const int = (prefix: number): number => {
      if (p >= block.length) throw bad('truncated integer');
      const mask = (1 << prefix) - 1;
      let v = block[p++]! & mask;
      if (v < mask) return v;
      let shift = 0;
      for (;;) {
        if (p >= block.length) throw bad('truncated integer');
        const b = block[p++]!;
        v += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if (!(b & 0x80)) return v;
        if (shift > 28) throw bad('integer too large');
      }
    };
    const str = (): string => {
      if (p >= block.length) throw bad('truncated string');
      const huff = (block[p]! & 0x80) !== 0;
      const len = int(7);
      if (p + len > block.length) throw bad('truncated string');
      const raw = block.subarray(p, p + len);
      p += len;
      return (huff ? huffmanDecode(raw) : Buffer.from(raw)).toString('latin1');
    };
    const entry = (index: number): [string, string] => {
      if (index === 0) throw bad('index 0');
      if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1] as [string, string];
      const d = this.dynamic[index - STATIC_TABLE.length - 1];
      if (!d) throw bad(`index ${index} outside the tables`);
      return d;
    };
    while (p < block.length) {
      const b = block[p]!;
      if (b & 0x80) {
        const [name, value] = entry(int(7));
        fields.push({ name, value, sensitive: false });
      } else if (b & 0x40) {
        const idx = int(6);
        const name = idx ? entry(idx)[0] : str();
        const value = str();
        this.add(name, value);
        fields.push({ name, value, sensitive: false });
      } else if (b & 0x20) {
        const size = int(5);
        this.maxSize = size;
        this.evict();
      } else {
        const sensitive = (b & 0x10) !== 0;
        const idx = int(4);
        const name = idx ? entry(idx)[0] : str();
        const value = str();
        fields.push({ name, value, sensitive });
      }
    }
    return fields;
  }

  private add(name: string, value: string): void {
    const s = name.length + value.length + 32;
    this.dynamic.unshift([name, value]);
    this.size += s;
    this.evict();
  }

  private evict(): void {
    while (this.size > this.maxSize && this.dynamic.length > 0) {
      const [n, v] = this.dynamic.pop()!;
      this.size -= n.length + v.length + 32;
    }
  }
}

function encodeInt(out: number[], first: number, prefix: number, v: number): void {
  const mask = (1 << prefix) - 1;
  if (v < mask) {
    out.push(first | v);
    return;
  }
  out.push(first | mask);
  v -= mask;
  while (v >= 128) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

function encodeStr(out: number[], s: string): void {
  const b = Buffer.from(s, 'latin1');
  encodeInt(out, 0, 7, b.length);
  for (const x of b) out.push(x);
}

/** Encode without touching any dynamic table. */
export function encodeStateless(fields: HeaderField[]): Buffer {
  const out: number[] = [];
  for (const f of fields) {
    const exact = STATIC_TABLE.findIndex(([n, v]) => n === f.name && v === f.value);
    if (exact >= 0 && !f.sensitive) {
      encodeInt(out, 0x80, 7, exact + 1);
      continue;
    }
    const byName = STATIC_TABLE.findIndex(([n]) => n === f.name);
    const first = f.sensitive ? 0x10 : 0x00;
    if (byName >= 0) encodeInt(out, first, 4, byName + 1);
    else {
      out.push(first);
      encodeStr(out, f.name);
    }
    encodeStr(out, f.value);
  }
  return Buffer.from(out);
}
