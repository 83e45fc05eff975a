// corrald as a process: start on a temp socket, answer over gRPC, expose metrics, refuse a
// second daemon, clean up stale sockets, stop on SIGTERM (by PID) and leave no socket behind.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { BIN_CORRALD, REPO, call, criClients, makeStaleSocket, runCorrald, spawnCorrald, tempDir, type SpawnedDaemon } from './harness.ts';

describe('a running corrald', () => {
  const tmp = tempDir('corrald-');
  const socket = join(tmp.dir, 'corral.sock');
  const cniDir = join(tmp.dir, 'net.d');
  let d: SpawnedDaemon;
  let clients: ReturnType<typeof criClients>;

  before(async () => {
    const cfg = join(tmp.dir, 'corrald.toml');
    writeFileSync(cfg, `socket = ${JSON.stringify(socket)}\nstate_dir = ${JSON.stringify(join(tmp.dir, 'state'))}\nroot_dir = ${JSON.stringify(join(tmp.dir, 'root'))}\n[cni]\nconf_dir = ${JSON.stringify(cniDir)}\ndefault_network = false\n[metrics]\naddress = "127.0.0.1:0"\n`);
    d = await spawnCorrald(['--config', cfg, '--log-level', 'debug']);
    clients = criClients(socket);
  });

  after(async () => {
    clients?.close();
    if (d && d.child.exitCode === null) {
      d.child.kill('SIGKILL');
      await d.exited;
    }
    tmp.cleanup();
  });

  test('the socket exists with mode 0600', () => {
    const st = statSync(socket);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
  });

  test('Version names corral, its package version and CRI v1', async () => {
    const v = await call(clients.runtime, 'Version', { version: '0.1.0' });
    assert.deepEqual(v, { version: '0.1.0', runtime_name: 'corral', runtime_version: '0.1.0', runtime_api_version: 'v1' });
  });

  test('Status reports RuntimeReady and NetworkReady; verbose adds JSON info', async () => {
    const s = await call<{ status: { conditions: { type: string; status: boolean; reason: string; message: string }[] }; info: Record<string, string> }>(clients.runtime, 'Status', { verbose: true });
    const byType = Object.fromEntries(s.status.conditions.map((c) => [c.type, c]));
    assert.deepEqual(Object.keys(byType), ['RuntimeReady', 'NetworkReady']);
    assert.equal(byType.NetworkReady!.status, false, 'the temp CNI dir is empty');
    assert.equal(byType.NetworkReady!.reason, 'NetworkPluginNotReady');
    assert.match(byType.NetworkReady!.message, new RegExp(cniDir));
    assert.equal(JSON.parse(s.info.config!).socket, socket);
    const quiet = await call<{ info: Record<string, string> }>(clients.runtime, 'Status', { verbose: false });
    assert.deepEqual(quiet.info, {});
  });

  test('NetworkReady turns true once a CNI config appears', async () => {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(cniDir, { recursive: true });
    writeFileSync(join(cniDir, '10-test.conflist'), '{}');
    const s = await call<{ status: { conditions: { type: string; status: boolean }[] } }>(clients.runtime, 'Status', {});
    assert.equal(s.status.conditions.find((c) => c.type === 'NetworkReady')!.status, true);
  });

  test('RuntimeConfig says cgroupfs; UpdateRuntimeConfig stores a valid pod CIDR and refuses junk', async () => {
    assert.deepEqual(await call(clients.runtime, 'RuntimeConfig', {}), { linux: { cgroup_driver: 'CGROUPFS' } });
    await call(clients.runtime, 'UpdateRuntimeConfig', { runtime_config: { network_config: { pod_cidr: '10.88.0.0/16' } } });
    const s = await call<{ info: Record<string, string> }>(clients.runtime, 'Status', { verbose: true });
    assert.equal(JSON.parse(s.info.podCIDR!), '10.88.0.0/16');
    await assert.rejects(call(clients.runtime, 'UpdateRuntimeConfig', { runtime_config: { network_config: { pod_cidr: '10.0.0.0/99' } } }), {
      code: grpc.status.INVALID_ARGUMENT,
      details: /pod_cidr/,
    });
  });

  test('unimplemented RPCs answer UNIMPLEMENTED naming the RPC', async () => {
    await assert.rejects(call(clients.runtime, 'CheckpointContainer', { container_id: 'x' }), {
      code: grpc.status.UNIMPLEMENTED, details: /RuntimeService\.CheckpointContainer/,
    });
  });

  test('/metrics has per-RPC latency histograms and error counters', async () => {
    const text = await (await fetch(String(d.ready.metrics))).text();
    assert.match(text, /^# TYPE corral_cri_operation_duration_seconds histogram$/m);
    assert.match(text, /^corral_cri_operation_duration_seconds_count\{service="RuntimeService",method="Version"\} 1$/m);
    assert.match(text, /^corral_cri_operation_errors_total\{service="RuntimeService",method="CheckpointContainer",code="UNIMPLEMENTED"\} 1$/m);
    assert.match(text, /^corral_cri_operation_errors_total\{service="RuntimeService",method="UpdateRuntimeConfig",code="INVALID_ARGUMENT"\} 1$/m);
    assert.match(text, /^corral_running_containers 0$/m);
  });

  test('a second daemon on the same live socket refuses to start', async () => {
    const r = await runCorrald(['--socket', socket, '--metrics-address', '']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /another daemon is already serving on/);
    assert.ok(existsSync(socket), 'the live socket is left alone');
  });

  test('logs are JSON lines', () => {
    const lines = d.stderr().trim().split('\n');
    for (const l of lines) {
      const rec = JSON.parse(l);
      assert.ok(rec.time && rec.level && rec.msg, l);
    }
  });

  test('SIGTERM to its PID stops it cleanly and removes the socket', async () => {
    process.kill(d.child.pid!, 'SIGTERM');
    assert.deepEqual(await d.exited, { code: 0, signal: null });
    assert.equal(existsSync(socket), false);
    assert.match(d.stderr(), /"msg":"stopped"/);
  });
});

test('a stale socket from a dead daemon is replaced', async () => {
  const tmp = tempDir('corrald-stale-');
  try {
    const socket = join(tmp.dir, 's.sock');
    await makeStaleSocket(socket);
    assert.ok(statSync(socket).isSocket());
    const d = await spawnCorrald(['--socket', socket, '--metrics-address', '']);
    const c = criClients(socket);
    try {
      assert.equal((await call<{ runtime_name: string }>(c.runtime, 'Version')).runtime_name, 'corral');
    } finally {
      c.close();
      process.kill(d.child.pid!, 'SIGTERM');
      assert.equal((await d.exited).code, 0);
    }
    assert.equal(existsSync(socket), false);
  } finally {
    tmp.cleanup();
  }
});

test('a regular file at the socket path is not deleted', async () => {
  const tmp = tempDir('corrald-file-');
  try {
    const path = join(tmp.dir, 'not-a-socket');
    writeFileSync(path, 'keep me');
    const r = await runCorrald(['--socket', path, '--metrics-address', '']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /exists and is not a socket/);
    assert.ok(existsSync(path));
  } finally {
    tmp.cleanup();
  }
});

test('--version, --help and configuration errors', async () => {
  const v = await runCorrald(['--version']);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^corrald 0\.1\.0 \(corral, CRI runtime\.v1\)\n$/);
  const h = await runCorrald(['--help']);
  assert.match(h.stdout, /--config FILE/);
  const tmp = tempDir('corrald-cfg-');
  try {
    const cfg = join(tmp.dir, 'bad.toml');
    writeFileSync(cfg, 'sokcet = "/x"\n');
    const r = await runCorrald(['--config', cfg]);
    assert.equal(r.code, 2);
    const rec = JSON.parse(r.stderr.trim().split('\n').pop()!);
    assert.equal(rec.code, 'INVALID_ARGUMENT');
    assert.match(rec.error, /unknown key sokcet/);
  } finally {
    tmp.cleanup();
  }
});

test('bin/corrald (the bundle build/corrald.mjs) finds its proto, package version and default handler', async () => {
  const tmp = tempDir('corrald-bundle-');
  try {
    const socket = join(tmp.dir, 's.sock');
    const d = await spawnCorrald(['--socket', socket, '--state-dir', join(tmp.dir, 'state'), '--metrics-address', '', '--cni-conf-dir', join(tmp.dir, 'net.d'), '--no-default-network'], [BIN_CORRALD]);
    const c = criClients(socket);
    try {
      const v = await call<{ runtime_version: string }>(c.runtime, 'Version', {});
      assert.equal(v.runtime_version, JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version);
      const s = await call<{ status: { conditions: { type: string; status: boolean; message: string }[] }; info: Record<string, string> }>(c.runtime, 'Status', { verbose: true });
      const runtime = s.status.conditions.find((x) => x.type === 'RuntimeReady')!;
      assert.equal(runtime.status, true, runtime.message);
      assert.equal(JSON.parse(s.info.config!).runtime_handlers['corral-oci'].path, join(REPO, 'bin/corral-oci'));
      assert.deepEqual(await call(c.image, 'ListImages', {}), { images: [] });
    } finally {
      c.close();
      process.kill(d.child.pid!, 'SIGTERM');
      assert.equal((await d.exited).code, 0);
    }
  } finally {
    tmp.cleanup();
  }
});
