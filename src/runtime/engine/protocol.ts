/** Messages between the Detector (main thread) and the engine worker that owns the sessions. */
import { availableParallelism } from 'node:os';
import type { Manifest, PartNormalization } from '../bundle/manifest';
import type { FeatureMap } from '../scores';
import { InvalidArgumentError, type SerializedError } from '../../util/errors';

export type ExecutionProvider = 'cpu' | 'cuda' | 'tensorrt' | 'dml' | 'coreml' | 'webgpu';

/**
 * Who runs the models: onnxruntime-node sessions (JS tensors, kernels on JS
 * arrays), or the addon's device-resident pipeline on the ONNX Runtime C API.
 */
export type EngineKind = 'onnxruntime-node' | 'native';

/** TensorRT settings of the native engine. */
export interface TensorRtOptions {
  fp16?: boolean;
  /** engine and timing cache folder */
  cacheDir?: string;
  workspaceBytes?: number;
}

/** Which sessions' ORT intra-op threads spin between runs: none, the UNet's only, or both. */
export type ThreadSpinning = 'none' | 'unet' | 'all';
export const THREAD_SPINNING: readonly ThreadSpinning[] = ['none', 'unet', 'all'];
/**
 * The UNet's pool spins between its S calls, the backbone's does not, so it never holds a core
 * while the UNet runs. Measured on 2 cores (README): faster UNet calls at batch 1, no loss at
 * batch 8 or end to end, slightly higher saturation throughput than 'none'.
 */
export const DEFAULT_THREAD_SPINNING: ThreadSpinning = 'unet';

/** Whether the backbone's and the UNet's sessions spin under `mode`. */
export function sessionSpinning(mode: ThreadSpinning): { backbone: boolean; unet: boolean } {
  return { backbone: mode === 'all', unet: mode !== 'none' };
}

/** The most ORT intra-op threads per session, per core this process may use: see {@link maxIntraOpThreads}. */
export const INTRA_OP_THREADS_PER_CORE = 4;

/**
 * The largest `intraOpThreads` accepted: 4 x os.availableParallelism() (8 on 2 cores). More
 * threads than that only contend for the cores, and each one costs start-up time: 1024 meant
 * about 2,000 threads and 47 s to open a detector on 2 cores (issue 12, finding 14).
 */
export function maxIntraOpThreads(): number {
  return INTRA_OP_THREADS_PER_CORE * availableParallelism();
}

/** Checks an intra-op thread count (0 lets ONNX Runtime choose) against {@link maxIntraOpThreads}. */
export function checkIntraOpThreads(name: string, v: unknown): number {
  const max = maxIntraOpThreads();
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    throw new InvalidArgumentError(
      name,
      `Expected an integer from 0 to ${max} for ${name} but received ${String(v)}: at most ${INTRA_OP_THREADS_PER_CORE} x os.availableParallelism() threads per session (0 lets ONNX Runtime choose)`,
    );
  }
  return v;
}

export interface EngineConfig {
  backbonePath: string;
  /** null opens the backbone only, for feature extraction */
  unetPath: string | null;
  manifest: Manifest;
  executionProviders: ExecutionProvider[];
  /** ORT intra-op threads per session; 0 lets ORT choose; at most maxIntraOpThreads() */
  intraOpThreads: number;
  /** whose ORT intra-op threads may spin between runs; default DEFAULT_THREAD_SPINNING (see DetectorOptions) */
  threadSpinning?: ThreadSpinning;
  /** latent-Gaussian statistics files by S, loaded when first needed */
  latentGaussian?: Array<{ steps: number; meanPath: string; precisionPath: string }>;
  /** feature statistics files (issue 17), loaded when first needed */
  featureStatistics?: { gaussian?: { meanPath: string; precisionPath: string }; memoryBank?: { path: string; pooling: number } };
  /** default 'onnxruntime-node' */
  engine?: EngineKind;
  /** native engine: the libonnxruntime to load (default: onnxruntime-node's, see ortLibraryPath()) */
  ortLibraryPath?: string;
  /** a native engine that cannot load ONNX Runtime falls back to onnxruntime-node (the engine was defaulted) */
  engineFallback?: boolean;
  /** native engine only */
  tensorrt?: TensorRtOptions;
  /** native engine only: CUDA device of the CUDA/TensorRT providers */
  cudaDeviceId?: number;
  /** native engine only: largest batch (buffers and TensorRT profiles) */
  maxBatch?: number;
}

/**
 * What a run computes. `inversion` is the method. `reconstruction` is the
 * ablation baseline (paper Table 4): noise the features to tStart, denoise them
 * back in reconSteps DDIM steps, and score the feature reconstruction error.
 */
export type ScorePlan =
  | {
      mode: 'inversion';
      steps: number;
      /** the feature map each sample's `map` is resized from: the score definition's (SCORES in ../scores) */
      map: FeatureMap;
      /** compute the Mahalanobis map (~8 ms an image at 152 x 14 x 14) even when `map` is l2 */
      allMaps: boolean;
      /** the maps of the bundle's feature statistics of x_0 (issue 17) to compute */
      featureMaps?: Array<'featureGaussian' | 'patchcore'>;
      /** run the backbone only: no UNet call, no latent parts (the padim and patchcore baselines) */
      backboneOnly?: boolean;
      /** the normalizations of the fused map's two parts (the `fused` map) */
      fuse?: { latent: PartNormalization; feature: PartNormalization };
    }
  | { mode: 'reconstruction'; tStart: number; reconSteps: number; seed: number };

export interface EngineReady {
  type: 'ready';
  providers: { backbone: ExecutionProvider; unet: ExecutionProvider | null };
  /** the models' fixed batch size, or null when the batch dimension is dynamic */
  fixedBatch: number | null;
  /** providers that failed before one worked, with why */
  fallbacks: Array<{ session: 'backbone' | 'unet'; provider: string; error: string }>;
  /** the engine that runs the models */
  engine?: EngineKind;
  /** "cpu", or the GPU's name when a session runs on CUDA/TensorRT */
  device?: string;
  /** native engine: buffers and kernels stay on the GPU */
  deviceResident?: boolean;
  /** why a defaulted native engine fell back to onnxruntime-node */
  engineFallback?: string;
}

export interface RunRequest {
  type: 'run';
  id: number;
  /** n x 3 x H x W, normalized */
  batch: Float32Array;
  n: number;
  /** each sample's own size: its map is resized to it */
  sizes: Array<{ width: number; height: number }>;
  plan: ScorePlan;
}

/** The maps at feature-grid resolution, by name ({@link FeatureMap}); l2 is empty for a backbone-only run. */
export interface FeatureMaps {
  l2: Float32Array;
  latentGaussian?: Float32Array;
  featureGaussian?: Float32Array;
  patchcore?: Float32Array;
  fused?: Float32Array;
}

export interface SampleOutput {
  spatialRange: number;
  nll: number;
  l2Min: number;
  l2Max: number;
  /** max Mahalanobis distance, when latent statistics exist for this S */
  latentGaussian?: number;
  /** max of the feature-Gaussian map, when computed */
  featureGaussian?: number;
  /** max of the PatchCore map, when computed */
  patchcore?: number;
  /** the maps at feature-grid resolution (h x w): the latent's channel norm, and its Mahalanobis distance when available */
  featureMaps: FeatureMaps;
  /** the requested feature map resized to the sample's own size */
  map: Float32Array;
  /** why this sample failed (non-finite model output), if it did */
  error?: SerializedError;
}

/**
 * The buffers a result message transfers: every map's, each once. postMessage rejects a list
 * that names one buffer twice, which would fail every sample of the batch, so two maps that
 * share a buffer are listed once (and then arrive sharing it).
 */
export function sampleTransferList(samples: readonly SampleOutput[]): ArrayBuffer[] {
  const buffers = new Set<ArrayBuffer>();
  for (const s of samples) {
    const maps: Array<Float32Array | undefined> = [s.map, ...Object.values<Float32Array | undefined>({ ...s.featureMaps })];
    for (const a of maps) if (a) buffers.add(a.buffer as ArrayBuffer);
  }
  return [...buffers];
}

export interface BatchTimings {
  backboneMs: number;
  unetMs: number[];
  kernelMs: number;
  resizeMs: number;
  engineMs: number;
}

export interface RunResult {
  type: 'result';
  id: number;
  samples: SampleOutput[];
  timings: BatchTimings;
}

/** The clean features (no `steps`), or the inverted latents x_T at `steps`; n x C x h x w. */
export interface FeaturesRequest {
  type: 'features';
  id: number;
  batch: Float32Array;
  n: number;
  steps?: number;
}

export interface FeaturesResult {
  type: 'features';
  id: number;
  features: Float32Array;
}

export interface RunFailure {
  type: 'error';
  id: number;
  error: SerializedError;
}

export type WorkerToMain = EngineReady | RunResult | FeaturesResult | RunFailure | { type: 'init-error'; error: SerializedError } | { type: 'closed' };
export type MainToWorker = RunRequest | FeaturesRequest | { type: 'close' };
