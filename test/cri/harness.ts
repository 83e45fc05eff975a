/**
 * Helpers for the corrald integration tests: temp dirs, a grpc-js client on the daemon's own
 * proto, a spawned corrald that reports readiness through its JSON log, and a stale socket.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { clientConstructor } from '../../src/cri/proto.ts';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const NODE = process.execPath;
export const CORRALD = join(REPO, 'src/cli/corrald.ts');
/** The daemon as installed: scripts/setup.sh's wrapper of the bundle build/corrald.mjs. */
export const BIN_CORRALD = join(REPO, 'bin/corrald');
const FROM_SOURCES = [NODE, '--no-warnings', CORRALD];

export function tempDir(prefix: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export type Client = grpc.Client & Record<string, (...a: unknown[]) => unknown>;

export function criClients(socket: string): { runtime: Client; image: Client; close(): void } {
  const R = clientConstructor('RuntimeService');
  const I = clientConstructor('ImageService');
  const runtime = new R(`unix:${socket}`, grpc.credentials.createInsecure()) as unknown as Client;
  const image = new I(`unix:${socket}`, grpc.credentials.createInsecure()) as unknown as Client;
  return { runtime, image, close: () => (runtime.close(), image.close()) };
}

/** Promise form of a unary call; rejects with the grpc ServiceError. */
export function call<T = Record<string, unknown>>(client: Client, method: string, req: object = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    (client[method] as (r: object, cb: (e: grpc.ServiceError | null, v: T) => void) => void).call(client, req, (e, v) => (e ? reject(e) : resolve(v)));
  });
}

export interface SpawnedDaemon {
  child: ChildProcess;
  ready: Record<string, unknown>;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Every daemon a test starts keeps its state in a temp dir of its own unless the test names one. */
function withOwnRoot(args: string[]): { args: string[]; cleanup: () => void } {
  if (args.some((a) => a === '--root-dir' || a === '--config' || a === '--version' || a === '--help')) return { args, cleanup: () => {} };
  const root = mkdtempSync(join(tmpdir(), 'corral-crit-root-'));
  return { args: [...args, '--root-dir', root], cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

/**
 * Start corrald (from the TypeScript sources unless `command` names another, e.g. [BIN_CORRALD]);
 * resolves at its "corrald ready" log line, rejects if it exits first.
 */
export function spawnCorrald(rawArgs: string[], command: string[] = FROM_SOURCES): Promise<SpawnedDaemon> {
  const { args, cleanup } = withOwnRoot(rawArgs);
  const child = spawn(command[0]!, [...command.slice(1), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.once('exit', cleanup);
  let err = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  return new Promise((resolve, reject) => {
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (c: string) => {
      err += c;
      for (const line of err.split('\n')) {
        if (!line.includes('"corrald ready"')) continue;
        try {
          resolve({ child, ready: JSON.parse(line), stderr: () => err, exited });
        } catch {}
      }
    });
    child.stdout!.resume();
    void exited.then(({ code, signal }) => reject(new Error(`corrald exited (${code ?? signal}) before ready: ${err}`)));
  });
}

/** Run corrald to completion (for --version, bad configs, refused starts). */
export function runCorrald(rawArgs: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { args, cleanup } = withOwnRoot(rawArgs);
  return new Promise((resolve) => {
    const child = spawn(NODE, ['--no-warnings', CORRALD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.once('exit', cleanup);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Leave a unix socket file behind with nobody listening (its owner is SIGKILLed). */
export async function makeStaleSocket(path: string): Promise<void> {
  const child = spawn(NODE, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  await new Promise((r) => child.once('exit', r));
}
