// corrald against a real client: crictl from kubernetes-sigs/cri-tools v1.26.1 (SPDY/3.1 via
// client-go, gRPC via grpc-go). Skips with a reason when crictl is not installed; see
// test/helpers/crictl.ts.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { Daemon } from '../../src/cri/daemon.ts';
import { defaultConfig } from '../../src/cri/config.ts';
import { silentLogger } from '../../src/cri/log.ts';
import { LocalProcessBackend } from './fake-backend.ts';
import { tempDir } from './harness.ts';
import { crictl, crictlPath, crictlSkipReason, critestPath, critestSkipReason } from '../helpers/crictl.ts';

const SH = '/bin/busybox';

describe('crictl v1.26.1 against corrald', { skip: crictlSkipReason }, () => {
  const tmp = tempDir('corrald-crictl-');
  const socket = join(tmp.dir, 'corral.sock');
  let daemon: Daemon;
  let backend: LocalProcessBackend;
  let echo: net.Server;
  let echoPort: number;

  before(async () => {
    const config = defaultConfig();
    config.socket = socket;
    config.metrics.address = '';
    config.cni.conf_dir = join(tmp.dir, 'net.d');
    backend = new LocalProcessBackend();
    daemon = await new Daemon({ config, log: silentLogger, streamingBackend: backend }).start();
    echo = net.createServer((s) => s.on('data', (d) => s.write(Buffer.concat([Buffer.from('echo:'), d]))));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    echoPort = (echo.address() as net.AddressInfo).port;
  });

  after(async () => {
    await daemon?.stop();
    await new Promise<void>((r) => echo.close(() => r()));
    assert.equal(existsSync(socket), false);
    tmp.cleanup();
  });

  test('crictl version', async () => {
    const r = await crictl(socket, ['version']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Version:\s+0\.1\.0$/m);
    assert.match(r.stdout, /^RuntimeName:\s+corral$/m);
    assert.match(r.stdout, /^RuntimeVersion:\s+0\.1\.0$/m);
    assert.match(r.stdout, /^RuntimeApiVersion:\s+v1$/m);
  });

  test('crictl info', async () => {
    const r = await crictl(socket, ['info']);
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    assert.deepEqual(info.status.conditions.map((c: { type: string }) => c.type), ['RuntimeReady', 'NetworkReady']);
    assert.equal(info.status.conditions[1].status, false);
    assert.equal(info.config.socket, socket, 'verbose info values are JSON that crictl inlines');
    const quiet = JSON.parse((await crictl(socket, ['info', '-q'])).stdout);
    assert.equal(quiet.config, undefined);
  });

  test('RPCs the daemon lacks fail with the UNIMPLEMENTED message', async () => {
    const r = await crictl(socket, ['pods']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /code = Unimplemented desc = RuntimeService\.ListPodSandbox is not implemented by corrald yet/);
  });

  test('crictl exec: stdout, stderr and the exit code travel over SPDY', async () => {
    const ok = await crictl(socket, ['exec', 'c1', SH, 'sh', '-c', 'echo out; echo err >&2']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'out\n');
    assert.match(ok.stderr, /^err$/m);
    const bad = await crictl(socket, ['exec', 'c1', SH, 'sh', '-c', 'exit 3']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /command terminated with exit code 3/);
  });

  test('crictl exec -i: stdin reaches the command and EOF ends it', async () => {
    const r = await crictl(socket, ['exec', '-i', 'c1', SH, 'sh', '-c', 'tr a-z A-Z; echo done'], { input: 'hello corral\n' });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'HELLO CORRAL\ndone\n');
  });

  test('crictl exec on a missing container reports NotFound from the RPC', async () => {
    const r = await crictl(socket, ['exec', 'missing', 'true']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /code = NotFound desc = container missing not found/);
  });

  test('crictl exec -it: a terminal, with the client terminal size sent as resize', async () => {
    const before = backend.resizes.length;
    // crictl insists on a terminal: util-linux `script` gives it one, sized by stty
    const inner = `stty cols 100 rows 30; exec ${crictlPath} --runtime-endpoint unix://${socket} exec -it c1 ${SH} sh -c 'tty; echo tty-ok'`;
    const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
      const child = spawn('script', ['-qfec', inner, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let text = '';
      child.stdout.on('data', (c) => (text += c));
      child.stderr.on('data', (c) => (text += c));
      child.once('exit', (code) => resolve({ code, text }));
      // keep script's stdin open until the session is over
      child.once('exit', () => child.stdin.destroy());
    });
    assert.equal(out.code, 0, out.text);
    assert.match(out.text, /\/dev\/pts\/\d+/);
    assert.match(out.text, /tty-ok/);
    assert.deepEqual(backend.resizes.slice(before)[0], { width: 100, height: 30 });
  });

  test('crictl attach -i', async () => {
    const r = await crictl(socket, ['attach', '-i', 'c7'], { input: 'line one\n' });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'attached\nline one\n');
    assert.ok(backend.calls.some((c) => c.kind === 'attach' && c.id === 'c7'));
  });

  test('crictl port-forward: two connections through one SPDY session', async () => {
    const child = spawn(crictlPath!, ['--runtime-endpoint', `unix://${socket}`, 'port-forward', 'pod1', `0:${echoPort}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const localPort = await new Promise<number>((resolve, reject) => {
        let text = '';
        child.stdout.on('data', (c) => {
          text += c;
          const m = /Forwarding from 127\.0\.0\.1:(\d+) ->/.exec(text);
          if (m) resolve(Number(m[1]));
        });
        child.once('exit', (code) => reject(new Error(`crictl port-forward exited ${code}: ${text}`)));
      });
      for (const word of ['first', 'second']) {
        const reply = await new Promise<string>((resolve, reject) => {
          const s = net.connect(localPort, '127.0.0.1', () => s.write(word));
          s.on('data', (d) => {
            resolve(String(d));
            s.end();
          });
          s.on('error', reject);
        });
        assert.equal(reply, `echo:${word}`);
      }
      assert.equal(backend.calls.filter((c) => c.kind === 'portforward' && c.id === 'pod1' && c.port === echoPort).length, 2);
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
  });
});

describe('critest v1.26.1 "Runtime info" conformance specs', { skip: critestSkipReason }, () => {
  test('version info and runtime conditions pass', async () => {
    const tmp = tempDir('corrald-critest-');
    const config = defaultConfig();
    config.socket = join(tmp.dir, 'corral.sock');
    config.metrics.address = '';
    config.cni.conf_dir = join(tmp.dir, 'net.d');
    const { mkdirSync, writeFileSync } = await import('node:fs');
    mkdirSync(config.cni.conf_dir);
    writeFileSync(join(config.cni.conf_dir, '10-test.conflist'), '{}');
    // critest's client setup probes the image service; answering ImageFsInfo stands in for the image layer
    const daemon = await new Daemon({ config, log: silentLogger, image: { ImageFsInfo: () => ({ image_filesystems: [] }) } }).start();
    try {
      const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const ep = `unix://${config.socket}`;
        const child = spawn(critestPath!, ['--runtime-endpoint', ep, '--image-endpoint', ep, '--ginkgo.focus=Runtime info', '--ginkgo.no-color'], { cwd: tmp.dir, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (c) => (out += c));
        child.stderr.on('data', (c) => (out += c));
        child.once('exit', (code) => resolve({ code, out }));
      });
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /Ran 2 of \d+ Specs/);
      assert.match(r.out, /2 Passed \| 0 Failed/);
    } finally {
      await daemon.stop();
      tmp.cleanup();
    }
  });
});
