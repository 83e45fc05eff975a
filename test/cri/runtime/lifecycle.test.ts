// The CRI RuntimeService over gRPC against a real corrald: pods with pinned namespaces and
// CNI, multi-container pods, port mappings from the host, CRI logs, ExecSync, OOM, stop
// semantics, input validation, and at the end: nothing of ours left on the host.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { randomInt } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { call } from '../harness.ts';
import { LOG_LIMIT, containerConfig, podConfig, runtimeSuite, waitState } from './helpers.ts';

const isMount = (p: string) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === p);

function httpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    let data = '';
    s.setTimeout(10000, () => s.destroy(new Error('no answer through the port mapping')));
    s.on('connect', () => s.write('GET / HTTP/1.0\r\nHost: x\r\n\r\n'));
    s.on('data', (d) => (data += d));
    s.on('end', () => resolve(data));
    s.on('error', reject);
  });
}

describe('corrald RuntimeService', () => {
  const suite = runtimeSuite();
  let podId = '';
  let serverId = '';
  const hostPort = randomInt(41000, 49000);

  test('requests are validated with clear codes', async () => {
    await assert.rejects(call(suite.rt, 'RunPodSandbox', {}), { code: grpc.status.INVALID_ARGUMENT, details: /config is required/ });
    await assert.rejects(call(suite.rt, 'RunPodSandbox', { config: { metadata: { name: 'x' } } }), { code: grpc.status.INVALID_ARGUMENT, details: /metadata needs name, namespace and uid/ });
    await assert.rejects(call(suite.rt, 'RunPodSandbox', { config: podConfig(suite.env, 'bad', { hostname: 'no spaces!' }) }), { code: grpc.status.INVALID_ARGUMENT, details: /hostname/ });
    await assert.rejects(call(suite.rt, 'RunPodSandbox', { config: podConfig(suite.env, 'badsysctl', { linux: { sysctls: { 'vm.swappiness': '1' } } }) }), { code: grpc.status.INVALID_ARGUMENT, details: /not namespaced/ });
    await assert.rejects(call(suite.rt, 'RunPodSandbox', { config: podConfig(suite.env, 'h'), runtime_handler: 'nope' }), { code: grpc.status.NOT_FOUND, details: /runtime handler "nope"/ });
    // what corrald does not provide is said as such
    await assert.rejects(call(suite.rt, 'CheckpointContainer', { container_id: 'x', location: '/tmp/x.tar' }), { code: grpc.status.UNIMPLEMENTED, details: /needs CRIU.*nothing was changed/ });
    await assert.rejects(call(suite.rt, 'ListPodSandboxMetrics', {}), { code: grpc.status.UNIMPLEMENTED, details: /use ListPodSandboxStats/ });
    await assert.rejects(call(suite.rt, 'PodSandboxStatus', { pod_sandbox_id: 'f'.repeat(64) }), { code: grpc.status.NOT_FOUND });
    await assert.rejects(call(suite.rt, 'ContainerStatus', { container_id: '' }), { code: grpc.status.INVALID_ARGUMENT });
    await assert.rejects(call(suite.rt, 'CreateContainer', { pod_sandbox_id: 'a'.repeat(64), config: containerConfig(suite.env, 'x', ['true']) }), { code: grpc.status.NOT_FOUND });
    await assert.rejects(call(suite.rt, 'StartContainer', { container_id: 'b'.repeat(64) }), { code: grpc.status.NOT_FOUND });
    // Idempotent removals.
    await call(suite.rt, 'RemovePodSandbox', { pod_sandbox_id: 'c'.repeat(64) });
    await call(suite.rt, 'RemoveContainer', { container_id: 'd'.repeat(64) });
    assert.deepEqual((await call<{ items: unknown[] }>(suite.rt, 'ListPodSandbox', {})).items, [], 'failed creates left no sandbox');
  });

  test('RunPodSandbox: pinned namespaces, an IP from the subnet, DNS and hosts files', async () => {
    const cfg = podConfig(suite.env, 'web', {
      dns_config: { servers: ['10.214.0.53'], searches: ['svc.test'], options: ['ndots:2'] },
      port_mappings: [{ protocol: 'TCP', container_port: 8080, host_port: hostPort, host_ip: '127.0.0.1' }],
      linux: { cgroup_parent: `${suite.env.cgroupRoot}/web`, sysctls: { 'net.ipv4.ip_unprivileged_port_start': '80' } },
    });
    podId = (await call<{ pod_sandbox_id: string }>(suite.rt, 'RunPodSandbox', { config: cfg })).pod_sandbox_id;
    assert.match(podId, /^[0-9a-f]{64}$/);
    const st = await call<{ status: Record<string, any>; info: Record<string, string> }>(suite.rt, 'PodSandboxStatus', { pod_sandbox_id: podId, verbose: true });
    assert.equal(st.status.state, 'SANDBOX_READY');
    assert.ok(st.status.network.ip.startsWith(suite.env.subnetPrefix), `${st.status.network.ip} in ${suite.env.subnetPrefix}0/24`);
    const info = JSON.parse(st.info.info!);
    for (const p of [info.netnsPath, info.ipcnsPath, info.utsnsPath]) assert.ok(isMount(p), `${p} is a bind-mounted namespace`);
    assert.equal(info.infraContainerId, '', 'no infra process without a shared PID namespace');
    await assert.rejects(call(suite.rt, 'RunPodSandbox', { config: cfg }), { code: grpc.status.ALREADY_EXISTS });
    const list = await call<{ items: { id: string }[] }>(suite.rt, 'ListPodSandbox', { filter: { label_selector: { app: 'web' } } });
    assert.deepEqual(list.items.map((i) => i.id), [podId]);
    assert.deepEqual((await call<{ items: unknown[] }>(suite.rt, 'ListPodSandbox', { filter: { label_selector: { app: 'nope' } } })).items, []);
    assert.equal((await call<{ items: unknown[] }>(suite.rt, 'ListPodSandbox', { filter: { state: { state: 'SANDBOX_NOTREADY' } } })).items.length, 0);
  });

  test('two containers of the pod talk over localhost; the host reaches the port mapping', async () => {
    const serve = `mkdir -p /www && echo pong-${suite.env.tag} > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www`;
    serverId = (await call<{ container_id: string }>(suite.rt, 'CreateContainer', { pod_sandbox_id: podId, config: containerConfig(suite.env, 'server', ['/bin/sh', '-c', serve]) })).container_id;
    assert.equal((await waitState(suite.rt, serverId, 'CONTAINER_CREATED')).state, 'CONTAINER_CREATED');
    await call(suite.rt, 'StartContainer', { container_id: serverId });
    await waitState(suite.rt, serverId, 'CONTAINER_RUNNING');
    // Wait for httpd to listen (a real condition, polled through ExecSync).
    for (let i = 0; i < 100; i++) {
      const r = await call<{ exit_code: number }>(suite.rt, 'ExecSync', { container_id: serverId, cmd: ['wget', '-qO-', 'http://127.0.0.1:8080/'], timeout: 5 });
      if (r.exit_code === 0) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const clientCmd = ['/bin/sh', '-c', 'wget -qO- http://127.0.0.1:8080/; echo to-stderr >&2; hostname; cat /etc/resolv.conf'];
    const clientId = (await call<{ container_id: string }>(suite.rt, 'CreateContainer', { pod_sandbox_id: podId, config: containerConfig(suite.env, 'client', clientCmd) })).container_id;
    await call(suite.rt, 'StartContainer', { container_id: clientId });
    const done = await waitState(suite.rt, clientId, 'CONTAINER_EXITED');
    assert.equal(done.exit_code, 0);
    assert.equal(done.reason, 'Completed');
    assert.ok(BigInt(done.finished_at) >= BigInt(done.started_at) && BigInt(done.started_at) > 0n);
    // CRI log format: "<RFC3339Nano> <stream> <F|P> <text>".
    const log = readFileSync(done.log_path, 'utf8').trim().split('\n');
    for (const l of log) assert.match(l, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) (stdout|stderr) [FP] /, l);
    const text = log.map((l) => l.split(' ').slice(3).join(' '));
    assert.ok(text.includes(`pong-${suite.env.tag}`), `client got the page over localhost: ${text}`);
    assert.ok(log.some((l) => / stderr F to-stderr$/.test(l)));
    assert.ok(text.includes('web'), 'hostname from the pinned UTS namespace');
    assert.ok(text.includes('nameserver 10.214.0.53') && text.includes('search svc.test') && text.includes('options ndots:2'));
    // The host reaches the pod through 127.0.0.1:hostPort.
    const reply = await httpGet(hostPort);
    assert.match(reply, new RegExp(`pong-${suite.env.tag}`));
    const byPod = await call<{ containers: { id: string }[] }>(suite.rt, 'ListContainers', { filter: { pod_sandbox_id: podId } });
    assert.deepEqual(byPod.containers.map((c) => c.id).sort(), [serverId, clientId].sort());
    const running = await call<{ containers: { id: string }[] }>(suite.rt, 'ListContainers', { filter: { state: { state: 'CONTAINER_RUNNING' } } });
    assert.deepEqual(running.containers.map((c) => c.id), [serverId]);
    await call(suite.rt, 'RemoveContainer', { container_id: clientId });
    await assert.rejects(call(suite.rt, 'ContainerStatus', { container_id: clientId }), { code: grpc.status.NOT_FOUND });
  });

  test('ExecSync: output, exit codes, timeout', async () => {
    const r = await call<{ stdout: Buffer; stderr: Buffer; exit_code: number }>(suite.rt, 'ExecSync', { container_id: serverId, cmd: ['sh', '-c', 'echo out; echo err >&2; exit 3'], timeout: 10 });
    assert.equal(r.stdout.toString(), 'out\n');
    assert.equal(r.stderr.toString(), 'err\n');
    assert.equal(r.exit_code, 3);
    const h = await call<{ stdout: Buffer }>(suite.rt, 'ExecSync', { container_id: serverId, cmd: ['cat', '/etc/hostname'], timeout: 10 });
    assert.equal(h.stdout.toString().trim(), 'web');
    await assert.rejects(call(suite.rt, 'ExecSync', { container_id: serverId, cmd: ['sleep', '30'], timeout: 1 }), { code: grpc.status.DEADLINE_EXCEEDED });
    await assert.rejects(call(suite.rt, 'ExecSync', { container_id: serverId, cmd: [], timeout: 1 }), { code: grpc.status.INVALID_ARGUMENT });
  });

  test('security context: user, groups, read-only rootfs, capabilities', async () => {
    const cfg = containerConfig(suite.env, 'secure', ['sleep', '1000'], {
      linux: { security_context: { run_as_user: { value: 65534 }, supplemental_groups: [1234], readonly_rootfs: true, capabilities: { drop_capabilities: ['ALL'], add_capabilities: ['NET_BIND_SERVICE'] }, seccomp: { profile_type: 'RuntimeDefault' }, no_new_privs: true } },
    });
    const id = (await call<{ container_id: string }>(suite.rt, 'CreateContainer', { pod_sandbox_id: podId, config: cfg })).container_id;
    await call(suite.rt, 'StartContainer', { container_id: id });
    const ex = async (cmd: string) => (await call<{ stdout: Buffer; exit_code: number }>(suite.rt, 'ExecSync', { container_id: id, cmd: ['sh', '-c', cmd], timeout: 10 }));
    assert.equal((await ex('id -u; id -g')).stdout.toString(), '65534\n65534\n');
    assert.deepEqual((await ex('id -G')).stdout.toString().trim().split(' ').sort(), ['1234', '50', '65534'], '/etc/group membership (staff) + supplemental');
    assert.notEqual((await ex('touch /x')).exit_code, 0, 'read-only rootfs');
    assert.match((await ex('grep -E "^(CapBnd|Seccomp|NoNewPrivs):" /proc/self/status')).stdout.toString(), /CapBnd:\s+0000000000000400\n.*Seccomp:\s+2/s);
    await call(suite.rt, 'StopContainer', { container_id: id, timeout: 1 });
    const st = await waitState(suite.rt, id, 'CONTAINER_EXITED');
    assert.equal(st.exit_code, 137, 'sleep as PID 1 ignores SIGTERM: SIGKILL after the timeout');
    await call(suite.rt, 'RemoveContainer', { container_id: id });
  });

  test('a memory limit is enforced and the exit reason is OOMKilled', async () => {
    const cfg = containerConfig(suite.env, 'hog', ['sh', '-c', 'tail /dev/zero'], { linux: { resources: { memory_limit_in_bytes: String(16 * 1024 * 1024), oom_score_adj: '-500' } } });
    const id = (await call<{ container_id: string }>(suite.rt, 'CreateContainer', { pod_sandbox_id: podId, config: cfg })).container_id;
    const verbose = await call<{ info: Record<string, string> }>(suite.rt, 'ContainerStatus', { container_id: id, verbose: true });
    const info = JSON.parse(verbose.info.info!);
    assert.equal(info.runtimeSpec.linux.resources.memory.limit, 16 * 1024 * 1024);
    assert.ok(info.warnings.some((w: string) => /oom_score_adj -500 raised/.test(w)), 'oom_score_adj clamped without CAP_SYS_RESOURCE');
    await call(suite.rt, 'StartContainer', { container_id: id });
    const st = await waitState(suite.rt, id, 'CONTAINER_EXITED', 60000);
    assert.equal(st.reason, 'OOMKilled');
    assert.equal(st.exit_code, 137);
    await call(suite.rt, 'RemoveContainer', { container_id: id });
  });

  test('stats, resource updates and log reopening of a running container', async () => {
    const s = await call<{ stats: Record<string, any> }>(suite.rt, 'ContainerStats', { container_id: serverId });
    assert.equal(s.stats.attributes.id, serverId);
    assert.ok(Number(s.stats.cpu.usage_core_nano_seconds.value) > 0);
    assert.ok(Number(s.stats.memory.usage_bytes.value) > 0);
    assert.ok(s.stats.writable_layer.used_bytes);
    const all = await call<{ stats: unknown[] }>(suite.rt, 'ListContainerStats', { filter: { pod_sandbox_id: podId } });
    assert.equal(all.stats.length, 1);
    const ps = await call<{ stats: Record<string, any> }>(suite.rt, 'PodSandboxStats', { pod_sandbox_id: podId });
    assert.ok(ps.stats.linux.network.interfaces.some((i: any) => i.name === 'eth0' && Number(i.rx_bytes.value) > 0));
    assert.equal(ps.stats.linux.containers.length, 1);
    await call(suite.rt, 'UpdateContainerResources', { container_id: serverId, linux: { memory_limit_in_bytes: String(64 * 1024 * 1024), cpu_shares: '512' } });
    const cg = `/sys/fs/cgroup/memory${suite.env.cgroupRoot}/web/${serverId}/memory.limit_in_bytes`;
    assert.equal(readFileSync(cg, 'utf8').trim(), String(64 * 1024 * 1024));
    await call(suite.rt, 'ReopenContainerLog', { container_id: serverId });
  });

  test('StopPodSandbox stops containers, releases the network, unpins; RemovePodSandbox clears all', async () => {
    const st = await call<{ info: Record<string, string> }>(suite.rt, 'PodSandboxStatus', { pod_sandbox_id: podId, verbose: true });
    const netns = JSON.parse(st.info.info!).netnsPath as string;
    await call(suite.rt, 'StopPodSandbox', { pod_sandbox_id: podId });
    await call(suite.rt, 'StopPodSandbox', { pod_sandbox_id: podId }); // idempotent
    const after = await call<{ status: Record<string, any>; containers_statuses: Record<string, any>[] }>(suite.rt, 'PodSandboxStatus', { pod_sandbox_id: podId });
    assert.equal(after.status.state, 'SANDBOX_NOTREADY');
    assert.equal(after.containers_statuses[0]!.state, 'CONTAINER_EXITED');
    assert.equal(isMount(netns), false);
    await assert.rejects(call(suite.rt, 'CreateContainer', { pod_sandbox_id: podId, config: containerConfig(suite.env, 'late', ['true']) }), { code: grpc.status.FAILED_PRECONDITION });
    await call(suite.rt, 'RemovePodSandbox', { pod_sandbox_id: podId });
    assert.deepEqual((await call<{ items: unknown[] }>(suite.rt, 'ListPodSandbox', {})).items, []);
    assert.deepEqual((await call<{ containers: unknown[] }>(suite.rt, 'ListContainers', {})).containers, []);
    assert.equal(existsSync(join(suite.env.dir, 'state', 'ns', podId)), false);
  });

  test('logs: the size limit holds and keeps the newest output', async () => {
    const pod = (await call<{ pod_sandbox_id: string }>(suite.rt, 'RunPodSandbox', { config: podConfig(suite.env, 'logs') })).pod_sandbox_id;
    // ~1.5 MiB of log entries (16384 lines), then a marker
    const cmd = ['sh', '-c', `i=0; while [ $i -lt 16384 ]; do echo line-$i-padding-padding-padding-padding-padding; i=$((i+1)); done; echo end-marker`];
    const c = (await call<{ container_id: string }>(suite.rt, 'CreateContainer', { pod_sandbox_id: pod, config: containerConfig(suite.env, 'chatty', cmd) })).container_id;
    await call(suite.rt, 'StartContainer', { container_id: c });
    const st = await waitState(suite.rt, c, 'CONTAINER_EXITED');
    assert.equal(st.exit_code, 0);
    const size = statSync(st.log_path).size;
    assert.ok(size <= LOG_LIMIT, `log file ${size} bytes, limit ${LOG_LIMIT}`);
    const lines = readFileSync(st.log_path, 'utf8').trim().split('\n');
    assert.match(lines[lines.length - 1]!, / stdout F end-marker$/, 'the newest output is kept');
    assert.ok(!lines.some((l) => / line-0-padding/.test(l)), 'the oldest output was dropped: the limit was reached');
    await call(suite.rt, 'StopPodSandbox', { pod_sandbox_id: pod });
    await call(suite.rt, 'RemovePodSandbox', { pod_sandbox_id: pod });
  });

  test('logs: partial lines join up', async () => {
    const pod = (await call<{ pod_sandbox_id: string }>(suite.rt, 'RunPodSandbox', { config: podConfig(suite.env, 'plogs') })).pod_sandbox_id;
    const c = (await call<{ container_id: string }>(suite.rt, 'CreateContainer', { pod_sandbox_id: pod, config: containerConfig(suite.env, 'long', ['sh', '-c', 'head -c 20000 /dev/zero | tr "\\0" y; echo; echo short']) })).container_id;
    await call(suite.rt, 'StartContainer', { container_id: c });
    const st = await waitState(suite.rt, c, 'CONTAINER_EXITED');
    const lines = readFileSync(st.log_path, 'utf8').trim().split('\n');
    const tags = lines.map((l) => l.split(' ')[2]);
    const texts = lines.map((l) => l.split(' ').slice(3).join(' '));
    assert.ok(tags.filter((t) => t === 'P').length >= 1, `a 20000-byte line is split into partial entries: ${tags.join(',')}`);
    const end = tags.indexOf('F');
    assert.ok(end > 0 && tags.slice(0, end).every((t) => t === 'P'));
    assert.equal(texts.slice(0, end + 1).join(''), 'y'.repeat(20000));
    assert.deepEqual([tags[end + 1], texts[end + 1]], ['F', 'short']);
    await call(suite.rt, 'StopPodSandbox', { pod_sandbox_id: pod });
    await call(suite.rt, 'RemovePodSandbox', { pod_sandbox_id: pod });
  });

  test('RuntimeClass "runc": the pod\'s containers run under runc (through its CLI, under conmon)', async () => {
    const pod = (await call<{ pod_sandbox_id: string }>(suite.rt, 'RunPodSandbox', { config: podConfig(suite.env, 'viarunc'), runtime_handler: 'runc' })).pod_sandbox_id;
    const c = (await call<{ container_id: string }>(suite.rt, 'CreateContainer', { pod_sandbox_id: pod, config: containerConfig(suite.env, 'r', ['sleep', '1000']) })).container_id;
    await call(suite.rt, 'StartContainer', { container_id: c });
    await waitState(suite.rt, c, 'CONTAINER_RUNNING');
    const root = join(suite.env.dir, 'state', 'runtimes', 'runc');
    const listed = JSON.parse(execFileSync('/usr/sbin/runc', ['--root', root, 'list', '--format', 'json'], { encoding: 'utf8' }) || '[]') as { id: string; status: string }[];
    assert.equal(listed.length, 1, 'runc knows the container');
    assert.equal(listed[0]!.status, 'running');
    const r = await call<{ stdout: Buffer; exit_code: number }>(suite.rt, 'ExecSync', { container_id: c, cmd: ['sh', '-c', 'echo via-runc; exit 4'], timeout: 10 });
    assert.deepEqual([r.stdout.toString(), r.exit_code], ['via-runc\n', 4]);
    const ps = await call<{ status: { runtime_handler: string } }>(suite.rt, 'PodSandboxStatus', { pod_sandbox_id: pod });
    assert.equal(ps.status.runtime_handler, 'runc');
    await call(suite.rt, 'StopContainer', { container_id: c, timeout: 1 });
    const st = await waitState(suite.rt, c, 'CONTAINER_EXITED');
    assert.equal(st.exit_code, 137);
    await call(suite.rt, 'StopPodSandbox', { pod_sandbox_id: pod });
    await call(suite.rt, 'RemovePodSandbox', { pod_sandbox_id: pod });
    assert.equal(execFileSync('/usr/sbin/runc', ['--root', root, 'list', '-q'], { encoding: 'utf8' }).trim(), '', 'runc\'s container was deleted');
  });

  test('a shared PID namespace pod runs an infra process; hostNetwork pods use the host', async () => {
    const shared = (await call<{ pod_sandbox_id: string }>(suite.rt, 'RunPodSandbox', { config: podConfig(suite.env, 'shared', { linux: { cgroup_parent: `${suite.env.cgroupRoot}/shared`, security_context: { namespace_options: { pid: 'POD', network: 'POD', ipc: 'POD' } } } }) })).pod_sandbox_id;
    const a = (await call<{ container_id: string }>(suite.rt, 'CreateContainer', { pod_sandbox_id: shared, config: containerConfig(suite.env, 'a', ['sleep', '1000']) })).container_id;
    await call(suite.rt, 'StartContainer', { container_id: a });
    const r = await call<{ stdout: Buffer }>(suite.rt, 'ExecSync', { container_id: a, cmd: ['sh', '-c', 'cat /proc/1/cmdline | tr "\\0" " "'], timeout: 10 });
    assert.match(r.stdout.toString(), /sleep infinity/, 'PID 1 is the infra process');
    const host = (await call<{ pod_sandbox_id: string }>(suite.rt, 'RunPodSandbox', { config: podConfig(suite.env, 'hostnet', { hostname: '', linux: { cgroup_parent: `${suite.env.cgroupRoot}/hostnet`, security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } } }) })).pod_sandbox_id;
    const hs = await call<{ status: Record<string, any> }>(suite.rt, 'PodSandboxStatus', { pod_sandbox_id: host });
    assert.equal(hs.status.network.ip, '');
    const b = (await call<{ container_id: string }>(suite.rt, 'CreateContainer', { pod_sandbox_id: host, config: containerConfig(suite.env, 'b', ['sleep', '1000']) })).container_id;
    await call(suite.rt, 'StartContainer', { container_id: b });
    const hn = await call<{ stdout: Buffer }>(suite.rt, 'ExecSync', { container_id: b, cmd: ['hostname'], timeout: 10 });
    assert.equal(hn.stdout.toString().trim(), readFileSync('/proc/sys/kernel/hostname', 'utf8').trim());
    for (const p of [shared, host]) {
      await call(suite.rt, 'StopPodSandbox', { pod_sandbox_id: p });
      await call(suite.rt, 'RemovePodSandbox', { pod_sandbox_id: p });
    }
  });
});
