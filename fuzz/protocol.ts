/**
 * What the fuzz runner and its child processes share: the outcome classes, the messages a
 * child writes on fd 3 (one JSON object a line, written synchronously so the runner has them
 * even when the child dies right after), and the target interface.
 */
import type { Rng } from './rng';

/**
 * - ok: the call returned a sane result;
 * - typed: it threw a documented error (InvadError, or the addon's TypeError/RangeError from
 *   its argument checks, or the caller's own exception propagating);
 * - untyped: any other error, or a wrong result (a non-finite score);
 * - crash: the process died (a signal, or an exit nobody asked for);
 * - hang: no answer within the case's timeout.
 */
export type Outcome = 'ok' | 'typed' | 'untyped' | 'crash' | 'hang';
export const OUTCOMES: readonly Outcome[] = ['ok', 'typed', 'untyped', 'crash', 'hang'];
/** The outcomes that fail a campaign. */
export const FAILURES: readonly Outcome[] = ['untyped', 'crash', 'hang'];

export interface ErrorInfo {
  name: string;
  message: string;
  code?: string;
  /** the first frames of the stack */
  stack?: string;
}

export type ChildMessage =
  | { t: 'ready'; ms: number }
  | { t: 'start'; seed: number }
  | { t: 'note'; seed: number; text: string }
  /** the case's work is legitimately large: it may run up to ms before it counts as a hang */
  | { t: 'slow'; seed: number; ms: number; why: string }
  /** counts: what the case fed the library (see CaseContext.count) */
  | { t: 'end'; seed: number; outcome: Outcome; key?: string; error?: ErrorInfo; ms: number; counts?: Record<string, number> }
  /** an uncaught exception or unhandled rejection: it would end a user's process, so a crash */
  | { t: 'fatal'; seed: number | null; error: ErrorInfo }
  /** the target's own code failed on this case: a fuzzer bug, not a finding about invad */
  | { t: 'harness'; seed: number; error: ErrorInfo }
  | { t: 'done' };

export interface CallResult<T> {
  ok: boolean;
  value?: T;
  error?: unknown;
}

export interface CallOptions {
  /** extra errors that are documented for this call (beyond InvadError and injected ones) */
  typed?: (err: unknown) => string | null;
  /** the API is async: a synchronous throw is itself a defect */
  async?: boolean;
}

/** What a target's case gets: its randomness, a scratch folder, and the outcome recorder. */
export interface CaseContext {
  readonly seed: number;
  readonly rng: Rng;
  /** a folder for this case's files, emptied after the case */
  readonly dir: string;
  /** a short description of the input, kept with any finding */
  note(text: string): void;
  /**
   * Gives this case up to `ms` before it counts as a hang, for a call that asks for a lot of
   * work inside the documented caps (a resize to 10^9 pixels takes 10-20 s on 2 loaded cores).
   */
  allow(ms: number, why: string): void;
  /** runs one API call and classifies what it throws; never throws itself */
  call<T>(what: string, fn: () => T | Promise<T>, options?: CallOptions): Promise<CallResult<T>>;
  /** records a wrong result (a returned value that breaks the API's contract) as untyped */
  wrong(what: string, message: string): void;
  /**
   * Counts what the case fed the library, for the campaign's figures: every call() counts as
   * one "calls"; a target adds its own kinds (the score target's "decoder inputs").
   */
  count(what: string, n?: number): void;
  /** records an outcome observed another way (a CLI process's exit); the worst one counts */
  report(outcome: Outcome, key: string, error?: ErrorInfo): void;
}

/** Worse outcomes rank higher: a case reports the worst of its calls. */
export const SEVERITY: Record<Outcome, number> = { ok: 0, typed: 1, untyped: 2, hang: 3, crash: 4 };

export interface FuzzTarget<S = unknown> {
  readonly name: TargetName;
  readonly description: string;
  /** per-case timeout, ms (a case running longer is a hang) */
  readonly timeoutMs: number;
  /** fixtures, built once per child process in `dir` */
  setup(dir: string): Promise<S>;
  run(state: S, ctx: CaseContext): Promise<void>;
  teardown?(state: S): Promise<void>;
}

/** The campaign's targets, run by default. */
export const TARGET_NAMES = ['addon', 'score', 'bundle', 'cli'] as const;
/** Every target --target accepts: the campaign's and the harness check. */
export const ALL_TARGETS = [...TARGET_NAMES, 'selftest'] as const;
export type TargetName = (typeof ALL_TARGETS)[number];

export function errorInfo(err: unknown): ErrorInfo {
  if (!(err instanceof Error)) return { name: typeof err, message: String(err).slice(0, 500) };
  const code = (err as { code?: unknown }).code;
  return {
    name: err.name,
    message: err.message.slice(0, 500),
    ...(typeof code === 'string' ? { code } : {}),
    stack: err.stack?.split('\n').slice(1, 7).join('\n'),
  };
}
