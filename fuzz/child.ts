/**
 * One fuzz child process: sets up a target's fixtures, then runs cases `first` to
 * `first + count - 1`, reporting each on fd 3 before and after it runs. The runner owns
 * timeouts, crashes and restarts; this side only classifies what the calls throw.
 *
 *   node dist/fuzz/child.js <target> <first seed> <count> <work dir>
 */
import { mkdirSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { InvadError } from '../src/util/errors';
import {
  type CallOptions,
  type CallResult,
  type CaseContext,
  type ChildMessage,
  errorInfo,
  type ErrorInfo,
  type FuzzTarget,
  type Outcome,
  SEVERITY,
  ALL_TARGETS,
  type TargetName,
} from './protocol';
import { Rng } from './rng';
import { loadTarget } from './targets';
import { FuzzInjectedError } from './values';

const PROTOCOL_FD = 3;

function send(msg: ChildMessage): void {
  const line = Buffer.from(JSON.stringify(msg) + '\n');
  let off = 0;
  while (off < line.length) {
    try {
      off += writeSync(PROTOCOL_FD, line, off);
    } catch (err) {
      // The runner reads continuously; a full pipe only needs a moment.
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
    }
  }
}

/** The worst outcome of a case's calls, with the first error that made it so. */
class CaseRecorder implements CaseContext {
  outcome: Outcome = 'ok';
  key: string | undefined;
  error: ErrorInfo | undefined;
  readonly counts: Record<string, number> = {};

  constructor(
    readonly seed: number,
    readonly rng: Rng,
    readonly dir: string,
  ) {}

  note(text: string): void {
    send({ t: 'note', seed: this.seed, text: text.slice(0, 400) });
  }

  allow(ms: number, why: string): void {
    send({ t: 'slow', seed: this.seed, ms, why });
  }

  count(what: string, n = 1): void {
    this.counts[what] = (this.counts[what] ?? 0) + n;
  }

  report(outcome: Outcome, key: string, error?: ErrorInfo): void {
    if (SEVERITY[outcome] <= SEVERITY[this.outcome]) return;
    this.outcome = outcome;
    this.key = key;
    this.error = error;
  }

  async call<T>(what: string, fn: () => T | Promise<T>, options: CallOptions = {}): Promise<CallResult<T>> {
    let pending: T | Promise<T>;
    this.count('calls');
    try {
      pending = fn();
    } catch (err) {
      if (options.async) {
        this.report('untyped', `${what}: threw synchronously`, {
          ...errorInfo(err),
          message: `${what} threw synchronously instead of rejecting: ${errorInfo(err).message}`,
        });
        return { ok: false, error: err };
      }
      this.classify(what, err, options);
      return { ok: false, error: err };
    }
    try {
      return { ok: true, value: await pending };
    } catch (err) {
      this.classify(what, err, options);
      return { ok: false, error: err };
    }
  }

  private classify(what: string, err: unknown, options: CallOptions): void {
    if (err instanceof InvadError) return this.report('typed', err.code, errorInfo(err));
    if (err instanceof FuzzInjectedError || (err instanceof Error && err.cause instanceof FuzzInjectedError))
      return this.report('typed', 'injected', errorInfo(err));
    const documented = options.typed?.(err) ?? null;
    if (documented !== null) return this.report('typed', documented, errorInfo(err));
    const info = errorInfo(err);
    this.report('untyped', `${what}: ${info.name}`, { ...info, message: `${what}: ${info.message}` });
  }

  wrong(what: string, message: string): void {
    this.report('untyped', `${what}: wrong result`, { name: 'WrongResult', message: `${what}: ${message}` });
  }
}

async function main(): Promise<void> {
  const [name, firstText, countText, workDir] = process.argv.slice(2);
  if (!ALL_TARGETS.includes(name as TargetName)) throw new Error(`unknown target ${name}`);
  const target = loadTarget(name as TargetName) as FuzzTarget;
  const first = Number(firstText);
  const count = Number(countText);
  let current: number | null = null;
  const fatal = (err: unknown) => {
    send({ t: 'fatal', seed: current, error: errorInfo(err) });
    process.exit(70);
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);

  const t0 = performance.now();
  const state = await target.setup(join(workDir, 'fixtures'));
  send({ t: 'ready', ms: performance.now() - t0 });
  for (let seed = first; seed < first + count; seed++) {
    current = seed;
    const dir = join(workDir, `case-${seed}`);
    mkdirSync(dir, { recursive: true });
    send({ t: 'start', seed });
    const start = performance.now();
    const rec = new CaseRecorder(seed, new Rng(seed, name), dir);
    try {
      await target.run(state, rec);
    } catch (err) {
      send({ t: 'harness', seed, error: errorInfo(err) });
    }
    send({ t: 'end', seed, outcome: rec.outcome, key: rec.key, error: rec.error, ms: performance.now() - start, counts: rec.counts });
    rmSync(dir, { recursive: true, force: true });
  }
  current = null;
  await target.teardown?.(state);
  send({ t: 'done' });
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    // An error out of the harness itself (setup, or a target's own code): not the library's.
    process.stderr.write(`fuzz child: harness error: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(71);
  },
);
