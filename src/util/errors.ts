/**
 * Typed errors with stable codes. Tests and callers match on `code`, never on
 * wording, so messages can improve without breaking anyone.
 */
export type InvadErrorCode =
  | 'ERR_INVAD_INVALID_ARGUMENT'
  | 'ERR_INVAD_INVALID_INPUT'
  | 'ERR_INVAD_REMOTE_UNAVAILABLE'
  | 'ERR_INVAD_REMOTE_TIMEOUT'
  | 'ERR_INVAD_REMOTE_REJECTED'
  | 'ERR_INVAD_REMOTE_UNAUTHORIZED'
  | 'ERR_INVAD_REMOTE_SERVER'
  | 'ERR_INVAD_REMOTE_PROTOCOL'
  | 'ERR_INVAD_MODEL_BUNDLE'
  | 'ERR_INVAD_MODEL_MISMATCH'
  | 'ERR_INVAD_DISPOSED'
  | 'ERR_INVAD_BINDING_LOAD'
  | 'ERR_INVAD_PROVIDER'
  | 'ERR_INVAD_INFERENCE'
  | 'ERR_INVAD_ENGINE_BROKEN'
  | 'ERR_INVAD_CUDA_UNAVAILABLE'
  | 'ERR_INVAD_TRAINING'
  | 'ERR_INVAD_ABORTED'
  | 'ERR_INVAD_EXPORT';

export interface InvadErrorOptions {
  cause?: unknown;
}

/** Base class of every error invad throws on purpose. */
export class InvadError extends Error {
  readonly code: InvadErrorCode;
  constructor(code: InvadErrorCode, message: string, options?: InvadErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
  }
}

/** A caller passed an argument of the wrong type or value (options, batch sizes, ...). */
export class InvalidArgumentError extends InvadError {
  /** The argument's name, e.g. `options.steps`. */
  readonly argument: string;
  constructor(argument: string, message: string, options?: InvadErrorOptions) {
    super('ERR_INVAD_INVALID_ARGUMENT', message, options);
    this.argument = argument;
  }
}

/** An image could not be read, decoded or converted (corrupt, empty, too large, ...). */
export class InvalidInputError extends InvadError {
  /** Which input: a file path, or `input[3]` for buffers and raw pixels. */
  readonly input: string;
  constructor(input: string, message: string, options?: InvadErrorOptions) {
    super('ERR_INVAD_INVALID_INPUT', message, options);
    this.input = input;
  }
}

/** The model bundle is missing a file, has an invalid manifest, or a hash mismatch. */
export class ModelBundleError extends InvadError {
  /** The file at fault, relative to the bundle folder (e.g. `manifest.json`). */
  readonly file: string;
  /** The manifest field or model property at fault, when there is one (e.g. `/features/channels`). */
  readonly field: string | undefined;
  constructor(file: string, field: string | undefined, message: string, options?: InvadErrorOptions) {
    super('ERR_INVAD_MODEL_BUNDLE', message, options);
    this.file = file;
    this.field = field;
  }
}

/** An ONNX model's inputs or outputs do not match what the manifest declares. */
export class ModelMismatchError extends InvadError {
  readonly file: string;
  readonly field: string;
  constructor(file: string, field: string, message: string, options?: InvadErrorOptions) {
    super('ERR_INVAD_MODEL_MISMATCH', message, options);
    this.file = file;
    this.field = field;
  }
}

/** A method was called after `dispose()`. */
export class DisposedError extends InvadError {
  constructor(what: string) {
    super('ERR_INVAD_DISPOSED', `${what} was called after dispose()`);
  }
}

/** No execution provider in the list could start a session. */
export class ProviderError extends InvadError {
  /** Each provider tried, with the reason it failed. */
  readonly attempts: ReadonlyArray<{ provider: string; error: string }>;
  constructor(message: string, attempts: ReadonlyArray<{ provider: string; error: string }>) {
    super('ERR_INVAD_PROVIDER', message);
    this.attempts = attempts;
  }
}

/** A model run or a native kernel failed at inference time. */
export class InferenceError extends InvadError {
  constructor(message: string, options?: InvadErrorOptions) {
    super('ERR_INVAD_INFERENCE', message, options);
  }
}

/**
 * The native engine hit a sticky device error (a CUDA illegal address, for
 * example) and cannot run again: every later call fails fast with this error.
 * CUDA stays unusable in the whole process after such an error, so dispose the
 * Detector and load it again in a new process.
 */
export class EngineBrokenError extends InvadError {
  constructor(message: string, options?: InvadErrorOptions) {
    super('ERR_INVAD_ENGINE_BROKEN', message, options);
  }
}

/** The compiled addon could not be loaded; `attempts` lists each candidate and why it failed. */
export class BindingLoadError extends InvadError {
  readonly attempts: ReadonlyArray<{ path: string; error: string }>;
  constructor(message: string, attempts: ReadonlyArray<{ path: string; error: string }>) {
    super('ERR_INVAD_BINDING_LOAD', message);
    this.attempts = attempts;
  }
}

/** Training failed: PyTorch missing, the trainer crashed, or the export did not match. */
export class TrainingError extends InvadError {
  constructor(message: string, options?: InvadErrorOptions) {
    super('ERR_INVAD_TRAINING', message, options);
  }
}

/** A long operation (fit) was cancelled through its AbortSignal or Ctrl-C. */
export class AbortedError extends InvadError {
  constructor(what: string) {
    super('ERR_INVAD_ABORTED', `${what} was aborted`);
  }
}

/** The codes of {@link RemoteError}, one per way a remote inference call fails. */
export type RemoteErrorCode = Extract<InvadErrorCode, `ERR_INVAD_REMOTE_${string}`>;

/**
 * A call to a remote inference server (`invad serve`, or Triton serving `invad export`) failed.
 * The code says how, so a caller can decide whether to retry:
 * - `ERR_INVAD_REMOTE_UNAVAILABLE`: no connection (refused, reset, DNS), or the server is
 *   overloaded or not ready (HTTP 429, 502, 503, 504); retry later, after `retryAfterMs` if set;
 * - `ERR_INVAD_REMOTE_TIMEOUT`: no complete answer within the timeout;
 * - `ERR_INVAD_REMOTE_REJECTED`: the server refused the request (HTTP 400, 404, 413, other 4xx);
 *   retrying the same request will not help;
 * - `ERR_INVAD_REMOTE_UNAUTHORIZED`: no or wrong API key (HTTP 401, 403);
 * - `ERR_INVAD_REMOTE_SERVER`: the server failed (HTTP 500, other 5xx);
 * - `ERR_INVAD_REMOTE_PROTOCOL`: the answer is not a valid KServe v2 answer for this model.
 */
export class RemoteError extends InvadError {
  /** The URL of the request that failed. */
  readonly url: string;
  /** The HTTP status, or null when no answer came. */
  readonly status: number | null;
  /** The server's Retry-After, in milliseconds; null when it sent none. */
  readonly retryAfterMs: number | null;
  /** The server's own error code when its error body has one (invad serve sends its InvadError code). */
  readonly remoteCode: string | null;
  constructor(
    code: RemoteErrorCode,
    message: string,
    details: { url: string; status?: number | null; retryAfterMs?: number | null; remoteCode?: string | null },
    options?: InvadErrorOptions,
  ) {
    super(code, message, options);
    this.url = details.url;
    this.status = details.status ?? null;
    this.retryAfterMs = details.retryAfterMs ?? null;
    this.remoteCode = details.remoteCode ?? null;
  }
}

/**
 * A bundle that Detector runs cannot be exported as one ONNX graph (`invad export`): an operator
 * set the export cannot convert, a fixed batch size, external tensor data, and the like.
 */
export class ExportError extends InvadError {
  /** The bundle file at fault (e.g. `backbone.onnx`), or `manifest.json`. */
  readonly file: string;
  constructor(file: string, message: string, options?: InvadErrorOptions) {
    super('ERR_INVAD_EXPORT', message, options);
    this.file = file;
  }
}

/** Plain-object form of an error, for crossing the worker-thread boundary. */
export interface SerializedError {
  name: string;
  message: string;
  code?: string;
  stack?: string;
  props?: Record<string, unknown>;
  /** the error's `cause`, when it has one (ORT's own error behind a ModelBundleError, say) */
  cause?: SerializedError;
}

const ERROR_PROPS = ['file', 'field', 'argument', 'input', 'attempts'] as const;

export function serializeError(err: unknown, depth = 0): SerializedError {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err) };
  const props: Record<string, unknown> = {};
  for (const key of ERROR_PROPS) if (key in err) props[key] = (err as unknown as Record<string, unknown>)[key];
  // A few levels of causes at most: a cause chain may loop.
  const cause = err.cause !== undefined && depth < 4 ? { cause: serializeError(err.cause, depth + 1) } : {};
  return { name: err.name, message: err.message, code: (err as { code?: string }).code, stack: err.stack, props, ...cause };
}

/** A cause keeps its name, message and stack but not its class: it explains, nobody matches on it. */
function reviveCause(s: SerializedError): Error {
  const err = new Error(s.message, s.cause ? { cause: reviveCause(s.cause) } : undefined);
  err.name = s.name;
  if (s.stack) err.stack = s.stack;
  return err;
}

/** Rebuilds the typed error a worker threw, keeping its class, code and fields. */
export function reviveError(s: SerializedError): Error {
  const p = (s.props ?? {}) as Record<string, never>;
  let err: Error;
  switch (s.name) {
    case 'InvalidArgumentError':
      err = new InvalidArgumentError(p.argument, s.message);
      break;
    case 'InvalidInputError':
      err = new InvalidInputError(p.input, s.message);
      break;
    case 'ModelBundleError':
      err = new ModelBundleError(p.file, p.field, s.message);
      break;
    case 'ModelMismatchError':
      err = new ModelMismatchError(p.file, p.field, s.message);
      break;
    case 'ProviderError':
      err = new ProviderError(s.message, p.attempts);
      break;
    case 'BindingLoadError':
      err = new BindingLoadError(s.message, p.attempts);
      break;
    case 'EngineBrokenError':
      err = new EngineBrokenError(s.message);
      break;
    case 'TypeError':
      err = new TypeError(s.message);
      break;
    case 'RangeError':
      err = new RangeError(s.message);
      break;
    default:
      err = new InferenceError(s.message);
  }
  if (s.stack) err.stack = s.stack;
  if (s.cause) Object.defineProperty(err, 'cause', { value: reviveCause(s.cause), writable: true, configurable: true });
  return err;
}
