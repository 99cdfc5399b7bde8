/**
 * The main-thread side of the engine worker: starts it, sends batches, and
 * matches results to requests. Nothing here blocks the event loop.
 *
 * The worker holds the process open only while it has work: it is ref'd from a request until
 * its answer (and while starting or closing), and unref'd when idle, so a script that forgets
 * dispose() still exits once its last score() has settled.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { InferenceError, reviveError } from '../../util/errors';
import { packageRoot } from '../../util/package-info';
import {
  checkIntraOpThreads,
  type EngineConfig,
  type EngineReady,
  type FeaturesRequest,
  type FeaturesResult,
  type RunRequest,
  type RunResult,
  type ScorePlan,
  type WorkerToMain,
} from './protocol';

/** The compiled worker script. Under ts-jest this file is .ts, so use the build in dist/. */
function workerScript(): string {
  const here = join(__dirname, 'worker.js');
  if (__filename.endsWith('.js') && existsSync(here)) return here;
  const built = join(packageRoot(), 'dist', 'src', 'runtime', 'engine', 'worker.js');
  if (!existsSync(built)) throw new InferenceError(`engine worker script not found at ${built}; run \`npm run build:ts\``);
  return built;
}

interface Pending {
  resolve: (r: RunResult | FeaturesResult) => void;
  reject: (e: Error) => void;
}

export class EngineClient {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private dead: Error | undefined;
  private closed: Promise<void> | undefined;

  private constructor(worker: Worker) {
    this.worker = worker;
  }

  /** Starts the worker and resolves once both sessions are open and checked. */
  static async start(config: EngineConfig): Promise<{ client: EngineClient; ready: EngineReady }> {
    // Every engine start, whoever asks (Detector, fit, bench), in both engines.
    checkIntraOpThreads('intraOpThreads', config.intraOpThreads);
    const worker = new Worker(workerScript(), { workerData: config });
    const client = new EngineClient(worker);
    const ready = await new Promise<EngineReady>((resolve, reject) => {
      const onMessage = (msg: WorkerToMain) => {
        if (msg.type === 'ready') {
          worker.off('message', onMessage);
          resolve(msg);
        } else if (msg.type === 'init-error') {
          reject(reviveError(msg.error));
          void worker.terminate();
        }
      };
      worker.on('message', onMessage);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new InferenceError(`engine worker exited during start-up (code ${code})`)));
    });
    worker.removeAllListeners('error');
    worker.removeAllListeners('exit');
    client.listen();
    client.holdWhileBusy();
    return { client, ready };
  }

  /** Keeps the process alive while a request waits for its answer or the worker is closing, not while idle. */
  private holdWhileBusy(): void {
    if (this.pending.size > 0 || this.closed) this.worker.ref();
    else this.worker.unref();
  }

  private listen(): void {
    this.worker.on('message', (msg: WorkerToMain) => {
      if (msg.type !== 'result' && msg.type !== 'features' && msg.type !== 'error') return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      this.holdWhileBusy();
      if (msg.type === 'error') p.reject(reviveError(msg.error));
      else p.resolve(msg);
    });
    const fail = (err: Error) => {
      this.dead = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', (err) => fail(new InferenceError(`engine worker crashed: ${err.message}`, { cause: err })));
    this.worker.on('exit', (code) => {
      if (!this.closed) fail(new InferenceError(`engine worker exited unexpectedly (code ${code})`));
    });
  }

  /** Scores one preprocessed batch. The batch buffer is transferred, not copied. */
  run(batch: Float32Array, n: number, sizes: Array<{ width: number; height: number }>, plan: ScorePlan): Promise<RunResult> {
    return this.request({ type: 'run', id: this.nextId++, batch, n, sizes, plan }) as Promise<RunResult>;
  }

  /** Resolves to the inverted latents x_T at S steps, n x C x h x w. */
  async latents(batch: Float32Array, n: number, steps: number): Promise<Float32Array> {
    const r = (await this.request({ type: 'features', id: this.nextId++, batch, n, steps })) as FeaturesResult;
    return r.features;
  }

  /** Runs the backbone only; resolves to the clean features, n x C x h x w. */
  async features(batch: Float32Array, n: number): Promise<Float32Array> {
    const r = (await this.request({ type: 'features', id: this.nextId++, batch, n })) as FeaturesResult;
    return r.features;
  }

  private request(msg: RunRequest | FeaturesRequest): Promise<RunResult | FeaturesResult> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      this.pending.set(msg.id, { resolve, reject });
      this.holdWhileBusy();
      this.worker.postMessage(msg, [msg.batch.buffer as ArrayBuffer]);
    });
  }

  /** Releases the sessions after queued runs finish, then stops the worker. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      // A pending dispose() keeps the process alive until the sessions are released.
      this.worker.ref();
      if (!this.dead) {
        await new Promise<void>((resolve) => {
          const onMessage = (msg: WorkerToMain) => {
            if (msg.type === 'closed') resolve();
          };
          this.worker.on('message', onMessage);
          this.worker.once('exit', () => resolve());
          this.worker.postMessage({ type: 'close' });
        });
      }
      await this.worker.terminate();
    })();
    return this.closed;
  }
}
