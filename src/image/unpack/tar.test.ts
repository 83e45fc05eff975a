import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readTar, writeTar, parsePax, type TarEntry } from './tar.ts';

async function all(buf: Buffer, chunk = 7): Promise<Array<Omit<TarEntry, 'body'> & { data: string }>> {
  const src = (async function* () {
    for (let i = 0; i < buf.length; i += chunk) yield buf.subarray(i, i + chunk);
  })();
  const out = [];
  for await (const e of readTar(src)) {
    const parts: Buffer[] = [];
    for await (const c of e.body) parts.push(c);
    const { body: _b, ...h } = e;
    out.push({ ...h, data: Buffer.concat(parts).toString() });
  }
  return out;
}

test('tar round trip: long names and links via PAX, xattrs with binary values, devices', async () => {
  const long = 'd/'.repeat(80) + 'file';
  const bin = Buffer.from([0, 1, 2, 255, 10, 61]);
  const t = writeTar([
    { name: long, data: 'x'.repeat(1000), mode: 0o4755, uid: 5, gid: 6, mtime: 123 },
    { name: 's', type: 'symlink', linkname: 'l/'.repeat(70) },
    { name: 'dev', type: 'block', devmajor: 8, devminor: 1 },
    { name: 'x', data: '', xattrs: { 'security.capability': bin } },
  ]);
  const e = await all(t);
  assert.equal(e.length, 4);
  assert.equal(e[0]!.name, long);
  assert.equal(e[0]!.data.length, 1000);
  assert.equal(e[0]!.mode, 0o4755);
  assert.equal(e[0]!.uid, 5);
  assert.equal(e[0]!.mtime, 123);
  assert.equal(e[1]!.linkname, 'l/'.repeat(70));
  assert.equal(e[2]!.type, 'block');
  assert.equal(e[2]!.devmajor, 8);
  assert.deepEqual(e[3]!.xattrs.get('security.capability'), bin);
});

test('GNU long name headers and base-256 numbers are read', async () => {
  const name = 'n'.repeat(150);
  const mk = (flag: string, nm: string, size: number) => {
    const h = Buffer.alloc(512);
    h.write(nm, 0);
    h.write('0000644\0', 100);
    h.write('0000000\0', 116);
    h.write(size.toString(8).padStart(11, '0') + '\0', 124);
    h.write('00000000000\0', 136);
    h.write(flag, 156);
    h.write('ustar  \0', 257);
    h[108] = 0x80; // base-256 uid
    h.writeUInt32BE(70000, 112);
    h.write('        ', 148);
    let s = 0;
    for (const b of h) s += b;
    h.write(s.toString(8).padStart(6, '0') + '\0 ', 148);
    return h;
  };
  const payload = Buffer.alloc(512);
  payload.write(name);
  const t = Buffer.concat([mk('L', '././@LongLink', name.length + 1), payload, mk('0', 'short', 3), Buffer.from('abc'.padEnd(512, '\0')), Buffer.alloc(1024)]);
  const e = await all(t, 100);
  assert.equal(e[0]!.name, name);
  assert.equal(e[0]!.uid, 70000);
  assert.equal(e[0]!.data, 'abc');
});

test('corrupt and truncated archives are errors', async () => {
  const t = writeTar([{ name: 'a', data: 'hello world' }]);
  const bad = Buffer.from(t);
  bad[0] = 0x41;
  await assert.rejects(all(bad), /checksum/);
  await assert.rejects(all(t.subarray(0, 515)), /end of tar archive/);
  assert.throws(() => parsePax(Buffer.from('99 path=x\n')), /PAX/);
});
