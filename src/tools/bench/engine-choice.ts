/**
 * `invad bench --which-engine --model model/`: which of the two engines is faster on the machine
 * at hand (issue 16). Both engines run their production path on the bundle (backbone, S UNet
 * calls, the update and reduction kernels), opened with the Detector's settings (ORT level 'all',
 * the same intra-op threads and spinning), on the same preprocessed batch, alternating call by
 * call (the order rotates each repetition) so load drifts hit both alike. For each batch and S it
 * reports the medians, the UNet share, and the ratio onnxruntime-node / native (> 1: native faster),
 * then the geometric mean over the rows and the verdict against defaultEngine().
 *
 * Ratios are only as good as the machine's quiet: the load average before and after is part of
 * the result, and a verdict under load (load average above the core count) says so.
 */
import * as os from 'node:os';
import { loadAddon, type DeviceResidentPipeline } from '../../binding';
import { loadBundle } from '../../runtime/bundle/load';
import { defaultEngine } from '../../runtime/detector';
import { nativePipelineOptions } from '../../runtime/engine/native-engine';
import { runInversion, type PipelineSessions } from '../../runtime/engine/ort-node-inversion';
import { DEFAULT_THREAD_SPINNING, sessionSpinning, type EngineKind, type ThreadSpinning } from '../../runtime/engine/protocol';
import { openSession } from '../../runtime/engine/sessions';
import { inversionSteps } from '../../runtime/schedule';
import { mulberry32 } from '../../util/prng';
import { summarize, type Summary } from './stats';

export interface EngineChoiceOptions {
  model: string;
  /** default 1, 2, 4, 8 */
  batches?: readonly number[];
  /** default 2, 3 */
  steps?: readonly number[];
  /** timed repetitions per (batch, S), each running both engines; default 10 */
  reps?: number;
  /** untimed repetitions first; default 2 */
  warmup?: number;
  /** ORT intra-op threads (0: ORT decides, the Detector's default) */
  threads?: number;
  threadSpinning?: ThreadSpinning;
  onProgress?: (line: string) => void;
}

export interface EngineChoiceRow {
  batch: number;
  steps: number;
  nativeMs: Summary;
  ortNodeMs: Summary;
  /** median of the summed UNet call times per batch */
  nativeUnetMs: number;
  ortNodeUnetMs: number;
  /** onnxruntime-node median / native median: > 1 means native is faster */
  ratio: number;
}

export interface EngineChoiceResult {
  bundle: string;
  precision: string;
  cpu: string;
  cores: number;
  loadAverageBefore: number[];
  loadAverageAfter: number[];
  threads: number;
  threadSpinning: ThreadSpinning;
  reps: number;
  warmup: number;
  rows: EngineChoiceRow[];
  /** geometric mean of the rows' ratios (onnxruntime-node / native) */
  geometricMeanRatio: number;
  faster: EngineKind;
  currentDefault: EngineKind;
  /** true when the load average (1 min) exceeded the core count at either end */
  underLoad: boolean;
  /** false when the geometric mean ratio is within NO_CLEAR_WINNER of 1: no engine clearly wins */
  clear: boolean;
}

/** A geometric mean ratio within this of 1 (5%) names no clear winner. */
export const NO_CLEAR_WINNER = 0.05;

const median = (v: number[]) => summarize(v).median;
const sum = (v: readonly number[]) => v.reduce((a, b) => a + b, 0);

export async function whichEngine(o: EngineChoiceOptions): Promise<EngineChoiceResult> {
  const batches = o.batches ?? [1, 2, 4, 8];
  const stepsList = o.steps ?? [2, 3];
  const reps = o.reps ?? 10;
  const warmup = o.warmup ?? 2;
  const threads = o.threads ?? 0;
  const threadSpinning = o.threadSpinning ?? DEFAULT_THREAD_SPINNING;
  const loadAverageBefore = os.loadavg();
  const bundle = await loadBundle(o.model);
  const m = bundle.manifest;
  const addon = loadAddon();
  if (typeof addon.DeviceResidentPipeline !== 'function') throw new Error('this addon build has no native engine (DeviceResidentPipeline)');
  const spinning = sessionSpinning(threadSpinning);
  const backbone = await openSession(bundle.backbonePath, ['cpu'], { intraOpThreads: threads, spinning: spinning.backbone }, 'backbone');
  const unet = await openSession(bundle.unetPath, ['cpu'], { intraOpThreads: threads, spinning: spinning.unet }, 'UNet');
  const sessions: PipelineSessions = { backbone: backbone.session, unet: unet.session };
  const config = {
    backbonePath: bundle.backbonePath,
    unetPath: bundle.unetPath,
    manifest: m,
    executionProviders: ['cpu' as const],
    intraOpThreads: threads,
    threadSpinning,
    maxBatch: Math.max(...batches),
  };
  const pipeline: DeviceResidentPipeline = new addon.DeviceResidentPipeline(nativePipelineOptions(config, bundle.unetPath, ['cpu']));
  const rows: EngineChoiceRow[] = [];
  try {
    const plane = 3 * m.input.width * m.input.height;
    for (const S of stepsList) {
      const sched = inversionSteps(S, m.schedule);
      const nativeSched = sched.map((st) => ({ t: st.t, a: st.a, b: st.b }));
      for (const n of batches) {
        o.onProgress?.(`which engine: batch ${n}, S = ${S}: ${warmup} warm-up + ${reps} alternating repetitions`);
        const r = mulberry32(1000 * S + n);
        const batch = Float32Array.from({ length: n * plane }, () => r() * 4 - 2);
        const sides = [
          async () => {
            const t0 = performance.now();
            const res = await pipeline.runAsync(new Float32Array(batch), n, nativeSched, { latents: false });
            return { ms: performance.now() - t0, unet: sum(res.timings.unetMs) };
          },
          async () => {
            const t0 = performance.now();
            const res = await runInversion(sessions, addon, m, new Float32Array(batch), n, sched);
            return { ms: performance.now() - t0, unet: sum(res.unetMs) };
          },
        ];
        const ms: number[][] = [[], []];
        const unetMs: number[][] = [[], []];
        for (let rep = 0; rep < warmup + reps; rep++) {
          for (let k = 0; k < sides.length; k++) {
            const i = (rep + k) % sides.length;
            const got = await sides[i]();
            if (rep >= warmup) {
              ms[i].push(got.ms);
              unetMs[i].push(got.unet);
            }
          }
        }
        const nativeMs = summarize(ms[0]);
        const ortNodeMs = summarize(ms[1]);
        rows.push({
          batch: n,
          steps: S,
          nativeMs,
          ortNodeMs,
          nativeUnetMs: median(unetMs[0]),
          ortNodeUnetMs: median(unetMs[1]),
          ratio: ortNodeMs.median / nativeMs.median,
        });
      }
    }
  } finally {
    pipeline.release();
    await sessions.backbone.release();
    await sessions.unet.release();
  }
  const geometricMeanRatio = Math.exp(rows.reduce((a, r) => a + Math.log(r.ratio), 0) / rows.length);
  const loadAverageAfter = os.loadavg();
  const cores = os.availableParallelism();
  return {
    bundle: o.model,
    precision: m.precision ?? 'fp32',
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores,
    loadAverageBefore,
    loadAverageAfter,
    threads,
    threadSpinning,
    reps,
    warmup,
    rows,
    geometricMeanRatio,
    faster: geometricMeanRatio > 1 ? 'native' : 'onnxruntime-node',
    currentDefault: defaultEngine(['cpu']),
    underLoad: Math.max(loadAverageBefore[0], loadAverageAfter[0]) > cores,
    clear: Math.abs(Math.log(geometricMeanRatio)) > Math.log(1 + NO_CLEAR_WINNER),
  };
}

export function formatEngineChoice(r: EngineChoiceResult): string {
  const la = (v: number[]) => v.map((x) => x.toFixed(2)).join(' ');
  const lines = [
    `which engine (CPU): ${r.bundle} (${r.precision}), ${r.cpu}, ${r.cores} cores, intra-op threads ${r.threads || 'ORT default'}, spinning ${r.threadSpinning}, ${r.reps} alternating reps after ${r.warmup} warm-up`,
    `load average before: ${la(r.loadAverageBefore)}; after: ${la(r.loadAverageAfter)}`,
    '',
    '| batch | S | native ms (p90) | onnxruntime-node ms (p90) | UNet calls native / ort-node ms | ratio ort-node / native |',
    '| --- | --- | --- | --- | --- | --- |',
    ...r.rows.map(
      (x) =>
        `| ${x.batch} | ${x.steps} | ${x.nativeMs.median.toFixed(1)} (${x.nativeMs.p90.toFixed(1)}) | ${x.ortNodeMs.median.toFixed(1)} (${x.ortNodeMs.p90.toFixed(1)}) | ${x.nativeUnetMs.toFixed(1)} / ${x.ortNodeUnetMs.toFixed(1)} | ${x.ratio.toFixed(2)}x |`,
    ),
    '',
    `geometric mean ratio onnxruntime-node / native: ${r.geometricMeanRatio.toFixed(2)}x: ${r.faster} is faster here (${r.geometricMeanRatio > 1 ? `native by ${((r.geometricMeanRatio - 1) * 100).toFixed(0)}%` : `onnxruntime-node by ${((1 / r.geometricMeanRatio - 1) * 100).toFixed(0)}%`})${r.clear ? '' : `, within ${NO_CLEAR_WINNER * 100}%: no clear winner`}; the CPU default is ${r.currentDefault}${!r.clear || r.faster === r.currentDefault ? '' : ` (set INVAD_ENGINE=${r.faster} or DetectorOptions.engine to use the faster one)`}`,
  ];
  if (r.underLoad)
    lines.push(
      `note: the load average exceeded the ${r.cores} cores during the run: other processes shared the CPU, so the times are slow and noisy and even the side-by-side ratios are degraded`,
    );
  return lines.join('\n');
}
