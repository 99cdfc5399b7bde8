/**
 * The bounded queue in front of the Detector. Every image a request brings takes a slot from
 * when it is accepted until its answer is ready; a request that would go past `limit` is turned
 * away at once with 503 and Retry-After. So the backlog, and with it memory and latency, stays
 * bounded however fast clients send: an overloaded server sheds load instead of queueing it.
 */
import { HttpError } from './http-errors';

export class Admission {
  private held = 0;

  /**
   * @param limit most images in flight at once
   * @param retryAfterS what Retry-After tells a turned-away client, in seconds
   * @param onChange called with the new depth after every change (the queue-depth gauge)
   */
  constructor(
    readonly limit: number,
    private readonly retryAfterS: number,
    private readonly onChange: (depth: number) => void = () => {},
  ) {}

  /** Images accepted and not yet answered. */
  get depth(): number {
    return this.held;
  }

  /** True when not even one more image fits: checked before a body is read, to shed load cheaply. */
  get full(): boolean {
    return this.held >= this.limit;
  }

  /** The 503 a turned-away request gets. */
  overloaded(wanted: number): HttpError {
    return new HttpError(503, 'ERR_INVAD_OVERLOADED', `server busy: ${this.held} of ${this.limit} queue slots taken, ${wanted} more asked for; retry later`, {
      'retry-after': String(this.retryAfterS),
    });
  }

  /**
   * Takes `n` slots and runs `work`, giving them back when it settles, however it settles.
   * @throws HttpError 503 (ERR_INVAD_OVERLOADED) when the slots are not free; `work` does not run
   */
  async run<R>(n: number, work: () => Promise<R>): Promise<R> {
    if (this.held + n > this.limit) throw this.overloaded(n);
    this.held += n;
    this.onChange(this.held);
    try {
      return await work();
    } finally {
      this.held -= n;
      this.onChange(this.held);
    }
  }
}
