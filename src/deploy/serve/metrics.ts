/**
 * The server's Prometheus metrics (prom-client), in a registry of each server's own: two
 * servers in one process (tests, a blue-green switch) never share or clash on counters.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ScoreResult } from '../../runtime/detector';

/** Latency buckets in seconds: 0.5 ms to 10 s, as a scored image spans both ends. */
const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The pipeline stages of one image, by their name in ScoreResult.timings. */
const STAGES = ['decode', 'preprocess', 'queue', 'backbone', 'unet', 'kernel', 'resize', 'total'] as const;

export class ServeMetrics {
  /** Where every metric below is registered; `GET /metrics` renders it. */
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: 'invad_http_requests_total',
    help: 'HTTP requests answered, by route, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [this.registry],
  });
  private readonly requestSeconds = new Histogram({
    name: 'invad_http_request_duration_seconds',
    help: 'Time from the request headers to the answer, by route and status (a 503 from the full queue is answered before its body is read)',
    labelNames: ['route', 'status'] as const,
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });
  private readonly errors = new Counter({
    name: 'invad_errors_total',
    help: 'Error answers, by code (an InvadError code or a server code such as ERR_INVAD_OVERLOADED)',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });
  private readonly queueDepth = new Gauge({
    name: 'invad_queue_depth',
    help: 'Images accepted and not yet answered (decoding, waiting for a batch, or running)',
    registers: [this.registry],
  });
  private readonly queueLimit = new Gauge({
    name: 'invad_queue_limit',
    help: 'The queue bound (--max-queue); past it requests get 503',
    registers: [this.registry],
  });
  private readonly images = new Counter({
    name: 'invad_images_scored_total',
    help: 'Images scored',
    registers: [this.registry],
  });
  private readonly batchSize = new Histogram({
    name: 'invad_batch_size',
    help: 'Images in the model run that scored an image (observed once per image)',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128],
    registers: [this.registry],
  });
  private readonly stageSeconds = new Histogram({
    name: 'invad_stage_duration_seconds',
    help: "Per-image time in each pipeline stage (backbone, unet, kernel and resize are the image's model run, shared by its batch)",
    labelNames: ['stage'] as const,
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });

  constructor(queueLimit: number) {
    this.queueLimit.set(queueLimit);
    // Process RSS, open file descriptors, event-loop lag, GC: what a soak or an alert watches.
    collectDefaultMetrics({ register: this.registry });
  }

  /** One answered request; `route` is the route pattern (bounded cardinality), never the raw URL. */
  request(route: string, method: string, status: number, seconds: number): void {
    this.requests.inc({ route, method, status: String(status) });
    this.requestSeconds.observe({ route, status: String(status) }, seconds);
  }

  error(code: string): void {
    this.errors.inc({ code });
  }

  setQueueDepth(images: number): void {
    this.queueDepth.set(images);
  }

  /** Records one scored image's batch size and stage times. */
  scored(r: ScoreResult): void {
    const t = r.timings;
    const ms: Record<(typeof STAGES)[number], number> = {
      decode: t.decodeMs,
      preprocess: t.preprocessMs,
      queue: t.queueMs,
      backbone: t.backboneMs,
      unet: t.unetMs.reduce((a, v) => a + v, 0),
      kernel: t.kernelMs,
      resize: t.resizeMs,
      total: t.totalMs,
    };
    for (const stage of STAGES) this.stageSeconds.observe({ stage }, ms[stage] / 1000);
    this.batchSize.observe(t.batchSize);
    this.images.inc();
  }

  /** The Prometheus text exposition of every metric. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
