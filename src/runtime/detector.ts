/**
 * The public Detector: loads a bundle, preprocesses images on the main thread
 * (sharp works off-thread by itself), batches concurrent requests, and runs the
 * models and kernels in the engine worker.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadAddon } from '../binding';
import type { AddonBuildInfo } from '../binding/addon-types';
import { MicroBatcher, type ItemOutcome } from './batcher';
import { checkScoreSetup, loadBundle } from './bundle/load';
import { type CalibrationSummary, calibrationSummary } from './bundle/calibration-scores';
import { type Manifest, SCORE_DEFINITIONS, type ScoreDefinition } from './bundle/manifest';
import { EngineClient } from './engine/client';
import { ortLibraryPath } from './engine/ort-library';
import {
  checkIntraOpThreads,
  DEFAULT_THREAD_SPINNING,
  THREAD_SPINNING,
  type EngineKind,
  type EngineReady,
  type ExecutionProvider,
  type FeatureMaps,
  type RunResult,
  type ScorePlan,
  type TensorRtOptions,
  type ThreadSpinning,
} from './engine/protocol';
import { DisposedError, InferenceError, InvadError, reviveError } from '../util/errors';
import { asInputError, describeInput, type ImageInput, preprocess, type PreprocessedImage, stackTensors, takeInput } from './preprocess';
import { calibrationAt, imageThresholdAt } from './calibration';
import {
  DEFAULT_DRIFT_ALPHA,
  DEFAULT_DRIFT_WINDOW,
  type DriftCallback,
  type DriftInfo,
  type DriftMonitor,
  driftMonitor,
  MAX_DRIFT_WINDOW,
  MIN_DRIFT_WINDOW,
} from './drift';
import type { CalibrationScores } from './bundle/calibration-scores';
import { imageScore, SCORES, type ScoreComponents, type ScoreDefinitionSpec } from './scores';
import { maxSteps } from './schedule';
import { intInRange, invalidArgument, numberInRange, oneOf, pathString, plainObject } from '../util/validate';

const PROVIDERS: readonly ExecutionProvider[] = ['cpu', 'cuda', 'tensorrt', 'dml', 'coreml', 'webgpu'];
const ENGINES: readonly EngineKind[] = ['onnxruntime-node', 'native'];
const NATIVE_PROVIDERS: readonly ExecutionProvider[] = ['cpu', 'cuda', 'tensorrt'];

/**
 * The engine Detector.load uses when `options.engine` is not given: 'native'
 * (faster on the CPU in `node dist/src/tools/bench/engine-compare.js`, and the only one that keeps
 * the pipeline on the GPU) unless a provider in the list is one only
 * onnxruntime-node offers (dml, coreml, webgpu). INVAD_ENGINE overrides it.
 * A defaulted native engine that cannot load ONNX Runtime falls back to
 * onnxruntime-node and says why in info().engineFallback.
 */
export function defaultEngine(providers: readonly ExecutionProvider[]): EngineKind {
  const env = process.env.INVAD_ENGINE;
  if (env !== undefined && env !== '') return oneOf('INVAD_ENGINE', env, ENGINES);
  return providers.every((p) => NATIVE_PROVIDERS.includes(p)) ? 'native' : 'onnxruntime-node';
}

export interface DetectorOptions {
  /** Execution providers to try, in order; the first that opens wins. Default ['cpu']. */
  executionProviders?: ExecutionProvider[];
  /** Inversion steps S (network evaluations), 1 to min(trainSteps, 1000) in both engines. Default: the bundle's `schedule.defaultSteps`. */
  steps?: number;
  /** Most images merged into one model run by concurrent score() calls. Default 8. */
  maxBatchSize?: number;
  /** How long a lone request waits for company before running, in ms. Default 2. */
  maxWaitMs?: number;
  /**
   * ONNX Runtime intra-op threads per session; 0 lets ORT decide. Default 0. At most
   * 4 x os.availableParallelism() (see maxIntraOpThreads()), in both engines: more only contend
   * for the cores and slow the start.
   */
  intraOpThreads?: number;
  /**
   * Whose ONNX Runtime intra-op threads spin after a run, waiting for the next one: 'none',
   * 'unet' (the UNet's, between its S calls) or 'all'. The backbone and the UNet each have a
   * thread pool, and on a few cores a spinning pool takes the core the other session needs
   * (README, benchmarks). Default 'unet'.
   */
  threadSpinning?: ThreadSpinning;
  /** Override the bundle's score definition. */
  scoreDefinition?: ScoreDefinition;
  /** Override the bundle's image threshold. */
  threshold?: number;
  /** Check the model files' sha256 against the manifest. Default true. */
  verifyHashes?: boolean;
  /**
   * Who runs the models: 'native', the addon's device-resident pipeline on the
   * ONNX Runtime C API (tensorrt, cuda and cpu providers; IoBinding, fused
   * kernels, everything on the GPU with CUDA), or 'onnxruntime-node'. Default:
   * see defaultEngine() ('native' for cpu/cuda/tensorrt provider lists).
   */
  engine?: EngineKind;
  /** TensorRT settings (native engine). */
  tensorrt?: TensorRtOptions;
  /** CUDA device of the CUDA/TensorRT providers (native engine). Default 0. */
  cudaDeviceId?: number;
  /**
   * Drift monitoring (info().drift, README "Drift alarms"): how many of the latest passed parts' scores
   * are compared with the calibration normals', per S; 0 turns it off, else 20 to 1,000,000.
   * Default 1000.
   */
  driftWindow?: number;
  /** The KS p-value below which `onDrift` fires, in (0, 1). Default 0.001. */
  driftAlpha?: number;
  /**
   * Called when the window's KS p-value falls below `driftAlpha`, checked each time
   * ceil(driftWindow / 10) more parts have been passed; it fires once, then not again until a
   * check sees the p-value back at 10 x driftAlpha or more. It runs inside score(); whatever it
   * throws or rejects with becomes a process warning (code INVAD_DRIFT_CALLBACK), never an error
   * of the score.
   */
  onDrift?: DriftCallback;
}

export interface ScoreTimings {
  decodeMs: number;
  preprocessMs: number;
  /** waiting for a batch to form and for the engine to be free */
  queueMs: number;
  backboneMs: number;
  /** one entry per UNet call (S entries) */
  unetMs: number[];
  /** the fused DDIM step and reduction kernels */
  kernelMs: number;
  /** resizing the maps to the input sizes */
  resizeMs: number;
  /** from the call to the result */
  totalMs: number;
  /** how many images shared the model run */
  batchSize: number;
}

export interface ScoreResult {
  /** The image score under the score definition, normalized by the bundle's calibration. */
  score: number;
  /** score > threshold; always false while the bundle has no threshold (uncalibrated). */
  isAnomalous: boolean;
  threshold: number | null;
  /** Anomaly map, width x height, row-major, at the input's resolution. */
  map: Float32Array;
  width: number;
  height: number;
  /**
   * Maps at feature-grid resolution (features.height x features.width): the
   * latent's channel norm (`l2`, the map of sp/nll/combined; for the
   * reconstruction ablation, the error norm) and, when the bundle has latent
   * statistics for this S, the Mahalanobis distance (`latentGaussian`); with feature statistics
   * (issue 17), `featureGaussian`, `patchcore` and `fused` too. A backbone-only definition
   * (padim, patchcore) leaves `l2` empty.
   */
  featureMaps: FeatureMaps;
  components: ScoreComponents;
  steps: number;
  timings: ScoreTimings;
}

export interface ScoreOptions {
  /** Inversion steps for this call; default the detector's. */
  steps?: number;
  /**
   * Ablation only (paper Table 4): score by the feature reconstruction error
   * instead of inversion: noise the features to t = tStart * T, denoise them in
   * reconSteps DDIM steps, and take the per-position error norm.
   */
  reconstruction?: { tStart: number; reconSteps: number };
  /**
   * Also compute the maps and parts the score definition does not use (the
   * latent-Gaussian ones when the bundle has them), as evaluation and
   * calibration need. Default false: they cost time.
   */
  allMaps?: boolean;
}

export interface ScoreBatchOptions extends ScoreOptions {
  /** Images per model run. Default: the detector's maxBatchSize. */
  batchSize?: number;
  /** 'throw' (default) rejects on the first failed image; 'collect' puts the error in its slot. */
  errors?: 'throw' | 'collect';
}

export interface DetectorInfo {
  bundle: string;
  providers: EngineReady['providers'];
  fallbacks: EngineReady['fallbacks'];
  addon: AddonBuildInfo;
  steps: number;
  maxBatchSize: number;
  scoreDefinition: ScoreDefinition;
  calibrated: boolean;
  threshold: number | null;
  /** map value above which a pixel counts as anomalous; null while uncalibrated */
  pixelThreshold: number | null;
  inputSize: { width: number; height: number };
  featureShape: { channels: number; height: number; width: number };
  /** the engine running the models */
  engine: EngineKind;
  /** "cpu", or the GPU's name when a session runs on CUDA/TensorRT */
  device: string;
  /** native engine: buffers and kernels stay on the GPU */
  deviceResident: boolean;
  /** why the default native engine was not used (null when it was, or was not the default) */
  engineFallback: string | null;
  /** the threshold rule, the normals behind it and its warnings (e.g. too few normals for the rate) */
  calibration: CalibrationSummary;
  /** the passed parts' scores at the detector's S against the calibration normals' (see drift()) */
  drift: DriftInfo;
}

interface Resolved {
  providers: ExecutionProvider[];
  steps: number;
  maxBatchSize: number;
  maxWaitMs: number;
  intraOpThreads: number;
  threadSpinning: ThreadSpinning;
  scoreDefinition: ScoreDefinition | undefined;
  threshold: number | undefined;
  verifyHashes: boolean;
  engine: EngineKind;
  /** the engine was chosen by default, so a native engine may fall back */
  engineDefaulted: boolean;
  tensorrt: TensorRtOptions | undefined;
  cudaDeviceId: number;
  driftWindow: number;
  driftAlpha: number;
  onDrift: DriftCallback | undefined;
}

function resolveTensorRt(raw: unknown): TensorRtOptions | undefined {
  if (raw === undefined) return undefined;
  const t = plainObject('options.tensorrt', raw);
  const out: TensorRtOptions = {};
  if (t.fp16 !== undefined) {
    if (typeof t.fp16 !== 'boolean') throw invalidArgument('options.tensorrt.fp16', 'a boolean', t.fp16);
    out.fp16 = t.fp16;
  }
  if (t.cacheDir !== undefined) {
    out.cacheDir = pathString('options.tensorrt.cacheDir', t.cacheDir, 'a folder path');
  }
  if (t.workspaceBytes !== undefined) out.workspaceBytes = intInRange('options.tensorrt.workspaceBytes', t.workspaceBytes, 1, Number.MAX_SAFE_INTEGER);
  return out;
}

function resolveOptions(raw: unknown): Omit<Resolved, 'steps'> & { steps: number | undefined } {
  const o = plainObject('options', raw ?? {});
  const rawProviders = o.executionProviders ?? ['cpu'];
  if (!Array.isArray(rawProviders) || rawProviders.length === 0)
    throw invalidArgument('options.executionProviders', 'a non-empty array of providers', rawProviders);
  const providers = rawProviders.map((p, i) => oneOf(`options.executionProviders[${i}]`, p, PROVIDERS));
  return {
    providers,
    steps: o.steps === undefined ? undefined : intInRange('options.steps', o.steps, 1, 1000),
    maxBatchSize: o.maxBatchSize === undefined ? 8 : intInRange('options.maxBatchSize', o.maxBatchSize, 1, 1024),
    maxWaitMs: o.maxWaitMs === undefined ? 2 : numberInRange('options.maxWaitMs', o.maxWaitMs, 0, 60_000),
    intraOpThreads: o.intraOpThreads === undefined ? 0 : checkIntraOpThreads('options.intraOpThreads', o.intraOpThreads),
    threadSpinning: o.threadSpinning === undefined ? DEFAULT_THREAD_SPINNING : oneOf('options.threadSpinning', o.threadSpinning, THREAD_SPINNING),
    scoreDefinition: o.scoreDefinition === undefined ? undefined : oneOf('options.scoreDefinition', o.scoreDefinition, SCORE_DEFINITIONS),
    threshold: o.threshold === undefined ? undefined : numberInRange('options.threshold', o.threshold, -Number.MAX_VALUE, Number.MAX_VALUE),
    verifyHashes: o.verifyHashes === undefined ? true : o.verifyHashes === true,
    engine: o.engine === undefined ? defaultEngine(providers) : oneOf('options.engine', o.engine, ENGINES),
    engineDefaulted: o.engine === undefined,
    tensorrt: resolveTensorRt(o.tensorrt),
    cudaDeviceId: o.cudaDeviceId === undefined ? 0 : intInRange('options.cudaDeviceId', o.cudaDeviceId, 0, 1023),
    driftWindow: o.driftWindow === undefined ? DEFAULT_DRIFT_WINDOW : driftWindowOption(o.driftWindow),
    driftAlpha: o.driftAlpha === undefined ? DEFAULT_DRIFT_ALPHA : openUnitOption('options.driftAlpha', o.driftAlpha),
    onDrift: o.onDrift === undefined ? undefined : callbackOption('options.onDrift', o.onDrift),
  };
}

function driftWindowOption(v: unknown): number {
  if (v === 0) return 0;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < MIN_DRIFT_WINDOW || v > MAX_DRIFT_WINDOW) {
    throw invalidArgument('options.driftWindow', `0 (off) or an integer from ${MIN_DRIFT_WINDOW} to ${MAX_DRIFT_WINDOW}`, v);
  }
  return v;
}

function openUnitOption(name: string, v: unknown): number {
  if (typeof v !== 'number' || !(v > 0 && v < 1)) throw invalidArgument(name, 'a number between 0 and 1 (exclusive)', v);
  return v;
}

function callbackOption(name: string, v: unknown): DriftCallback {
  if (typeof v !== 'function') throw invalidArgument(name, 'a function', v);
  return v as DriftCallback;
}

interface QueuedImage {
  pre: PreprocessedImage;
  label: string;
  queuedAt: number;
}

interface EngineOutput {
  components: ScoreComponents;
  map: Float32Array;
  featureMaps: FeatureMaps;
  width: number;
  height: number;
  timings: Omit<ScoreTimings, 'decodeMs' | 'preprocessMs' | 'totalMs'>;
}

export class Detector {
  private disposed = false;
  private disposing: Promise<void> | undefined;
  /** calls accepted before dispose(); dispose waits for them, so nothing is lost */
  private readonly active = new Set<Promise<unknown>>();
  private readonly batcher: MicroBatcher<QueuedImage, EngineOutput>;
  /** drift monitors by S, made when a part is first scored at that S (or asked about) */
  private readonly driftMonitors = new Map<number, DriftMonitor | { unavailable: string }>();

  private constructor(
    private readonly dir: string,
    private readonly manifest: Manifest,
    private readonly engine: EngineClient,
    private readonly ready: EngineReady,
    private readonly opts: Resolved,
    private readonly calibrationScores: CalibrationScores | undefined,
  ) {
    this.batcher = new MicroBatcher((items, key) => this.runBatch(items, JSON.parse(key) as ScorePlan), {
      maxBatch: opts.maxBatchSize,
      maxWaitMs: opts.maxWaitMs,
    });
  }

  /** Loads and checks a bundle folder and opens its sessions in a worker thread. */
  static async load(dir: string, options?: DetectorOptions): Promise<Detector> {
    pathString('dir', dir, 'a bundle folder path');
    const o = resolveOptions(options);
    const bundle = await loadBundle(dir, { skipHashCheck: !o.verifyHashes });
    checkScoreSetup(bundle.manifest, { scoreDefinition: o.scoreDefinition, steps: o.steps });
    const steps = o.steps ?? bundle.manifest.schedule.defaultSteps;
    if (steps > maxSteps(bundle.manifest.schedule.trainSteps))
      throw invalidArgument('options.steps', `at most ${maxSteps(bundle.manifest.schedule.trainSteps)}`, steps);
    const { client, ready } = await EngineClient.start({
      backbonePath: bundle.backbonePath,
      unetPath: bundle.unetPath,
      manifest: bundle.manifest,
      executionProviders: o.providers,
      intraOpThreads: o.intraOpThreads,
      threadSpinning: o.threadSpinning,
      engine: o.engine,
      engineFallback: o.engineDefaulted,
      ...(o.engine === 'native' ? { ortLibraryPath: ortLibraryPath() } : {}),
      ...(o.tensorrt ? { tensorrt: o.tensorrt } : {}),
      cudaDeviceId: o.cudaDeviceId,
      maxBatch: Math.max(64, o.maxBatchSize),
      latentGaussian: (bundle.manifest.latentGaussian ?? []).map((g) => ({
        steps: g.steps,
        meanPath: join(dir, g.meanFile),
        precisionPath: join(dir, g.precisionFile),
      })),
      ...featureStatisticsPaths(dir, bundle.manifest),
    });
    const maxBatchSize = ready.fixedBatch === null ? o.maxBatchSize : Math.min(o.maxBatchSize, ready.fixedBatch);
    return new Detector(dir, bundle.manifest, client, ready, { ...o, steps, maxBatchSize }, bundle.calibrationScores);
  }

  get scoreDefinition(): ScoreDefinition {
    return this.opts.scoreDefinition ?? this.manifest.score.definition;
  }

  /** The image threshold at the detector's S (the `threshold` option, else the bundle's). */
  get threshold(): number | null {
    return this.thresholdAt(this.opts.steps);
  }

  private thresholdAt(steps: number): number | null {
    if (this.opts.threshold !== undefined) return this.opts.threshold;
    return imageThresholdAt(this.manifest, steps, this.scoreDefinition);
  }

  /** True when the bundle carries calibration statistics from held-out normals. */
  get calibrated(): boolean {
    return this.manifest.calibration.status === 'calibrated';
  }

  info(): DetectorInfo {
    const m = this.manifest;
    return {
      bundle: this.dir,
      providers: { ...this.ready.providers },
      fallbacks: this.ready.fallbacks.map((f) => ({ ...f })),
      addon: loadAddon().buildInfo(),
      steps: this.opts.steps,
      maxBatchSize: this.opts.maxBatchSize,
      scoreDefinition: this.scoreDefinition,
      calibrated: this.calibrated,
      threshold: this.threshold,
      pixelThreshold: m.calibration.pixelThreshold,
      inputSize: { width: m.input.width, height: m.input.height },
      featureShape: { ...m.features },
      engine: this.ready.engine ?? 'onnxruntime-node',
      device: this.ready.device ?? 'cpu',
      deviceResident: this.ready.deviceResident ?? false,
      engineFallback: this.ready.engineFallback ?? null,
      calibration: calibrationSummary(m.calibration),
      drift: this.drift(),
    };
  }

  /**
   * The drift report at S (default the detector's), as info().drift gives it for the
   * detector's S: the latest passed parts' scores against the calibration normals', the KS test,
   * the false-alarm rates and the alarm (README, "Drift alarms"). Parts scored with per-call `steps`
   * are watched at their own S; the reconstruction ablation is not watched.
   */
  drift(steps: number = this.opts.steps): DriftInfo {
    intInRange('steps', steps, 1, maxSteps(this.manifest.schedule.trainSteps));
    if (this.opts.driftWindow === 0) return { status: 'disabled', reason: 'the driftWindow option is 0' };
    const m = this.driftMonitorAt(steps);
    return 'unavailable' in m ? { status: 'unavailable', steps, reason: m.unavailable } : m.report();
  }

  private driftMonitorAt(steps: number): DriftMonitor | { unavailable: string } {
    let m = this.driftMonitors.get(steps);
    if (!m) {
      const setup = {
        manifest: this.manifest,
        calibrationScores: this.calibrationScores,
        steps,
        definition: this.scoreDefinition,
        threshold: this.thresholdAt(steps),
        thresholdOverridden: this.opts.threshold !== undefined,
      };
      m = driftMonitor(setup, { window: this.opts.driftWindow, alpha: this.opts.driftAlpha, onDrift: this.opts.onDrift });
      this.driftMonitors.set(steps, m);
    }
    return m;
  }

  /**
   * Scores one image. Concurrent calls share model runs. The input is checked and its bytes
   * copied before this returns, so the caller may reuse, resize or transfer its buffer at once.
   * Rejects with InvalidArgumentError or InvalidInputError for a bad input (a path must name a
   * regular file), and with InferenceError when the model output or the score is not finite.
   */
  score(input: ImageInput, options?: ScoreOptions): Promise<ScoreResult> {
    return this.track('score()', async () => {
      const start = performance.now();
      const plan = this.planFor(options);
      const label = describeInput(input, 0);
      // Before the first await: once score() returns, the caller may reuse its buffer.
      const owned = takeInput(input, label);
      const pre = await preprocess(owned, this.manifest.input, label);
      const out = await this.batcher.submit({ pre, label, queuedAt: performance.now() }, JSON.stringify(plan));
      return this.finish(out, pre, start, plan, label);
    });
  }

  /**
   * Scores many images in batches of `batchSize`; results keep the inputs' order. Inputs are
   * read (and copied) chunk by chunk as they are preprocessed, so that memory stays bounded:
   * leave them unchanged until the promise settles. A buffer changed earlier gives that image
   * an error or a different score, never a crash.
   */
  scoreBatch(inputs: readonly ImageInput[], options?: ScoreBatchOptions & { errors?: 'throw' }): Promise<ScoreResult[]>;
  scoreBatch(inputs: readonly ImageInput[], options: ScoreBatchOptions & { errors: 'collect' }): Promise<Array<ScoreResult | InvadError>>;
  scoreBatch(inputs: readonly ImageInput[], options: ScoreBatchOptions = {}): Promise<Array<ScoreResult | InvadError>> {
    return this.track('scoreBatch()', () => this.scoreBatchOpen(inputs, options));
  }

  private async scoreBatchOpen(inputs: readonly ImageInput[], options: ScoreBatchOptions): Promise<Array<ScoreResult | InvadError>> {
    // `as unknown`: Array.isArray would narrow readonly ImageInput[] to any[].
    if (!Array.isArray(inputs as unknown)) throw invalidArgument('inputs', 'an array of images', inputs);
    const o = plainObject('options', options);
    const batchSize = o.batchSize === undefined ? this.opts.maxBatchSize : intInRange('options.batchSize', o.batchSize, 1, 1024);
    const collect = (o.errors === undefined ? 'throw' : oneOf('options.errors', o.errors, ['throw', 'collect'] as const)) === 'collect';
    const plan = this.planFor(options);
    const size = this.ready.fixedBatch === null ? batchSize : Math.min(batchSize, this.ready.fixedBatch);

    const settle = (p: Promise<ScoreResult>): Promise<ItemOutcome<ScoreResult>> =>
      p.then(
        (value) => ({ ok: true as const, value }),
        (error: Error) => ({ ok: false as const, error }),
      );
    const outcomes: Array<Promise<ItemOutcome<ScoreResult>>> = [];
    // Preprocess chunk k+1 while chunk k runs; hold at most two chunks in memory.
    const prepare = (from: number) =>
      inputs.slice(from, from + size).map((input, j) => {
        const start = performance.now();
        const label = describeInput(input, from + j);
        return preprocess(input, this.manifest.input, label).then(
          (pre) => ({ pre, label, start }),
          (err: unknown) => {
            throw collect ? asInputError(err, label) : err;
          },
        );
      });
    let next = prepare(0);
    let previous: Promise<unknown> = Promise.resolve();
    for (let from = 0; from < inputs.length; from += size) {
      const settled = await Promise.allSettled(next);
      const ok = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
      const queuedAt = performance.now();
      const runs = this.batcher.submitGroup(
        ok.map(({ pre, label }) => ({ pre, label, queuedAt })),
        JSON.stringify(plan),
      );
      let k = 0;
      const chunk = settled.map((s) => {
        if (s.status === 'rejected') return settle(Promise.reject(s.reason as Error));
        const { pre, label, start } = s.value;
        return settle(runs[k++].then((out) => this.finish(out, pre, start, plan, label)));
      });
      outcomes.push(...chunk);
      await previous;
      previous = Promise.all(chunk);
      next = from + size < inputs.length ? prepare(from + size) : [];
    }
    const all = await Promise.all(outcomes);
    if (!collect) {
      const failed = all.find((r) => !r.ok);
      if (failed && !failed.ok) throw failed.error;
    }
    return all.map((r) => (r.ok ? r.value : (r.error as InvadError)));
  }

  /**
   * Finishes queued work, then releases the sessions and the worker. Idempotent. An idle
   * detector does not keep the process alive (its worker is unref'd between requests), so a
   * script may exit without calling this; dispose() frees the memory and threads early.
   */
  dispose(): Promise<void> {
    this.disposed = true;
    this.disposing ??= (async () => {
      await Promise.allSettled([...this.active]);
      await this.batcher.drain();
      await this.engine.close();
    })();
    return this.disposing;
  }

  /** Runs a public call unless disposed, and remembers it until it settles. */
  private track<R>(what: string, call: () => Promise<R>): Promise<R> {
    if (this.disposed) return Promise.reject(new DisposedError(`Detector.${what}`));
    const p = call();
    this.active.add(p);
    const forget = () => this.active.delete(p);
    p.then(forget, forget);
    return p;
  }

  /** What the engine computes for a call: S and which map, or the reconstruction ablation. */
  private planFor(options: ScoreOptions | undefined): ScorePlan {
    const o = plainObject('options', options ?? {});
    const steps = o.steps === undefined ? this.opts.steps : intInRange('options.steps', o.steps, 1, maxSteps(this.manifest.schedule.trainSteps));
    if (o.reconstruction !== undefined) {
      const r = plainObject('options.reconstruction', o.reconstruction);
      return {
        mode: 'reconstruction',
        tStart: numberInRange('options.reconstruction.tStart', r.tStart, 1e-3, 1),
        reconSteps: intInRange('options.reconstruction.reconSteps', r.reconSteps, 1, 1000),
        seed: 0,
      };
    }
    const definition: ScoreDefinitionSpec = SCORES[this.scoreDefinition];
    if (definition.needsLatent && !this.manifest.latentGaussian?.some((g) => g.steps === steps)) {
      throw invalidArgument(
        'options.steps',
        `a step count with latent-Gaussian statistics in the bundle (${(this.manifest.latentGaussian ?? []).map((g) => g.steps).join(', ') || 'none'})`,
        steps,
      );
    }
    const allMaps = o.allMaps === true || definition.needsLatent;
    // Feature-statistics maps (issue 17): the definition's own, or every one the bundle has with allMaps.
    const stats = this.manifest.featureStatistics;
    const featureMaps: Array<'featureGaussian' | 'patchcore'> = [];
    if (stats?.gaussian && (o.allMaps === true || definition.features?.includes('gaussian'))) featureMaps.push('featureGaussian');
    if (stats?.memoryBank && (o.allMaps === true || definition.features?.includes('memoryBank'))) featureMaps.push('patchcore');
    const cal = calibrationAt(this.manifest.calibration, steps) ?? this.manifest.calibration;
    const fuse =
      definition.map === 'fused' && cal.latentGaussian && cal.featureGaussian ? { fuse: { latent: cal.latentGaussian, feature: cal.featureGaussian } } : {};
    // The engine computes the latent part only along with every map.
    return {
      mode: 'inversion',
      steps,
      map: definition.map,
      allMaps,
      ...(featureMaps.length > 0 ? { featureMaps } : {}),
      // allMaps asks for the latent maps too, so only a plain baseline call skips the UNet.
      ...(definition.backboneOnly && o.allMaps !== true ? { backboneOnly: true } : {}),
      ...fuse,
    };
  }

  /**
   * The inverted latents x_T of images (n x C x h x w) after `steps` inversion steps (1 to
   * maxSteps(trainSteps)), e.g. to fit the latent-Gaussian statistics; `batchSize` images per
   * model run (1 to 1024, default the detector's maxBatchSize). Bad arguments reject with
   * InvalidArgumentError. Inputs are read batch by batch, as in scoreBatch().
   */
  latents(inputs: readonly ImageInput[], steps: number, batchSize: number = this.opts.maxBatchSize): Promise<Float32Array> {
    return this.track('latents()', async () => {
      if (!Array.isArray(inputs as unknown)) throw invalidArgument('inputs', 'an array of images', inputs);
      intInRange('steps', steps, 1, maxSteps(this.manifest.schedule.trainSteps));
      intInRange('batchSize', batchSize, 1, 1024);
      const size = this.ready.fixedBatch === null ? batchSize : Math.min(batchSize, this.ready.fixedBatch);
      const { channels, height, width } = this.manifest.features;
      const per = channels * height * width;
      const out = new Float32Array(inputs.length * per);
      for (let from = 0; from < inputs.length; from += size) {
        const pres = await Promise.all(
          inputs.slice(from, from + size).map((input, j) => preprocess(input, this.manifest.input, describeInput(input, from + j))),
        );
        out.set(await this.engine.latents(stackTensors(pres), pres.length, steps), from * per);
      }
      return out;
    });
  }

  private async runBatch(items: QueuedImage[], plan: ScorePlan): Promise<Array<ItemOutcome<EngineOutput>>> {
    const batch = stackTensors(items.map((it) => it.pre));
    const startedAt = performance.now();
    const sizes = items.map((it) => ({ width: it.pre.width, height: it.pre.height }));
    const result: RunResult = await this.engine.run(batch, items.length, sizes, plan);
    const t = result.timings;
    return result.samples.map((s, i): ItemOutcome<EngineOutput> => {
      if (s.error) return { ok: false, error: reviveError({ ...s.error, message: `${items[i].label}: ${s.error.message}` }) };
      return {
        ok: true,
        value: {
          components: {
            spatialRange: s.spatialRange,
            nll: s.nll,
            ...(s.latentGaussian === undefined ? {} : { latentGaussian: s.latentGaussian }),
            ...(s.featureGaussian === undefined ? {} : { featureGaussian: s.featureGaussian }),
            ...(s.patchcore === undefined ? {} : { patchcore: s.patchcore }),
          },
          map: s.map,
          featureMaps: s.featureMaps,
          width: sizes[i].width,
          height: sizes[i].height,
          timings: {
            queueMs: startedAt - items[i].queuedAt,
            backboneMs: t.backboneMs,
            unetMs: t.unetMs,
            kernelMs: t.kernelMs,
            resizeMs: t.resizeMs,
            batchSize: items.length,
          },
        },
      };
    });
  }

  private finish(out: EngineOutput, pre: PreprocessedImage, start: number, plan: ScorePlan, label: string): ScoreResult {
    // The reconstruction ablation scores by the largest reconstruction error.
    const steps = plan.mode === 'inversion' ? plan.steps : plan.reconSteps;
    const score =
      plan.mode === 'reconstruction'
        ? out.featureMaps.l2.reduce((a, v) => Math.max(a, v), -Infinity)
        : imageScore(this.scoreDefinition, out.components, calibrationAt(this.manifest.calibration, steps) ?? this.manifest.calibration);
    // NaN > threshold is false: a non-finite score would pass as a good part.
    if (!Number.isFinite(score)) {
      throw new InferenceError(
        `${label}: the image score is ${score} (${plan.mode === 'reconstruction' ? 'reconstruction error' : this.scoreDefinition}, S = ${steps}); the model output or the bundle's calibration is out of range`,
      );
    }
    const threshold = plan.mode === 'reconstruction' ? null : this.thresholdAt(steps);
    const isAnomalous = threshold !== null && score > threshold;
    if (plan.mode === 'inversion' && this.opts.driftWindow > 0) {
      const monitor = this.driftMonitorAt(steps);
      if (!('unavailable' in monitor)) monitor.record(score, isAnomalous);
    }
    return {
      score,
      isAnomalous,
      threshold,
      map: out.map,
      featureMaps: out.featureMaps,
      width: out.width,
      height: out.height,
      components: out.components,
      steps,
      timings: { ...pre.timings, ...out.timings, totalMs: performance.now() - start },
    };
  }
}

/** The engine's paths of a bundle's feature statistics (issue 17), when it has them. */
function featureStatisticsPaths(dir: string, m: Manifest): { featureStatistics?: NonNullable<Parameters<typeof EngineClient.start>[0]['featureStatistics']> } {
  const f = m.featureStatistics;
  if (!f) return {};
  return {
    featureStatistics: {
      ...(f.gaussian ? { gaussian: { meanPath: join(dir, f.gaussian.meanFile), precisionPath: join(dir, f.gaussian.precisionFile) } } : {}),
      ...(f.memoryBank ? { memoryBank: { path: join(dir, f.memoryBank.file), pooling: f.memoryBank.pooling } } : {}),
    },
  };
}
