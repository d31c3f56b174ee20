import { LockBusyError, NotFoundError, RktError, UsageError } from '../errors.js';

// Failures of an API call as gRPC status codes. A request the service cannot
// answer gets a status and a one-line message saying why; it never ends the
// service.

export type StatusName = 'INVALID_ARGUMENT' | 'NOT_FOUND' | 'UNIMPLEMENTED' | 'FAILED_PRECONDITION' | 'UNAVAILABLE' | 'INTERNAL';

export class ApiError extends RktError {
  constructor(
    readonly status: StatusName,
    message: string,
  ) {
    super(message);
  }
}

export function statusOf(err: unknown): { status: StatusName; message: string } {
  if (err instanceof ApiError) return { status: err.status, message: err.message };
  if (err instanceof UsageError || err instanceof RangeError) return { status: 'INVALID_ARGUMENT', message: err.message };
  if (err instanceof NotFoundError) return { status: 'NOT_FOUND', message: err.message };
  if (err instanceof LockBusyError) return { status: 'UNAVAILABLE', message: err.message };
  if (err instanceof RktError) return { status: 'FAILED_PRECONDITION', message: err.message };
  return { status: 'INTERNAL', message: `internal error: ${err instanceof Error ? err.message : String(err)}` };
}
