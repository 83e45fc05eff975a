/**
 * Host-side jobs through one long-lived `corral-exec --serve` (docs/plan-format.md, "Serve mode").
 *
 * A daemon that mounts, unmounts, pins namespaces and runs CNI plugins for every pod and container
 * would otherwise spawn a process per job from a large Node process (~2 ms of the event loop each,
 * plus mount(8)'s own start-up); here each job costs a fork of the small executor. Jobs run
 * concurrently (a caller that needs an order awaits), each plan in a fresh child in a process group
 * of its own, so nothing of one job's process state reaches another and nothing of it outlives it.
 * The server starts on first use, again after it died, and never keeps this process alive.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { InternalError, fromNodeError } from '../../errors.ts';
import { encodePlan } from '../plan/encode.ts';
import type { Plan } from '../plan/ops.ts';
import { executorPath, opError } from './executor.ts';

const REQ_CAPTURE = 1;
const REQ_KILL = 2;

interface Reply {
  status: number;
  stdout: Buffer;
  stderr: Buffer;
  /** What the plan wrote on its sync fd (error lines), and its stderr unless captured. */
  text: string;
}

interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
}

export interface ExecRequest {
  path: string;
  args: string[];
  env: Record<string, string>;
  stdin?: string | Buffer;
  /** Kill the process (its whole process group) after this long; `timedOut` is then set. */
  timeoutMs?: number;
}

export interface ExecResult {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  signal: number | null;
  stdout: Buffer;
  stderr: string;
  timedOut: boolean;
}

export class PlanServer {
  private readonly path: string;
  private child: ChildProcess | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private stderrTail = '';

  constructor(path: string = executorPath()) {
    this.path = path;
  }

  /** Run one plan; rejects with the failing op's error (as a spawned executor's would be). */
  async run(plan: Plan): Promise<void> {
    const r = await this.request(plan, 0).reply;
    if (r.status === 0) return;
    const failed = failedOp(plan, r.text);
    if (failed) throw failed;
    throw new InternalError(`host plan failed (status ${r.status})${r.text.trim() ? `: ${r.text.trim().slice(-1000)}` : ''}`);
  }

  /**
   * Run a program with the given stdin, collecting stdout and stderr, like child_process.spawn
   * would (the program's exit status is the job's). A program that cannot be started rejects.
   */
  async exec(req: ExecRequest): Promise<ExecResult> {
    const env = Object.entries(req.env).map(([k, v]) => `${k}=${v}`);
    const plan: Plan = { ops: [{ op: 'exec', path: req.path, argv: [req.path, ...req.args], env, searchPath: false, origin: `run ${req.path}` }] };
    const job = this.request(plan, REQ_CAPTURE, typeof req.stdin === 'string' ? Buffer.from(req.stdin) : req.stdin);
    let timedOut = false;
    const timer = req.timeoutMs && req.timeoutMs > 0
      ? setTimeout(() => {
        timedOut = true;
        this.kill(job.id);
      }, req.timeoutMs)
      : undefined;
    let r: Reply;
    try {
      r = await job.reply;
    } finally {
      clearTimeout(timer);
    }
    // an exec that failed is an `error` line on the sync fd (the program's stderr is captured apart)
    const failed = r.status === 1 && !timedOut ? failedOp(plan, r.text) : undefined;
    if (failed) throw failed;
    const signal = r.status > 128 ? r.status - 128 : null;
    return { code: signal === null ? r.status : null, signal, stdout: r.stdout, stderr: r.stderr.toString('utf8'), timedOut };
  }

  /** End the server (it exits on EOF once running jobs are done). */
  close(): void {
    this.child?.stdin?.end();
    this.child = null;
  }

  /** Send one job; `id` names it for kill(). */
  private request(plan: Plan, flags: number, stdin?: Buffer): { id: number; reply: Promise<Reply> } {
    const id = this.nextId++;
    if (this.nextId > 0xffffffff) this.nextId = 1;
    let bytes: Uint8Array;
    try {
      bytes = encodePlan(plan);
    } catch (e) {
      return { id, reply: Promise.reject(e) };
    }
    const reply = new Promise<Reply>((resolve, reject) => {
      const child = this.ensure();
      this.pending.set(id, { resolve, reject });
      const input = stdin ?? Buffer.alloc(0);
      const head = Buffer.alloc(16);
      head.writeUInt32LE(12 + input.length + bytes.length, 0);
      head.writeUInt32LE(id, 4);
      head.writeUInt32LE(flags, 8);
      head.writeUInt32LE(input.length, 12);
      child.stdin!.write(Buffer.concat([head, input, bytes]));
      this.setRef(true);
    });
    return { id, reply };
  }

  private kill(id: number): void {
    if (!this.child || !this.pending.has(id)) return;
    const head = Buffer.alloc(16);
    head.writeUInt32LE(12, 0);
    head.writeUInt32LE(id, 4);
    head.writeUInt32LE(REQ_KILL, 8);
    this.child.stdin!.write(head);
  }

  private ensure(): ChildProcess {
    if (this.child) return this.child;
    const child = spawn(this.path, ['--serve'], { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' } });
    this.child = child;
    this.chunks = [];
    this.buffered = 0;
    this.stderrTail = '';
    child.stdout!.on('data', (d: Buffer) => this.onData(d));
    child.stderr!.on('data', (d: Buffer) => { this.stderrTail = (this.stderrTail + String(d)).slice(-2000); });
    child.stdin!.on('error', () => { /* reported by exit */ });
    const gone = (why: Error) => {
      if (this.child === child) this.child = null;
      const waiting = [...this.pending.values()];
      this.pending.clear();
      for (const p of waiting) p.reject(why);
    };
    child.once('error', (e) => gone(fromNodeError(e, `start the executor ${this.path} --serve`)));
    child.once('exit', (code, signal) => gone(new InternalError(
      `the plan server (${this.path} --serve) exited with ${code ?? signal}${this.stderrTail ? `: ${this.stderrTail.trim()}` : ''}`,
    )));
    child.unref();
    this.setRef(false, child);
    return child;
  }

  /** Keep the event loop alive only while replies are awaited. */
  private setRef(on: boolean, child: ChildProcess | null = this.child): void {
    for (const s of [child?.stdin, child?.stdout, child?.stderr] as (Socket | null | undefined)[]) {
      if (on) s?.ref?.();
      else s?.unref?.();
    }
  }

  private onData(d: Buffer): void {
    this.chunks.push(d);
    this.buffered += d.length;
    for (;;) {
      if (this.buffered < 4) return;
      let buf = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      const len = buf.readUInt32LE(0);
      if (buf.length < 4 + len) {
        this.chunks = [buf];
        return;
      }
      const id = buf.readUInt32LE(4);
      const status = buf.readInt32LE(8);
      const outLen = buf.readUInt32LE(12);
      const errLen = buf.readUInt32LE(16);
      const stdout = Buffer.from(buf.subarray(20, 20 + outLen));
      const stderr = Buffer.from(buf.subarray(20 + outLen, 20 + outLen + errLen));
      const text = buf.toString('utf8', 20 + outLen + errLen, 4 + len);
      buf = buf.subarray(4 + len);
      this.chunks = buf.length ? [buf] : [];
      this.buffered = buf.length;
      const p = this.pending.get(id);
      this.pending.delete(id);
      if (this.pending.size === 0) this.setRef(false);
      p?.resolve({ status, stdout, stderr, text });
    }
  }
}

/** The op error an `error <op-index> <errno> <message>` line in a job's sync text stands for. */
function failedOp(plan: Plan, text: string): Error | undefined {
  const m = /^error (-?[0-9]+) ([0-9]+) (.*)$/m.exec(text);
  return m ? opError(plan, Number(m[1]), Number(m[2]), m[3]!) : undefined;
}

let shared: PlanServer | undefined;

/** The process's plan server (one per process, started on first use). */
export function hostPlans(): PlanServer {
  return (shared ??= new PlanServer());
}
