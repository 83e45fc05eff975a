/**
 * Structured logs: one JSON object per line on stderr, e.g.
 *   {"time":"2024-05-01T10:00:00.000Z","level":"info","msg":"serving CRI","socket":"/run/corral/corral.sock"}
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function isLogLevel(v: unknown): v is LogLevel {
  return typeof v === 'string' && v in rank;
}

export interface LoggerOptions {
  level?: LogLevel;
  write?: (line: string) => void;
  base?: LogFields;
}

function plain(v: unknown): unknown {
  if (v instanceof Error) {
    const e = v as Error & { code?: unknown };
    return { name: e.name, message: e.message, ...(e.code !== undefined ? { code: e.code } : {}) };
  }
  if (typeof v === 'bigint') return v.toString();
  return v;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const min = rank[options.level ?? 'info'];
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const make = (base: LogFields): Logger => {
    const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
      if (rank[level] < min) return;
      const rec: LogFields = { time: new Date().toISOString(), level, msg, ...base };
      if (fields) for (const [k, v] of Object.entries(fields)) rec[k] = plain(v);
      let line: string;
      try {
        line = JSON.stringify(rec);
      } catch {
        line = JSON.stringify({ time: rec.time, level, msg, note: 'fields were not serialisable' });
      }
      write(line + '\n');
    };
    return {
      debug: (m, f) => emit('debug', m, f),
      info: (m, f) => emit('info', m, f),
      warn: (m, f) => emit('warn', m, f),
      error: (m, f) => emit('error', m, f),
      child: (fields) => make({ ...base, ...fields }),
    };
  };
  return make(options.base ?? {});
}

/** A logger that drops everything (tests that do not inspect logs). */
export const silentLogger: Logger = createLogger({ level: 'error', write: () => {} });
