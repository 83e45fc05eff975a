/**
 * Errors a corral user can act on: each failure is classified (unknown image, auth required,
 * TLS failure, registry unreachable, disk full, …) and printed with what to do next.
 */
import { CorralError } from '../../errors.ts';

export type ErrorKind = 'unknown-image' | 'auth' | 'tls' | 'unreachable' | 'disk-full' | 'in-use' | 'invalid' | 'other';

export interface Explained {
  kind: ErrorKind;
  message: string;
  hint?: string;
  exitCode: number;
}

const TLS_CODES = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_SSL|ERR_TLS|EPROTO|HOSTNAME_MISMATCH|ERR_TLS_CERT_ALTNAME_INVALID/;
const NET_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EPIPE']);

/** Every errno/code along the cause chain, and the messages. */
function chain(err: unknown): { codes: string[]; text: string } {
  const codes: string[] = [];
  const msgs: string[] = [];
  let e: unknown = err;
  for (let i = 0; e && i < 8; i++) {
    const x = e as { code?: unknown; errno?: unknown; message?: unknown; cause?: unknown };
    for (const c of [x.errno, x.code]) if (typeof c === 'string') codes.push(c);
    if (typeof x.message === 'string') msgs.push(x.message);
    e = x.cause;
  }
  return { codes, text: msgs.join(' | ') };
}

export interface ExplainContext {
  /** What the user asked for ("pull busybox:1.36"). */
  action: string;
  /** Registry host involved, if any. */
  registry?: string;
  /** Image store directory. */
  root: string;
  /** Whether the failing operation talked to a registry (NOT_FOUND means "not in the registry"). */
  remote?: boolean;
  image?: string;
}

export function explain(err: unknown, ctx: ExplainContext): Explained {
  const { codes, text } = chain(err);
  const base = err instanceof Error ? err.message : String(err);
  const code = err instanceof CorralError ? err.code : 'INTERNAL';
  const reg = ctx.registry ?? 'the registry';
  if (codes.some((c) => c === 'ENOSPC' || c === 'EDQUOT') || /ENOSPC|no space left|database or disk is full|SQLITE_FULL/i.test(text)) {
    return { kind: 'disk-full', exitCode: 1, message: `${ctx.action}: the disk holding the image store is full (${base})`, hint: `free space on the file system of ${ctx.root}, or remove images with "corral rmi" / "corral image prune -a"` };
  }
  if (codes.some((c) => TLS_CODES.test(c)) || /wrong version number|certificate|self[- ]signed|SSL routines/i.test(text)) {
    return {
      kind: 'tls', exitCode: 1, message: `${ctx.action}: TLS failure talking to ${reg}: ${base}`,
      hint: `if ${reg} serves plain HTTP, pass --insecure-registry ${ctx.registry ?? 'HOST'}; if it uses a private CA, put its ca.crt in <hosts-dir>/${ctx.registry ?? 'HOST'}/ (--hosts-dir)`,
    };
  }
  if (code === 'PERMISSION_DENIED' && ctx.remote) {
    return { kind: 'auth', exitCode: 1, message: `${ctx.action}: authentication required by ${reg} (${base})`, hint: `pass --creds USER:PASSWORD, or add credentials for ${reg} to ~/.docker/config.json (--authfile FILE)` };
  }
  if (codes.some((c) => NET_CODES.has(c)) || code === 'DEADLINE_EXCEEDED' || (code === 'UNAVAILABLE' && ctx.remote && !/HTTP \d/.test(base))) {
    return { kind: 'unreachable', exitCode: 1, message: `${ctx.action}: registry ${reg} is unreachable (${base})`, hint: `check the name and port, the network, and --hosts-dir mirrors for ${reg}` };
  }
  if (code === 'NOT_FOUND') {
    if (ctx.remote) return { kind: 'unknown-image', exitCode: 1, message: `${ctx.action}: ${ctx.image ?? 'image'} not found in ${reg} (${base})`, hint: 'check the repository name and the tag (names are case-sensitive; the default tag is "latest")' };
    return { kind: 'unknown-image', exitCode: 1, message: `No such image: ${ctx.image ?? ''} (${base})`.replace(': (', ' ('), hint: 'list local images with "corral images"; pull it with "corral pull"' };
  }
  if (code === 'FAILED_PRECONDITION') return { kind: 'in-use', exitCode: 1, message: `${ctx.action}: ${base}` };
  if (code === 'INVALID_ARGUMENT') return { kind: 'invalid', exitCode: 1, message: `${ctx.action}: ${base}` };
  return { kind: 'other', exitCode: 1, message: `${ctx.action}: ${base}` };
}
