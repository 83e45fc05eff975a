import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CniConfigError, loadConfigDir, loadDefaultNetwork, parseConfigText, validateConfList } from './config.ts';
import { defaultNetworkConfig, loopbackNetworkConfig, podAttachments } from './default.ts';
import { buildPluginConfig } from './network.ts';

const good = { cniVersion: '1.0.0', name: 'net1', plugins: [{ type: 'bridge', bridge: 'b0' }, { type: 'portmap', capabilities: { portMappings: true } }] };

function expectConfigError(fn: () => unknown, file: string, path: string, reason: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof CniConfigError, `expected CniConfigError, got ${String(err)}`);
    assert.equal(err.file, file);
    assert.equal(err.path, path);
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.reason, reason);
    assert.ok(err.message.startsWith(`${file}: ${path}: `), err.message);
    return true;
  });
}

describe('CNI config validation', () => {
  it('accepts a valid conflist and keeps plugin fields', () => {
    const list = validateConfList(good, 'x.conflist');
    assert.equal(list.name, 'net1');
    assert.equal(list.plugins.length, 2);
    assert.equal(list.plugins[0].bridge, 'b0');
  });

  it('rejects missing or bad name, version and plugins with file and JSON path', () => {
    expectConfigError(() => validateConfList({ ...good, name: undefined }, 'a.conflist'), 'a.conflist', 'name', /missing/);
    expectConfigError(() => validateConfList({ ...good, name: '-bad' }, 'a.conflist'), 'a.conflist', 'name', /must start/);
    expectConfigError(() => validateConfList({ ...good, cniVersion: undefined }, 'a.conflist'), 'a.conflist', 'cniVersion', /missing/);
    expectConfigError(() => validateConfList({ ...good, cniVersion: '9.9.9' }, 'a.conflist'), 'a.conflist', 'cniVersion', /unsupported/);
    expectConfigError(() => validateConfList({ ...good, cniVersion: 'one' }, 'a.conflist'), 'a.conflist', 'cniVersion', /not a version/);
    expectConfigError(() => validateConfList({ ...good, plugins: [] }, 'a.conflist'), 'a.conflist', 'plugins', /empty/);
    expectConfigError(() => validateConfList({ ...good, plugins: {} }, 'a.conflist'), 'a.conflist', 'plugins', /array/);
    expectConfigError(
      () => validateConfList({ ...good, plugins: [{ type: 'bridge' }, { capabilities: {} }] }, 'a.conflist'),
      'a.conflist', 'plugins[1].type', /missing/,
    );
    expectConfigError(
      () => validateConfList({ ...good, plugins: [{ type: '../../bin/sh' }] }, 'a.conflist'),
      'a.conflist', 'plugins[0].type', /without "\/"/,
    );
    expectConfigError(
      () => validateConfList({ ...good, plugins: [{ type: 'bridge', ipam: { subnet: 'x' } }] }, 'a.conflist'),
      'a.conflist', 'plugins[0].ipam.type', /IPAM/,
    );
    expectConfigError(
      () => validateConfList({ ...good, plugins: [{ type: 'portmap', capabilities: { portMappings: 'yes' } }] }, 'a.conflist'),
      'a.conflist', 'plugins[0].capabilities.portMappings', /boolean/,
    );
    expectConfigError(
      () => validateConfList({ ...good, plugins: [{ type: 'bridge', prevResult: {} }] }, 'a.conflist'),
      'a.conflist', 'plugins[0].prevResult', /set by the runtime/,
    );
    expectConfigError(() => validateConfList({ ...good, disableCheck: 'true' }, 'a.conflist'), 'a.conflist', 'disableCheck', /boolean/);
  });

  it('picks the highest supported version from a 1.1.0 cniVersions array', () => {
    const { cniVersion: _drop, ...rest } = good;
    assert.equal(validateConfList({ ...rest, cniVersions: ['0.4.0', '1.0.0', '7.0.0'] }).cniVersion, '1.0.0');
    expectConfigError(() => validateConfList({ ...rest, cniVersions: ['7.0.0'] }, 'v.conflist'), 'v.conflist', 'cniVersions', /none/);
  });

  it('parses .conf as a single plugin wrapped in a list, and reports bad JSON', () => {
    const list = parseConfigText(JSON.stringify({ cniVersion: '0.4.0', name: 'single', type: 'bridge', bridge: 'x' }), '/d/10-a.conf');
    assert.deepEqual(list.plugins.map((p) => p.type), ['bridge']);
    assert.equal(list.cniVersion, '0.4.0');
    assert.equal(list.name, 'single');
    expectConfigError(() => parseConfigText('{"cniVersion":', '/d/x.conflist'), '/d/x.conflist', '$', /not valid JSON/);
    expectConfigError(() => parseConfigText('{"cniVersion":"1.0.0","name":"n"}', '/d/x.conf'), '/d/x.conf', '$.type', /missing/);
  });
});

describe('CNI config directory', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'corral-cni-conf-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('loads in lexical order, reports bad files and duplicates, ignores other files', async () => {
    await writeFile(join(dir, '20-b.conflist'), JSON.stringify({ ...good, name: 'b' }));
    await writeFile(join(dir, '10-a.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'a', type: 'bridge' }));
    await writeFile(join(dir, '15-broken.conflist'), '{');
    await writeFile(join(dir, '30-noplugins.json'), JSON.stringify({ cniVersion: '1.0.0', name: 'c', plugins: [{ type: 'x' }, {}] }));
    await writeFile(join(dir, '40-dup.conflist'), JSON.stringify({ ...good, name: 'a' }));
    await writeFile(join(dir, '05-readme.txt'), 'not a config');
    await writeFile(join(dir, '.01-hidden.conflist'), JSON.stringify({ ...good, name: 'hidden' }));
    await mkdir(join(dir, '00-dir.conflist'));
    const { networks, errors } = await loadConfigDir(dir);
    assert.deepEqual(networks.map((n) => [n.config.name, n.file]), [['a', join(dir, '10-a.conf')], ['b', join(dir, '20-b.conflist')]]);
    assert.deepEqual(
      errors.map((e) => [e.file, e.path]),
      [[join(dir, '15-broken.conflist'), '$'], [join(dir, '30-noplugins.json'), 'plugins[1].type'], [join(dir, '40-dup.conflist'), 'name']],
    );
    assert.equal((await loadDefaultNetwork(dir)).config.name, 'a');
  });

  it('a missing directory has no networks; loadDefaultNetwork explains', async () => {
    const missing = join(dir, 'nope');
    assert.deepEqual(await loadConfigDir(missing), { networks: [], errors: [] });
    await assert.rejects(loadDefaultNetwork(missing), (e: unknown) => e instanceof CniConfigError && /no CNI network configuration/.test(e.message));
  });
});

describe('default network generator', () => {
  it('builds bridge + host-local + portmap + firewall with the given names', () => {
    const list = defaultNetworkConfig({ name: 'podnet', bridge: 'crl0', subnet: '10.77.3.0/24', dataDir: '/x/ipam' });
    assert.equal(list.cniVersion, '1.0.0');
    assert.deepEqual(list.plugins.map((p) => p.type), ['bridge', 'portmap', 'firewall']);
    const br = list.plugins[0];
    assert.equal(br.bridge, 'crl0');
    assert.equal(br.isGateway, true);
    assert.equal(br.ipMasq, true);
    assert.equal(br.hairpinMode, true);
    assert.deepEqual(br.ipam, {
      type: 'host-local',
      ranges: [[{ subnet: '10.77.3.0/24', gateway: '10.77.3.1' }]],
      routes: [{ dst: '0.0.0.0/0' }],
      dataDir: '/x/ipam',
    });
    assert.deepEqual(list.plugins[1].capabilities, { portMappings: true });
    const withBw = defaultNetworkConfig({ bandwidth: true, firewall: false, subnet6: 'fd00:77::/64' });
    assert.deepEqual(withBw.plugins.map((p) => p.type), ['bridge', 'portmap', 'bandwidth']);
    assert.deepEqual((withBw.plugins[0].ipam as unknown as { routes: unknown }).routes, [{ dst: '0.0.0.0/0' }, { dst: '::/0' }]);
  });

  it('rejects bad subnets and bridge names', () => {
    assert.throws(() => defaultNetworkConfig({ subnet: '10.1.2.3/24' }), /host bits zero/);
    assert.throws(() => defaultNetworkConfig({ subnet: '300.1.2.0/24' }), /CIDR/);
    assert.throws(() => defaultNetworkConfig({ subnet: '10.0.0.0/31' }), /prefix/);
    assert.throws(() => defaultNetworkConfig({ bridge: 'a-very-long-bridge-name' }), /bridge name/);
  });

  it('pairs the network with a loopback list attached first as lo', () => {
    const net = defaultNetworkConfig();
    const atts = podAttachments(net, { capabilityArgs: { portMappings: [] } });
    assert.deepEqual(atts.map((a) => [a.config.plugins[0].type, a.ifName]), [['loopback', 'lo'], ['bridge', 'eth0']]);
    assert.deepEqual(atts[1].capabilityArgs, { portMappings: [] });
    assert.deepEqual(loopbackNetworkConfig().plugins, [{ type: 'loopback' }]);
  });
});

describe('plugin config building', () => {
  it('injects name, cniVersion, declared capabilities only, and prevResult', () => {
    const list = validateConfList({
      cniVersion: '1.0.0',
      name: 'n',
      plugins: [{ type: 'a', capabilities: { portMappings: true, bandwidth: false, dns: true }, keep: 1 }],
    });
    const caps = { portMappings: [{ hostPort: 1, containerPort: 2, protocol: 'tcp' }], bandwidth: { ingressRate: 1 }, ipRanges: [] };
    const prev = { cniVersion: '1.0.0', ips: [] };
    const cfg = buildPluginConfig(list, list.plugins[0], caps, prev);
    assert.deepEqual(cfg, {
      type: 'a',
      capabilities: { portMappings: true, bandwidth: false, dns: true },
      keep: 1,
      name: 'n',
      cniVersion: '1.0.0',
      runtimeConfig: { portMappings: caps.portMappings },
      prevResult: prev,
    });
    assert.equal('runtimeConfig' in buildPluginConfig(list, list.plugins[0], {}, undefined), false);
    assert.equal('prevResult' in buildPluginConfig(list, list.plugins[0], {}, undefined), false);
  });
});
