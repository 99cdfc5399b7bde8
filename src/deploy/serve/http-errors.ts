/**
 * How `invad serve` answers a failure: an HTTP status and a JSON body `{ error, code }`. The
 * body is the KServe v2 error object (`error`, the message) plus invad's stable `code`, so a
 * client branches on `code` (an InvadError's, or one of {@link ServeErrorCode}) and never on
 * wording.
 */
import { InvadError, type InvadErrorCode } from '../../util/errors';

/** Codes for failures that belong to the server, not to the runtime. */
export type ServeErrorCode =
  /** no or wrong API key (401) */
  | 'ERR_INVAD_UNAUTHORIZED'
  /** the bounded queue is full (503 with Retry-After) */
  | 'ERR_INVAD_OVERLOADED'
  /** the body is over --body-limit (413) */
  | 'ERR_INVAD_BODY_TOO_LARGE'
  /** the model is not loaded yet, or the server is shutting down (503) */
  | 'ERR_INVAD_NOT_READY'
  /** no such route or model (404) */
  | 'ERR_INVAD_NOT_FOUND'
  /** the HTTP request itself is malformed: bad JSON, a bad header, a wrong content type (400, 415) */
  | 'ERR_INVAD_BAD_REQUEST'
  /** anything unexpected (500); the message says what */
  | 'ERR_INVAD_INTERNAL';

/** The JSON body of every error answer. */
export interface ErrorBody {
  error: string;
  code: ServeErrorCode | InvadErrorCode;
}

/** A failure with its HTTP status, raised by the server's own checks. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: ServeErrorCode | InvadErrorCode,
    message: string,
    /** extra response headers, e.g. Retry-After */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** The HTTP status for a runtime error: the caller's fault is 400, a shut-down detector 503, the rest 500. */
function statusOfInvadError(code: InvadErrorCode): number {
  switch (code) {
    case 'ERR_INVAD_INVALID_INPUT':
    case 'ERR_INVAD_INVALID_ARGUMENT':
      return 400;
    case 'ERR_INVAD_DISPOSED':
      return 503;
    default:
      return 500;
  }
}

/** Fastify's own errors (body parsing, limits) carry a statusCode and an FST_ code. */
interface FrameworkError extends Error {
  statusCode?: number;
  code?: string;
}

/** The status, headers and body for anything a handler or fastify threw. */
export function errorAnswer(err: unknown): { status: number; headers: Readonly<Record<string, string>>; body: ErrorBody } {
  if (err instanceof HttpError) return { status: err.status, headers: err.headers, body: { error: err.message, code: err.code } };
  if (err instanceof InvadError) return { status: statusOfInvadError(err.code), headers: {}, body: { error: err.message, code: err.code } };
  const e = err instanceof Error ? (err as FrameworkError) : new Error(String(err));
  const status = (e as FrameworkError).statusCode;
  if (status === 413 || (e as FrameworkError).code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return { status: 413, headers: {}, body: { error: e.message, code: 'ERR_INVAD_BODY_TOO_LARGE' } };
  }
  if (status !== undefined && status >= 400 && status < 500) return { status, headers: {}, body: { error: e.message, code: 'ERR_INVAD_BAD_REQUEST' } };
  return { status: 500, headers: {}, body: { error: `internal error: ${e.message}`, code: 'ERR_INVAD_INTERNAL' } };
}
