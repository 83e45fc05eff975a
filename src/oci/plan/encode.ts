/**
 * Binary encoding of a Plan for the C executor (docs/plan-format.md).
 *
 * OP_TABLE is the single TypeScript description of the wire format; it lists the
 * ops in the same order as the OPS table in src/executor/corral-exec.c (opcode =
 * position + 1) with each op's fields and argument letters:
 *
 *   i  u32 integer (int64 on the wire, 0..2^32-1)    q  u64 integer (bigint, int64 bits)
 *   b  boolean (0/1)                                  p  parentMode ("exit" 0, "wait" 1)
 *   k  mkdir mode (MKDIR: 0..2)                       s  string without NUL bytes (UTF-8)
 *   d  raw bytes (string as UTF-8, or Uint8Array)     g  u32 array (bytes: u32 LE each)
 *   l  list of strings without NUL bytes
 */
import { InvalidArgumentError } from '../../errors.ts';
import type { Op, OpName, Plan } from './ops.ts';

export type ArgLetter = 'i' | 'q' | 'b' | 'p' | 'k' | 's' | 'd' | 'g' | 'l';

export const PLAN_MAGIC = 'CRLP';
export const PLAN_VERSION = 1;
/** Limits the executor enforces too. */
export const PLAN_LIMITS = { maxPlanBytes: 16 << 20, maxBytes: 1 << 20, maxList: 65536, maxOps: 65536 } as const;

/** [op name, [field, letter][]] in opcode order (opcode = index + 1). */
export const OP_TABLE: ReadonlyArray<readonly [OpName, ReadonlyArray<readonly [string, ArgLetter]>]> = [
  ['setns', [['path', 's'], ['nstype', 'i']]],
  ['unshare', [['flags', 'i']]],
  ['writeFile', [['path', 's'], ['data', 'd']]],
  ['syncSend', [['message', 's']]],
  ['syncWait', [['message', 's']]],
  ['clone', [['flags', 'i'], ['parentMode', 'p']]],
  ['sethostname', [['name', 's']]],
  ['setdomainname', [['name', 's']]],
  ['mount', [['source', 's'], ['target', 's'], ['fstype', 's'], ['flags', 'i'], ['data', 's'], ['extra', 'i']]],
  ['openRoot', [['path', 's']]],
  ['mountInRoot', [['source', 's'], ['target', 's'], ['fstype', 's'], ['flags', 'i'], ['data', 's'], ['mkdir', 'k'], ['extra', 'i']]],
  ['mkdirInRoot', [['path', 's'], ['mode', 'i']]],
  ['mknodInRoot', [['path', 's'], ['mode', 'i'], ['major', 'i'], ['minor', 'i'], ['uid', 'i'], ['gid', 'i']]],
  ['symlinkInRoot', [['target', 's'], ['linkpath', 's']]],
  ['pivotRoot', [['path', 's']]],
  ['moveRoot', [['path', 's']]],
  ['maskPath', [['path', 's']]],
  ['readonlyPath', [['path', 's']]],
  ['consoleConnect', [['path', 's']]],
  ['setupConsole', [['rows', 'i'], ['cols', 'i'], ['mountConsole', 'b']]],
  ['openStartFifo', [['path', 's']]],
  ['waitStart', []],
  ['runHook', [['path', 's'], ['args', 'l'], ['env', 'l'], ['timeoutSec', 'i'], ['stdin', 'd']]],
  ['setrlimit', [['resource', 'i'], ['soft', 'q'], ['hard', 'q']]],
  ['umask', [['mask', 'i']]],
  ['personality', [['domain', 'i']]],
  ['chdir', [['path', 's']]],
  ['capsBounding', [['keep', 'q']]],
  ['setUser', [['uid', 'i'], ['gid', 'i'], ['groups', 'g'], ['setgroups', 'b']]],
  ['capsSet', [['effective', 'q'], ['permitted', 'q'], ['inheritable', 'q'], ['ambient', 'q']]],
  ['noNewPrivs', []],
  ['seccomp', [['program', 'd'], ['flags', 'i']]],
  ['cloexecFrom', [['from', 'i']]],
  ['exec', [['path', 's'], ['argv', 'l'], ['env', 'l'], ['searchPath', 'b']]],
  ['syncRecvState', []],
  ['attachDeviceFilter', [['cgroupDir', 's'], ['program', 'd']]],
  ['mkfifo', [['path', 's'], ['mode', 'i']]],
  ['chroot', [['path', 's']]],
  ['umount', [['path', 's'], ['flags', 'i'], ['missingOk', 'b']]],
];

const opcodes = new Map<string, number>(OP_TABLE.map(([name], i) => [name, i + 1]));
const IN_ROOT = new Set<OpName>(['mountInRoot', 'mkdirInRoot', 'mknodInRoot', 'symlinkInRoot']);
const U64_MAX = (1n << 64n) - 1n;

/** The name an error uses for op `index`: its origin, else its position. */
export function opLabel(op: Op, index: number): string {
  return op.origin ? `${op.origin} (${op.op})` : `plan op ${index} (${op.op})`;
}

class Writer {
  private buf = new Uint8Array(4096);
  private view = new DataView(this.buf.buffer);
  length = 0;
  private reserve(n: number): void {
    if (this.length + n > PLAN_LIMITS.maxPlanBytes) {
      throw new InvalidArgumentError(`plan: the encoded plan exceeds ${PLAN_LIMITS.maxPlanBytes} bytes`);
    }
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): void {
    this.reserve(1);
    this.view.setUint8(this.length, v);
    this.length += 1;
  }
  u16(v: number): void {
    this.reserve(2);
    this.view.setUint16(this.length, v, true);
    this.length += 2;
  }
  u32(v: number): void {
    this.reserve(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }
  u64(v: bigint): void {
    this.reserve(8);
    this.view.setBigUint64(this.length, v, true);
    this.length += 8;
  }
  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.reserve(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

const utf8 = new TextEncoder();

/** Encode a plan; every op is validated first, errors name the op's origin. */
export function encodePlan(plan: Plan): Uint8Array {
  const ops = plan.ops;
  if (!Array.isArray(ops)) throw new InvalidArgumentError('plan: ops must be an array');
  if (ops.length > PLAN_LIMITS.maxOps) throw new InvalidArgumentError(`plan: ${ops.length} ops exceed ${PLAN_LIMITS.maxOps}`);
  const w = new Writer();
  for (const c of PLAN_MAGIC) w.u8(c.charCodeAt(0));
  w.u32(PLAN_VERSION);
  w.u32(ops.length);
  let clones = 0;
  const seen = new Set<string>();
  ops.forEach((op, index) => {
    const label = () => opLabel(op, index);
    const fail = (reason: string): never => {
      throw new InvalidArgumentError(`${label()}: ${reason}`);
    };
    const code = opcodes.get(op?.op);
    if (code === undefined) fail(`unknown op ${JSON.stringify(op?.op)}`);
    const [, fields] = OP_TABLE[code! - 1];
    if (op.op === 'clone' && ++clones > 1) fail('a plan can clone only once');
    if (op.op === 'exec' && index !== ops.length - 1) fail('exec must be the last op');
    if (IN_ROOT.has(op.op) && !seen.has('openRoot')) fail('needs a preceding openRoot');
    if (op.op === 'setupConsole' && !seen.has('consoleConnect')) fail('needs a preceding consoleConnect');
    if (op.op === 'waitStart' && !seen.has('openStartFifo')) fail('needs a preceding openStartFifo');
    seen.add(op.op);
    w.u16(code!);
    w.u16(fields.length);
    const rec = op as unknown as Record<string, unknown>;
    for (const [field, letter] of fields) encodeArg(w, letter, rec[field], (r) => fail(`${field}: ${r}`));
    if (op.op === 'seccomp') {
      const n = op.program.length;
      if (n === 0 || n % 8 !== 0 || n / 8 > 4096) fail(`program: ${n} bytes is not 1..4096 instructions of 8 bytes`);
    }
    if (op.op === 'exec' && op.argv.length === 0) fail('argv: must not be empty');
  });
  return w.result();
}

function encodeArg(w: Writer, letter: ArgLetter, v: unknown, fail: (reason: string) => never): void {
  const int = (max: number) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) fail(`must be an integer in 0..${max}, got ${String(v)}`);
    w.u8(1);
    w.u64(BigInt(v as number));
  };
  const str = (s: unknown): Uint8Array => {
    if (typeof s !== 'string') fail(`must be a string, got ${typeof s}`);
    if ((s as string).includes('\0')) fail('must not contain NUL bytes');
    const b = utf8.encode(s as string);
    if (b.length > PLAN_LIMITS.maxBytes) fail(`is longer than ${PLAN_LIMITS.maxBytes} bytes`);
    return b;
  };
  switch (letter) {
    case 'i':
      return int(0xffffffff);
    case 'k':
      return int(2);
    case 'b':
      if (typeof v !== 'boolean') fail(`must be a boolean, got ${typeof v}`);
      w.u8(1);
      return w.u64(v ? 1n : 0n);
    case 'p':
      if (v !== 'exit' && v !== 'wait') fail(`must be "exit" or "wait", got ${JSON.stringify(v)}`);
      w.u8(1);
      return w.u64(v === 'wait' ? 1n : 0n);
    case 'q':
      if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) fail(`must be a bigint in 0..2^64-1, got ${String(v)}`);
      w.u8(1);
      return w.u64(v as bigint);
    case 's':
      w.u8(2);
      return w.bytes(str(v));
    case 'd': {
      const b = v instanceof Uint8Array ? v : typeof v === 'string' ? utf8.encode(v) : fail('must be a string or Uint8Array');
      if (b.length > PLAN_LIMITS.maxBytes) fail(`is longer than ${PLAN_LIMITS.maxBytes} bytes`);
      w.u8(2);
      return w.bytes(b);
    }
    case 'g': {
      if (!Array.isArray(v)) fail('must be an array of integers');
      const list = v as unknown[];
      if (list.length > PLAN_LIMITS.maxBytes / 4) fail('has too many entries');
      const b = new Uint8Array(list.length * 4);
      const dv = new DataView(b.buffer);
      list.forEach((g, i) => {
        if (typeof g !== 'number' || !Number.isInteger(g) || g < 0 || g > 0xffffffff) fail(`[${i}] must be an integer in 0..4294967295`);
        dv.setUint32(i * 4, g as number, true);
      });
      w.u8(2);
      return w.bytes(b);
    }
    case 'l': {
      if (!Array.isArray(v)) fail('must be an array of strings');
      const list = v as unknown[];
      if (list.length > PLAN_LIMITS.maxList) fail(`has more than ${PLAN_LIMITS.maxList} entries`);
      const items = list.map((s, i) => {
        if (typeof s !== 'string' || s.includes('\0')) fail(`[${i}] must be a string without NUL bytes`);
        return str(s);
      });
      w.u8(3);
      w.u32(items.length);
      for (const b of items) w.bytes(b);
      return;
    }
  }
}
