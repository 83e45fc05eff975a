/**
 * The CNI execution protocol and the runtime's chaining/caching logic, against fake plugins
 * (shell scripts in a temp dir that log their environment and stdin). No host networking.
 */
import assert from 'node:assert/strict';
import { access, chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { DeadlineExceededError, FailedPreconditionError, InternalError, InvalidArgumentError, NotFoundError, PermissionDeniedError, UnimplementedError } from '../../src/errors.ts';
import { CniPluginError, findPlugin, invokePlugin } from '../../src/cni/invoke.ts';
import { CniRuntime } from '../../src/cni/network.ts';
import type { NetworkConfigList } from '../../src/cni/types.ts';

interface LogLine {
  plugin: string;
  command: string;
  containerId: string;
  netns: string;
  ifName: string;
  args: string;
  path: string;
  pid: number;
  stdin: Record<string, unknown>;
}

let root: string;
let pluginDir: string;
let logFile: string;

type Bodies = Partial<Record<'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC', string>>;

/** `print(json)`: a shell snippet printing `json` on stdout. */
const print = (doc: unknown): string => `cat <<'JSON'\n${typeof doc === 'string' ? doc : JSON.stringify(doc)}\nJSON`;
const fail = (code: number, msg: string, details = ''): string =>
  `${print({ cniVersion: '1.0.0', code, msg, details })}\nexit 1`;

async function fakePlugin(name: string, bodies: Bodies, versions = ['0.4.0', '1.0.0']): Promise<void> {
  const script = `#!/bin/sh
input=$(cat)
printf '{"plugin":"${name}","command":"%s","containerId":"%s","netns":"%s","ifName":"%s","args":"%s","path":"%s","pid":%s,"stdin":%s}\\n' \\
  "$CNI_COMMAND" "\${CNI_CONTAINERID-unset}" "\${CNI_NETNS-unset}" "\${CNI_IFNAME-unset}" "\${CNI_ARGS-unset}" "$CNI_PATH" "$$" "$input" >> '${logFile}'
case "$CNI_COMMAND" in
VERSION)
${print({ cniVersion: '1.0.0', supportedVersions: versions })}
;;
${Object.entries(bodies).map(([cmd, body]) => `${cmd})\n${body}\n;;`).join('\n')}
esac
exit 0
`;
  const path = join(pluginDir, name);
  await writeFile(path, script);
  await chmod(path, 0o755);
}

async function log(): Promise<LogLine[]> {
  let text = '';
  try {
    text = await readFile(logFile, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogLine);
}

const resultA = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:01', sandbox: '/run/netns/fake' }],
  ips: [{ address: '10.99.0.2/24', gateway: '10.99.0.1', interface: 0 }],
};
const resultB = { ...resultA, dns: { nameservers: ['10.99.0.1'] } };

function list(plugins: NetworkConfigList['plugins'], extra: Partial<NetworkConfigList> = {}): NetworkConfigList {
  return { cniVersion: '1.0.0', name: 'fakenet', plugins, ...extra };
}

describe('CNI plugin invocation (fake plugins)', () => {
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'corral-cni-invoke-'));
    pluginDir = join(root, 'plugins');
    await mkdir(pluginDir);
    logFile = join(root, 'log.jsonl');
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });
  beforeEach(async () => {
    await rm(logFile, { force: true });
  });

  it('passes the CNI_* environment and the config on stdin, parses stdout', async () => {
    await fakePlugin('p-env', { ADD: print(resultA) });
    const out = await invokePlugin({
      type: 'p-env', command: 'ADD', config: { cniVersion: '1.0.0', name: 'n', type: 'p-env', x: [1, 2] },
      pluginDirs: ['/nonexistent-corral-dir', pluginDir], containerId: 'c1', netns: '/run/netns/xyz', ifName: 'eth7', cniArgs: 'A=1;B=2',
    });
    assert.deepEqual(out.stdout, resultA);
    assert.equal(out.path, join(pluginDir, 'p-env'));
    const [l] = await log();
    assert.equal(l.command, 'ADD');
    assert.equal(l.containerId, 'c1');
    assert.equal(l.netns, '/run/netns/xyz');
    assert.equal(l.ifName, 'eth7');
    assert.equal(l.args, 'A=1;B=2');
    assert.equal(l.path, `/nonexistent-corral-dir:${pluginDir}`);
    assert.deepEqual(l.stdin, { cniVersion: '1.0.0', name: 'n', type: 'p-env', x: [1, 2] });
  });

  it('VERSION gets no container parameters', async () => {
    await fakePlugin('p-ver', {});
    const rt = new CniRuntime({ pluginDirs: [pluginDir], cacheDir: join(root, 'cache-ver') });
    assert.deepEqual(await rt.version('p-ver'), { cniVersion: '1.0.0', supportedVersions: ['0.4.0', '1.0.0'] });
    const [l] = await log();
    assert.equal(l.command, 'VERSION');
    assert.equal(l.containerId, 'unset');
    assert.equal(l.netns, 'unset');
    assert.equal(l.ifName, 'unset');
    assert.deepEqual(l.stdin, { cniVersion: '1.0.0' });
  });

  it('turns error documents into CniPluginError with mapped codes', async () => {
    const cases: [number, string][] = [[7, 'INVALID_ARGUMENT'], [3, 'NOT_FOUND'], [11, 'UNAVAILABLE'], [1, 'FAILED_PRECONDITION'], [123, 'INTERNAL']];
    for (const [cniCode, code] of cases) {
      await fakePlugin('p-err', { ADD: fail(cniCode, 'it broke', 'more detail') });
      await assert.rejects(
        invokePlugin({ type: 'p-err', command: 'ADD', config: {}, pluginDirs: [pluginDir], containerId: 'c', netns: '/x', ifName: 'eth0', network: 'netx' }),
        (err: unknown) => {
          assert.ok(err instanceof CniPluginError);
          assert.equal(err.cniCode, cniCode);
          assert.equal(err.code, code);
          assert.equal(err.msg, 'it broke');
          assert.equal(err.details, 'more detail');
          assert.equal(err.exitCode, 1);
          assert.match(err.message, new RegExp(`CNI plugin "p-err" ADD \\(network netx\\) failed \\[CNI error ${cniCode}\\]: it broke: more detail`));
          return true;
        },
      );
    }
  });

  it('reports failures without an error document with stderr, and non-JSON output', async () => {
    await fakePlugin('p-crash', { ADD: 'echo "panic: something" >&2\nexit 2' });
    await assert.rejects(
      invokePlugin({ type: 'p-crash', command: 'ADD', config: {}, pluginDirs: [pluginDir] }),
      (err: unknown) => err instanceof CniPluginError && err.cniCode === undefined && err.exitCode === 2 && /stderr: panic: something/.test(err.message),
    );
    await fakePlugin('p-garbage', { ADD: 'echo "hello, not json"' });
    await assert.rejects(
      invokePlugin({ type: 'p-garbage', command: 'ADD', config: {}, pluginDirs: [pluginDir] }),
      (err: unknown) => err instanceof InternalError && /not JSON: hello, not json/.test(err.message),
    );
  });

  it('kills a plugin that runs past the timeout', async () => {
    await fakePlugin('p-slow', { ADD: 'exec sleep 600' });
    await assert.rejects(
      invokePlugin({ type: 'p-slow', command: 'ADD', config: {}, pluginDirs: [pluginDir], timeoutMs: 200 }),
      (err: unknown) => err instanceof DeadlineExceededError && /p-slow" ADD did not finish within 200 ms/.test(err.message),
    );
    const [l] = await log();
    assert.throws(() => process.kill(l.pid, 0), { code: 'ESRCH' });
  });

  it('finds plugins in order and explains missing, non-executable and unsafe names', async () => {
    await fakePlugin('p-find', {});
    assert.equal(await findPlugin('p-find', [join(root, 'nope'), pluginDir]), join(pluginDir, 'p-find'));
    await assert.rejects(findPlugin('corral-no-such-plugin', [pluginDir]), (e: unknown) =>
      e instanceof NotFoundError && e.message.includes('corral-no-such-plugin') && e.message.includes(pluginDir));
    await writeFile(join(pluginDir, 'p-noexec'), '#!/bin/sh\n');
    await chmod(join(pluginDir, 'p-noexec'), 0o644);
    await assert.rejects(findPlugin('p-noexec', [pluginDir]), PermissionDeniedError);
    await assert.rejects(findPlugin('../plugins/p-find', [pluginDir]), InvalidArgumentError);
  });
});

describe('CNI runtime chaining and cache (fake plugins)', () => {
  let cacheDir: string;
  const roots: string[] = [];
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'corral-cni-chain-'));
    roots.push(root);
    pluginDir = join(root, 'plugins');
    await mkdir(pluginDir);
    logFile = join(root, 'log.jsonl');
    cacheDir = join(root, 'cache');
  });
  after(async () => {
    for (const r of roots) await rm(r, { recursive: true, force: true });
  });

  const caps = {
    portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }],
    bandwidth: { ingressRate: 1000, ingressBurst: 100 },
  };
  const chain = (): NetworkConfigList =>
    list([
      { type: 'p-a', capabilities: { portMappings: true } },
      { type: 'p-b', capabilities: { bandwidth: true, dns: true }, keep: 'me' },
    ]);

  it('ADD chains prevResult, injects runtimeConfig and CNI_ARGS, and caches the result', async () => {
    await fakePlugin('p-a', { ADD: print(resultA) });
    await fakePlugin('p-b', { ADD: print(resultB) });
    const rt = new CniRuntime({ pluginDirs: [pluginDir], cacheDir });
    const res = await rt.add(chain(), { containerId: 'ctr1', netns: '/run/netns/fake', args: { K8S_POD_NAME: 'p' }, capabilityArgs: caps });
    assert.deepEqual(res, resultB);
    const [a, b] = await log();
    assert.deepEqual([a.plugin, a.command, b.plugin, b.command], ['p-a', 'ADD', 'p-b', 'ADD']);
    assert.equal(a.ifName, 'eth0');
    assert.equal(a.args, 'IgnoreUnknown=1;K8S_POD_NAME=p');
    assert.deepEqual(a.stdin, { type: 'p-a', capabilities: { portMappings: true }, name: 'fakenet', cniVersion: '1.0.0', runtimeConfig: { portMappings: caps.portMappings } });
    assert.deepEqual(b.stdin, {
      type: 'p-b', capabilities: { bandwidth: true, dns: true }, keep: 'me', name: 'fakenet', cniVersion: '1.0.0',
      runtimeConfig: { bandwidth: caps.bandwidth }, prevResult: resultA,
    });
    const cached = await rt.cachedAttachment('fakenet', 'ctr1');
    assert.ok(cached);
    assert.equal(cached.complete, true);
    assert.deepEqual(cached.result, resultB);
    assert.deepEqual(await readdir(cacheDir), ['fakenet+ctr1+eth0.json']);
    await assert.rejects(rt.add(chain(), { containerId: 'ctr1', netns: '/run/netns/fake' }), { code: 'ALREADY_EXISTS' });
  });

  it('CHECK runs every plugin with the cached result; disableCheck and old versions are honoured', async () => {
    await fakePlugin('p-a', { ADD: print(resultA) });
    await fakePlugin('p-b', { ADD: print(resultB) });
    const rt = new CniRuntime({ pluginDirs: [pluginDir], cacheDir });
    await assert.rejects(rt.check(chain(), { containerId: 'ctr2', netns: '/run/netns/fake' }), NotFoundError);
    await rt.add(chain(), { containerId: 'ctr2', netns: '/run/netns/fake' });
    await rm(logFile);
    await rt.check(chain(), { containerId: 'ctr2', netns: '/run/netns/fake' });
    const l = await log();
    assert.deepEqual(l.map((x) => `${x.plugin}:${x.command}`), ['p-a:CHECK', 'p-b:CHECK']);
    assert.deepEqual(l.map((x) => x.stdin.prevResult), [resultB, resultB]);
    await rm(logFile);
    await rt.check({ ...chain(), disableCheck: true }, { containerId: 'ctr2', netns: '/run/netns/fake' });
    assert.deepEqual(await log(), []);
    await assert.rejects(rt.check({ ...chain(), cniVersion: '0.3.1' }, { containerId: 'ctr2', netns: '/x' }), UnimplementedError);
    await fakePlugin('p-b', { CHECK: fail(100, 'eth0 has no address') });
    await assert.rejects(rt.check(chain(), { containerId: 'ctr2', netns: '/run/netns/fake' }), (e: unknown) =>
      e instanceof CniPluginError && e.plugin === 'p-b' && e.command === 'CHECK' && e.cniCode === 100);
  });

  it('DEL after a restart runs in reverse from the cache alone', async () => {
    await fakePlugin('p-a', { ADD: print(resultA) });
    await fakePlugin('p-b', { ADD: print(resultB) });
    await new CniRuntime({ pluginDirs: [pluginDir], cacheDir }).add(chain(), {
      containerId: 'ctr3', netns: '/run/netns/fake3', ifName: 'net1', args: { X: 'y' }, capabilityArgs: caps,
    });
    await rm(logFile);
    const restarted = new CniRuntime({ pluginDirs: [pluginDir], cacheDir });
    await restarted.del(null, { networkName: 'fakenet', containerId: 'ctr3', ifName: 'net1' });
    const l = await log();
    assert.deepEqual(l.map((x) => `${x.plugin}:${x.command}`), ['p-b:DEL', 'p-a:DEL']);
    for (const x of l) {
      assert.equal(x.netns, '/run/netns/fake3');
      assert.equal(x.ifName, 'net1');
      assert.equal(x.args, 'IgnoreUnknown=1;X=y');
      assert.deepEqual(x.stdin.prevResult, resultB);
    }
    assert.deepEqual(l[0].stdin.runtimeConfig, { bandwidth: caps.bandwidth });
    assert.deepEqual(l[1].stdin.runtimeConfig, { portMappings: caps.portMappings });
    assert.equal(await restarted.cachedAttachment('fakenet', 'ctr3', 'net1'), undefined);
    // Nothing cached and no config: nothing to go on.
    await assert.rejects(restarted.del(null, { networkName: 'fakenet', containerId: 'ctr3', ifName: 'net1' }), NotFoundError);
    // With the config, DEL of an unknown attachment still runs (without prevResult) and succeeds.
    await rm(logFile);
    await restarted.del(chain(), { containerId: 'ctr3', ifName: 'net1' });
    assert.deepEqual((await log()).map((x) => [x.command, 'prevResult' in x.stdin]), [['DEL', false], ['DEL', false]]);
  });

  it('DEL goes on past a failing plugin, keeps the cache, and can be retried; error 3 counts as done', async () => {
    const flag = join(root, 'fail-del');
    await fakePlugin('p-a', { ADD: print(resultA), DEL: fail(3, 'no such container') });
    await fakePlugin('p-b', { ADD: print(resultB), DEL: `if [ -e '${flag}' ]; then\n${fail(5, 'iptables is locked')}\nfi` });
    const rt = new CniRuntime({ pluginDirs: [pluginDir], cacheDir });
    await rt.add(chain(), { containerId: 'ctr4', netns: '/run/netns/fake' });
    await writeFile(flag, '');
    await rm(logFile);
    await assert.rejects(rt.del(chain(), { containerId: 'ctr4' }), (e: unknown) =>
      e instanceof CniPluginError && e.cniCode === 5 && /retry DEL/.test(e.message));
    assert.deepEqual((await log()).map((x) => `${x.plugin}:${x.command}`), ['p-b:DEL', 'p-a:DEL']);
    assert.ok(await rt.cachedAttachment('fakenet', 'ctr4'));
    await rm(flag);
    await rt.del(chain(), { containerId: 'ctr4' });
    assert.equal(await rt.cachedAttachment('fakenet', 'ctr4'), undefined);
  });

  it('a failed ADD is rolled back in reverse (failing plugin included) and leaves no cache entry', async () => {
    await fakePlugin('p-a', { ADD: print(resultA) });
    await fakePlugin('p-b', { ADD: fail(7, 'bad subnet') });
    await fakePlugin('p-c', { ADD: print(resultB) });
    const rt = new CniRuntime({ pluginDirs: [pluginDir], cacheDir });
    const l3 = list([{ type: 'p-a' }, { type: 'p-b' }, { type: 'p-c' }]);
    await assert.rejects(rt.add(l3, { containerId: 'ctr5', netns: '/run/netns/fake' }), (e: unknown) =>
      e instanceof CniPluginError && e.plugin === 'p-b' && e.cniCode === 7);
    const l = await log();
    assert.deepEqual(l.map((x) => `${x.plugin}:${x.command}`), ['p-a:ADD', 'p-b:ADD', 'p-b:DEL', 'p-a:DEL']);
    assert.deepEqual(l[3].stdin.prevResult, resultA);
    assert.deepEqual(await readdir(cacheDir), []);
    // A missing binary in the chain: same rollback, NotFound reported.
    const missing = list([{ type: 'p-a' }, { type: 'corral-no-such-plugin' }]);
    await assert.rejects(rt.add(missing, { containerId: 'ctr5', netns: '/run/netns/fake' }), NotFoundError);
    assert.deepEqual(await readdir(cacheDir), []);
  });

  it('converts results to the list version for prevResult (0.4.0 lists)', async () => {
    await fakePlugin('p-a', { ADD: print(resultA) }); // answers 1.0.0 although asked for 0.4.0
    await fakePlugin('p-b', { ADD: print({ ...resultB, cniVersion: '0.4.0', ips: [{ version: '4', ...resultB.ips[0] }] }) });
    const rt = new CniRuntime({ pluginDirs: [pluginDir], cacheDir });
    const res = await rt.add({ ...chain(), cniVersion: '0.4.0' }, { containerId: 'ctr6', netns: '/run/netns/fake' });
    assert.equal(res.cniVersion, '0.4.0');
    assert.deepEqual(res.ips, resultB.ips);
    const [, b] = await log();
    assert.deepEqual(b.stdin.prevResult, { ...resultA, cniVersion: '0.4.0', ips: [{ version: '4', ...resultA.ips[0] }] });
  });

  it('GC deletes cached attachments that are no longer valid', async () => {
    await fakePlugin('p-a', { ADD: print(resultA) });
    await fakePlugin('p-b', { ADD: print(resultB) });
    const rt = new CniRuntime({ pluginDirs: [pluginDir], cacheDir });
    await rt.add(chain(), { containerId: 'keep', netns: '/run/netns/k' });
    await rt.add(chain(), { containerId: 'stale', netns: '/run/netns/s' });
    await rm(logFile);
    const removed = await rt.gc(chain(), [{ containerId: 'keep' }]);
    assert.deepEqual(removed.map((r) => r.containerId), ['stale']);
    assert.deepEqual((await log()).map((x) => `${x.containerId}:${x.command}`), ['stale:DEL', 'stale:DEL']);
    assert.deepEqual((await rt.listCached('fakenet')).map((c) => c.containerId), ['keep']);
  });

  it('validate and status check binaries and versions; bad attachments are rejected', async () => {
    await fakePlugin('p-a', {}, ['0.4.0', '1.0.0']);
    await fakePlugin('p-b', {}, ['1.0.0']);
    const rt = new CniRuntime({ pluginDirs: [pluginDir], cacheDir });
    assert.deepEqual(await rt.validate(chain()), { capabilities: ['bandwidth', 'dns', 'portMappings'] });
    await assert.rejects(rt.validate({ ...chain(), cniVersion: '0.4.0' }), (e: unknown) =>
      e instanceof FailedPreconditionError && /plugins\[1\] plugin "p-b" does not support cniVersion 0.4.0/.test(e.message));
    await rt.status(chain());
    await assert.rejects(rt.status(list([{ type: 'p-a', ipam: { type: 'corral-no-such-ipam' } }])), NotFoundError);
    await assert.rejects(rt.add(chain(), { containerId: 'bad/id', netns: '/x' }), InvalidArgumentError);
    await assert.rejects(rt.add(chain(), { containerId: 'ok', netns: '/x', ifName: 'much-too-long-name' }), InvalidArgumentError);
    await assert.rejects(rt.add(chain(), { containerId: 'ok', netns: '' }), InvalidArgumentError);
    await assert.rejects(rt.add({ ...chain(), name: 'bad name' }, { containerId: 'ok', netns: '/x' }), /name: must start/);
    assert.deepEqual(await log().then((l) => l.filter((x) => x.command !== 'VERSION')), []);
    await access(pluginDir);
  });
});
