// corrald killed with SIGKILL and started again: containers keep running under conmon, exits
// that happened meanwhile are recorded from conmon's exit files, a sandbox caught half-created
// is rolled back (or was finished), and nothing leaks.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { call } from '../harness.ts';
import { containerConfig, podConfig, runtimeSuite, startDaemon, waitState } from './helpers.ts';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('corrald restart after kill -9', () => {
  const suite = runtimeSuite();

  test('running containers survive, exits are recorded, half-created pods are rolled back', async () => {
    const pod = (await call<{ pod_sandbox_id: string }>(suite.rt, 'RunPodSandbox', { config: podConfig(suite.env, 'rec') })).pod_sandbox_id;
    const mk = async (name: string, cmd: string[]) => (await call<{ container_id: string }>(suite.rt, 'CreateContainer', { pod_sandbox_id: pod, config: containerConfig(suite.env, name, cmd) })).container_id;
    const long = await mk('long', ['sleep', '1000']);
    const short = await mk('short', ['sh', '-c', 'sleep 2; exit 7']);
    const created = await mk('created', ['true']);
    await call(suite.rt, 'StartContainer', { container_id: long });
    await call(suite.rt, 'StartContainer', { container_id: short });
    const pidOf = async (id: string) => JSON.parse((await call<{ info: Record<string, string> }>(suite.rt, 'ContainerStatus', { container_id: id, verbose: true })).info.info!).pid as number;
    const longPid = await pidOf(long);
    const shortPid = await pidOf(short);
    assert.ok(alive(longPid) && alive(shortPid));

    // Catch a RunPodSandbox in the middle: SIGKILL as soon as its record is on disk.
    const sbDir = join(suite.env.dir, 'root', 'runtime', 'sandboxes');
    const before = new Set(readdirSync(sbDir));
    const pending = call(suite.rt, 'RunPodSandbox', { config: podConfig(suite.env, 'half') }).catch((e) => e);
    // Wait for the record and for the namespaces to be pinned (a side effect to undo), then kill.
    const nsDir = join(suite.env.dir, 'state', 'ns');
    const newRecord = () => readdirSync(sbDir).find((f) => !before.has(f) && /^[0-9a-f]{64}\.json$/.test(f));
    for (let i = 0; i < 5000; i++) {
      const f = newRecord();
      if (f && existsSync(join(nsDir, f.replace(/\.json$/, ''), 'net'))) break;
      await new Promise((r) => setTimeout(r, 1));
    }
    suite.daemon.d.child.kill('SIGKILL');
    await suite.daemon.d.exited;
    await pending;
    suite.daemon.close();
    const halfFile = readdirSync(sbDir).find((f) => !before.has(f) && f.endsWith('.json'));
    const halfId = halfFile?.replace(/\.json$/, '');

    assert.ok(alive(longPid), 'the running container outlived the daemon');
    for (let i = 0; i < 200 && alive(shortPid); i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(alive(shortPid), false, 'the short container exited while the daemon was down');

    suite.daemon = await startDaemon(suite.env);
    const pods = (await call<{ items: { id: string; state: string }[] }>(suite.rt, 'ListPodSandbox', {})).items;
    for (const p of pods) assert.equal(p.state, 'SANDBOX_READY', `sandbox ${p.id} is either finished or gone`);
    assert.ok(pods.some((p) => p.id === pod));
    assert.ok(halfId, 'the interrupted RunPodSandbox had written its record');
    if (halfId && !pods.some((p) => p.id === halfId)) {
      assert.equal(existsSync(join(suite.env.dir, 'state', 'ns', halfId)), false, 'the half-created sandbox was unpinned');
      assert.equal(existsSync(join(sbDir, `${halfId}.json`)), false);
    }
    const cs = Object.fromEntries((await call<{ containers: { id: string; state: string }[] }>(suite.rt, 'ListContainers', {})).containers.map((c) => [c.id, c.state]));
    assert.deepEqual(cs, { [long]: 'CONTAINER_RUNNING', [short]: 'CONTAINER_EXITED', [created]: 'CONTAINER_CREATED' });
    const s = (await call<{ status: Record<string, any> }>(suite.rt, 'ContainerStatus', { container_id: short })).status;
    assert.equal(s.exit_code, 7);
    assert.equal(s.reason, 'Error');
    assert.equal(await pidOf(long), longPid);
    assert.ok(alive(longPid));
    // The recovered containers are fully manageable.
    const ex = await call<{ stdout: Buffer }>(suite.rt, 'ExecSync', { container_id: long, cmd: ['echo', 'still-here'], timeout: 10 });
    assert.equal(ex.stdout.toString(), 'still-here\n');
    await call(suite.rt, 'StopContainer', { container_id: long, timeout: 0 });
    assert.equal((await waitState(suite.rt, long, 'CONTAINER_EXITED')).exit_code, 137);
    await call(suite.rt, 'StartContainer', { container_id: created });
    assert.equal((await waitState(suite.rt, created, 'CONTAINER_EXITED')).exit_code, 0);
    const logLines = readFileSync(s.log_path, 'utf8');
    assert.equal(logLines, '', 'short wrote nothing');
  });
});
