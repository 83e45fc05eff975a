import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { InvalidArgumentError } from '../../errors.ts';
import { OP_TABLE, encodePlan } from './encode.ts';
import { CLONE, type Op } from './ops.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const header = (n: number) => '43524c50' + '01000000' + Buffer.from(new Uint32Array([n]).buffer).toString('hex');
const int = (v: bigint) => {
  const b = Buffer.alloc(9);
  b[0] = 1;
  b.writeBigUInt64LE(v, 1);
  return b.toString('hex');
};
const bytes = (s: string | Buffer) => {
  const d = Buffer.from(s);
  const b = Buffer.alloc(5);
  b[0] = 2;
  b.writeUInt32LE(d.length, 1);
  return b.toString('hex') + d.toString('hex');
};
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b.toString('hex');
};
const opHead = (code: number, argc: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt16LE(code, 0);
  b.writeUInt16LE(argc, 2);
  return b.toString('hex');
};

describe('encodePlan', () => {
  it('writes the header for an empty plan', () => {
    assert.equal(hex(encodePlan({ ops: [] })), header(0));
  });

  it('encodes ints, enums, strings and lists exactly as docs/plan-format.md says', () => {
    const ops: Op[] = [
      { op: 'clone', flags: CLONE.NEWUTS | CLONE.NEWPID, parentMode: 'wait' },
      { op: 'sethostname', name: 'héllo' },
      { op: 'exec', path: 'sh', argv: ['sh', '-c'], env: [], searchPath: true },
    ];
    const want =
      header(3) +
      opHead(6, 2) + int(BigInt(CLONE.NEWUTS | CLONE.NEWPID)) + int(1n) +
      opHead(7, 1) + bytes('héllo') +
      opHead(34, 4) + bytes('sh') + '03' + u32(2) + u32(2) + Buffer.from('sh').toString('hex') + u32(2) +
      Buffer.from('-c').toString('hex') + '03' + u32(0) + int(1n);
    assert.equal(hex(encodePlan({ ops })), want);
  });

  it('encodes bigints as u64 bits (RLIM_INFINITY = 2^64-1) and groups as packed u32 LE', () => {
    const inf = (1n << 64n) - 1n;
    const got = hex(
      encodePlan({
        ops: [
          { op: 'setrlimit', resource: 7, soft: 1024n, hard: inf },
          { op: 'setUser', uid: 1000, gid: 4294967295, groups: [1, 0x01020304], setgroups: false },
        ],
      }),
    );
    const want =
      header(2) + opHead(24, 3) + int(7n) + int(1024n) + '01ffffffffffffffff' +
      opHead(29, 4) + int(1000n) + int(4294967295n) + bytes(Buffer.from([1, 0, 0, 0, 4, 3, 2, 1])) + int(0n);
    assert.equal(got, want);
  });

  it('passes raw bytes (seccomp program, writeFile data with NUL) unchanged', () => {
    const program = new Uint8Array([6, 0, 0, 0, 0, 0, 0xff, 0x7f]);
    const got = hex(encodePlan({ ops: [{ op: 'seccomp', program, flags: 0 }, { op: 'writeFile', path: '/x', data: 'a\0b' }] }));
    assert.equal(got, header(2) + opHead(32, 2) + bytes(Buffer.from(program)) + int(0n) + opHead(3, 2) + bytes('/x') + bytes('a\0b'));
  });

  const rejects = (op: unknown, pattern: RegExp, extra: Op[] = []) => {
    assert.throws(
      () => encodePlan({ ops: [...extra, op as Op] }),
      (e: unknown) => e instanceof InvalidArgumentError && pattern.test(e.message),
    );
  };

  it('rejects NUL bytes in strings, naming the origin', () => {
    rejects({ op: 'sethostname', name: 'a\0b', origin: 'hostname' }, /^hostname \(sethostname\): name: must not contain NUL/);
    rejects(
      { op: 'exec', path: '/bin/sh', argv: ['sh', 'x\0'], env: [], searchPath: false, origin: 'process.args' },
      /^process\.args \(exec\): argv: \[1\] must be a string without NUL/,
    );
    rejects({ op: 'chdir', path: '/\0' }, /^plan op 0 \(chdir\): path/);
  });

  it('rejects out-of-range and mistyped arguments', () => {
    rejects({ op: 'umask', mask: -1 }, /mask: must be an integer in 0\.\.4294967295/);
    rejects({ op: 'umask', mask: 2 ** 32 }, /mask/);
    rejects({ op: 'umask', mask: 1.5 }, /mask/);
    rejects({ op: 'umask', mask: '18' }, /mask/);
    rejects({ op: 'capsBounding', keep: 1 }, /keep: must be a bigint/);
    rejects({ op: 'capsBounding', keep: 1n << 64n }, /keep/);
    rejects({ op: 'clone', flags: 0, parentMode: 'stay' }, /parentMode: must be "exit" or "wait"/);
    rejects({ op: 'setupConsole', rows: 1, cols: 1, mountConsole: 1 }, /mountConsole: must be a boolean/, [
      { op: 'consoleConnect', path: '/s' },
    ]);
    rejects({ op: 'mountInRoot', source: '', target: 't', fstype: '', flags: 0, data: '', mkdir: 3, extra: 0 }, /mkdir: must be an integer in 0\.\.2/, [
      { op: 'openRoot', path: '/r' },
    ]);
    rejects({ op: 'setUser', uid: 0, gid: 0, groups: [-1], setgroups: true }, /groups: \[0\]/);
    rejects({ op: 'nope' }, /unknown op "nope"/);
  });

  it('enforces one clone, exec last, op ordering and seccomp program size', () => {
    const clone: Op = { op: 'clone', flags: 0, parentMode: 'exit' };
    rejects(clone, /clone only once/, [clone]);
    const exec: Op = { op: 'exec', path: '/bin/true', argv: ['true'], env: [], searchPath: false };
    assert.throws(() => encodePlan({ ops: [exec, { op: 'umask', mask: 0 }] }), /exec must be the last op/);
    rejects({ op: 'exec', path: '/bin/true', argv: [], env: [], searchPath: false }, /argv: must not be empty/);
    rejects({ op: 'mkdirInRoot', path: 'a', mode: 0o755 }, /needs a preceding openRoot/);
    rejects({ op: 'setupConsole', rows: 0, cols: 0, mountConsole: false }, /needs a preceding consoleConnect/);
    rejects({ op: 'waitStart' }, /needs a preceding openStartFifo/);
    rejects({ op: 'seccomp', program: new Uint8Array(12), flags: 0 }, /program: 12 bytes/);
    rejects({ op: 'seccomp', program: new Uint8Array(0), flags: 0 }, /program: 0 bytes/);
    rejects({ op: 'seccomp', program: new Uint8Array(8 * 4097), flags: 0 }, /program/);
  });

  it('keeps OP_TABLE in the same order and with the same argument letters as the C table', () => {
    const c = readFileSync(path.resolve(import.meta.dirname, '../../executor/corral-exec.c'), 'utf8');
    const body = c.slice(c.indexOf('static const struct opdef OPS[] = {'));
    const rows = [...body.slice(0, body.indexOf('};')).matchAll(/\{"(\w+)", "(\w*)",/g)].map((m) => [m[1], m[2]]);
    assert.deepEqual(rows, OP_TABLE.map(([name, fields]) => [name, fields.map(([, l]) => l).join('')]));
  });
});
