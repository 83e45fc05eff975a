import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HpackDecoder, encodeStateless, huffmanDecode } from './hpack.ts';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('Huffman decoding (RFC 7541 C.4.1 "www.example.com") and bad padding', () => {
  assert.equal(huffmanDecode(hex('f1e3 c2e5 f23a 6ba0 ab90 f4ff')).toString(), 'www.example.com');
  assert.equal(huffmanDecode(hex('a8eb 1064 9cbf')).toString(), 'no-cache');
  assert.throws(() => huffmanDecode(hex('f1e3 c2e5 f23a 6ba0 ab90 f400')), /padding/);
});

test('the RFC 7541 C.4 request sequence decodes with dynamic-table references', () => {
  const d = new HpackDecoder();
  const names = (fs: { name: string; value: string }[]) => fs.map((f) => `${f.name}: ${f.value}`);
  assert.deepEqual(names(d.decode(hex('8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff'))), [':method: GET', ':scheme: http', ':path: /', ':authority: www.example.com']);
  assert.deepEqual(names(d.decode(hex('8286 84be 5886 a8eb 1064 9cbf'))), [':method: GET', ':scheme: http', ':path: /', ':authority: www.example.com', 'cache-control: no-cache']);
  assert.deepEqual(names(d.decode(hex('8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf'))), [
    ':method: GET',
    ':scheme: https',
    ':path: /index.html',
    ':authority: www.example.com',
    'custom-key: custom-value',
  ]);
  assert.throws(() => d.decode(hex('ff00')), /outside the tables/);
});

test('stateless encoding round-trips and never indexes', () => {
  const fields = [
    { name: ':method', value: 'POST', sensitive: false },
    { name: ':path', value: '/runtime.v1.RuntimeService/Version', sensitive: false },
    { name: ':authority', value: 'localhost', sensitive: false },
    { name: 'x-custom', value: 'v'.repeat(200), sensitive: false },
    { name: 'authorization', value: 'secret', sensitive: true },
  ];
  const block = encodeStateless(fields);
  assert.equal(block[0], 0x83); // :method POST from the static table
  const d = new HpackDecoder();
  assert.deepEqual(d.decode(block), fields);
  assert.deepEqual(d.decode(block), fields, 'no dynamic state was created');
});
