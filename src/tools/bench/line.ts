/**
 * The line-controller scenario: cameras hand over raw frames at a fixed rate and
 * every result is due within one frame period.
 *
 * - `concurrency` producers. fpsMode 'each' (default): every producer delivers
 *   `fps` frames per second and all are triggered together, as cameras on one
 *   line encoder are (a burst of `concurrency` frames every period; offered load
 *   fps x concurrency). fpsMode 'split': the producers share `fps` round-robin,
 *   evenly staggered (offered load fps).
 * - The schedule is drift-free: frame k of a producer is due at
 *   start + offset + k x period, whatever the timers did before. Latency runs
 *   from that due time (the frame's arrival) to the result, so a late timer or a
 *   busy event loop counts against the result, as it would on the line.
 * - The deadline is one frame period, 1000 / fps ms. A frame that finds
 *   `maxInFlight` frames unanswered is dropped (counted; a real controller would
 *   skip it rather than queue without bound).
 * - The in-flight count (frames handed to score() and not yet answered: queue
 *   depth) is sampled every `sampleMs`.
 * - Then a saturation phase: `concurrency` closed loops call score() back to
 *   back for `saturationMs`; images per second there is the throughput ceiling.
 */
import { performance } from 'node:perf_hooks';
import type { Detector } from '../../runtime/detector';
import type { DriftInfo } from '../../runtime/drift';
import { type BenchImages, type InputKind, pick } from './images';
import { CpuMonitor, type CpuLoad, peakRssMiB } from './machine';
import { type Summary, summarize } from './stats';

export type LineMode = 'each' | 'split';

export interface LineOptions {
  fps: number;
  durationMs: number;
  concurrency: number;
  fpsMode: LineMode;
  saturationMs: number;
  sampleMs: number;
  maxInFlight: number;
  warmup: number;
  steps?: number;
  input: InputKind;
  onProgress?: (line: string) => void;
}

export interface LineSecond {
  /** seconds since the start */
  t: number;
  arrived: number;
  misses: number;
  dropped: number;
  p99Ms: number;
  maxInFlight: number;
}

export interface LineResult {
  fps: number;
  fpsMode: LineMode;
  concurrency: number;
  durationMs: number;
  deadlineMs: number;
  offeredFps: number;
  frames: { offered: number; completed: number; failed: number; dropped: number };
  /** arrival (due time) -> result, ms */
  latency: Summary;
  /** results later than one frame period */
  misses: number;
  missRate: number;
  /** misses plus dropped frames, over offered frames */
  missOrDropRate: number;
  /** how late the timers handed frames over, ms */
  dispatchLag: Summary;
  /** images per model run */
  batchSize: Summary;
  completedFps: number;
  queueDepth: { sampleMs: number; samples: Array<[tMs: number, inFlight: number]>; max: number; mean: number };
  perSecond: LineSecond[];
  saturation: null | { concurrency: number; durationMs: number; images: number; imagesPerSecond: number; latency: Summary; batchSize: Summary };
  peakRssMiB: number;
  cpu: CpuLoad;
  /** the detector's drift report at the scenario's S after the line phase (warm-up frames included), before saturation */
  drift: DriftInfo;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

export async function benchLine(det: Detector, images: BenchImages, o: LineOptions): Promise<LineResult> {
  const steps = o.steps === undefined ? {} : { steps: o.steps };
  const period = 1000 / o.fps;
  const producerPeriod = o.fpsMode === 'each' ? period : period * o.concurrency;
  const offset = (k: number) => (o.fpsMode === 'each' ? 0 : k * period);

  // warm-up: a few bursts at the scenario's concurrency, untimed
  for (let i = 0; i < o.warmup; i++) {
    await Promise.all(Array.from({ length: o.concurrency }, (_, k) => det.score(pick(images, o.input, i * o.concurrency + k), steps)));
  }

  o.onProgress?.(
    `line: ${o.concurrency} producers, ${o.fpsMode === 'each' ? `${o.fps} fps each` : `${o.fps} fps shared`}, ${(o.durationMs / 1000).toFixed(1)} s`,
  );
  const latencies: number[] = [];
  const lags: number[] = [];
  const batchSizes: number[] = [];
  const seconds = new Map<number, { arrived: number; misses: number; dropped: number; lat: number[]; maxInFlight: number }>();
  const second = (tRel: number) => {
    const s = Math.floor(tRel / 1000);
    let e = seconds.get(s);
    if (!e) seconds.set(s, (e = { arrived: 0, misses: 0, dropped: 0, lat: [], maxInFlight: 0 }));
    return e;
  };
  let inFlight = 0;
  let offered = 0;
  let completed = 0;
  let failed = 0;
  let dropped = 0;
  let misses = 0;
  const pending = new Set<Promise<void>>();
  const samples: Array<[number, number]> = [];

  const cpu = new CpuMonitor();
  const start = performance.now() + 20;
  const end = start + o.durationMs;
  const sampler = setInterval(() => {
    const t = performance.now() - start;
    samples.push([Math.round(t), inFlight]);
    const s = second(Math.max(0, t));
    s.maxInFlight = Math.max(s.maxInFlight, inFlight);
  }, o.sampleMs);

  const deliver = (due: number, frameIndex: number) => {
    offered++;
    const sec = second(due - start);
    sec.arrived++;
    lags.push(performance.now() - due);
    if (inFlight >= o.maxInFlight) {
      dropped++;
      sec.dropped++;
      return;
    }
    inFlight++;
    sec.maxInFlight = Math.max(sec.maxInFlight, inFlight);
    const p = det.score(pick(images, o.input, frameIndex), steps).then(
      (r) => {
        const lat = performance.now() - due;
        latencies.push(lat);
        sec.lat.push(lat);
        batchSizes.push(r.timings.batchSize);
        completed++;
        if (lat > period) {
          misses++;
          sec.misses++;
        }
      },
      () => {
        failed++;
      },
    );
    const tracked = p.finally(() => {
      inFlight--;
      pending.delete(tracked);
    });
    pending.add(tracked);
  };

  const producer = async (k: number) => {
    for (let i = 0; ; i++) {
      const due = start + offset(k) + i * producerPeriod;
      if (due >= end) return;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      deliver(due, i * o.concurrency + k);
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, (_, k) => producer(k)));
  await Promise.all([...pending]);
  clearInterval(sampler);
  const load = cpu.read();
  const drift = det.drift(o.steps);

  let saturation: LineResult['saturation'] = null;
  if (o.saturationMs > 0) {
    o.onProgress?.(`line: saturation, ${o.concurrency} closed loops for ${(o.saturationMs / 1000).toFixed(1)} s`);
    const satLat: number[] = [];
    const satBatch: number[] = [];
    const t0 = performance.now();
    const stopAt = t0 + o.saturationMs;
    let n = 0;
    await Promise.all(
      Array.from({ length: o.concurrency }, async (_, k) => {
        for (let i = 0; performance.now() < stopAt; i++) {
          const a = performance.now();
          const r = await det.score(pick(images, o.input, i * o.concurrency + k), steps);
          satLat.push(performance.now() - a);
          satBatch.push(r.timings.batchSize);
          n++;
        }
      }),
    );
    const elapsed = performance.now() - t0;
    saturation = {
      concurrency: o.concurrency,
      durationMs: elapsed,
      images: n,
      imagesPerSecond: (n / elapsed) * 1000,
      latency: summarize(satLat),
      batchSize: summarize(satBatch),
    };
  }

  const perSecond: LineSecond[] = [...seconds.entries()]
    .sort((a, b) => a[0] - b[0])
    .filter(([t]) => t * 1000 < o.durationMs)
    .map(([t, e]) => ({ t, arrived: e.arrived, misses: e.misses, dropped: e.dropped, p99Ms: summarize(e.lat).p99, maxInFlight: e.maxInFlight }));
  const depth = samples.map((s) => s[1]);
  return {
    fps: o.fps,
    fpsMode: o.fpsMode,
    concurrency: o.concurrency,
    durationMs: o.durationMs,
    deadlineMs: period,
    offeredFps: o.fpsMode === 'each' ? o.fps * o.concurrency : o.fps,
    frames: { offered, completed, failed, dropped },
    latency: summarize(latencies),
    misses,
    missRate: offered ? misses / offered : 0,
    missOrDropRate: offered ? (misses + dropped) / offered : 0,
    dispatchLag: summarize(lags),
    batchSize: summarize(batchSizes),
    completedFps: (completed / o.durationMs) * 1000,
    queueDepth: {
      sampleMs: o.sampleMs,
      samples,
      max: depth.length ? Math.max(...depth) : 0,
      mean: depth.length ? depth.reduce((a, b) => a + b, 0) / depth.length : 0,
    },
    perSecond,
    saturation,
    peakRssMiB: peakRssMiB(),
    cpu: load,
    drift,
  };
}
