/**
 * Hooks the runtime runs itself, in the runtime's namespaces: prestart, createRuntime,
 * poststart, poststop. (createContainer and startContainer run inside the container
 * and are compiled into the plan.) Each hook gets the state JSON on stdin.
 */
import { spawn } from 'node:child_process';
import { CorralError, DeadlineExceededError, FailedPreconditionError, fromNodeError } from '../../errors.ts';
import type { Hook, State } from '../spec/types.ts';

export class HookError extends FailedPreconditionError {}

export async function runHook(hook: Hook, state: State, where: string): Promise<void> {
  const argv = hook.args?.length ? hook.args : [hook.path];
  await new Promise<void>((resolve, reject) => {
    let stderr = '';
    const child = spawn(hook.path, argv.slice(1), {
      argv0: argv[0],
      env: Object.fromEntries((hook.env ?? []).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])),
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    let timer: NodeJS.Timeout | undefined;
    if (hook.timeout) {
      timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new DeadlineExceededError(`${where}: hook ${hook.path} timed out after ${hook.timeout}s`));
      }, hook.timeout * 1000);
    }
    child.stderr!.on('data', (d: Buffer) => { if (stderr.length < 4096) stderr += d.toString(); });
    child.stdin!.on('error', () => { /* the hook need not read its stdin */ });
    child.stdin!.end(JSON.stringify(state));
    child.on('error', (e) => { clearTimeout(timer); reject(fromNodeError(e, `${where}: run hook ${hook.path}`)); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new HookError(`${where}: hook ${hook.path} ${signal ? `was killed by ${signal}` : `exited with status ${code}`}${stderr ? `: ${stderr.trim()}` : ''}`));
    });
  });
}

/** Run hooks in order, stopping at the first failure. */
export async function runHooks(hooks: Hook[] | undefined, kind: string, state: State): Promise<void> {
  for (const [i, hook] of (hooks ?? []).entries()) await runHook(hook, state, `hooks.${kind}[${i}]`);
}

/** Run every hook, collecting failures as warnings instead of stopping (poststart, poststop). */
export async function runHooksWarn(hooks: Hook[] | undefined, kind: string, state: State, warn: (m: string) => void): Promise<void> {
  for (const [i, hook] of (hooks ?? []).entries()) {
    try {
      await runHook(hook, state, `hooks.${kind}[${i}]`);
    } catch (e) {
      warn(e instanceof CorralError ? e.message : String(e));
    }
  }
}
