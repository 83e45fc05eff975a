/**
 * Client side of the streaming protocols, for tools and tests: upgrade an HTTP request to
 * SPDY/3.1 and run an exec/attach session or open port-forward streams over it.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { InvalidArgumentError, UnavailableError } from '../../errors.ts';
import { SpdySession, type SpdyStream } from './spdy/session.ts';
import type { TerminalSize } from './backend.ts';

export interface SpdyConnection {
  session: SpdySession;
  protocol: string;
}

/** POST `url` with Upgrade: SPDY/3.1 offering `protocols` (in preference order). */
export function spdyConnect(url: string, protocols: readonly string[]): Promise<SpdyConnection> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: 'POST',
      headers: { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', 'X-Stream-Protocol-Version': [...protocols] },
    });
    req.on('upgrade', (res, socket: Duplex, head: Buffer) => {
      const protocol = String(res.headers['x-stream-protocol-version'] ?? '');
      if (!protocols.includes(protocol)) {
        socket.destroy();
        return reject(new InvalidArgumentError(`server picked stream protocol ${JSON.stringify(protocol)}, which we did not offer`));
      }
      if (head.length) socket.unshift(head);
      resolve({ session: new SpdySession(socket, { role: 'client' }), protocol });
    });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => reject(Object.assign(new UnavailableError(`upgrade refused: HTTP ${res.statusCode}: ${body.trim()}`), { status: res.statusCode })));
    });
    req.on('error', (e) => reject(new UnavailableError(`streaming connect to ${url}: ${e.message}`)));
    req.end();
  });
}

export function readAll(s: Duplex): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    s.on('data', (c: Buffer) => parts.push(c));
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('close', () => resolve(Buffer.concat(parts)));
  });
}

export interface SpdyExecOptions {
  stdin?: Buffer | string;
  /** Keep stdin open (no FIN) until the session ends. */
  holdStdin?: boolean;
  stdout?: boolean;
  stderr?: boolean;
  tty?: boolean;
  resize?: TerminalSize[];
  protocols?: readonly string[];
}

export interface SpdyExecResult {
  protocol: string;
  stdout: Buffer;
  stderr: Buffer;
  /** What the server wrote to the error stream ('' = nothing). */
  error: string;
}

/** Run one exec/attach session the way kubectl/crictl do (error stream first, then stdio, then resize). */
export async function spdyExec(url: string, opts: SpdyExecOptions = {}): Promise<SpdyExecResult> {
  const { session, protocol } = await spdyConnect(url, opts.protocols ?? ['v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io']);
  try {
    const open = (type: string) => session.openStream({ streamtype: [type] });
    const errorStream = await open('error');
    errorStream.end();
    const errorText = readAll(errorStream);
    let stdinStream: SpdyStream | null = null;
    if (opts.stdin !== undefined) stdinStream = await open('stdin');
    const stdoutStream = opts.stdout === false ? null : await open('stdout');
    stdoutStream?.end();
    const stderrStream = opts.stderr === false || opts.tty ? null : await open('stderr');
    stderrStream?.end();
    const resizeStream = opts.tty && protocol !== 'v2.channel.k8s.io' ? await open('resize') : null;
    for (const s of opts.resize ?? []) resizeStream?.write(JSON.stringify({ Width: s.width, Height: s.height }) + '\n');
    if (stdinStream) {
      stdinStream.write(opts.stdin!);
      if (!opts.holdStdin) stdinStream.end();
    }
    const [stdout, stderr, error] = await Promise.all([
      stdoutStream ? readAll(stdoutStream) : Buffer.alloc(0),
      stderrStream ? readAll(stderrStream) : Buffer.alloc(0),
      errorText,
    ]);
    return { protocol, stdout, stderr, error: error.toString('utf8') };
  } finally {
    session.close();
  }
}
