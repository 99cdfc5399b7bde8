/**
 * The sustained run: `count` images scored one after another through
 * Detector.score(), alternating raw frames and encoded images by default.
 * Every `every` images it records RSS (the whole process: the engine worker
 * and ONNX Runtime's arenas included), the JS heap, open file descriptors and
 * active libuv handles. The verdict compares the first sample (after `every`
 * images, once arenas and caches have reached their working size) with the
 * last: RSS must grow by less than `limitPct` percent, and descriptors and
 * handles must not grow at all.
 *
 * With `gc` (default) a full garbage collection runs before each sample, so the
 * numbers show what is still referenced rather than when V8 last collected.
 */
import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Detector } from '../../runtime/detector';
import { type BenchImages, type InputKind, pick } from './images';
import { activeResources, CpuMonitor, type CpuLoad, openFdCount, peakRssMiB, rssMiB } from './machine';
import { type Summary, summarize } from './stats';

export interface SoakOptions {
  /** images to score */
  count: number;
  every: number;
  input: InputKind | 'alternate';
  warmup: number;
  steps?: number;
  gc: boolean;
  limitPct: number;
  onProgress?: (line: string) => void;
}

export interface SoakSample {
  images: number;
  elapsedS: number;
  rssMiB: number;
  heapUsedMiB: number;
  externalMiB: number;
  arrayBuffersMiB: number;
  fds: number | null;
  resources: Record<string, number>;
}

export interface SoakResult {
  images: number;
  every: number;
  input: SoakOptions['input'];
  gc: boolean;
  start: SoakSample;
  samples: SoakSample[];
  growth: {
    from: number;
    to: number;
    rssFromMiB: number;
    rssToMiB: number;
    rssPct: number;
    heapPct: number;
    limitPct: number;
    fds: number | null;
    resources: Record<string, number>;
    /** RSS under the limit and no descriptor or handle growth */
    pass: boolean;
  };
  latency: Summary;
  imagesPerSecond: number;
  peakRssMiB: number;
  cpu: CpuLoad;
}

let gcFn: (() => void) | undefined;
/** A full GC without --expose-gc on the command line. */
export function fullGc(): void {
  if (!gcFn) {
    setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
}

function sample(images: number, t0: number): SoakSample {
  const m = process.memoryUsage();
  const mib = (b: number) => b / 2 ** 20;
  return {
    images,
    elapsedS: (performance.now() - t0) / 1000,
    rssMiB: rssMiB(),
    heapUsedMiB: mib(m.heapUsed),
    externalMiB: mib(m.external),
    arrayBuffersMiB: mib(m.arrayBuffers),
    fds: openFdCount(),
    resources: activeResources(),
  };
}

function resourceGrowth(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = (b[k] ?? 0) - (a[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

export async function benchSoak(det: Detector, images: BenchImages, o: SoakOptions): Promise<SoakResult> {
  const steps = o.steps === undefined ? {} : { steps: o.steps };
  const kindAt = (i: number): InputKind => (o.input === 'alternate' ? (i % 2 === 0 ? 'raw' : 'encoded') : o.input);
  for (let i = 0; i < o.warmup; i++) await det.score(pick(images, kindAt(i), i), steps);
  // let timers and handles of the warm-up settle before the baseline
  await new Promise((r) => setTimeout(r, 50));
  if (o.gc) fullGc();
  const t0 = performance.now();
  const start = sample(0, t0);
  const samples: SoakSample[] = [];
  const latencies: number[] = [];
  const cpu = new CpuMonitor();
  for (let i = 0; i < o.count; i++) {
    const a = performance.now();
    await det.score(pick(images, kindAt(i), i >> 1), steps);
    latencies.push(performance.now() - a);
    if ((i + 1) % o.every === 0 || i + 1 === o.count) {
      if (o.gc) fullGc();
      const s = sample(i + 1, t0);
      samples.push(s);
      o.onProgress?.(`soak: ${s.images}/${o.count} images, RSS ${s.rssMiB.toFixed(1)} MiB, heap ${s.heapUsedMiB.toFixed(1)} MiB, fds ${s.fds ?? '?'}`);
    }
  }
  const elapsed = performance.now() - t0;
  const first = samples[0] ?? start;
  const last = samples[samples.length - 1] ?? start;
  const rssPct = ((last.rssMiB - first.rssMiB) / first.rssMiB) * 100;
  const fds = first.fds === null || last.fds === null ? null : last.fds - first.fds;
  const resources = resourceGrowth(first.resources, last.resources);
  return {
    images: o.count,
    every: o.every,
    input: o.input,
    gc: o.gc,
    start,
    samples,
    growth: {
      from: first.images,
      to: last.images,
      rssFromMiB: first.rssMiB,
      rssToMiB: last.rssMiB,
      rssPct,
      heapPct: ((last.heapUsedMiB - first.heapUsedMiB) / first.heapUsedMiB) * 100,
      limitPct: o.limitPct,
      fds,
      resources,
      pass: rssPct < o.limitPct && (fds === null || fds <= 0) && Object.values(resources).every((d) => d <= 0),
    },
    latency: summarize(latencies),
    imagesPerSecond: (o.count / elapsed) * 1000,
    peakRssMiB: peakRssMiB(),
    cpu: cpu.read(),
  };
}
