/** Signal names and numbers as `kill` accepts them: "TERM", "SIGTERM", "15". */
import { constants } from 'node:os';
import { InvalidArgumentError } from '../../errors.ts';

const NAMES: Record<number, string> = Object.fromEntries(Object.entries(constants.signals).map(([k, v]) => [v, k]));

/** "SIGKILL" for 9; "SIG<n>" for a number the platform has no name for. */
export function signalName(n: number): string {
  return NAMES[n] ?? `SIG${n}`;
}

export function parseSignal(s: string | undefined): number {
  if (s === undefined || s === '') return constants.signals.SIGTERM;
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n >= 1 && n <= 64) return n;
    throw new InvalidArgumentError(`invalid signal number ${s} (1-64)`);
  }
  const name = s.toUpperCase().startsWith('SIG') ? s.toUpperCase() : `SIG${s.toUpperCase()}`;
  const rt = /^SIGRTMIN(?:\+(\d+))?$/.exec(name) ?? /^SIGRTMAX(?:-(\d+))?$/.exec(name);
  if (rt) return name.startsWith('SIGRTMIN') ? 34 + Number(rt[1] ?? 0) : 64 - Number(rt[1] ?? 0);
  const n = (constants.signals as Record<string, number>)[name];
  if (n === undefined) throw new InvalidArgumentError(`unknown signal "${s}"`);
  return n;
}
