// The real streaming backend (src/cri/streaming-backend) behind the real streaming server:
// containers created with bin/corral-oci (attach targets under conmon), a network namespace of
// our own with servers listening inside, driven over SPDY/3.1 (our client) and WebSocket (Node's).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { StreamingServer } from '../../../src/cri/streaming/server.ts';
import { spdyConnect, spdyExec, readAll } from '../../../src/cri/streaming/client.ts';
import { silentLogger } from '../../../src/cri/log.ts';
import { OciStreamingBackend, DEFAULT_HELPER, type StreamContainer, type StreamSandbox } from '../../../src/cri/streaming-backend/backend.ts';
import type { ExecRequest } from '../../../src/cri/types.gen.ts';
import { suite, CORRAL_OCI, type Suite } from '../../helpers/oci.ts';
import { waitFor } from '../../helpers/wait.ts';
import { assertNoLeaks } from '../../helpers/leaks.ts';

const CONMON = '/usr/bin/conmon';
let s: Suite;
let server: StreamingServer;
let backend: OciStreamingBackend;
let workDir: string;
const containers = new Map<string, StreamContainer>();
const sandboxes = new Map<string, StreamSandbox>();
const conmons: { pidFile: string; id: string }[] = [];
const servers: ChildProcess[] = [];

// netns of our own, with a Node echo server (greets with its netns inode) and busybox httpd inside
const NETNS = `corral-sbt-${randomBytes(4).toString('hex')}`;
const ECHO_PORT = 7001;
const HTTPD_PORT = 7080;
const CLOSED_PORT = 7002;
let hostEcho: net.Server;
let hostEchoPort: number;

const sleeper = 'sleeper';
const T = { timeout: 60_000 };

function execReq(cmd: string[], o: Partial<ExecRequest> = {}): ExecRequest {
  return { container_id: sleeper, cmd, tty: false, stdin: false, stdout: true, stderr: true, ...o };
}

function target(ociId: string, o: Partial<StreamContainer> = {}): StreamContainer {
  return { ociId, runtimePath: CORRAL_OCI, runtimeRoot: s.root, tty: false, stdin: false, state: 'running', ...o };
}

/** A container started directly with corral-oci (create + start), as an exec target. */
function startPlain(name: string, args: string[]): string {
  const id = s.id(name);
  const b = s.bundle(args);
  let r = s.oci(['create', '--bundle', b.dir, id]);
  assert.equal(r.status, 0, r.stderr);
  r = s.oci(['start', id]);
  assert.equal(r.status, 0, r.stderr);
  return id;
}

/**
 * A container under conmon (like the runtime service runs them), as an attach target. Like CRI-O,
 * `--leave-stdin-open` unless the container is stdin_once: otherwise the first client to detach
 * closes the container's stdin for good.
 */
async function startConmon(name: string, args: string[], tty: boolean, stdinOnce: boolean): Promise<{ id: string; socketDir: string; exitFile: string }> {
  const id = s.id(name);
  const b = s.bundle(args, (sp) => {
    sp.process!.terminal = tty;
  });
  const dir = join(s.work, `conmon-${name}`);
  mkdirSync(join(dir, 'exits'), { recursive: true });
  mkdirSync(join(dir, 'socks'), { recursive: true });
  const pidFile = join(dir, 'conmon.pid');
  const argv = ['--api-version', '1', '-c', id, '-u', id, '-n', id, '-r', CORRAL_OCI, '--runtime-arg', '--root', '--runtime-arg', s.root,
    '-b', b.dir, '-p', join(dir, 'ctr.pid'), '--exit-dir', join(dir, 'exits'), '--socket-dir-path', join(dir, 'socks'),
    '-l', `k8s-file:${join(dir, 'ctr.log')}`, '--conmon-pidfile', pidFile, '-i', ...(tty ? ['-t'] : []), ...(stdinOnce ? [] : ['--leave-stdin-open'])];
  const r = spawnSync(CONMON, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30000 });
  assert.equal(r.status, 0, `conmon: ${r.stderr}`);
  conmons.push({ pidFile, id });
  await waitFor(() => existsSync(join(dir, 'ctr.pid')), 20000, 'container created by conmon');
  const st = s.oci(['start', id]);
  assert.equal(st.status, 0, st.stderr);
  return { id, socketDir: join(dir, 'socks'), exitFile: join(dir, 'exits', id) };
}

function ociState(id: string): string {
  return JSON.parse(s.oci(['state', id]).stdout).status;
}

function nsExec(args: string[]): ChildProcess {
  const c = spawn('ip', ['netns', 'exec', NETNS, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  servers.push(c);
  return c;
}

before(async () => {
  s = suite('sb');
  workDir = join(s.work, 'ss');
  backend = new OciStreamingBackend({
    targets: { container: (id) => containers.get(id) ?? null, sandbox: (id) => sandboxes.get(id) ?? null },
    workDir,
  });
  server = await StreamingServer.start({ address: '127.0.0.1', port: 0, backend, log: silentLogger, streamCreationTimeoutMs: 10000 });
  assert.ok(existsSync(DEFAULT_HELPER), `${DEFAULT_HELPER} missing: run scripts/setup.sh`);

  containers.set(sleeper, target(startPlain('sleeper', ['/bin/sleep', '1000000'])));

  execFileSync('ip', ['netns', 'add', NETNS]);
  execFileSync('ip', ['netns', 'exec', NETNS, 'ip', 'link', 'set', 'lo', 'up']);
  sandboxes.set('pod-ns', { netnsPath: `/var/run/netns/${NETNS}` });
  sandboxes.set('pod-host', { netnsPath: '' });
  const echo = `
    const fs = require('node:fs');
    const ino = fs.statSync('/proc/self/ns/net').ino;
    require('node:net').createServer({ allowHalfOpen: true }, (c) => {
      let n = 0;
      c.write('ns:' + ino + '\\n');
      c.on('data', (d) => { n += d.length; c.write(d); });
      c.on('end', () => c.end('bytes:' + n + '\\n'));
    }).listen(${ECHO_PORT}, '127.0.0.1', () => console.log('listening'));`;
  const e = nsExec([process.execPath, '-e', echo]);
  await new Promise<void>((resolve) => e.stdout!.once('data', () => resolve()));
  const www = join(s.work, 'www');
  mkdirSync(www);
  writeFileSync(join(www, 'index.html'), 'hello from the pod netns\n');
  nsExec(['/bin/busybox', 'httpd', '-f', '-p', `127.0.0.1:${HTTPD_PORT}`, '-h', www]);
  await waitFor(
    () => spawnSync('ip', ['netns', 'exec', NETNS, '/bin/busybox', 'sh', '-c', `/bin/busybox netstat -ltn | grep -q :${HTTPD_PORT}`]).status === 0,
    10000,
    'httpd listening in the netns',
  );

  hostEcho = net.createServer((c) => {
    c.on('data', (d) => c.write(Buffer.concat([Buffer.from('host:'), d])));
    c.on('end', () => c.end());
  });
  await new Promise<void>((r) => hostEcho.listen(0, '127.0.0.1', r));
  hostEchoPort = (hostEcho.address() as net.AddressInfo).port;
});

after(async () => {
  await server?.stop();
  await new Promise<void>((r) => (hostEcho ? hostEcho.close(() => r()) : r()));
  for (const c of servers) if (c.exitCode === null) c.kill('SIGKILL');
  await Promise.all(servers.map((c) => (c.exitCode !== null || c.signalCode !== null ? null : new Promise((r) => c.once('exit', r)))));
  spawnSync('ip', ['netns', 'delete', NETNS]);
  // containers first (conmon then writes the exit file and exits), then any conmon still alive
  for (const { id } of conmons) s.oci(['kill', id, 'KILL']);
  for (const { pidFile } of conmons) {
    const pid = Number(readFileSync(pidFile, 'utf8'));
    await waitFor(() => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    }, 10000, `conmon ${pid} exited`).catch(() => process.kill(pid, 'SIGKILL'));
  }
  const left = existsSync(workDir) ? readdirSync(workDir) : [];
  s.finish();
  assert.deepEqual(left, [], 'per-session temp dirs were removed');
  assertNoLeaks('corral-sbt-');
});

// ---- helpers for WebSocket sessions ------------------------------------------------------

const chan = (n: number, data: string | Buffer) => Buffer.concat([Buffer.from([n]), Buffer.from(data)]);

interface WsSession {
  ws: WebSocket;
  channels: Map<number, Buffer>;
  text(ch: number): string;
  /** Wait until channel `ch` contains `re`. */
  until(ch: number, re: RegExp, what: string): Promise<void>;
  closed: Promise<number>;
}

function wsOpen(url: string, protocols: string[]): Promise<WsSession> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), protocols);
    ws.binaryType = 'arraybuffer';
    const channels = new Map<number, Buffer>();
    const waiters: (() => void)[] = [];
    let resolveClosed!: (c: number) => void;
    const closed = new Promise<number>((r) => (resolveClosed = r));
    const sess: WsSession = {
      ws,
      channels,
      closed,
      text: (ch) => channels.get(ch)?.toString('utf8') ?? '',
      until: (ch, re, what) =>
        new Promise((res, rej) => {
          const check = () => {
            if (re.test(sess.text(ch))) return res(), true;
            return false;
          };
          if (check()) return;
          const w = () => {
            if (!check()) waiters.push(w);
          };
          waiters.push(w);
          void closed.then(() => (re.test(sess.text(ch)) ? res() : rej(new Error(`${what}: session closed; channel ${ch}: ${JSON.stringify(sess.text(ch))}`))));
        }),
    };
    ws.onopen = () => resolve(sess);
    ws.onmessage = (ev) => {
      const b = Buffer.from(ev.data as ArrayBuffer);
      channels.set(b[0]!, Buffer.concat([channels.get(b[0]!) ?? Buffer.alloc(0), b.subarray(1)]));
      for (const w of waiters.splice(0)) w();
    };
    ws.onerror = () => reject(new Error('websocket error'));
    ws.onclose = (ev) => resolveClosed(ev.code);
  });
}

// ---- exec ----------------------------------------------------------------------------------

describe('exec (corral-oci exec)', () => {
  test('SPDY: runs inside the container, stdout and stderr apart, Success status', T, async () => {
    const r = await spdyExec(server.getExec(execReq(['/bin/sh', '-c', 'tr "\\0" " " < /proc/1/cmdline; echo; echo err >&2'])).url);
    assert.equal(r.stdout.toString(), '/bin/sleep 1000000 \n', 'pid 1 of the exec is the container init');
    assert.equal(r.stderr.toString(), 'err\n');
    assert.deepEqual(JSON.parse(r.error), { metadata: {}, status: 'Success' });
  });

  test('SPDY: the exit code comes back as NonZeroExitCode; a killed process as 128+signal', T, async () => {
    let st = JSON.parse((await spdyExec(server.getExec(execReq(['/bin/sh', '-c', 'exit 7'])).url)).error);
    assert.equal(st.reason, 'NonZeroExitCode');
    assert.deepEqual(st.details.causes, [{ reason: 'ExitCode', message: '7' }]);
    st = JSON.parse((await spdyExec(server.getExec(execReq(['/bin/sh', '-c', 'kill -9 $$'])).url)).error);
    assert.deepEqual(st.details.causes, [{ reason: 'ExitCode', message: '137' }]);
  });

  test('SPDY: stdin reaches the process and its end closes the process input', T, async () => {
    const data = Buffer.alloc(300_000, 'y');
    const r = await spdyExec(server.getExec(execReq(['/bin/sh', '-c', 'wc -c; echo after-eof'], { stdin: true })).url, { stdin: data });
    assert.equal(r.stdout.toString().replace(/ +/g, ''), '300000\nafter-eof\n');
    assert.equal(JSON.parse(r.error).status, 'Success');
  });

  test('a command that does not exist is a runtime failure, not an exit code, and stderr stays clean', T, async () => {
    const r = await spdyExec(server.getExec(execReq(['/no/such/program'])).url);
    const st = JSON.parse(r.error);
    assert.equal(st.status, 'Failure');
    assert.equal(st.reason, 'NotFound');
    assert.match(st.message, /OCI runtime exec failed: .*\/no\/such\/program/);
    assert.equal(r.stderr.toString(), '');
  });

  test('unknown and stopped containers are refused (NotFound / FailedPrecondition)', T, async () => {
    await assert.rejects(backend.checkContainer('nope'), { code: 'NOT_FOUND' });
    const st = JSON.parse((await spdyExec(server.getExec(execReq(['true'], { container_id: 'nope' })).url)).error);
    assert.equal(st.reason, 'NotFound');
    containers.set('stopped', target(s.id('never-created'), { state: 'exited' }));
    await assert.rejects(backend.checkContainer('stopped'), { code: 'FAILED_PRECONDITION', message: /not running/ });
    // a store that still says "running" for a container the runtime does not know: the runtime's error
    containers.set('stale', target(s.id('never-created')));
    const st2 = JSON.parse((await spdyExec(server.getExec(execReq(['true'], { container_id: 'stale' })).url)).error);
    assert.equal(st2.status, 'Failure');
    assert.match(st2.message, /OCI runtime exec failed/);
  });

  test('SPDY TTY: a real terminal in the container, stderr merged, the initial resize applied', T, async () => {
    const r = await spdyExec(server.getExec(execReq(['/bin/sh', '-c', 'read x; tty; stty size; echo e >&2; exit 3'], { tty: true, stdin: true, stderr: false })).url, {
      tty: true,
      stdin: 'go\n',
      holdStdin: true,
      resize: [{ width: 132, height: 43 }],
    });
    const out = r.stdout.toString();
    assert.match(out, /\/dev\/pts\/\d+\r\n/);
    assert.match(out, /43 132\r\n/);
    assert.match(out, /e\r\n/);
    assert.equal(JSON.parse(r.error).details.causes[0].message, '3');
  });

  test('SPDY TTY: the end of stdin is the terminal EOF (^D), so cat ends', T, async () => {
    const r = await spdyExec(server.getExec(execReq(['/bin/cat'], { tty: true, stdin: true, stderr: false })).url, { tty: true, stdin: 'one\n' });
    assert.match(r.stdout.toString(), /one\r\n/);
    assert.equal(JSON.parse(r.error).status, 'Success');
  });

  test('WebSocket v5: stdin, the close signal ends stdin, exit code on channel 3', T, async () => {
    const sess = await wsOpen(server.getExec(execReq(['/bin/sh', '-c', 'cat; echo end >&2; exit 4'], { stdin: true })).url, ['v5.channel.k8s.io']);
    sess.ws.send(chan(0, 'abc\n'));
    sess.ws.send(Buffer.from([255, 0]));
    assert.equal(await sess.closed, 1000);
    assert.equal(sess.text(1), 'abc\n');
    assert.equal(sess.text(2), 'end\n');
    assert.equal(JSON.parse(sess.text(3)).details.causes[0].message, '4');
  });

  test('WebSocket TTY: resizes reach the terminal (SIGWINCH), and leaving kills the exec process', T, async () => {
    const marker = `winch${process.pid}`;
    const sess = await wsOpen(
      server.getExec(execReq(['/bin/sh', '-c', `trap 'stty size' WINCH; echo ready; while :; do sleep 1 >/dev/null; done # ${marker}`], { tty: true, stdin: true, stderr: false })).url,
      ['v4.channel.k8s.io'],
    );
    await sess.until(1, /ready/, 'exec started');
    sess.ws.send(chan(4, JSON.stringify({ Width: 91, Height: 27 })));
    await sess.until(1, /27 91/, 'first resize');
    sess.ws.send(chan(4, JSON.stringify({ Width: 100, Height: 50 })));
    await sess.until(1, /50 100/, 'second resize');
    const execPids = () => {
      // "[w]inch…" does not match the grep's own command line
      const out = s.oci(['exec', containers.get(sleeper)!.ociId, '/bin/sh', '-c', `grep -l '[w]${marker.slice(1)}' /proc/[0-9]*/cmdline 2>/dev/null; true`]).stdout;
      return out.split('\n').filter((l) => l && !l.includes('self'));
    };
    assert.ok(execPids().length > 0, 'the exec process runs in the container');
    sess.ws.close(1000);
    await sess.closed;
    await waitFor(() => execPids().length === 0, 10000, 'exec process killed after the client left');
  });
});

// ---- attach --------------------------------------------------------------------------------

describe('attach (conmon attach socket)', () => {
  test('SPDY: stdout and stderr demultiplexed, stdin delivered, closing stdin ends the container', T, async () => {
    const c = await startConmon('att', ['/bin/sh', '-c', 'while read l; do echo "out $l"; echo "err $l" >&2; done; echo bye'], false, true);
    containers.set('att', target(c.id, { conmonSocketDir: c.socketDir, stdin: true }));
    const r = await spdyExec(server.getAttach({ container_id: 'att', stdin: true, tty: false, stdout: true, stderr: true }).url, { stdin: 'a\nb\n' });
    assert.equal(r.stdout.toString(), 'out a\nout b\nbye\n');
    assert.equal(r.stderr.toString(), 'err a\nerr b\n');
    assert.equal(JSON.parse(r.error).status, 'Success');
    await waitFor(() => existsSync(c.exitFile), 10000, 'conmon wrote the exit file');
    assert.equal(readFileSync(c.exitFile, 'utf8').trim(), '0');
    assert.equal(ociState(c.id), 'stopped');
  });

  test('WebSocket TTY: resize through conmon ctl, output over the pty, detach leaves the container running', T, async () => {
    const c = await startConmon('atty', ['/bin/sh', '-c', "trap 'stty size' WINCH; while :; do read -t 1 l && echo \"typed $l\"; done"], true, false);
    containers.set('atty', target(c.id, { conmonSocketDir: c.socketDir, stdin: true, tty: true }));
    const sess = await wsOpen(server.getAttach({ container_id: 'atty', stdin: true, tty: true, stdout: true, stderr: false }).url, ['v5.channel.k8s.io']);
    // stdin only flows once the attach socket is connected (output before that is not replayed)
    sess.ws.send(chan(0, 'hello\r'));
    await sess.until(1, /typed hello/, 'stdin through the terminal');
    sess.ws.send(chan(4, JSON.stringify({ Width: 77, Height: 22 })));
    await sess.until(1, /22 77/, 'resize applied via conmon');
    sess.ws.close(1000);
    await sess.closed;
    assert.equal(ociState(c.id), 'running', 'detaching does not stop the container');
    // attach again: the same container, a new session
    const again = await wsOpen(server.getAttach({ container_id: 'atty', stdin: true, tty: true, stdout: true, stderr: false }).url, ['v5.channel.k8s.io']);
    again.ws.send(chan(0, 'twice\r'));
    await again.until(1, /typed twice/, 'second attach');
    again.ws.close(1000);
    await again.closed;
  });

  test('attach needs a conmon socket dir; a missing socket is reported', T, async () => {
    containers.set('noconmon', target(containers.get(sleeper)!.ociId));
    let st = JSON.parse((await spdyExec(server.getAttach({ container_id: 'noconmon', stdin: false, tty: false, stdout: true, stderr: false }).url, { stderr: false })).error);
    assert.equal(st.reason, 'Conflict');
    assert.match(st.message, /no conmon attach socket/);
    containers.set('gone', target(containers.get(sleeper)!.ociId, { conmonSocketDir: join(s.work, 'no-such-dir') }));
    st = JSON.parse((await spdyExec(server.getAttach({ container_id: 'gone', stdin: false, tty: false, stdout: true, stderr: false }).url, { stderr: false })).error);
    assert.equal(st.status, 'Failure');
    assert.match(st.message, /no-such-dir/);
  });
});

// ---- port forwarding -------------------------------------------------------------------------

describe('port forwarding (inside the pod network namespace)', () => {
  test('SPDY: two connections reach the server in the pod netns, half-close both ways', T, async () => {
    const nsIno = statSync(`/var/run/netns/${NETNS}`).ino;
    const { session } = await spdyConnect(server.getPortForward({ pod_sandbox_id: 'pod-ns', port: [] }).url, ['portforward.k8s.io']);
    try {
      for (const id of ['1', '2']) {
        const h = { port: [String(ECHO_PORT)], requestid: [id] };
        const error = await session.openStream({ streamtype: ['error'], ...h });
        error.end();
        const errText = readAll(error);
        const data = await session.openStream({ streamtype: ['data'], ...h });
        const got = readAll(data);
        data.end(`payload ${id}`);
        assert.equal((await got).toString(), `ns:${nsIno}\npayload ${id}bytes:${`payload ${id}`.length}\n`);
        assert.equal((await errText).toString(), '');
      }
    } finally {
      session.close();
    }
  });

  test('SPDY: an HTTP GET to busybox httpd in the netns', T, async () => {
    const { session } = await spdyConnect(server.getPortForward({ pod_sandbox_id: 'pod-ns', port: [HTTPD_PORT] }).url, ['portforward.k8s.io']);
    try {
      const h = { port: [String(HTTPD_PORT)], requestid: ['0'] };
      const error = await session.openStream({ streamtype: ['error'], ...h });
      error.end();
      const data = await session.openStream({ streamtype: ['data'], ...h });
      const got = readAll(data);
      data.write('GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n');
      const text = (await got).toString();
      assert.match(text, /^HTTP\/1\.[01] 200/);
      assert.match(text, /hello from the pod netns/);
    } finally {
      session.close();
    }
  });

  test('SPDY: a port nothing listens on in the netns gives an error message', T, async () => {
    const { session } = await spdyConnect(server.getPortForward({ pod_sandbox_id: 'pod-ns', port: [] }).url, ['portforward.k8s.io']);
    try {
      const h = { port: [String(CLOSED_PORT)], requestid: ['9'] };
      const error = await session.openStream({ streamtype: ['error'], ...h });
      error.end();
      const data = await session.openStream({ streamtype: ['data'], ...h });
      data.end();
      const msg = (await readAll(error)).toString();
      assert.match(msg, new RegExp(`error forwarding port ${CLOSED_PORT} to pod sandbox pod-ns: connect to localhost:${CLOSED_PORT}: Connection refused`));
    } finally {
      session.close();
    }
  });

  test('WebSocket: port prefix, then data both ways with the server in the netns', T, async () => {
    const nsIno = statSync(`/var/run/netns/${NETNS}`).ino;
    const sess = await wsOpen(`${server.getPortForward({ pod_sandbox_id: 'pod-ns', port: [] }).url}?port=${ECHO_PORT}`, ['v4.channel.k8s.io']);
    await sess.until(0, new RegExp(`ns:${nsIno}\\n`), 'greeting');
    sess.ws.send(chan(0, 'over ws'));
    await sess.until(0, /over ws/, 'echo');
    sess.ws.close(1000);
    await sess.closed;
    assert.equal(sess.channels.get(0)!.readUInt16LE(0), ECHO_PORT);
    assert.equal(sess.channels.get(1)!.readUInt16LE(0), ECHO_PORT);
  });

  test('host-network pods connect on the host; unknown sandboxes are NotFound', T, async () => {
    const { session } = await spdyConnect(server.getPortForward({ pod_sandbox_id: 'pod-host', port: [] }).url, ['portforward.k8s.io']);
    try {
      const h = { port: [String(hostEchoPort)], requestid: ['0'] };
      const error = await session.openStream({ streamtype: ['error'], ...h });
      error.end();
      const data = await session.openStream({ streamtype: ['data'], ...h });
      const got = readAll(data);
      data.end('x');
      assert.equal((await got).toString(), 'host:x');
      assert.equal((await readAll(error)).toString(), '');
    } finally {
      session.close();
    }
    await assert.rejects(backend.checkSandbox('nope'), { code: 'NOT_FOUND' });
    const { session: s2 } = await spdyConnect(server.getPortForward({ pod_sandbox_id: 'nope', port: [] }).url, ['portforward.k8s.io']);
    try {
      const h = { port: ['80'], requestid: ['0'] };
      const error = await s2.openStream({ streamtype: ['error'], ...h });
      error.end();
      await s2.openStream({ streamtype: ['data'], ...h });
      assert.match((await readAll(error)).toString(), /pod sandbox nope not found/);
    } finally {
      s2.close();
    }
  });
});
