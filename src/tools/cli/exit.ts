/**
 * The CLI's exit codes: one convention for every command, stated in `--help` and the README.
 * Scripts and line controllers branch on them, so they must not depend on which command ran
 * or on how an error was found (commander's parser, an option's parser, the runtime).
 */
import { CommanderError } from 'commander';
import { InvadError } from '../../util/errors';

/** Everything went through. */
export const EXIT_OK = 0;
/** The command finished, but some inputs failed; each failure is in the output. */
export const EXIT_INPUT_FAILED = 1;
/** Nothing was done: bad usage or option values, or a setup error (missing or invalid model bundle, unreadable paths). */
export const EXIT_USAGE = 2;
/** An unexpected error inside invad (a bug): the message says so, with its stack. */
export const EXIT_INTERNAL = 3;

/** The exit-code section appended to every command's `--help`. */
export const EXIT_CODES_HELP = `
Exit codes:
  0  success
  1  the command finished, but some inputs failed (each failure is reported in the output)
  2  usage or setup error: bad arguments or option values, a missing or invalid model bundle,
     unreadable paths; nothing was done
  3  internal error (a bug in invad: please report it with the message)`;

/** A usage problem found by a command's own checks (commander's are CommanderErrors). */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Node's errors from the operating system (ENOENT, EACCES, ENOSPC, ...): setup problems, not bugs. */
function isSystemError(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string' && typeof (err as NodeJS.ErrnoException).syscall === 'string';
}

export interface ExitDecision {
  code: number;
  /** the line(s) to print on stderr; empty when commander already printed its own message */
  message: string;
}

/**
 * The exit code and message for an error that ended a command.
 * @param err what the command (or commander) threw
 * @param alreadyPrinted whether commander has written this error to stderr itself
 */
export function exitFor(err: unknown, alreadyPrinted: boolean): ExitDecision {
  if (err instanceof CommanderError) {
    // --help and --version end with exit code 0; every other commander error is usage.
    const code = err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    return { code, message: alreadyPrinted || code === EXIT_OK ? '' : `invad: ${err.message.replace(/^error: /, '')}\n` };
  }
  if (err instanceof InvadError) return { code: EXIT_USAGE, message: `invad: ${err.message} [${err.code}]\n` };
  if (err instanceof UsageError || isSystemError(err)) return { code: EXIT_USAGE, message: `invad: ${(err as Error).message}\n` };
  const detail = err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err);
  return { code: EXIT_INTERNAL, message: `invad: internal error (please report it): ${detail}\n` };
}
