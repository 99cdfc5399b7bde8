/**
 * invad next to the PyTorch eager reference, on the same UNet weights and the
 * same features, in one run.
 *
 * The compared unit is what follows the backbone (the backbone is the same
 * ONNX model on both sides in practice): clean features x0 -> S UNet
 * evaluations with the DDIM inversion update -> x_T -> channel-norm map and
 * its per-sample statistics.
 *
 * - PyTorch: train/bench_torch.py builds the preset's UNet (random weights from
 *   a seed, or a checkpoint's EMA weights), exports the same weights to ONNX
 *   with the trainer's exporter, writes the features, and serves timed eager
 *   inversions (torch.no_grad, eval mode, torch.set_num_threads(threads)).
 * - invad, in both of its engines, on the exported UNet. The public API has no
 *   features input, so both read the features through a stand-in backbone
 *   model that outputs them whatever the image (features-backbone.ts: a Slice
 *   and an Add, about the copy a pipeline makes of a backbone output anyway;
 *   PyTorch clones x0). Each engine then runs exactly its production path:
 *   - 'onnxruntime-node': the engine's own runInversion() (src/runtime/engine/ort-node-inversion.ts)
 *     on sessions opened by the engine's openSession() (same options as a
 *     Detector, intraOpNumThreads = threads) and the addon's fused kernels;
 *   - 'native': the addon's DeviceResidentPipeline (the ONNX Runtime C API of
 *     the same libonnxruntime), opened as the engine worker opens it.
 *   Both therefore pay what a real backbone session costs the UNet after it:
 *   with more than one intra-op thread, the backbone session's pool keeps
 *   spinning into the first UNet call (see the per-call UNet times).
 * - PyTorch runs in two variants, each its own process with the same weights:
 *   'default' (PyTorch's own convolution dispatch) and 'onednn' (every
 *   convolution on PyTorch's bundled oneDNN). The second matters where PyTorch
 *   links a slow BLAS: Debian's python3-torch uses the reference (netlib)
 *   BLAS, and PyTorch sends batch-1 3x3 convolutions on small maps to
 *   im2col + BLAS. The target is checked against the faster variant.
 * - The stacks alternate call by call, in an order that rotates every rep,
 *   with a short idle gap between calls, so that drift on a shared machine
 *   hits all alike and no side's spinning thread pool steals another's cores.
 *   Medians and the ratio torch/invad per (batch, S), per invad engine and
 *   PyTorch variant; the target is checked for the Detector's default engine
 *   against the faster PyTorch variant.
 * - The last rep's sums of squares are compared as a parity check.
 * - For context, end-to-end invad numbers through Detector.score/scoreBatch,
 *   per engine, on a bundle made of this UNet and a one-Conv synthetic backbone
 *   (stride 16) whose grid matches the features.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import * as ort from 'onnxruntime-node';
import { type DeviceResidentPipeline, loadAddon } from '../../binding';
import { buildManifest, writeBundle, type BundleContents } from '../../fit/write-bundle';
import { defaultEngine, Detector } from '../../runtime/detector';
import { openPipeline } from '../../runtime/engine/native-engine';
import { ortLibraryPath } from '../../runtime/engine/ort-library';
import { runInversion, type PipelineSessions } from '../../runtime/engine/ort-node-inversion';
import { DEFAULT_THREAD_SPINNING, type EngineKind, type ExecutionProvider, sessionSpinning, type ThreadSpinning } from '../../runtime/engine/protocol';
import { openSession } from '../../runtime/engine/sessions';
import { readNpy } from '../../util/npy';
import { convBackbone } from '../../fit/onnx/synthetic';
import { packageRoot } from '../../util/package-info';
import { inversionSteps } from '../../runtime/schedule';
import { findPython, UNET_PRESETS, type UnetPreset } from '../../fit/trainer/runner';
import { constantFeaturesBackbone, STAND_IN_INPUT, STAND_IN_OUTPUT } from './features-backbone';
import { syntheticImages } from './images';
import { CpuMonitor, type CpuLoad, peakRssMiB } from './machine';
import { benchStages, type StageBenchRow } from './stages';
import { median, type Summary, summarize } from './stats';

export type Preset = UnetPreset;
export const PRESETS: readonly Preset[] = UNET_PRESETS;

/** The targets from the benchmark issue: invad / PyTorch eager speed-up at batch 1 and at batch 8. */
export const TARGETS: ReadonlyArray<{ batch: number; speedup: number }> = [
  { batch: 1, speedup: 2 },
  { batch: 8, speedup: 1.5 },
];

export interface CompareOptions {
  preset: Preset;
  checkpoint?: string;
  /** feature shape; default per preset (small 152x14x14, paper 272x16x16, tiny 6x4x4) */
  features?: { channels: number; height: number; width: number };
  batches: number[];
  steps: number[];
  reps: number;
  warmup: number;
  threads: number;
  /** whose ORT thread pools spin between runs (DetectorOptions.threadSpinning); default DEFAULT_THREAD_SPINNING */
  threadSpinning?: ThreadSpinning;
  providers: ExecutionProvider[];
  seed: number;
  /** idle time between two timed calls, ms */
  gapMs: number;
  /** also time invad end to end through the Detector */
  e2e: boolean;
  /** per-operator profiles of one inversion on each side (batch and S of the first config) */
  profile: boolean;
  /**
   * The PyTorch variants to time, each in its own process: 'default' (PyTorch's
   * own convolution dispatch) and 'onednn' (every convolution on oneDNN; see
   * train/bench_torch.py). Default both.
   */
  torchVariants?: TorchVariant[];
  /** invad engines to time; default both ('onnxruntime-node', 'native'); the native one is left out (and said why) when it cannot open */
  engines?: EngineKind[];
  python?: string;
  /** keep unet.onnx, features.npy and the bundle here (default: a temporary folder, removed afterwards) */
  workDir?: string;
  onProgress?: (line: string) => void;
}

export type TorchVariant = 'default' | 'onednn';
export const TORCH_VARIANTS: readonly TorchVariant[] = ['default', 'onednn'];

export interface TorchReady {
  event: 'ready';
  onnx: string;
  features: string;
  shape: [number, number, number];
  maxBatch: number;
  params: number;
  config: Record<string, unknown>;
  weights: string;
  conv: TorchVariant;
  setupS: number;
  machine: Record<string, unknown>;
}

export interface EngineTiming {
  engine: EngineKind;
  time: Summary;
  /** median split: the stand-in backbone (a feature copy), the UNet calls (in total and each) and the fused kernels */
  backboneMs: number;
  unetMs: number;
  unetCallsMs: number[];
  kernelMs: number;
  /** max relative difference of the per-sample sums of squares of x_T against the first PyTorch variant */
  parityRelDiff: number;
}

export interface ReferenceTiming {
  variant: TorchVariant;
  torch: Summary;
}

export interface Ratio {
  engine: EngineKind;
  variant: TorchVariant;
  /** median PyTorch / median invad: how many times faster invad is */
  speedup: number;
  /** the speed-up within each rep (same moment, same machine state), summarized: a drift-robust view of the same ratio */
  pairSpeedup: Summary;
}

export interface CompareRow {
  batch: number;
  steps: number;
  reps: number;
  engines: EngineTiming[];
  references: ReferenceTiming[];
  ratios: Ratio[];
  target: number | null;
  /** the engine the target is checked for: the Detector's default for these providers, when timed */
  targetEngine: EngineKind;
  /** the target checked for targetEngine against the faster PyTorch variant */
  met: boolean | null;
  cpu: CpuLoad;
}

export interface ProfileOp {
  op: string;
  calls: number;
  selfMs: number;
}

export interface CompareResult {
  preset: Preset;
  weights: string;
  params: number;
  featureShape: { channels: number; height: number; width: number };
  threads: number;
  threadSpinning: ThreadSpinning;
  providers: ExecutionProvider[];
  unit: string;
  /** the PyTorch side: version, threads, build (BLAS, MKL-DNN) */
  torch: Record<string, unknown>;
  torchVariants: TorchVariant[];
  engines: EngineKind[];
  /** engines that could not be timed, with why */
  engineErrors: Array<{ engine: EngineKind; error: string }>;
  rows: CompareRow[];
  /** end-to-end Detector numbers per engine */
  endToEnd: Array<{ engine: EngineKind; rows: StageBenchRow[] }> | null;
  profile: null | {
    batch: number;
    steps: number;
    torch: Array<{ variant: TorchVariant; wallMs: number; ops: ProfileOp[] }>;
    invad: { wallMs: number; ops: ProfileOp[] };
  };
  peakRssMiB: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The PyTorch server (train/bench_torch.py) as a request/response channel over its stdio. */
class TorchServer {
  private readonly waiting: Array<{ resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }> = [];
  private readonly stderrTail: string[] = [];
  private exited: Error | undefined;

  private constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        this.stderrTail.push(line);
        return;
      }
      const w = this.waiting.shift();
      if (!w) return;
      if (msg.event === 'error') w.reject(new Error(`PyTorch side: ${String(msg.message)}${this.tail()}`));
      else w.resolve(msg);
    });
    createInterface({ input: child.stderr! }).on('line', (line) => {
      this.stderrTail.push(line);
      if (this.stderrTail.length > 40) this.stderrTail.shift();
    });
    child.on('exit', (code, signal) => {
      this.exited = new Error(`the PyTorch benchmark process exited (code ${code}${signal ? `, ${signal}` : ''})${this.tail()}`);
      for (const w of this.waiting.splice(0)) w.reject(this.exited);
    });
  }

  private tail(): string {
    return this.stderrTail.length ? `\n  ${this.stderrTail.slice(-15).join('\n  ')}` : '';
  }

  static start(python: string, args: string[]): { server: TorchServer; ready: Promise<TorchReady> } {
    const child = spawn(python, ['-m', 'train.bench_torch', ...args], {
      cwd: packageRoot(),
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONUNBUFFERED: '1' },
    });
    const server = new TorchServer(child);
    return { server, ready: server.next() as Promise<unknown> as Promise<TorchReady> };
  }

  private next(): Promise<Record<string, unknown>> {
    if (this.exited) return Promise.reject(this.exited);
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  request(cmd: Record<string, unknown>): Promise<Record<string, unknown>> {
    const p = this.next();
    this.child.stdin!.write(JSON.stringify(cmd) + '\n');
    return p;
  }

  async close(): Promise<void> {
    if (this.exited || this.child.exitCode !== null) return;
    const done = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.stdin!.end(JSON.stringify({ cmd: 'quit' }) + '\n');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await done;
    clearTimeout(timer);
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

export interface ProfileEvent {
  cat?: string;
  name?: string;
  ts?: number;
  dur?: number;
  args?: { op_name?: string };
}

/** Aggregates onnxruntime profile events (chrome trace JSON) by operator type. */
export function ortProfileByOp(events: ProfileEvent[]): ProfileOp[] {
  const by = new Map<string, ProfileOp>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || !e.args?.op_name) continue;
    const op = e.args.op_name;
    const row = by.get(op) ?? { op, calls: 0, selfMs: 0 };
    row.calls++;
    row.selfMs += (e.dur ?? 0) / 1000;
    by.set(op, row);
  }
  return [...by.values()].sort((a, b) => b.selfMs - a.selfMs);
}

/** One timed call of a compared stack: its wall time, its parity output and its own breakdown when it has one. */
interface Timing {
  ms: number;
  sumSq: number[];
  unetCalls?: number[];
  backboneMs?: number;
  kernelMs?: number;
}
type Side = (n: number, steps: number) => Promise<Timing>;

/** What benchCompare opens and must close, whatever happens. */
class CompareResources {
  readonly servers: Array<{ variant: TorchVariant; server: TorchServer }> = [];
  readonly sessions: ort.InferenceSession[] = [];
  nativePipeline: DeviceResidentPipeline | undefined;

  /** Releases the engines' sessions (before the end-to-end runs, which open their own). */
  async releaseEngines(): Promise<void> {
    for (const s of this.sessions.splice(0)) await s.release().catch(() => undefined);
    this.nativePipeline?.release();
    this.nativePipeline = undefined;
  }

  async closeServers(): Promise<void> {
    for (const { server } of this.servers) await server.close();
  }

  async releaseAll(): Promise<void> {
    await this.releaseEngines();
    for (const { server } of this.servers) server.kill();
  }
}

/** Starts one PyTorch process per variant; the first exports the UNet and writes the features, the others reuse them. */
async function startTorch(o: CompareOptions, python: string, variants: readonly TorchVariant[], work: string, res: CompareResources): Promise<TorchReady> {
  const args = ['--preset', o.preset, '--out', work, '--threads', String(o.threads), '--seed', String(o.seed), '--max-batch', String(Math.max(...o.batches))];
  if (o.checkpoint) args.push('--checkpoint', o.checkpoint);
  if (o.features) args.push('--features', `${o.features.channels}x${o.features.height}x${o.features.width}`);
  let ready: TorchReady | undefined;
  for (const [i, variant] of variants.entries()) {
    o.onProgress?.(
      i === 0
        ? `compare: starting PyTorch (${python}, ${variant} convolutions), building the ${o.preset} UNet and exporting it to ONNX`
        : `compare: starting PyTorch (${variant} convolutions)`,
    );
    const started = TorchServer.start(python, [...args, '--conv', variant, ...(i === 0 ? [] : ['--no-export'])]);
    res.servers.push({ variant, server: started.server });
    const r = await started.ready;
    ready ??= r;
  }
  if (!ready) throw new Error('no PyTorch variant to compare with');
  return ready;
}

/** The compared UNet behind a one-Conv stride-16 backbone whose grid matches the features (for the end-to-end runs). */
function benchBundleContents(o: CompareOptions, ready: TorchReady): BundleContents {
  const [channels, height, width] = ready.shape;
  const stride = 16;
  return {
    input: { width: width * stride, height: height * stride },
    features: { channels, height, width },
    defaultSteps: Math.max(...o.steps),
    backbone: {
      bytes: convBackbone({ height: height * stride, width: width * stride, channels, stride, seed: o.seed + 1 }),
      name: 'synthetic-conv (benchmark)',
      taps: ['conv'],
    },
    unet: { path: ready.onnx },
    training: { synthetic: true, benchmark: `${o.preset} preset, ${ready.weights}` },
  };
}

/**
 * Opens each wanted invad engine on the stand-in backbone, which outputs the features
 * whatever the image: each engine then runs exactly its production path (backbone
 * session, then S UNet calls and the kernels), with a backbone that costs a feature copy.
 */
async function openEngineSides(
  o: CompareOptions,
  ready: TorchReady,
  features: Float32Array,
  contents: BundleContents,
  work: string,
  res: CompareResources,
): Promise<{ sides: Array<{ engine: EngineKind; run: Side }>; errors: CompareResult['engineErrors'] }> {
  const [channels, height, width] = ready.shape;
  const featureShape = { channels, height, width };
  const threadSpinning = o.threadSpinning ?? DEFAULT_THREAD_SPINNING;
  const manifest = buildManifest(contents, { backbone: '0'.repeat(64), unet: '0'.repeat(64) });
  const addon = loadAddon();
  const sides: Array<{ engine: EngineKind; run: Side }> = [];
  const errors: CompareResult['engineErrors'] = [];
  const wanted = o.engines?.length ? [...new Set(o.engines)] : (['onnxruntime-node', 'native'] as EngineKind[]);

  const standIn = join(work, 'features-backbone.onnx');
  const standInInput = { height: 4, width: 4 };
  writeFileSync(standIn, constantFeaturesBackbone(features, { batch: ready.maxBatch, channels, height, width }, standInInput));
  const standInManifest = buildManifest(
    {
      ...contents,
      input: { width: standInInput.width, height: standInInput.height },
      backbone: { ...contents.backbone, inputName: STAND_IN_INPUT, outputName: STAND_IN_OUTPUT },
    },
    { backbone: '0'.repeat(64), unet: '0'.repeat(64) },
  );
  const standInImages = new Map<number, Float32Array>();
  // A fresh copy per call: runInversion takes ownership of the batch (the worker gets it transferred).
  const standInImage = (n: number): Float32Array => {
    let image = standInImages.get(n);
    if (!image) standInImages.set(n, (image = new Float32Array(n * 3 * standInInput.height * standInInput.width)));
    return new Float32Array(image);
  };

  if (wanted.includes('onnxruntime-node')) {
    const spinning = sessionSpinning(threadSpinning);
    const backbone = await openSession(standIn, o.providers, { intraOpThreads: o.threads, spinning: spinning.backbone }, 'stand-in backbone');
    res.sessions.push(backbone.session);
    const unet = await openSession(ready.onnx, o.providers, { intraOpThreads: o.threads, spinning: spinning.unet }, 'UNet');
    res.sessions.push(unet.session);
    const sessions: PipelineSessions = { backbone: backbone.session, unet: unet.session };
    sides.push({
      engine: 'onnxruntime-node',
      run: async (n, steps) => {
        const image = standInImage(n);
        const t0 = performance.now();
        const out = await runInversion(sessions, addon, standInManifest, image, n, inversionSteps(steps, standInManifest.schedule));
        const ms = performance.now() - t0;
        return { ms, unetCalls: out.unetMs, backboneMs: out.backboneMs, kernelMs: out.kernelMs, sumSq: Array.from(out.reduced.sumSq) };
      },
    });
  }
  if (wanted.includes('native')) {
    try {
      if (typeof addon.DeviceResidentPipeline !== 'function') throw new Error('this addon build has no native engine (DeviceResidentPipeline)');
      const providers = o.providers.filter((p): p is 'cpu' | 'cuda' | 'tensorrt' => p === 'cpu' || p === 'cuda' || p === 'tensorrt');
      if (providers.length === 0) throw new Error(`the native engine supports cpu, cuda and tensorrt, not ${o.providers.join(', ')}`);
      const pipeline = openPipeline(addon, {
        ortLibraryPath: ortLibraryPath(),
        backbonePath: standIn,
        unetPath: ready.onnx,
        backbone: { inputName: STAND_IN_INPUT, outputName: STAND_IN_OUTPUT },
        unet: { xName: manifest.models.unet.xName, tName: manifest.models.unet.tName, outputName: manifest.models.unet.outputName },
        input: standInInput,
        features: featureShape,
        providers,
        cpuThreads: o.threads,
        cpuSpinning: threadSpinning,
        maxBatch: Math.max(...o.batches),
      });
      res.nativePipeline = pipeline;
      sides.push({
        engine: 'native',
        run: async (n, steps) => {
          const image = standInImage(n);
          const sched = inversionSteps(steps, manifest.schedule).map((st) => ({ t: st.t, a: st.a, b: st.b }));
          const t0 = performance.now();
          const r = await pipeline.runAsync(image, n, sched, { latents: false });
          const ms = performance.now() - t0;
          return { ms, unetCalls: r.timings.unetMs, backboneMs: r.timings.backboneMs, kernelMs: r.timings.kernelMs, sumSq: Array.from(r.sumSq) };
        },
      });
    } catch (err) {
      errors.push({ engine: 'native', error: (err as Error).message });
      o.onProgress?.(`compare: the native engine is left out: ${(err as Error).message}`);
    }
  }
  if (sides.length === 0) throw new Error(`no invad engine could be timed: ${errors.map((e) => `${e.engine}: ${e.error}`).join('; ')}`);
  return { sides, errors };
}

/** Warm-up, then `reps` rounds in which every side runs once, in an order that rotates from round to round. */
async function alternate(sides: readonly Side[], batch: number, steps: number, o: CompareOptions, cpu: CpuMonitor): Promise<Timing[][]> {
  for (let i = 0; i < o.warmup; i++) {
    for (const side of sides) {
      await side(batch, steps);
      await sleep(o.gapMs);
    }
  }
  cpu.reset();
  const got: Timing[][] = sides.map(() => []);
  for (let r = 0; r < o.reps; r++) {
    for (let k = 0; k < sides.length; k++) {
      const j = (k + r) % sides.length;
      got[j].push(await sides[j](batch, steps));
      await sleep(o.gapMs);
    }
  }
  return got;
}

/** One table row from the alternated timings: the engines first, then the PyTorch variants. */
function compareRow(
  got: Timing[][],
  engines: readonly EngineKind[],
  variants: readonly TorchVariant[],
  batch: number,
  steps: number,
  reps: number,
  targetEngine: EngineKind,
  cpu: CpuLoad,
): CompareRow {
  const ne = engines.length;
  const rel = (a: number[], b: number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i]) / Math.max(1e-12, Math.abs(b[i]))));
  const lastOf = (j: number) => got[j][got[j].length - 1].sumSq;
  const engineRows: EngineTiming[] = engines.map((engine, e) => ({
    engine,
    time: summarize(got[e].map((x) => x.ms)),
    unetMs: median(got[e].map((x) => (x.unetCalls ?? []).reduce((p, q) => p + q, 0))),
    unetCallsMs: Array.from({ length: steps }, (_, k) => median(got[e].map((x) => x.unetCalls?.[k] ?? NaN))),
    backboneMs: median(got[e].map((x) => x.backboneMs ?? NaN)),
    kernelMs: median(got[e].map((x) => x.kernelMs ?? NaN)),
    parityRelDiff: rel(lastOf(e), lastOf(ne)),
  }));
  const references: ReferenceTiming[] = variants.map((variant, v) => ({ variant, torch: summarize(got[ne + v].map((x) => x.ms)) }));
  const ratios: Ratio[] = engines.flatMap((engine, e) =>
    variants.map((variant, v) => ({
      engine,
      variant,
      speedup: references[v].torch.median / engineRows[e].time.median,
      pairSpeedup: summarize(got[e].map((x, i) => got[ne + v][i].ms / x.ms)),
    })),
  );
  const target = TARGETS.find((t) => t.batch === batch)?.speedup ?? null;
  const worst = Math.min(...ratios.filter((r) => r.engine === targetEngine).map((r) => r.speedup));
  return { batch, steps, reps, engines: engineRows, references, ratios, target, targetEngine, met: target === null ? null : worst >= target, cpu };
}

/** invad end to end through Detector.score/scoreBatch, per engine, on the benchmark bundle. */
async function endToEndRows(
  o: CompareOptions,
  contents: BundleContents,
  engines: readonly EngineKind[],
  work: string,
): Promise<NonNullable<CompareResult['endToEnd']>> {
  const rows: NonNullable<CompareResult['endToEnd']> = [];
  const dir = join(work, 'bundle');
  await writeBundle(dir, contents, { overwrite: true });
  const imgs = await syntheticImages(contents.input.width, contents.input.height, 8);
  const threadSpinning = o.threadSpinning ?? DEFAULT_THREAD_SPINNING;
  const maxBatchSize = Math.max(...o.batches);
  for (const engine of engines) {
    o.onProgress?.(`compare: end-to-end invad through the Detector, ${engine} engine (one-Conv backbone, raw frames)`);
    const det = await Detector.load(dir, {
      executionProviders: o.providers,
      intraOpThreads: o.threads,
      threadSpinning,
      verifyHashes: false,
      maxBatchSize,
      engine,
    });
    try {
      const stageRows = await benchStages(det, imgs, {
        batches: o.batches,
        steps: o.steps,
        inputs: ['raw'],
        runs: Math.max(3, Math.ceil(o.reps / 2)),
        warmup: Math.max(1, o.warmup),
        onProgress: o.onProgress,
      });
      rows.push({ engine: det.info().engine, rows: stageRows });
    } finally {
      await det.dispose();
    }
  }
  return rows;
}

export async function benchCompare(o: CompareOptions): Promise<CompareResult> {
  const python = findPython(o.python);
  const variants = o.torchVariants?.length ? [...new Set(o.torchVariants)] : [...TORCH_VARIANTS];
  const work = o.workDir ?? mkdtempSync(join(tmpdir(), 'invad-bench-'));
  const threadSpinning = o.threadSpinning ?? DEFAULT_THREAD_SPINNING;
  const res = new CompareResources();
  try {
    const ready = await startTorch(o, python, variants, work, res);
    const [channels, height, width] = ready.shape;
    const features = (await readNpy(ready.features)).data as Float32Array;
    o.onProgress?.(`compare: ${ready.params.toLocaleString('en-US')} parameters, features ${channels}x${height}x${width}, ${ready.weights}`);
    const contents = benchBundleContents(o, ready);
    const opened = await openEngineSides(o, ready, features, contents, work, res);
    const engines = opened.sides.map((e) => e.engine);
    const torchSide =
      (server: TorchServer): Side =>
      async (n, steps) => {
        const r = await server.request({ cmd: 'run', batch: n, steps, reps: 1 });
        return { ms: (r.ms as number[])[0], sumSq: r.sumSq as number[] };
      };
    // One "side" per stack: the engines first, then the PyTorch variants (compareRow relies on the order).
    const sides: Side[] = [...opened.sides.map((e) => e.run), ...res.servers.map(({ server }) => torchSide(server))];
    const preferred = defaultEngine(o.providers);
    const targetEngine = engines.includes(preferred) ? preferred : engines[0];

    const cpu = new CpuMonitor(() => res.servers.flatMap(({ server }) => (server.child.pid ? [server.child.pid] : [])));
    const rows: CompareRow[] = [];
    for (const steps of o.steps) {
      for (const batch of o.batches) {
        o.onProgress?.(
          `compare: batch ${batch}, S=${steps}: ${o.warmup} warm-up + ${o.reps} reps alternating ${[...engines.map((e) => `invad/${e}`), ...variants.map((v) => `PyTorch/${v}`)].join(', ')}`,
        );
        const got = await alternate(sides, batch, steps, o, cpu);
        rows.push(compareRow(got, engines, variants, batch, steps, o.reps, targetEngine, cpu.read()));
      }
    }

    let profile: CompareResult['profile'] = null;
    if (o.profile) {
      const batch = o.batches[0];
      const steps = o.steps[0];
      o.onProgress?.(`compare: profiling one inversion on each side (batch ${batch}, S=${steps})`);
      const torchProfiles = [];
      for (const { variant, server } of res.servers) {
        const tp = await server.request({ cmd: 'profile', batch, steps, top: 15 });
        torchProfiles.push({ variant, wallMs: tp.wallMs as number, ops: tp.ops as ProfileOp[] });
      }
      const manifest = buildManifest(contents, { backbone: '0'.repeat(64), unet: '0'.repeat(64) });
      profile = { batch, steps, torch: torchProfiles, invad: await profileInvad(ready.onnx, o, manifest, features, channels * height * width, batch, steps) };
    }

    await res.releaseEngines();
    await res.closeServers();
    const endToEnd = o.e2e ? await endToEndRows(o, contents, engines, work) : null;
    return {
      preset: o.preset,
      weights: ready.weights,
      params: ready.params,
      featureShape: { channels, height, width },
      threads: o.threads,
      threadSpinning,
      providers: o.providers,
      unit: `features ${channels}x${height}x${width} -> S UNet calls + DDIM update -> channel-norm map and statistics`,
      torch: ready.machine,
      torchVariants: variants,
      engines,
      engineErrors: opened.errors,
      rows,
      endToEnd,
      profile,
      peakRssMiB: peakRssMiB(),
    };
  } finally {
    await res.releaseAll();
    if (!o.workDir) rmSync(work, { recursive: true, force: true });
  }
}

/** One inversion with ORT's profiler on (a separate session, same options otherwise), aggregated by operator. */
async function profileInvad(
  onnx: string,
  o: CompareOptions,
  manifest: ReturnType<typeof buildManifest>,
  features: Float32Array,
  per: number,
  batch: number,
  steps: number,
): Promise<{ wallMs: number; ops: ProfileOp[] }> {
  const { readFile, rm } = await import('node:fs/promises');
  const dir = mkdtempSync(join(tmpdir(), 'invad-ortprof-'));
  const session = await ort.InferenceSession.create(onnx, {
    executionProviders: o.providers,
    graphOptimizationLevel: 'all',
    intraOpNumThreads: o.threads,
    enableProfiling: true,
    profileFilePrefix: join(dir, 'ort'),
  });
  try {
    const { channels, height, width } = manifest.features;
    const m = manifest.models.unet;
    const sched = inversionSteps(steps, manifest.schedule);
    const run = async () => {
      const x = new Float32Array(features.subarray(0, batch * per));
      for (const s of sched) {
        const r = await session.run({
          [m.xName]: new ort.Tensor('float32', x, [batch, channels, height, width]),
          [m.tName]: new ort.Tensor('int64', new BigInt64Array(batch).fill(BigInt(s.t)), [batch]),
        });
        const eps = r[m.outputName].data as Float32Array;
        for (let i = 0; i < x.length; i++) x[i] = s.a * x[i] + s.b * eps[i];
      }
    };
    await run();
    const t0 = performance.now();
    await run();
    const wallMs = performance.now() - t0;
    session.endProfiling();
    const { readdirSync } = await import('node:fs');
    const file = readdirSync(dir).find((f) => f.endsWith('.json'));
    if (!file) throw new Error(`onnxruntime wrote no profile into ${dir}`);
    const events = JSON.parse(await readFile(join(dir, file), 'utf8')) as ProfileEvent[];
    // keep the second (timed) inversion: node events after the start of its first model_run
    const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => (a.ts ?? 0) - (b.ts ?? 0));
    const from = runs[sched.length]?.ts;
    const ops =
      from === undefined
        ? ortProfileByOp(events).map((r) => ({ ...r, calls: r.calls / 2, selfMs: r.selfMs / 2 }))
        : ortProfileByOp(events.filter((e) => (e.ts ?? 0) >= from));
    await rm(dir, { recursive: true, force: true });
    return { wallMs, ops: ops.slice(0, 15) };
  } finally {
    await session.release();
  }
}
