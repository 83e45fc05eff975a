/**
 * Client of the corral-unpack helper (src/image/native/corral-unpack.c): mknod and
 * lsetxattr beneath a root directory, which Node cannot do itself. One helper process per
 * layer being unpacked, started on first use.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { FailedPreconditionError, fromErrno, errnoNames } from '../../errors.ts';
import { buildPath } from '../../layout.ts';

export function helperPath(): string {
  return process.env.CORRAL_UNPACK_HELPER ?? buildPath('corral-unpack');
}

const hex = (s: string | Buffer) => (Buffer.isBuffer(s) ? s : Buffer.from(s, 'utf8')).toString('hex');

export class NativeHelper {
  readonly root: string;
  #proc?: ChildProcessWithoutNullStreams;
  #pending: Array<(line: string) => void> = [];
  #buf = '';
  #exited?: string;
  constructor(root: string) {
    this.root = root;
  }

  #start(): ChildProcessWithoutNullStreams {
    if (this.#proc) return this.#proc;
    const path = helperPath();
    if (!existsSync(path)) {
      throw new FailedPreconditionError(`unpack helper ${path} is missing: build it with "make -C src/image/native OUT=$PWD/build" (scripts/setup.sh does)`);
    }
    const p = spawn(path, [this.root], { stdio: ['pipe', 'pipe', 'pipe'] });
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (d: string) => {
      this.#buf += d;
      let nl: number;
      while ((nl = this.#buf.indexOf('\n')) >= 0) {
        const line = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        this.#pending.shift()?.(line);
      }
    });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const fail = (why: string) => {
      this.#exited = why;
      for (const r of this.#pending.splice(0)) r(`err 5 unpack helper ${why}`);
    };
    p.on('error', (e) => fail(`failed: ${e.message}`));
    p.on('exit', (code, sig) => fail(`exited (${sig ?? code}) ${stderr.trim()}`));
    p.stdin.on('error', () => {});
    this.#proc = p;
    return p;
  }

  async #call(line: string, what: string): Promise<string> {
    const p = this.#start();
    if (this.#exited) throw fromErrno('EIO', what, `unpack helper ${this.#exited}`);
    const answer = await new Promise<string>((resolve) => {
      this.#pending.push(resolve);
      p.stdin.write(line + '\n');
    });
    if (answer === 'ok') return '';
    if (answer.startsWith('ok ')) return answer.slice(3);
    const m = /^err (\d+) (.*)$/.exec(answer);
    const errno = m ? (errnoNames[Number(m[1])] ?? `E${m[1]}`) : 'EIO';
    throw fromErrno(errno, what, m ? m[2] : answer);
  }

  /** mknod beneath the root; `mode` includes the file type bits (S_IFCHR 0o020000, S_IFBLK 0o060000, S_IFIFO 0o010000). */
  async mknod(rel: string, mode: number, major: number, minor: number): Promise<void> {
    await this.#call(`mknod ${hex(rel)} ${mode.toString(8)} ${major} ${minor}`, `mknod ${rel}`);
  }

  /** lsetxattr (does not follow a final symlink). */
  async setxattr(rel: string, name: string, value: Buffer): Promise<void> {
    await this.#call(`xattr ${hex(rel)} ${hex(name)} ${value.length ? hex(value) : ''}`.trimEnd(), `set xattr ${name} on ${rel}`);
  }

  /** lgetxattr; null when the attribute is not set. */
  async getxattr(rel: string, name: string): Promise<Buffer | null> {
    try {
      return Buffer.from(await this.#call(`getxattr ${hex(rel)} ${hex(name)}`, `get xattr ${name} of ${rel}`), 'hex');
    } catch (e) {
      if ((e as { errno?: string }).errno === 'ENODATA' || /No data available/.test((e as Error).message)) return null;
      throw e;
    }
  }

  async close(): Promise<void> {
    const p = this.#proc;
    if (!p || this.#exited) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.stdin.end();
    });
  }
}

export const S_IFIFO = 0o010000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
