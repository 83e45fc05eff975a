// Exec, Attach and PortForward end to end, the way the kubelet drives them: the CRI RPC hands
// out a URL, the client upgrades to SPDY/3.1 (or WebSocket) and the streams reach processes
// inside a real pod run by corrald. At the end the pod is stopped and removed and neither its
// host resources nor any process this suite learned about (container processes, conmon, exec'd
// processes, the runtime and relay helpers) is left.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { randomBytes, randomInt } from 'node:crypto';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { call } from '../harness.ts';
import { readAll, spdyConnect, spdyExec, type SpdyConnection } from '../../../src/cri/streaming/client.ts';
import type { SpdyStream } from '../../../src/cri/streaming/spdy/session.ts';
import { containerConfig, podConfig, processId, runtimeSuite, stillRunning, waitState, type ProcessId } from './helpers.ts';

const REMOTE = ['v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io'];
const POD = 'stream';
/** A hang (a stream that never ends) fails the test instead of the run. */
const T = { timeout: 60_000 };

/** Accumulates a readable's bytes; `until` waits for a pattern to show up. */
class Sink {
  text = '';
  ended = false;
  private waiters: (() => void)[] = [];
  constructor(s: NodeJS.ReadableStream) {
    s.on('data', (d: Buffer) => {
      this.text += d.toString('utf8');
      this.wake();
    });
    s.on('end', () => ((this.ended = true), this.wake()));
    s.on('close', () => ((this.ended = true), this.wake()));
  }
  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
  async until(re: RegExp, what: string): Promise<RegExpMatchArray> {
    for (;;) {
      const m = this.text.match(re);
      if (m) return m;
      if (this.ended) throw new Error(`${what}: stream ended without ${re}; got ${JSON.stringify(this.text)}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
}

/** An open exec/attach session whose streams the test drives itself (kubectl's order: error, stdin, stdout, stderr, resize). */
async function openRemote(url: string, want: { stdin?: boolean; stdout?: boolean; stderr?: boolean; tty?: boolean }): Promise<{
  conn: SpdyConnection;
  error: Promise<Buffer>;
  stdin: SpdyStream | null;
  stdout: Sink | null;
  stderr: Sink | null;
  resize: SpdyStream | null;
}> {
  const conn = await spdyConnect(url, REMOTE);
  const open = (type: string) => conn.session.openStream({ streamtype: [type] });
  const errorStream = await open('error');
  errorStream.end();
  const error = readAll(errorStream);
  const stdin = want.stdin ? await open('stdin') : null;
  const out = want.stdout ? await open('stdout') : null;
  out?.end();
  const err = want.stderr ? await open('stderr') : null;
  err?.end();
  const resize = want.tty ? await open('resize') : null;
  return { conn, error, stdin, stdout: out && new Sink(out), stderr: err && new Sink(err), resize };
}

function httpGetHost(port: number): Promise<string> {
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

/** One WebSocket (v5.channel.k8s.io) exec session with Node's own WebSocket client. */
function wsExec(url: string, stdin: Buffer): Promise<{ protocol: string; channels: Map<number, Buffer>; closeFrames: number[] }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), ['v5.channel.k8s.io']);
    ws.binaryType = 'arraybuffer';
    const channels = new Map<number, Buffer>();
    const closeFrames: number[] = [];
    ws.onopen = () => {
      for (let off = 0; off < stdin.length; off += 4096) ws.send(Buffer.concat([Buffer.from([0]), stdin.subarray(off, off + 4096)]));
      ws.send(Buffer.from([255, 0])); // v5: stdin is done
    };
    ws.onmessage = (e) => {
      const b = Buffer.from(e.data as ArrayBuffer);
      if (b[0] === 255) closeFrames.push(b[1]!);
      else channels.set(b[0]!, Buffer.concat([channels.get(b[0]!) ?? Buffer.alloc(0), b.subarray(1)]));
    };
    ws.onerror = () => reject(new Error(`websocket error on ${url}`));
    ws.onclose = () => resolve({ protocol: ws.protocol, channels, closeFrames });
  });
}

function wsRefused(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), ['v5.channel.k8s.io']);
    ws.onopen = () => (ws.close(), resolve(false));
    ws.onerror = () => resolve(true);
  });
}

/** Port-forward one connection over an open SPDY session; resolves with what came back and the error stream's text. */
async function forwardOnce(conn: SpdyConnection, port: number, requestId: string, send: string): Promise<{ data: string; error: string }> {
  const h = { port: [String(port)], requestid: [requestId] };
  const error = await conn.session.openStream({ streamtype: ['error'], ...h });
  error.end();
  const errText = readAll(error);
  const data = await conn.session.openStream({ streamtype: ['data'], ...h });
  const got = readAll(data);
  data.end(send);
  return { data: (await got).toString('utf8'), error: (await errText).toString('utf8') };
}

function exitCodeOf(status: string): number {
  const s = JSON.parse(status) as { status: string; details?: { causes?: { reason: string; message: string }[] } };
  if (s.status === 'Success') return 0;
  const c = s.details?.causes?.find((x) => x.reason === 'ExitCode');
  assert.ok(c, `a failure status with an exit code: ${status}`);
  return Number(c.message);
}

const procPpid = (pid: string): number => {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return -1;
  }
};
const procCmdline = (pid: number | string): string => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '';
  }
};

describe('corrald streaming: Exec, Attach, PortForward', () => {
  /** Every host process this suite learned about; none may outlive the pod (checked after the daemon stopped). */
  const learned: ProcessId[] = [];
  const suite = runtimeSuite({ leftovers: () => stillRunning(learned) });
  const hostPort = randomInt(41000, 49000);
  let podId = '';
  let srvId = '';
  let outId = '';
  let inId = '';

  const rpc = <T>(method: string, req: object) => call<T>(suite.rt, method, req);
  const execUrl = async (cmd: string[], o: { tty?: boolean; stdin?: boolean; stdout?: boolean; stderr?: boolean } = {}) =>
    (await rpc<{ url: string }>('Exec', { container_id: srvId, cmd, tty: !!o.tty, stdin: !!o.stdin, stdout: o.stdout ?? true, stderr: o.stderr ?? !o.tty })).url;

  /** Host PIDs of the container's processes (its cgroup), of conmon, and of corrald's helpers working for this suite. */
  const learnContainer = async (id: string, name: string) => {
    const info = JSON.parse((await rpc<{ info: Record<string, string> }>('ContainerStatus', { container_id: id, verbose: true })).info.info!) as { pid: number; bundle: string };
    assert.ok(info.pid > 0, `${name} has a pid`);
    learned.push(processId(info.pid, `${name} main process`));
    const conmon = Number(readFileSync(join(info.bundle, 'conmon.pid'), 'utf8').trim());
    assert.ok(conmon > 0 && procCmdline(conmon).includes('conmon'), `${name}'s conmon pid ${conmon} is conmon`);
    learned.push(processId(conmon, `${name} conmon`));
  };
  const cgroupProcs = (id: string): number[] =>
    readFileSync(`/sys/fs/cgroup/pids${suite.env.cgroupRoot}/${POD}/${id}/cgroup.procs`, 'utf8').split('\n').filter(Boolean).map(Number);
  /** Descendants of corrald that work for this suite (runtime exec, relay helpers), recorded now. */
  const learnHelpers = (what: string): ProcessId[] => {
    const daemonPid = suite.daemon.d.child.pid!;
    const all = readdirSync('/proc').filter((p) => /^[0-9]+$/.test(p));
    const tree = new Set<number>([daemonPid]);
    for (let grew = true; grew; ) {
      grew = false;
      for (const p of all) if (!tree.has(Number(p)) && tree.has(procPpid(p))) (tree.add(Number(p)), (grew = true));
    }
    tree.delete(daemonPid);
    const ids = [...tree].filter((p) => /corral-stream|corral-oci/.test(procCmdline(p)) || procCmdline(p).includes(suite.env.dir)).map((p) => processId(p, `${what}: ${procCmdline(p)}`));
    learned.push(...ids);
    return ids;
  };
  const waitGone = async (ids: ProcessId[], what: string) => {
    for (let i = 0; i < 200 && stillRunning(ids).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(stillRunning(ids), [], what);
  };

  test('a pod with a port mapping and three containers', T, async () => {
    const env = suite.env;
    const cfg = podConfig(env, POD, {
      port_mappings: [{ protocol: 'TCP', container_port: 8080, host_port: hostPort, host_ip: '127.0.0.1' }],
      linux: { cgroup_parent: `${env.cgroupRoot}/${POD}` },
    });
    podId = (await rpc<{ pod_sandbox_id: string }>('RunPodSandbox', { config: cfg })).pod_sandbox_id;
    // srv: httpd on 127.0.0.1:8081 only (reachable through port forwarding) and on :8080 (the hostPort mapping).
    const serve = `mkdir -p /www && echo page-${env.tag} > /www/index.html && httpd -p 127.0.0.1:8081 -h /www && exec httpd -f -p 8080 -h /www`;
    const mk = async (name: string, cmd: string[], extra: Record<string, unknown> = {}) => {
      const id = (await rpc<{ container_id: string }>('CreateContainer', { pod_sandbox_id: podId, sandbox_config: cfg, config: containerConfig(env, name, cmd, extra) })).container_id;
      await rpc('StartContainer', { container_id: id });
      await waitState(suite.rt, id, 'CONTAINER_RUNNING');
      await learnContainer(id, name);
      return id;
    };
    srvId = await mk('srv', ['/bin/sh', '-c', serve]);
    outId = await mk('out', ['/bin/sh', '-c', 'i=0; while :; do echo tick-$i; echo tock-$i >&2; i=$((i+1)); sleep 0.2; done']);
    inId = await mk('in', ['/bin/sh', '-c', 'echo ready; while read l; do echo "got:$l"; echo "err:$l" >&2; done; echo stdin-closed'], { stdin: true, stdin_once: false });
    for (let i = 0; i < 100; i++) {
      const r = await rpc<{ exit_code: number }>('ExecSync', { container_id: srvId, cmd: ['wget', '-qO-', 'http://127.0.0.1:8081/'], timeout: 5 });
      if (r.exit_code === 0) break;
      await new Promise((res) => setTimeout(res, 100));
    }
  });

  test('Exec over SPDY: non-TTY stdout, stderr and exit codes (v4 status, v2 text)', T, async () => {
    const r = await spdyExec(await execUrl(['sh', '-c', 'echo out-1; echo err-1 >&2; echo out-2; exit 3']));
    assert.equal(r.protocol, 'v4.channel.k8s.io');
    assert.equal(r.stdout.toString(), 'out-1\nout-2\n');
    assert.equal(r.stderr.toString(), 'err-1\n');
    assert.equal(exitCodeOf(r.error), 3);
    const ok = await spdyExec(await execUrl(['cat', '/etc/hostname']));
    assert.equal(ok.stdout.toString().trim(), POD);
    assert.equal(exitCodeOf(ok.error), 0);
    const v2 = await spdyExec(await execUrl(['sh', '-c', 'exit 5']), { protocols: ['v2.channel.k8s.io'] });
    assert.equal(v2.protocol, 'v2.channel.k8s.io');
    assert.equal(v2.error, 'command terminated with non-zero exit code: exit status 5');
    // A command that does not exist is reported on the error stream, not as output.
    const missing = await spdyExec(await execUrl(['/no/such/binary']));
    assert.equal(JSON.parse(missing.error).status, 'Failure');
    assert.match(JSON.parse(missing.error).message, /no\/such\/binary|not found|ENOENT/i);
  });

  test('Exec over SPDY: stdin reaches cat, byte for byte, and its end ends cat', T, async () => {
    const input = Buffer.from('hello cat\n' + randomBytes(96 * 1024).toString('base64').replace(/.{76}/g, '$&\n') + '\n');
    const r = await spdyExec(await execUrl(['cat'], { stdin: true }), { stdin: input });
    assert.equal(r.stdout.length, input.length);
    assert.ok(r.stdout.equals(input), 'cat echoed its stdin exactly');
    assert.equal(r.stderr.toString(), '');
    assert.equal(exitCodeOf(r.error), 0);
  });

  test('Exec over SPDY: megabytes of output arrive complete (flow control)', T, async () => {
    const r = await spdyExec(await execUrl(['sh', '-c', 'yes 0123456789abcdef | head -c 3000000; yes e | head -c 300000 >&2']));
    assert.equal(r.stdout.length, 3000000);
    assert.ok(r.stdout.equals(Buffer.from('0123456789abcdef\n'.repeat(Math.ceil(3000000 / 17))).subarray(0, 3000000)));
    assert.equal(r.stderr.length, 300000);
    assert.equal(exitCodeOf(r.error), 0);
  });

  test('Exec over SPDY with a TTY: a terminal, resizes reach it, stdin is typed into it', T, async () => {
    const script = 'tty; i=0; while [ "$(stty size)" != "33 101" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; echo "size:$(stty size)"; read l; echo "line:$l"';
    const s = await openRemote(await execUrl(['sh', '-c', script], { tty: true, stdin: true }), { stdin: true, stdout: true, tty: true });
    try {
      await s.stdout!.until(/\/dev\/pts\/\d+/, 'tty');
      s.resize!.write(JSON.stringify({ Width: 80, Height: 24 }) + '\n');
      s.resize!.write(JSON.stringify({ Width: 101, Height: 33 }) + '\n');
      await s.stdout!.until(/size:33 101/, 'resize');
      s.stdin!.write('typed-text\n');
      await s.stdout!.until(/line:typed-text\r?\n/, 'typed line');
      s.stdin!.end();
      assert.equal(exitCodeOf((await s.error).toString()), 0);
      assert.match(s.stdout!.text, /typed-text\r\n/, 'the terminal echoed what was typed (cooked mode, CRLF)');
    } finally {
      s.conn.session.close();
    }
  });

  test('Exec over WebSocket v5: channels for stdout/stderr, close of stdin, status with the exit code', T, async () => {
    const url = await execUrl(['sh', '-c', 'cat; echo on-stderr >&2; exit 4'], { stdin: true });
    const input = Buffer.from(`ws-input-${randomBytes(8).toString('hex')}\n`.repeat(500));
    const r = await wsExec(url, input);
    assert.equal(r.protocol, 'v5.channel.k8s.io');
    assert.ok((r.channels.get(1) ?? Buffer.alloc(0)).equals(input), 'stdout (channel 1) is the input');
    assert.equal(r.channels.get(2)?.toString(), 'on-stderr\n');
    assert.equal(exitCodeOf(r.channels.get(3)!.toString()), 4);
    assert.ok(r.closeFrames.includes(1) && r.closeFrames.includes(2), 'v5 close frames for stdout and stderr');
    assert.equal(await wsRefused(url), true, 'the WebSocket URL works once');
  });

  test('streaming URLs are single-use (exec, attach, port-forward)', T, async () => {
    const exec = await execUrl(['true']);
    assert.equal(exitCodeOf((await spdyExec(exec)).error), 0);
    await assert.rejects(spdyExec(exec), { status: 404, message: /unknown or expired streaming token/ });
    const attach = (await rpc<{ url: string }>('Attach', { container_id: outId, stdout: true, stderr: true })).url;
    const a = await openRemote(attach, { stdout: true, stderr: true });
    await a.stdout!.until(/tick-\d+/, 'attach output');
    a.conn.session.close();
    await assert.rejects(spdyConnect(attach, REMOTE), { status: 404 });
    const pf = (await rpc<{ url: string }>('PortForward', { pod_sandbox_id: podId, port: [8081] })).url;
    (await spdyConnect(pf, ['portforward.k8s.io'])).session.close();
    await assert.rejects(spdyConnect(pf, ['portforward.k8s.io']), { status: 404 });
  });

  test('a client that goes away stops its exec: the process and the helpers are gone', T, async () => {
    const s = await openRemote(await execUrl(['sh', '-c', 'echo started; exec sleep 1000'], { stdin: true }), { stdin: true, stdout: true, stderr: true });
    await s.stdout!.until(/started/, 'exec started');
    // "started" is printed just before the shell execs sleep: give it the moment it needs
    const sleeping = () => cgroupProcs(srvId).filter((p) => procCmdline(p) === 'sleep 1000');
    for (let i = 0; i < 100 && sleeping().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    const inSrv = sleeping().map((p) => processId(p, 'exec sleep 1000'));
    assert.equal(inSrv.length, 1, 'the exec\'d process runs in the container\'s cgroup');
    learned.push(...inSrv);
    const helpers = learnHelpers('exec of sleep');
    assert.ok(helpers.length > 0, 'corrald runs a helper process for the session');
    s.conn.session.destroy();
    await waitGone([...inSrv, ...helpers], 'the exec was stopped when its client went away');
  });

  test('Attach to a container without stdin: its main process output arrives on stdout and stderr', T, async () => {
    const url = (await rpc<{ url: string }>('Attach', { container_id: outId, stdin: false, stdout: true, stderr: true, tty: false })).url;
    const s = await openRemote(url, { stdout: true, stderr: true });
    let helpers: ProcessId[] = [];
    try {
      const [, n] = (await s.stdout!.until(/tick-(\d+)\n/, 'stdout of the main process'))!;
      await s.stderr!.until(new RegExp(`tock-${Number(n) + 1}\\n`), 'stderr of the main process');
      assert.doesNotMatch(s.stdout!.text, /tock/, 'stderr stays on stderr');
      helpers = learnHelpers('attach to out').filter((h) => /corral-stream attach/.test(h.what));
    } finally {
      s.conn.session.close();
    }
    assert.equal(helpers.length, 1, 'one attach relay ran for the session');
    await waitGone(helpers, 'detaching stopped the attach relay');
    // Detaching leaves the container running.
    assert.equal((await waitState(suite.rt, outId, 'CONTAINER_RUNNING')).state, 'CONTAINER_RUNNING');
  });

  test('Attach with stdin: lines reach the main process, its answers come back; detach keeps it running', T, async () => {
    const url = (await rpc<{ url: string }>('Attach', { container_id: inId, stdin: true, stdout: true, stderr: true, tty: false })).url;
    const s = await openRemote(url, { stdin: true, stdout: true, stderr: true });
    try {
      s.stdin!.write('first line\n');
      await s.stdout!.until(/got:first line\n/, 'stdin reached the main process');
      await s.stderr!.until(/err:first line\n/, 'its stderr');
      s.stdin!.write('second\n');
      await s.stdout!.until(/got:second\n/, 'a second line');
      learnHelpers('attach to in');
    } finally {
      s.conn.session.close();
    }
    // stdin_once is false: detaching does not close the container's stdin; a new attach still talks to it.
    const again = await openRemote((await rpc<{ url: string }>('Attach', { container_id: inId, stdin: true, stdout: true })).url, { stdin: true, stdout: true });
    try {
      again.stdin!.write('third\n');
      await again.stdout!.until(/got:third\n/, 'after re-attaching');
    } finally {
      again.conn.session.close();
    }
    assert.equal((await waitState(suite.rt, inId, 'CONTAINER_RUNNING')).state, 'CONTAINER_RUNNING');
  });

  test('PortForward over SPDY reaches a server on 127.0.0.1 inside the pod; errors go to the error stream', T, async () => {
    const url = (await rpc<{ url: string }>('PortForward', { pod_sandbox_id: podId, port: [] })).url;
    const conn = await spdyConnect(url, ['portforward.k8s.io']);
    try {
      for (const id of ['0', '1']) {
        const r = await forwardOnce(conn, 8081, id, 'GET / HTTP/1.0\r\nHost: x\r\n\r\n');
        assert.match(r.data, /^HTTP\/1\.[01] 200/);
        assert.match(r.data, new RegExp(`page-${suite.env.tag}`));
        assert.equal(r.error, '');
      }
      const closed = await forwardOnce(conn, 8099, '2', '');
      assert.equal(closed.data, '');
      assert.match(closed.error, new RegExp(`error forwarding port 8099 to pod sandbox ${podId}`));
    } finally {
      conn.session.close();
    }
    // 8081 listens on the pod's loopback only: the host cannot reach it at the pod IP.
    const ip = (await rpc<{ status: { network: { ip: string } } }>('PodSandboxStatus', { pod_sandbox_id: podId })).status.network.ip;
    const direct = await new Promise<string>((resolve) => {
      const s = connect({ host: ip, port: 8081 });
      s.setTimeout(3000, () => (s.destroy(), resolve('timeout')));
      s.on('connect', () => (s.destroy(), resolve('connected')));
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    assert.notEqual(direct, 'connected', 'the forwarded port is not exposed on the pod IP');
  });

  test('PortForward over WebSocket: the port prefix, then the connection\'s bytes', T, async () => {
    const url = `${(await rpc<{ url: string }>('PortForward', { pod_sandbox_id: podId, port: [8081] })).url}?port=8081`;
    const got = await new Promise<Map<number, Buffer>>((resolve, reject) => {
      const ws = new WebSocket(url.replace(/^http/, 'ws'), ['v4.channel.k8s.io']);
      ws.binaryType = 'arraybuffer';
      const ch = new Map<number, Buffer>();
      ws.onmessage = (e) => {
        const b = Buffer.from(e.data as ArrayBuffer);
        const first = !ch.has(b[0]!);
        ch.set(b[0]!, Buffer.concat([ch.get(b[0]!) ?? Buffer.alloc(0), b.subarray(1)]));
        if (first && b[0] === 1) ws.send(Buffer.concat([Buffer.from([0]), Buffer.from('GET / HTTP/1.0\r\nHost: x\r\n\r\n')]));
      };
      ws.onerror = () => reject(new Error('websocket port-forward failed'));
      ws.onclose = () => resolve(ch);
    });
    assert.deepEqual(got.get(1), Buffer.from([8081 & 255, 8081 >> 8]), 'the error channel carries only the port prefix');
    const data = got.get(0)!;
    assert.deepEqual(data.subarray(0, 2), Buffer.from([8081 & 255, 8081 >> 8]));
    assert.match(data.subarray(2).toString(), new RegExp(`^HTTP/1\\.[01] 200[^]*page-${suite.env.tag}`));
  });

  test('PortForward with a port list refuses other ports', T, async () => {
    const url = (await rpc<{ url: string }>('PortForward', { pod_sandbox_id: podId, port: [8081] })).url;
    const conn = await spdyConnect(url, ['portforward.k8s.io']);
    try {
      const r = await forwardOnce(conn, 8080, '0', 'GET / HTTP/1.0\r\n\r\n');
      assert.match(r.error, /port 8080 was not requested/);
      const ok = await forwardOnce(conn, 8081, '1', 'GET / HTTP/1.0\r\n\r\n');
      assert.match(ok.data, new RegExp(`page-${suite.env.tag}`));
    } finally {
      conn.session.close();
    }
  });

  test('the hostPort mapping still works from the host', T, async () => {
    assert.match(await httpGetHost(hostPort), new RegExp(`page-${suite.env.tag}`));
  });

  test('StopPodSandbox and RemovePodSandbox: the containers, conmon and every helper are gone', T, async () => {
    await rpc('StopPodSandbox', { pod_sandbox_id: podId });
    await rpc('RemovePodSandbox', { pod_sandbox_id: podId });
    assert.deepEqual((await rpc<{ items: unknown[] }>('ListPodSandbox', {})).items, []);
    assert.ok(learned.length >= 6, `learned the pids of containers, conmons and helpers (${learned.length})`);
    await waitGone(learned, 'no process of the pod is left');
    await assert.rejects(rpc('Exec', { container_id: srvId, cmd: ['true'], stdout: true }), { code: grpc.status.NOT_FOUND });
    await assert.rejects(rpc('PortForward', { pod_sandbox_id: podId, port: [8081] }), { code: grpc.status.NOT_FOUND });
  });
});
