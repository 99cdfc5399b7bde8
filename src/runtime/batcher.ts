/**
 * Micro-batching: concurrent single requests are merged into one model run, up
 * to `maxBatch` items or `maxWaitMs` of waiting, whichever comes first. One
 * batch runs at a time; requests that arrive meanwhile form the next batch, so
 * batches grow by themselves under load. Explicit groups (scoreBatch chunks)
 * run as their own batch.
 */

/** Per-item outcome of a batch run: a value, or the error for that item only. */
export type ItemOutcome<R> = { ok: true; value: R } | { ok: false; error: Error };

export type BatchRunner<T, R> = (items: T[], key: string) => Promise<Array<ItemOutcome<R>>>;

interface Entry<T, R> {
  item: T;
  resolve: (r: R) => void;
  reject: (e: Error) => void;
}

interface Job<T, R> {
  entries: Array<Entry<T, R>>;
  /** items can only share a batch when their keys match (the score plan: S, map, mode) */
  key: string;
  group: boolean;
}

export interface BatcherOptions {
  maxBatch: number;
  maxWaitMs: number;
}

export class MicroBatcher<T, R> {
  private readonly queue: Array<Job<T, R>> = [];
  private busy = false;
  private timer: NodeJS.Timeout | undefined;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly run: BatchRunner<T, R>,
    private readonly options: BatcherOptions,
  ) {}

  submit(item: T, key: string): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ entries: [{ item, resolve, reject }], key, group: false });
      this.schedule();
    });
  }

  /** Runs `items` as one batch of their own; each item settles on its own. */
  submitGroup(items: T[], key: string): Array<Promise<R>> {
    const entries: Array<Entry<T, R>> = [];
    const promises = items.map(
      (item) =>
        new Promise<R>((resolve, reject) => {
          entries.push({ item, resolve, reject });
        }),
    );
    if (entries.length > 0) {
      this.queue.push({ entries, key, group: true });
      this.schedule();
    }
    return promises;
  }

  /** Resolves when the queue is empty and nothing runs. */
  drain(): Promise<void> {
    if (!this.busy && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  get pendingCount(): number {
    return this.queue.reduce((n, j) => n + j.entries.length, 0);
  }

  private schedule(): void {
    if (this.busy) return;
    const head = this.queue[0];
    if (!head) return;
    if (head.group || this.readySingles(head.key) >= this.options.maxBatch) {
      this.flush();
    } else if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.options.maxWaitMs);
    }
  }

  private readySingles(key: string): number {
    let n = 0;
    for (const job of this.queue) {
      if (job.group || job.key !== key) break;
      n++;
    }
    return n;
  }

  /** Takes the next batch off the queue: a group alone, or consecutive singles with one key. */
  private take(): Job<T, R> {
    const head = this.queue.shift()!;
    if (head.group) return head;
    const entries = head.entries.slice();
    while (entries.length < this.options.maxBatch && this.queue[0] && !this.queue[0].group && this.queue[0].key === head.key) {
      entries.push(...this.queue.shift()!.entries);
    }
    return { entries, key: head.key, group: false };
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.busy || this.queue.length === 0) return;
    const job = this.take();
    this.busy = true;
    this.run(
      job.entries.map((e) => e.item),
      job.key,
    )
      .then((outcomes) => {
        job.entries.forEach((e, i) => {
          const o = outcomes[i];
          if (!o) e.reject(new Error(`batch runner returned ${outcomes.length} outcomes for ${job.entries.length} items`));
          else if (o.ok) e.resolve(o.value);
          else e.reject(o.error);
        });
      })
      .catch((err: Error) => job.entries.forEach((e) => e.reject(err)))
      .finally(() => {
        this.busy = false;
        if (this.queue.length > 0) {
          // Whatever queued during the run has already waited; run it now.
          this.flush();
        } else {
          const waiters = this.idleWaiters;
          this.idleWaiters = [];
          waiters.forEach((w) => w());
        }
      });
  }
}
