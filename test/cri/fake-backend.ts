/**
 * A stand-in for the lead's container backend, for testing the streaming protocols: "exec"
 * runs the command as a local process (busybox sh on the host), a TTY comes from util-linux
 * `script`, "attach" starts a fresh `sh` that greets and echoes, and port forwarding
 * connects to 127.0.0.1:<port>. Container id "missing" fails with NotFoundError.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { NotFoundError } from '../../src/errors.ts';
import type { ExitResult, StdioStreams, StreamingBackend, TerminalSize } from '../../src/cri/streaming/backend.ts';

function shQuote(a: string): string {
  return `'${a.replace(/'/g, `'\\''`)}'`;
}

export class LocalProcessBackend implements StreamingBackend {
  readonly resizes: TerminalSize[] = [];
  readonly calls: { kind: string; id: string; cmd?: string[]; tty?: boolean; port?: number }[] = [];

  async checkContainer(id: string): Promise<void> {
    if (id === 'missing') throw new NotFoundError(`container ${id} not found`);
  }
  async checkSandbox(id: string): Promise<void> {
    if (id === 'missing') throw new NotFoundError(`pod sandbox ${id} not found`);
  }

  exec(containerId: string, cmd: string[], tty: boolean, streams: StdioStreams, resize: AsyncIterable<TerminalSize>, signal: AbortSignal): Promise<ExitResult> {
    this.calls.push({ kind: 'exec', id: containerId, cmd, tty });
    if (containerId === 'missing') return Promise.reject(new NotFoundError(`container ${containerId} not found`));
    return this.run(tty ? ['script', '-qfec', cmd.map(shQuote).join(' '), '/dev/null'] : cmd, streams, resize, signal);
  }

  attach(containerId: string, tty: boolean, streams: StdioStreams, resize: AsyncIterable<TerminalSize>, signal: AbortSignal): Promise<ExitResult> {
    this.calls.push({ kind: 'attach', id: containerId, tty });
    if (containerId === 'missing') return Promise.reject(new NotFoundError(`container ${containerId} not found`));
    return this.run(['/bin/busybox', 'sh', '-c', 'echo attached; exec cat'], streams, resize, signal);
  }

  portForward(sandboxId: string, port: number, stream: Duplex, signal: AbortSignal): Promise<void> {
    this.calls.push({ kind: 'portforward', id: sandboxId, port });
    return new Promise((resolve, reject) => {
      const sock = net.connect(port, '127.0.0.1');
      let connected = false;
      sock.once('connect', () => {
        connected = true;
        stream.pipe(sock);
        sock.pipe(stream);
      });
      sock.once('error', (e) => {
        if (!connected) reject(new NotFoundError(`nothing listens on port ${port}: ${e.message}`));
      });
      sock.once('close', () => {
        if (connected) resolve();
      });
      signal.addEventListener('abort', () => sock.destroy(), { once: true });
    });
  }

  private run(argv: string[], streams: StdioStreams, resize: AsyncIterable<TerminalSize>, signal: AbortSignal): Promise<ExitResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
      child.stdin.on('error', () => {});
      if (streams.stdin) streams.stdin.pipe(child.stdin);
      else child.stdin.end();
      if (streams.stdout) child.stdout.pipe(streams.stdout, { end: false });
      else child.stdout.resume();
      const err = streams.stderr ?? streams.stdout; // a TTY merges stderr
      if (err) child.stderr.pipe(err, { end: false });
      else child.stderr.resume();
      void (async () => {
        for await (const s of resize) this.resizes.push(s);
      })();
      const kill = () => child.kill('SIGKILL');
      signal.addEventListener('abort', kill, { once: true });
      child.once('error', reject);
      child.once('close', (code, sig) => {
        signal.removeEventListener('abort', kill);
        streams.stdin?.unpipe(child.stdin);
        resolve({ exitCode: code ?? (sig ? 128 + 9 : 1) });
      });
    });
  }
}
