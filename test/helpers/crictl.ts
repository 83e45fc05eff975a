/**
 * Locating crictl (kubernetes-sigs/cri-tools v1.26.1) for the CRI integration tests.
 *
 * crictl is not part of this repository and no script here builds it. Tests that need it look
 * for $CRICTL, then /work/tools/bin/crictl, and skip with `crictlSkipReason` when neither is
 * an executable file.
 */
import { accessSync, constants } from 'node:fs';
import { execFile } from 'node:child_process';

export const CRICTL_CANDIDATES = [process.env.CRICTL, '/work/tools/bin/crictl'].filter((p): p is string => !!p);

export function findCrictl(): string | null {
  for (const p of CRICTL_CANDIDATES) {
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {}
  }
  return null;
}

export const crictlPath = findCrictl();

/** false when crictl is available; otherwise the reason to hand node:test's `skip`. */
export const crictlSkipReason: string | false = crictlPath
  ? false
  : `crictl not found (looked at ${CRICTL_CANDIDATES.join(', ')}); build cri-tools v1.26.1's cmd/crictl and set CRICTL=/path/to/crictl`;

export interface CrictlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run crictl against `socket` (runtime and image endpoint), with an optional stdin. */
export function crictl(socket: string, args: string[], options: { input?: string | Buffer; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CrictlResult> {
  if (!crictlPath) throw new Error(String(crictlSkipReason));
  const endpoint = `unix://${socket}`;
  const full = ['--runtime-endpoint', endpoint, '--image-endpoint', endpoint, '--timeout', '20s', ...args];
  return new Promise((resolve) => {
    const child = execFile(
      crictlPath!,
      full,
      { timeout: options.timeoutMs ?? 60_000, env: { ...process.env, ...options.env }, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (options.input !== undefined) child.stdin!.end(options.input);
    else child.stdin!.end();
  });
}

/** critest (cri-tools' conformance suite, `go test -c ./cmd/critest`): $CRITEST or /work/tools/bin/critest. */
export const CRITEST_CANDIDATES = [process.env.CRITEST, '/work/tools/bin/critest'].filter((p): p is string => !!p);

export const critestPath: string | null = (() => {
  for (const p of CRITEST_CANDIDATES) {
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {}
  }
  return null;
})();

export const critestSkipReason: string | false = critestPath
  ? false
  : `critest not found (looked at ${CRITEST_CANDIDATES.join(', ')}); build cri-tools v1.26.1's cmd/critest (go test -c) and set CRITEST=/path/to/critest`;
