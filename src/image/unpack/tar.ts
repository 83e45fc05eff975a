/**
 * A streaming tar reader and writer: ustar, GNU long names/links (`L`/`K`), PAX
 * extended headers (`x`, `g`) including SCHILY.xattr.* with binary values, and
 * base-256 numeric fields. The reader validates header checksums and reports a
 * truncated archive as an error.
 */
import { InvalidArgumentError } from '../../errors.ts';

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarHeader {
  name: string;
  type: TarEntryType;
  /** Permission bits including setuid/setgid/sticky (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch (fractional from PAX). */
  mtime: number;
  linkname: string;
  uname?: string;
  gname?: string;
  devmajor: number;
  devminor: number;
  xattrs: Map<string, Buffer>;
}

export interface TarEntry extends TarHeader {
  /** The entry's data; must be read fully or left alone (the reader then skips it). */
  body: AsyncIterable<Buffer>;
}

export class TarFormatError extends InvalidArgumentError {}

const BLOCK = 512;

/** Buffered reader over a chunk stream. */
class ByteReader {
  #it: AsyncIterator<Uint8Array>;
  #buf: Buffer = Buffer.alloc(0);
  #done = false;
  constructor(src: AsyncIterable<Uint8Array>) {
    this.#it = src[Symbol.asyncIterator]();
  }
  /** The next chunk of the source, or null at its end. */
  async #next(): Promise<Buffer | null> {
    if (this.#done) return null;
    const r = await this.#it.next();
    if (r.done) {
      this.#done = true;
      return null;
    }
    return Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
  }
  async #fill(): Promise<boolean> {
    const c = await this.#next();
    if (c === null) return false;
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, c]) : c;
    return true;
  }
  /** Exactly n bytes, or fewer only at end of stream. */
  async read(n: number): Promise<Buffer> {
    if (this.#buf.length >= n) {
      const out = this.#buf.subarray(0, n);
      this.#buf = this.#buf.subarray(n);
      return out;
    }
    // copy only the bytes that straddle chunks, never the rest of a big chunk
    const parts: Buffer[] = [this.#buf];
    let have = this.#buf.length;
    this.#buf = Buffer.alloc(0);
    while (have < n) {
      const c = await this.#next();
      if (c === null) break;
      const need = n - have;
      if (c.length > need) {
        parts.push(c.subarray(0, need));
        this.#buf = c.subarray(need);
        have = n;
      } else {
        parts.push(c);
        have += c.length;
      }
    }
    return Buffer.concat(parts, have);
  }
  /** Up to `max` bytes (at least 1 unless at end). */
  async readSome(max: number): Promise<Buffer> {
    if (this.#buf.length === 0) await this.#fill();
    const out = this.#buf.subarray(0, Math.min(max, this.#buf.length));
    this.#buf = this.#buf.subarray(out.length);
    return out;
  }
  async drain(): Promise<void> {
    this.#buf = Buffer.alloc(0);
    while (await this.#fill()) this.#buf = Buffer.alloc(0);
  }
  async close(): Promise<void> {
    await this.#it.return?.();
  }
}

function cstr(b: Buffer, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const z = s.indexOf(0);
  return (z >= 0 ? s.subarray(0, z) : s).toString('utf8');
}

function num(b: Buffer, off: number, len: number, field: string): number {
  const f = b.subarray(off, off + len);
  if (f[0]! & 0x80) {
    // base-256 (GNU): big-endian two's complement, high bit of first byte is the marker
    const neg = (f[0]! & 0x40) !== 0;
    let v = 0n;
    for (let i = 0; i < f.length; i++) {
      const byte = i === 0 ? f[0]! & 0x7f : f[i]!;
      v = (v << 8n) | BigInt(neg ? ~byte & 0xff : byte);
    }
    const n = Number(v);
    if (!Number.isSafeInteger(n)) throw new TarFormatError(`tar header field ${field} out of range`);
    return neg ? -(n + 1) : n;
  }
  const s = f.toString('latin1').replace(/[\0 ]+$/, '').replace(/^[ ]+/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarFormatError(`tar header field ${field} is not octal: ${JSON.stringify(s)}`);
  return parseInt(s, 8);
}

function checksumOk(h: Buffer): boolean {
  const stored = num(h, 148, 8, 'chksum');
  let u = 0;
  let s = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 32 : h[i]!;
    u += c;
    s += c > 127 ? c - 256 : c;
  }
  return stored === u || stored === s;
}

/** Parse PAX records: "<len> <key>=<value>\n", values are raw bytes. */
export function parsePax(data: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let off = 0;
  while (off < data.length) {
    if (data[off] === 0) break;
    const sp = data.indexOf(0x20, off);
    if (sp < 0) throw new TarFormatError('malformed PAX record (no length)');
    const len = parseInt(data.subarray(off, sp).toString('latin1'), 10);
    if (!Number.isSafeInteger(len) || len <= sp - off || off + len > data.length) throw new TarFormatError('malformed PAX record length');
    const rec = data.subarray(sp + 1, off + len);
    if (rec[rec.length - 1] !== 0x0a) throw new TarFormatError('malformed PAX record (no newline)');
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new TarFormatError('malformed PAX record (no =)');
    out.set(rec.subarray(0, eq).toString('utf8'), Buffer.from(rec.subarray(eq + 1, rec.length - 1)));
    off += len;
  }
  return out;
}

const typeFlags: Record<string, TarEntryType> = {
  '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
};

const MAX_META = 1 << 20; // longest PAX / GNU long-name payload accepted

/** Read a tar stream entry by entry. */
export async function* readTar(src: AsyncIterable<Uint8Array>): AsyncGenerator<TarEntry> {
  const r = new ByteReader(src);
  let globalPax = new Map<string, Buffer>();
  let pax: Map<string, Buffer> | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;
  try {
    for (;;) {
      const h = await r.read(BLOCK);
      if (h.length === 0) return; // lenient: archive without end blocks
      if (h.length < BLOCK) throw new TarFormatError('unexpected end of tar archive (truncated header)');
      if (h.every((b) => b === 0)) {
        await r.drain();
        return;
      }
      if (!checksumOk(h)) throw new TarFormatError('tar header checksum mismatch (corrupt or not a tar archive)');
      const flag = String.fromCharCode(h[156]!);
      let size = num(h, 124, 12, 'size');
      if (size < 0) throw new TarFormatError('negative size in tar header');
      const padded = Math.ceil(size / BLOCK) * BLOCK;
      if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
        if (size > MAX_META) throw new TarFormatError(`tar ${flag} header of ${size} bytes is too large`);
        const data = await r.read(padded);
        if (data.length < padded) throw new TarFormatError('unexpected end of tar archive (truncated extended header)');
        const payload = data.subarray(0, size);
        if (flag === 'x') pax = new Map([...(pax ?? []), ...parsePax(payload)]);
        else if (flag === 'g') globalPax = new Map([...globalPax, ...parsePax(payload)]);
        else if (flag === 'L') longName = cstr(payload, 0, payload.length);
        else longLink = cstr(payload, 0, payload.length);
        continue;
      }
      const type = typeFlags[flag];
      if (!type) {
        throw new TarFormatError(`unsupported tar entry type ${JSON.stringify(flag)} (${cstr(h, 0, 100)}); sparse and multi-volume archives are not supported`);
      }
      const magic = h.subarray(257, 263).toString('latin1');
      let name = cstr(h, 0, 100);
      if (magic === 'ustar\0') {
        const prefix = cstr(h, 345, 155);
        if (prefix) name = `${prefix}/${name}`;
      }
      const hdr: TarHeader = {
        name,
        type,
        mode: num(h, 100, 8, 'mode') & 0o7777,
        uid: num(h, 108, 8, 'uid'),
        gid: num(h, 116, 8, 'gid'),
        size,
        mtime: num(h, 136, 12, 'mtime'),
        linkname: cstr(h, 157, 100),
        uname: cstr(h, 265, 32) || undefined,
        gname: cstr(h, 297, 32) || undefined,
        devmajor: type === 'char' || type === 'block' ? num(h, 329, 8, 'devmajor') : 0,
        devminor: type === 'char' || type === 'block' ? num(h, 337, 8, 'devminor') : 0,
        xattrs: new Map(),
      };
      if (longName !== undefined) hdr.name = longName;
      if (longLink !== undefined) hdr.linkname = longLink;
      const ext = new Map([...globalPax, ...(pax ?? [])]);
      for (const [k, v] of ext) {
        const s = () => v.toString('utf8');
        switch (k) {
          case 'path': hdr.name = s(); break;
          case 'linkpath': hdr.linkname = s(); break;
          case 'size': hdr.size = size = parseInt(s(), 10); break;
          case 'uid': hdr.uid = parseInt(s(), 10); break;
          case 'gid': hdr.gid = parseInt(s(), 10); break;
          case 'mtime': hdr.mtime = parseFloat(s()); break;
          case 'uname': hdr.uname = s(); break;
          case 'gname': hdr.gname = s(); break;
          default:
            if (k.startsWith('SCHILY.xattr.')) hdr.xattrs.set(k.slice('SCHILY.xattr.'.length), v);
            else if (k.startsWith('GNU.sparse.')) throw new TarFormatError(`sparse tar entries are not supported (${hdr.name})`);
        }
      }
      if (!Number.isSafeInteger(hdr.size) || hdr.size < 0) throw new TarFormatError(`bad size for ${hdr.name}`);
      if (!Number.isFinite(hdr.mtime)) throw new TarFormatError(`bad mtime for ${hdr.name}`);
      pax = undefined;
      longName = longLink = undefined;
      // Only regular files carry data for the consumer; data behind other types is skipped.
      const dataLen = hdr.size;
      let remaining = type === 'file' ? dataLen : 0;
      const body = (async function* () {
        while (remaining > 0) {
          const c = await r.readSome(Math.min(remaining, 1 << 20));
          if (c.length === 0) throw new TarFormatError(`unexpected end of tar archive inside ${hdr.name}`);
          remaining -= c.length;
          yield c;
        }
      })();
      yield { ...hdr, size: type === 'file' ? dataLen : 0, body };
      let skip = remaining + (type === 'file' ? 0 : dataLen) + ((BLOCK - (dataLen % BLOCK)) % BLOCK);
      while (skip > 0) {
        const c = await r.read(Math.min(skip, 1 << 20));
        if (c.length === 0) throw new TarFormatError(`unexpected end of tar archive after ${hdr.name}`);
        skip -= c.length;
      }
      remaining = 0;
    }
  } finally {
    await r.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface TarWriteEntry {
  name: string;
  type?: TarEntryType;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkname?: string;
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Map<string, Buffer> | Record<string, Buffer | string>;
  /** Data for regular files. */
  data?: Buffer | string;
  /** Raw typeflag override (for writing deliberately odd archives in tests). */
  typeflag?: string;
}

const flagOf: Record<TarEntryType, string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

function octal(v: number, len: number): string {
  return v.toString(8).padStart(len - 1, '0') + '\0';
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function rawHeader(o: { name: string; mode: number; uid: number; gid: number; size: number; mtime: number; flag: string; linkname: string; uname: string; gname: string; devmajor: number; devminor: number }): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(o.name, 0, 100, 'utf8');
  h.write(octal(o.mode, 8), 100, 'latin1');
  h.write(octal(o.uid, 8), 108, 'latin1');
  h.write(octal(o.gid, 8), 116, 'latin1');
  h.write(octal(o.size, 12), 124, 'latin1');
  h.write(octal(Math.floor(o.mtime), 12), 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h.write(o.flag, 156, 'latin1');
  h.write(o.linkname, 157, 100, 'utf8');
  h.write('ustar\u000000', 257, 'latin1');
  h.write(o.uname, 265, 32, 'utf8');
  h.write(o.gname, 297, 32, 'utf8');
  h.write(octal(o.devmajor, 8), 329, 'latin1');
  h.write(octal(o.devminor, 8), 337, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'latin1');
  return h;
}

function pad(n: number): Buffer {
  return Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK);
}

/** The header block(s) for one entry; long names, big ids and xattrs go into a PAX header. */
export function tarHeader(e: TarWriteEntry, size: number): Buffer {
  const type = e.type ?? 'file';
  const records: Buffer[] = [];
  const linkname = e.linkname ?? '';
  const uid = e.uid ?? 0;
  const gid = e.gid ?? 0;
  const mtime = e.mtime ?? 0;
  if (Buffer.byteLength(e.name) > 100) records.push(paxRecord('path', Buffer.from(e.name)));
  if (Buffer.byteLength(linkname) > 100) records.push(paxRecord('linkpath', Buffer.from(linkname)));
  if (uid > 0o7777777) records.push(paxRecord('uid', Buffer.from(String(uid))));
  if (gid > 0o7777777) records.push(paxRecord('gid', Buffer.from(String(gid))));
  if (size > 0o77777777777) records.push(paxRecord('size', Buffer.from(String(size))));
  if (!Number.isInteger(mtime)) records.push(paxRecord('mtime', Buffer.from(mtime.toFixed(9))));
  const xa = e.xattrs instanceof Map ? e.xattrs : new Map(Object.entries(e.xattrs ?? {}));
  for (const [k, v] of xa) records.push(paxRecord(`SCHILY.xattr.${k}`, Buffer.isBuffer(v) ? v : Buffer.from(v)));
  const out: Buffer[] = [];
  const base = {
    mode: e.mode ?? (type === 'dir' ? 0o755 : 0o644),
    uid: Math.min(uid, 0o7777777),
    gid: Math.min(gid, 0o7777777),
    mtime: Math.min(Math.floor(mtime), 0o77777777777),
    uname: e.uname ?? '',
    gname: e.gname ?? '',
    devmajor: e.devmajor ?? 0,
    devminor: e.devminor ?? 0,
  };
  if (records.length) {
    const data = Buffer.concat(records);
    out.push(rawHeader({ ...base, name: 'PaxHeaders/' + e.name.slice(0, 80), size: data.length, flag: 'x', linkname: '' }), data, pad(data.length));
  }
  const name = Buffer.byteLength(e.name) > 100 ? Buffer.from(e.name).subarray(0, 100).toString('utf8') : e.name;
  const ln = Buffer.byteLength(linkname) > 100 ? Buffer.from(linkname).subarray(0, 100).toString('utf8') : linkname;
  out.push(rawHeader({ ...base, name, size: Math.min(size, 0o77777777777), flag: e.typeflag ?? flagOf[type], linkname: ln }));
  return Buffer.concat(out);
}

/** A complete tar archive in memory (tests, small archives). */
export function writeTar(entries: TarWriteEntry[], opts: { endBlocks?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data);
    parts.push(tarHeader(e, data.length), data, pad(data.length));
  }
  if (opts.endBlocks !== false) parts.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(parts);
}

/** Stream a tar archive of entries whose data comes from streams (export). */
export async function* tarStream(
  entries: AsyncIterable<{ entry: TarWriteEntry; size: number; data?: () => AsyncIterable<Uint8Array> }> | Iterable<{ entry: TarWriteEntry; size: number; data?: () => AsyncIterable<Uint8Array> }>,
): AsyncGenerator<Buffer> {
  for await (const { entry, size, data } of entries) {
    yield tarHeader(entry, size);
    let n = 0;
    if (data) {
      for await (const c of data()) {
        n += c.length;
        yield Buffer.isBuffer(c) ? c : Buffer.from(c);
      }
    }
    if (n !== size) throw new InvalidArgumentError(`tar entry ${entry.name}: wrote ${n} bytes, header said ${size}`);
    yield pad(size);
  }
  yield Buffer.alloc(BLOCK * 2);
}
