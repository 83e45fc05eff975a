import { constants as osConstants } from 'node:os';

/**
 * The one error hierarchy of Corral. Every error a user can see is a CorralError
 * with a stable `code`; errno values from the kernel are mapped to these classes
 * in exactly one place (`fromErrno`).
 */

export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'FAILED_PRECONDITION'
  | 'PERMISSION_DENIED'
  | 'UNAVAILABLE'
  | 'RESOURCE_EXHAUSTED'
  | 'DEADLINE_EXCEEDED'
  | 'UNIMPLEMENTED'
  | 'INTERNAL';

export class CorralError extends Error {
  readonly code: ErrorCode = 'INTERNAL';
  /** errno name (e.g. "EPERM") when the failure came from the kernel. */
  errno?: string;
  constructor(message: string, options?: { cause?: unknown; errno?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    if (options?.errno) this.errno = options.errno;
  }
}

export class InvalidArgumentError extends CorralError {
  override readonly code = 'INVALID_ARGUMENT';
}
export class NotFoundError extends CorralError {
  override readonly code = 'NOT_FOUND';
}
export class AlreadyExistsError extends CorralError {
  override readonly code = 'ALREADY_EXISTS';
}
export class FailedPreconditionError extends CorralError {
  override readonly code = 'FAILED_PRECONDITION';
}
export class PermissionDeniedError extends CorralError {
  override readonly code = 'PERMISSION_DENIED';
}
export class UnavailableError extends CorralError {
  override readonly code = 'UNAVAILABLE';
}
export class ResourceExhaustedError extends CorralError {
  override readonly code = 'RESOURCE_EXHAUSTED';
}
export class DeadlineExceededError extends CorralError {
  override readonly code = 'DEADLINE_EXCEEDED';
}
export class UnimplementedError extends CorralError {
  override readonly code = 'UNIMPLEMENTED';
}
export class InternalError extends CorralError {
  override readonly code = 'INTERNAL';
}

/** A config.json (or other document) problem at a JSON path such as `linux.namespaces[2].type`. */
export class SpecError extends InvalidArgumentError {
  readonly path: string;
  readonly reason: string;
  constructor(path: string, reason: string) {
    super(`${path}: ${reason}`);
    this.path = path;
    this.reason = reason;
  }
}

const errnoClasses: Record<string, new (m: string, o?: { cause?: unknown; errno?: string }) => CorralError> = {
  ENOENT: NotFoundError,
  ESRCH: NotFoundError,
  EEXIST: AlreadyExistsError,
  EPERM: PermissionDeniedError,
  EACCES: PermissionDeniedError,
  EROFS: PermissionDeniedError,
  EINVAL: InvalidArgumentError,
  ENOTDIR: InvalidArgumentError,
  EISDIR: InvalidArgumentError,
  ELOOP: InvalidArgumentError,
  EXDEV: InvalidArgumentError,
  ENAMETOOLONG: InvalidArgumentError,
  EBUSY: FailedPreconditionError,
  ENOTEMPTY: FailedPreconditionError,
  ENOSPC: ResourceExhaustedError,
  EDQUOT: ResourceExhaustedError,
  ENOMEM: ResourceExhaustedError,
  EMFILE: ResourceExhaustedError,
  EAGAIN: UnavailableError,
  ECONNREFUSED: UnavailableError,
  ETIMEDOUT: DeadlineExceededError,
  ENOSYS: UnimplementedError,
  EOPNOTSUPP: UnimplementedError,
  ENOTSUP: UnimplementedError,
};

/** The single errno → CorralError boundary. `what` says what was being done ("mount /proc"). */
export function fromErrno(errno: string, what: string, detail?: string, cause?: unknown): CorralError {
  const Cls = errnoClasses[errno] ?? InternalError;
  const hint = errnoHints[errno];
  const msg = `${what}: ${errno}${detail ? ` (${detail})` : ''}${hint ? `; ${hint}` : ''}`;
  return new Cls(msg, { cause, errno });
}

const errnoHints: Record<string, string> = {
  ENOSPC: 'the disk or a kernel limit is full',
  EROFS: 'the target is on a read-only file system',
};

/** Wrap a Node fs/child_process error (which carries `code: "ENOENT"` etc.) at the boundary. */
export function fromNodeError(err: unknown, what: string): CorralError {
  if (err instanceof CorralError) return err;
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return fromErrno(code, what, undefined, err);
  const message = err instanceof Error ? err.message : String(err);
  return new InternalError(`${what}: ${message}`, { cause: err });
}

/** errno number → name on this host (from the platform's own table), for numbers the executor reports. */
export const errnoNames: Record<number, string> = {};
for (const [name, n] of Object.entries(osConstants.errno)) errnoNames[n] ??= name; // first name wins: EAGAIN, not EWOULDBLOCK
