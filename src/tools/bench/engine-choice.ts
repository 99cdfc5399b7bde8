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
import type { Manifest } from '../../runtime/bundle/manifest';
import { defaultEngine } from '../../runtime/detector';
import { nativePipelineOptions } from '../../runtime/engine/native-engine';
import { runInversion, type PipelineSessions } from '../../runtime/engine/ort-node-inversion';
import { DEFAULT_THREAD_SPINNING, sessionSpinning, type EngineKind, type ThreadSpinning } from '../../runtime/engine/protocol';
import { openSession } from '../../runtime/engine/sessions';
import { inversionSteps } from '../../runtime/schedule';
import { InvalidArgumentError } from '../../util/errors';
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
  /** a second bundle with the same shapes (e.g. the int8 one), timed with both engines in the same alternation */
  against?: string;
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
  /** the `against` bundle in the same alternation; speedup = fastest engine of `model` / fastest of `against` (> 1: `against` faster) */
  against?: { nativeMs: Summary; ortNodeMs: Summary; nativeUnetMs: number; ortNodeUnetMs: number; speedup: number };
}

export interface EngineChoiceResult {
  bundle: string;
  precision: string;
  /** the second bundle timed alongside, and its precision */
  against?: string;
  againstPrecision?: string;
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

interface EngineSides {
  manifest: Manifest;
  precision: string;
  native: (batch: Float32Array, n: number, S: number) => Promise<{ ms: number; unet: number }>;
  ortNode: (batch: Float32Array, n: number, S: number) => Promise<{ ms: number; unet: number }>;
  close: () => Promise<void>;
}

/** Both engines on one bundle, opened as the Detector opens them. */
async function openEngines(dir: string, threads: number, threadSpinning: ThreadSpinning, maxBatch: number): Promise<EngineSides> {
  const bundle = await loadBundle(dir);
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
    maxBatch,
  };
  const pipeline: DeviceResidentPipeline = new addon.DeviceResidentPipeline(nativePipelineOptions(config, bundle.unetPath, ['cpu']));
  return {
    manifest: m,
    precision: m.precision ?? 'fp32',
    native: async (batch, n, S) => {
      const sched = inversionSteps(S, m.schedule).map((st) => ({ t: st.t, a: st.a, b: st.b }));
      const t0 = performance.now();
      const res = await pipeline.runAsync(new Float32Array(batch), n, sched, { latents: false });
      return { ms: performance.now() - t0, unet: sum(res.timings.unetMs) };
    },
    ortNode: async (batch, n, S) => {
      const sched = inversionSteps(S, m.schedule);
      const t0 = performance.now();
      const res = await runInversion(sessions, addon, m, new Float32Array(batch), n, sched);
      return { ms: performance.now() - t0, unet: sum(res.unetMs) };
    },
    close: async () => {
      pipeline.release();
      await sessions.backbone.release();
      await sessions.unet.release();
    },
  };
}

export async function whichEngine(o: EngineChoiceOptions): Promise<EngineChoiceResult> {
  const batches = o.batches ?? [1, 2, 4, 8];
  const stepsList = o.steps ?? [2, 3];
  const reps = o.reps ?? 10;
  const warmup = o.warmup ?? 2;
  const threads = o.threads ?? 0;
  const threadSpinning = o.threadSpinning ?? DEFAULT_THREAD_SPINNING;
  const loadAverageBefore = os.loadavg();
  const maxBatch = Math.max(...batches);
  const opened: EngineSides[] = [];
  const rows: EngineChoiceRow[] = [];
  let precision = 'fp32';
  let againstPrecision: string | undefined;
  try {
    const main = await openEngines(o.model, threads, threadSpinning, maxBatch);
    opened.push(main);
    const m = main.manifest;
    precision = main.precision;
    if (o.against) {
      const other = await openEngines(o.against, threads, threadSpinning, maxBatch);
      opened.push(other);
      const a = other.manifest;
      if (a.input.width !== m.input.width || a.input.height !== m.input.height || JSON.stringify(a.features) !== JSON.stringify(m.features)) {
        throw new InvalidArgumentError('against', `${o.against} has another input or feature shape than ${o.model}`);
      }
      againstPrecision = other.precision;
    }
    const plane = 3 * m.input.width * m.input.height;
    const sides = opened.flatMap((e) => [e.native, e.ortNode]);
    for (const S of stepsList) {
      for (const n of batches) {
        o.onProgress?.(`which engine: batch ${n}, S = ${S}: ${warmup} warm-up + ${reps} alternating repetitions of ${sides.length} sides`);
        const r = mulberry32(1000 * S + n);
        const batch = Float32Array.from({ length: n * plane }, () => r() * 4 - 2);
        const ms: number[][] = sides.map(() => []);
        const unetMs: number[][] = sides.map(() => []);
        for (let rep = 0; rep < warmup + reps; rep++) {
          for (let k = 0; k < sides.length; k++) {
            const i = (rep + k) % sides.length;
            const got = await sides[i](batch, n, S);
            if (rep >= warmup) {
              ms[i].push(got.ms);
              unetMs[i].push(got.unet);
            }
          }
        }
        const [nativeMs, ortNodeMs] = [summarize(ms[0]), summarize(ms[1])];
        const row: EngineChoiceRow = {
          batch: n,
          steps: S,
          nativeMs,
          ortNodeMs,
          nativeUnetMs: median(unetMs[0]),
          ortNodeUnetMs: median(unetMs[1]),
          ratio: ortNodeMs.median / nativeMs.median,
        };
        if (o.against) {
          const [an, ao] = [summarize(ms[2]), summarize(ms[3])];
          row.against = {
            nativeMs: an,
            ortNodeMs: ao,
            nativeUnetMs: median(unetMs[2]),
            ortNodeUnetMs: median(unetMs[3]),
            speedup: Math.min(nativeMs.median, ortNodeMs.median) / Math.min(an.median, ao.median),
          };
        }
        rows.push(row);
      }
    }
  } finally {
    for (const e of opened) await e.close();
  }
  const geometricMeanRatio = Math.exp(rows.reduce((a, r) => a + Math.log(r.ratio), 0) / rows.length);
  const loadAverageAfter = os.loadavg();
  const cores = os.availableParallelism();
  return {
    bundle: o.model,
    precision,
    ...(o.against ? { against: o.against, againstPrecision } : {}),
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
  if (r.against) {
    const geo = Math.exp(r.rows.reduce((a, x) => a + Math.log(x.against!.speedup), 0) / r.rows.length);
    lines.push(
      '',
      `against ${r.against} (${r.againstPrecision}), in the same alternation:`,
      '',
      `| batch | S | native ms (p90) | onnxruntime-node ms (p90) | UNet calls native / ort-node ms | fastest ${r.precision} / fastest ${r.againstPrecision} |`,
      '| --- | --- | --- | --- | --- | --- |',
      ...r.rows.map((x) => {
        const a = x.against!;
        return `| ${x.batch} | ${x.steps} | ${a.nativeMs.median.toFixed(1)} (${a.nativeMs.p90.toFixed(1)}) | ${a.ortNodeMs.median.toFixed(1)} (${a.ortNodeMs.p90.toFixed(1)}) | ${a.nativeUnetMs.toFixed(1)} / ${a.ortNodeUnetMs.toFixed(1)} | ${a.speedup.toFixed(2)}x |`;
      }),
      '',
      `geometric mean speedup of ${r.againstPrecision} over ${r.precision} (fastest engine each): ${geo.toFixed(2)}x`,
    );
  }
  if (r.underLoad)
    lines.push(
      `note: the load average exceeded the ${r.cores} cores during the run: other processes shared the CPU, so the times are slow and noisy and even the side-by-side ratios are degraded`,
    );
  return lines.join('\n');
}
