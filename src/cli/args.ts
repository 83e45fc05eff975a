/**
 * A small Go-flag-compatible argument parser (runc's callers pass `--flag value`,
 * `--flag=value`, `-flag value`, and short aliases). Argument types only; no logic.
 */
import { InvalidArgumentError } from '../errors.ts';

export interface FlagSpec {
  /** Long name without dashes. */
  name: string;
  alias?: string[];
  type: 'bool' | 'string' | 'int' | 'list';
  help?: string;
}

export interface Parsed {
  flags: Record<string, string | boolean | number | string[] | undefined>;
  positional: string[];
}

/**
 * Parse `argv` against `specs`. Parsing stops at the first positional argument when
 * `stopAtPositional` is set (so `exec ID cmd --flag` passes `--flag` to cmd).
 */
export function parseArgs(argv: string[], specs: FlagSpec[], opts: { stopAtPositional?: boolean; stopAfter?: number } = {}): Parsed {
  const byName = new Map<string, FlagSpec>();
  for (const s of specs) {
    byName.set(s.name, s);
    for (const a of s.alias ?? []) byName.set(a, s);
  }
  const flags: Parsed['flags'] = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positional.push(arg);
      if (opts.stopAtPositional && positional.length >= (opts.stopAfter ?? 1)) {
        positional.push(...argv.slice(i + 1));
        break;
      }
      continue;
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    const spec = byName.get(name);
    if (!spec) throw new InvalidArgumentError(`unknown flag: ${arg}`);
    let value: string | undefined = eq >= 0 ? body.slice(eq + 1) : undefined;
    if (spec.type === 'bool') {
      flags[spec.name] = value === undefined ? true : !['false', '0', 'f', 'F', 'FALSE', 'False'].includes(value);
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new InvalidArgumentError(`flag ${arg} needs a value`);
      value = argv[++i];
    }
    if (spec.type === 'int') {
      if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError(`flag ${arg} needs an integer, got "${value}"`);
      flags[spec.name] = Number(value);
    } else if (spec.type === 'list') {
      ((flags[spec.name] as string[] | undefined) ?? (flags[spec.name] = [])) as string[];
      (flags[spec.name] as string[]).push(value);
    } else {
      flags[spec.name] = value;
    }
  }
  return { flags, positional };
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.flags[name];
  return typeof v === 'string' ? v : undefined;
}
export function bool(p: Parsed, name: string): boolean {
  return p.flags[name] === true;
}
export function int(p: Parsed, name: string): number | undefined {
  const v = p.flags[name];
  return typeof v === 'number' ? v : undefined;
}
export function list(p: Parsed, name: string): string[] {
  const v = p.flags[name];
  return Array.isArray(v) ? v : [];
}

export function usageLines(specs: FlagSpec[]): string {
  return specs
    .map((s) => {
      const names = [s.name, ...(s.alias ?? [])].map((n) => (n.length === 1 ? `-${n}` : `--${n}`)).join(', ');
      return `   ${names}${s.type === 'bool' ? '' : ` ${s.type === 'int' ? 'N' : 'value'}`}\t${s.help ?? ''}`;
    })
    .join('\n');
}
