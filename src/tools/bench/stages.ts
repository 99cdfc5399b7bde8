/**
 * The stage benchmark: for each input kind (raw frames, encoded images), batch
 * size and S, `runs` timed calls after `warmup` untimed ones. Batch 1 goes
 * through Detector.score(), larger batches through Detector.scoreBatch() with
 * that batchSize, so the numbers are what an application calling the public API
 * gets. Stage times come from ScoreResult.timings: decode, preprocess and queue
 * are per image; backbone, UNet, kernels and resize run once per batch and are
 * reported per batch and per image (divided by the batch size).
 */
import { performance } from 'node:perf_hooks';
import type { Detector, ScoreResult } from '../../runtime/detector';
import { type BenchImages, type InputKind, pick } from './images';
import { CpuMonitor, type CpuLoad, peakRssMiB } from './machine';
import { type Summary, summarize } from './stats';

export interface StageBenchOptions {
  batches: number[];
  steps: number[];
  inputs: InputKind[];
  runs: number;
  warmup: number;
  onProgress?: (line: string) => void;
}

/** A batch-level stage: once per model run, and that divided over the batch's images. */
export interface SharedStage {
  perBatch: Summary;
  perImage: Summary;
}

export interface StageBenchRow {
  input: InputKind;
  /** requested batch size */
  batch: number;
  /** images per model run actually used (a fixed-batch model may cap it) */
  modelBatch: number;
  steps: number;
  runs: number;
  images: number;
  stages: {
    decode: Summary;
    preprocess: Summary;
    queue: Summary;
    backbone: SharedStage;
    /** one entry per UNet call, in order */
    unet: SharedStage[];
    unetTotal: SharedStage;
    kernels: SharedStage;
    /** map resize and per-sample postprocessing in the engine */
    resize: SharedStage;
    /** what the stages above leave out of end-to-end: messaging, waiting for the batch's other images, result assembly */
    other: Summary;
    /** call -> result, per image (ScoreResult.timings.totalMs) */
    endToEnd: Summary;
    /** wall time of one score()/scoreBatch() call */
    call: Summary;
  };
  imagesPerSecond: number;
  peakRssMiB: number;
  cpu: CpuLoad;
}

function shared(perBatch: number[], batchSizes: number[]): SharedStage {
  return { perBatch: summarize(perBatch), perImage: summarize(perBatch.map((v, i) => v / batchSizes[i])) };
}

async function runOnce(
  det: Detector,
  images: BenchImages,
  kind: InputKind,
  batch: number,
  steps: number,
  index: number,
): Promise<{ wall: number; results: ScoreResult[] }> {
  const t0 = performance.now();
  if (batch === 1) {
    const r = await det.score(pick(images, kind, index), { steps });
    return { wall: performance.now() - t0, results: [r] };
  }
  const inputs = Array.from({ length: batch }, (_, j) => pick(images, kind, index * batch + j));
  const results = await det.scoreBatch(inputs, { batchSize: batch, steps });
  return { wall: performance.now() - t0, results };
}

export async function benchStages(det: Detector, images: BenchImages, o: StageBenchOptions): Promise<StageBenchRow[]> {
  const rows: StageBenchRow[] = [];
  for (const kind of o.inputs) {
    for (const steps of o.steps) {
      for (const batch of o.batches) {
        o.onProgress?.(`stages: ${kind} batch ${batch} S=${steps}: ${o.warmup} warm-up + ${o.runs} runs`);
        for (let i = 0; i < o.warmup; i++) await runOnce(det, images, kind, batch, steps, i);
        const cpu = new CpuMonitor();
        const walls: number[] = [];
        const perImage: ScoreResult['timings'][] = [];
        // batch-level stages: one sample per model run
        const batchRuns: ScoreResult['timings'][] = [];
        for (let r = 0; r < o.runs; r++) {
          const { wall, results } = await runOnce(det, images, kind, batch, steps, o.warmup + r);
          walls.push(wall);
          // results keep the input order and model runs take consecutive images,
          // so each run's first image carries the run's shared numbers
          for (let i = 0; i < results.length; i += Math.max(1, results[i].timings.batchSize)) batchRuns.push(results[i].timings);
          for (const res of results) perImage.push(res.timings);
        }
        const sizes = batchRuns.map((t) => t.batchSize);
        const unetCalls = Math.max(...batchRuns.map((t) => t.unetMs.length));
        const images_ = perImage.length;
        rows.push({
          input: kind,
          batch,
          modelBatch: Math.max(...sizes),
          steps,
          runs: o.runs,
          images: images_,
          stages: {
            decode: summarize(perImage.map((t) => t.decodeMs)),
            preprocess: summarize(perImage.map((t) => t.preprocessMs)),
            queue: summarize(perImage.map((t) => t.queueMs)),
            backbone: shared(
              batchRuns.map((t) => t.backboneMs),
              sizes,
            ),
            unet: Array.from({ length: unetCalls }, (_, k) =>
              shared(
                batchRuns.map((t) => t.unetMs[k] ?? 0),
                sizes,
              ),
            ),
            unetTotal: shared(
              batchRuns.map((t) => t.unetMs.reduce((a, b) => a + b, 0)),
              sizes,
            ),
            kernels: shared(
              batchRuns.map((t) => t.kernelMs),
              sizes,
            ),
            resize: shared(
              batchRuns.map((t) => t.resizeMs),
              sizes,
            ),
            other: summarize(
              perImage.map(
                (t) => t.totalMs - t.decodeMs - t.preprocessMs - t.queueMs - t.backboneMs - t.unetMs.reduce((a, b) => a + b, 0) - t.kernelMs - t.resizeMs,
              ),
            ),
            endToEnd: summarize(perImage.map((t) => t.totalMs)),
            call: summarize(walls),
          },
          imagesPerSecond: (images_ / walls.reduce((a, b) => a + b, 0)) * 1000,
          peakRssMiB: peakRssMiB(),
          cpu: cpu.read(),
        });
      }
    }
  }
  return rows;
}
