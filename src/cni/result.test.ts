import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { asErrorDocument, compareVersions, convertResult, normalizeResult, sandboxAddresses } from './result.ts';

const r040 = {
  cniVersion: '0.4.0',
  interfaces: [{ name: 'br0', mac: 'aa:bb:cc:dd:ee:ff' }, { name: 'eth0', mac: '11:22:33:44:55:66', sandbox: '/run/netns/x' }],
  ips: [
    { version: '4', address: '10.1.0.5/24', gateway: '10.1.0.1', interface: 1 },
    { version: '6', address: 'fd00::5/64', interface: 1 },
  ],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: { nameservers: ['10.1.0.1'] },
};

describe('CNI results', () => {
  it('normalises 0.4.0 to the 1.0.0 shape and back', () => {
    const n = normalizeResult(r040, 'test');
    assert.equal(n.cniVersion, '0.4.0');
    assert.deepEqual(n.ips, [
      { address: '10.1.0.5/24', gateway: '10.1.0.1', interface: 1 },
      { address: 'fd00::5/64', interface: 1 },
    ]);
    assert.deepEqual(convertResult(n, '0.4.0'), r040);
    const v1 = convertResult(n, '1.0.0');
    assert.equal(v1.cniVersion, '1.0.0');
    assert.equal((v1.ips as { version?: string }[]).some((ip) => 'version' in ip), false);
  });

  it('reads 0.2.0 ip4/ip6 results', () => {
    const n = normalizeResult({ cniVersion: '0.2.0', ip4: { ip: '10.2.0.3/16', gateway: '10.2.0.1', routes: [{ dst: '0.0.0.0/0' }] } }, 't');
    assert.deepEqual(n.ips, [{ address: '10.2.0.3/16', gateway: '10.2.0.1' }]);
    assert.deepEqual(n.routes, [{ dst: '0.0.0.0/0' }]);
    assert.throws(() => convertResult(n, '0.2.0'), /only 0.3.0/);
  });

  it('rejects malformed results with the JSON path', () => {
    assert.throws(() => normalizeResult({ ips: [] }, 'plug'), /plug: invalid result at cniVersion: missing/);
    assert.throws(() => normalizeResult({ cniVersion: '1.0.0', ips: [{ address: '10.0.0.1' }] }, 'p'), /ips\[0\]\.address: not a CIDR/);
    assert.throws(() => normalizeResult({ cniVersion: '1.0.0', ips: [{ address: '10.0.0.1/8', interface: 2 }] }, 'p'), /ips\[0\]\.interface: index 2/);
    assert.throws(() => normalizeResult({ cniVersion: '1.0.0', routes: [{ gw: '1.1.1.1' }] }, 'p'), /routes\[0\]\.dst: missing/);
    assert.throws(() => normalizeResult([], 'p'), /expected a JSON object/);
  });

  it('finds the sandbox addresses', () => {
    const n = normalizeResult(r040, 't');
    assert.deepEqual(sandboxAddresses(n), ['10.1.0.5/24', 'fd00::5/64']);
    assert.deepEqual(sandboxAddresses(n, 'eth1'), []);
    assert.deepEqual(
      sandboxAddresses({ cniVersion: '1.0.0', interfaces: [{ name: 'br0' }], ips: [{ address: '10.0.0.1/8', interface: 0 }] }),
      [],
    );
  });

  it('recognises error documents and orders versions', () => {
    assert.deepEqual(asErrorDocument({ cniVersion: '1.0.0', code: 7, msg: 'bad', details: 'x' }), { cniVersion: '1.0.0', code: 7, msg: 'bad', details: 'x' });
    assert.equal(asErrorDocument({ cniVersion: '1.0.0', ips: [] }), undefined);
    assert.ok(compareVersions('0.10.0', '0.4.0') > 0);
    assert.ok(compareVersions('1.0.0', '1.1.0') < 0);
    assert.equal(compareVersions('0.4.0', '0.4.0'), 0);
  });
});
