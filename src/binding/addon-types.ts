// Typed mirror of the native addon (native/addon.cc). Public classes keep the
// addon object internal; only src/ touches it through src/binding/index.
//
// Conventions shared by every kernel:
// - Tensors are float32, NCHW, contiguous. Shapes are passed explicitly and the
//   addon checks that every length equals the product of the shape it was handed
//   (with overflow checks), so a wrong length is a RangeError naming the argument.
// - A wrong JS type is a TypeError naming the argument; a bad value (zero or
//   negative size, non-finite scalar, length mismatch) is a RangeError.
// - `*Async` variants run on the libuv pool and split the batch over the addon's
//   threads; they keep references to the buffers until the promise settles.
//   They take fixed-length buffers only (a resizable ArrayBuffer or growable
//   SharedArrayBuffer is a TypeError), and reject with a TypeError if a held
//   buffer is transferred away while they run. The sync variants exist for tiny
//   inputs and for tests, and read every argument (getters included) before
//   they take a buffer's pointer.
// - A failed allocation is a RangeError naming the size, never an abort.

export interface TensorShape {
  /** batch */
  n: number;
  /** channels */
  c: number;
  /** height */
  h: number;
  /** width */
  w: number;
}

/** Result of the per-sample channel-norm reduction. */
export interface ChannelNormResult {
  /** n x h x w, the L2 norm over channels at each position. */
  l2: Float32Array;
  /** n values, min of each sample's l2 map. */
  min: Float32Array;
  /** n values, max of each sample's l2 map. */
  max: Float32Array;
  /** n values, sum of squares of each sample (accumulated in double). */
  sumSq: Float64Array;
}

export interface AddonBuildInfo {
  /** addon version (matches package.json) */
  version: string;
  /** N-API version the addon was built against */
  napiVersion: number;
  /** true when the CUDA kernels were compiled in */
  cuda: boolean;
  /** CUDA architectures compiled in, e.g. "75;80;86;89;90" ("" without CUDA) */
  cudaArchitectures: string;
  /** threads the CPU kernels split work over */
  threads: number;
  /** compiler id and version */
  compiler: string;
  /** highest ONNX Runtime C API version the device-resident pipeline asks for (GetApi), e.g. 30 */
  ortApiVersion: number;
  /** lowest C API version it accepts (the newest slot it calls), e.g. 16; ortProbe() reports the one in use */
  ortApiVersionMin: number;
}

export interface CudaStatus {
  available: boolean;
  /** why CUDA is unavailable ("not compiled in", "no driver", "no device", ...) */
  reason: string;
  deviceCount: number;
  /** e.g. "NVIDIA H200"; empty when unavailable */
  deviceName: string;
  driverVersion: number;
}

// ---- device-resident pipeline (native/pipeline.cc) --------------------------
//
// The addon drives the ONNX Runtime C API of the same libonnxruntime that
// onnxruntime-node ships (TypeScript resolves its path): two sessions with
// provider fallback (tensorrt -> cuda -> cpu), IoBinding over preallocated
// buffers, and the fused kernels in between. With both sessions on CUDA or
// TensorRT (and CUDA compiled in) everything stays on the device on one
// stream; otherwise the same path runs on host buffers with the CPU kernels.

/** Provider names the native pipeline accepts. */
export type NativeProvider = 'tensorrt' | 'cuda' | 'cpu';

export interface NativePipelineOptions {
  /** absolute path of libonnxruntime (onnxruntime-node's own copy) */
  ortLibraryPath: string;
  backbonePath: string;
  unetPath: string;
  backbone: { inputName: string; outputName: string };
  unet: { xName: string; tName: string; outputName: string };
  /** the backbone's input size; the batch is n x 3 x height x width */
  input: { height: number; width: number };
  /** the feature (and latent) shape C x h x w */
  features: { channels: number; height: number; width: number };
  /** tried in order per session; the first that opens wins */
  providers: NativeProvider[];
  /** intra-op threads of the ORT sessions; 0 (default) lets ORT choose */
  cpuThreads?: number;
  /** whose intra-op threads spin between runs (ORT's default is to spin): 'none' (default), 'unet' or 'all' */
  cpuSpinning?: 'none' | 'unet' | 'all';
  /** CUDA device for the CUDA and TensorRT providers (default 0) */
  cudaDeviceId?: number;
  tensorrt?: {
    fp16?: boolean;
    /** engine and timing cache folder */
    cacheDir?: string;
    /** TensorRT builder workspace limit in bytes */
    workspaceBytes?: number;
  };
  /**
   * Largest batch the TensorRT optimization profiles cover (default 64); with
   * `cudaGraph` also the fixed buffer capacity.
   */
  maxBatch?: number;
  /** Ask the CUDA/TensorRT provider to capture and replay CUDA graphs (default false). */
  cudaGraph?: boolean;
  /**
   * ONNX Runtime's log level for the sessions. Unset: 'error' on the CPU provider and
   * 'fatal' on GPU providers; 'warning' shows ORT's notes on nodes placed on the CPU.
   */
  logLevel?: 'verbose' | 'info' | 'warning' | 'error' | 'fatal';
  /**
   * Turns ONNX Runtime's profiler on for both sessions (the C API's EnableProfiling), as
   * onnxruntime-node's `enableProfiling` + `profileFilePrefix` do: each session writes
   * `<prefix>_backbone_<date>_<time>.json` / `<prefix>_unet_...json` (chrome-trace events,
   * one per node run) when `endProfiling()` is called. A developer tool: it slows every run.
   */
  profileFilePrefix?: string;
  /**
   * @internal Test-only fault injection: 'snapshot-host-inputs' (host binds copy at bind
   * time, as ORT does for a GPU session) or 'sticky-error-at-call=N'.
   */
  testHooks?: string;
}

/** One inversion step: x <- a*x + b*UNet(x, t). */
export interface NativeStep {
  t: number;
  a: number;
  b: number;
}

export interface NativeRunTimings {
  /** host -> device copy of the batch (0 in host mode) */
  uploadMs: number;
  backboneMs: number;
  /** one entry per UNet call */
  unetMs: number[];
  /** the DDIM step kernels and the fused last step + reduction */
  kernelMs: number;
  /** device -> host copy of the results (host mode: the latents copy) */
  downloadMs: number;
  /** the whole call on the host clock */
  totalMs: number;
  /** 'cuda-events' in device mode (stage times measured on the stream), else 'host' */
  clock: 'cuda-events' | 'host';
}

export interface NativeRunResult extends ChannelNormResult {
  /** x_T, n x C x h x w, when asked for with `{ latents: true }` */
  latents?: Float32Array;
  timings: NativeRunTimings;
}

export interface NativeValueInfo {
  name: string;
  isTensor: boolean;
  /** "float32", "int64", ... (tensors only) */
  type?: string;
  /** dims: a number, a symbolic name, or -1 when unknown (tensors only) */
  shape?: Array<number | string>;
}

export interface NativeSessionMetadata {
  inputs: NativeValueInfo[];
  outputs: NativeValueInfo[];
}

export interface NativePipelineProviders {
  backbone: NativeProvider;
  unet: NativeProvider;
  /** providers that failed before one worked, with why */
  failures: Array<{ session: 'backbone' | 'unet'; provider: string; error: string }>;
  /** true when buffers and kernels live on the GPU (both sessions on CUDA/TensorRT) */
  deviceResident: boolean;
  /** "cpu", or the GPU's name */
  device: string;
  /** whether ORT was asked to capture CUDA graphs (device mode only) */
  cudaGraph: boolean;
  /** GetVersionString() of the loaded ONNX Runtime */
  ortVersion: string;
  /** batch capacity of the preallocated buffers so far */
  capacity: number;
  /** set-up notes, e.g. why the pipeline is not device-resident */
  notes: string[];
}

export interface DeviceResidentPipeline {
  /**
   * backbone -> for each step UNet(x, t) then the fused step (the last one fused
   * with the channel-norm reduction). `batch` is n x 3 x H x W. Runs off the JS
   * thread; runs of one pipeline never overlap (later calls wait).
   */
  runAsync(batch: Float32Array, n: number, steps: NativeStep[], options?: { latents?: boolean }): Promise<NativeRunResult>;
  /** The backbone only: the clean features, n x C x h x w. */
  featuresAsync(batch: Float32Array, n: number): Promise<Float32Array>;
  /** Which provider each session really uses, and the fallbacks. */
  providers(): NativePipelineProviders;
  /** The sessions' declared inputs and outputs (as onnxruntime-node reports them). */
  metadata(): { backbone: NativeSessionMetadata; unet: NativeSessionMetadata };
  /**
   * Ends the profiling that `profileFilePrefix` turned on (SessionEndProfiling on both
   * sessions), after any run in flight, and resolves with the files written. Throws an Error
   * when the pipeline was opened without `profileFilePrefix` or profiling already ended
   * (ORT profiles a session once), a TypeError when given arguments.
   */
  endProfiling(): Promise<{ backbone: string; unet: string }>;
  /** Frees the sessions and buffers once in-flight runs finish; later calls throw. Idempotent. */
  release(): void;
  readonly released: boolean;
}

export interface DeviceResidentPipelineConstructor {
  /**
   * Loads ONNX Runtime (C API version 30) from `options.ortLibraryPath` and opens
   * both sessions. Throws when the library cannot load, and when no provider can
   * open a session (the error then has `attempts`).
   */
  new (options: NativePipelineOptions): DeviceResidentPipeline;
}

export interface OrtProbeResult {
  path: string;
  /** GetVersionString(), e.g. "1.30.0" */
  version: string;
  /** the C API version negotiated with this library (the highest of 30 down to 16 it provides) */
  apiVersion: number;
  /** the ORT release the addon's declarations were written for */
  headerVersion: string;
  /** GetAvailableProviders(): compiled into the library, not necessarily loadable */
  availableProviders: string[];
  availableProvidersError?: string;
  /** whether each provider can be appended to session options (loads its library) */
  providers: Array<{ name: NativeProvider; ok: boolean; error?: string }>;
}

/** The functions the runtime needs: the loader refuses an addon without them. */
export interface InvadAddon {
  buildInfo(): AddonBuildInfo;
  /** Probes the driver and devices at run time; never throws. */
  cudaStatus(): CudaStatus;

  /** In place: x <- a*x + b*eps. x and eps have the same length (> 0). */
  ddimStep(x: Float32Array, eps: Float32Array, a: number, b: number): void;

  /** Channel-norm reduction of x (length n*c*h*w). */
  channelNorm(x: Float32Array, shape: TensorShape): ChannelNormResult;

  /**
   * Last inversion step fused with the reduction, one pass over memory:
   * x <- a*x + b*eps in place, then the channel-norm reduction of the new x.
   */
  ddimLastStepReduce(x: Float32Array, eps: Float32Array, a: number, b: number, shape: TensorShape): ChannelNormResult;

  /**
   * Bilinear resize of one or more single-channel maps, (planes x inH x inW) to
   * (planes x outH x outW), with PyTorch's F.interpolate(mode='bilinear',
   * align_corners=False) convention. Returns a new array. outH and outW are each at
   * most 2^20.
   */
  resizeBilinear(src: Float32Array, planes: number, inH: number, inW: number, outH: number, outW: number): Float32Array;

  /**
   * Separable Gaussian blur of one or more single-channel maps (planes x h x w), sigmaY
   * down the rows and sigmaX along them, in pixels, each in (0, 1024]: truncated at radius
   * floor(4 sigma + 0.5), borders reflected as scipy.ndimage's mode 'reflect' (the edge sample
   * repeats). Returns a new array; the rows are split over the addon's thread pool. The map
   * smoothing of bundles with `mapSmoothing` (issue 17).
   */
  gaussianBlur(src: Float32Array, planes: number, h: number, w: number, sigmaY: number, sigmaX: number): Float32Array;

  /** The device-resident pipeline (see NativePipelineOptions). */
  DeviceResidentPipeline: DeviceResidentPipelineConstructor;
  /** Loads ONNX Runtime from a path and reports its version and which providers load. Throws if it cannot load. */
  ortProbe(libraryPath: string, options?: { cudaDeviceId?: number }): OrtProbeResult;
}

/**
 * Variants only benchmarks, tests and the GPU check use. The loader does not require
 * them; `loadAddonWithDiagnostics()` does, with a BindingLoadError naming what is missing.
 */
export interface InvadAddonDiagnostics {
  /** ddimStep on the libuv pool, split over the addon's thread pool. */
  ddimStepAsync(x: Float32Array, eps: Float32Array, a: number, b: number): Promise<void>;
  /** channelNorm on the libuv pool. */
  channelNormAsync(x: Float32Array, shape: TensorShape): Promise<ChannelNormResult>;
  /** ddimLastStepReduce on the libuv pool. */
  ddimLastStepReduceAsync(x: Float32Array, eps: Float32Array, a: number, b: number, shape: TensorShape): Promise<ChannelNormResult>;
  /** resizeBilinear on the libuv pool. */
  resizeBilinearAsync(src: Float32Array, planes: number, inH: number, inW: number, outH: number, outW: number): Promise<Float32Array>;
  /**
   * The unfused two-pass path (step, then a separate reduction pass), kept only so
   * the kernel benchmark can compare it with the fused one. Same result.
   */
  ddimLastStepReduceUnfused(x: Float32Array, eps: Float32Array, a: number, b: number, shape: TensorShape): ChannelNormResult;
  /**
   * Diagnostic: the CUDA kernels against the CPU kernels on random data of this
   * shape, plus their mean times over `reps` launches (default 20). Needs a GPU,
   * not ONNX Runtime. Reports CUDA trouble in `reason` instead of throwing. The shape
   * is capped at 2^26 elements (and so are the maps resized to 16x the grid); CUDA is
   * checked before anything is allocated.
   */
  cudaKernelCheck(shape: TensorShape, reps?: number): CudaKernelCheckResult;
  /**
   * Diagnostic: the device-resident engine with small CUDA kernels standing in for the
   * two ORT sessions (pinned copies, stream, events, fused kernels, one sync), and a
   * host-mode engine, both against the CPU kernels. Without CUDA the device part is
   * `skipped` with the reason.
   */
  deviceSelfTest(): DeviceSelfTestResult;
}

/** One engine's agreement with the CPU kernels in deviceSelfTest(). */
export interface SelfTestPart {
  ok: boolean;
  error?: string;
  /** elements that differ in any bit (everything but sumSq must be bit-identical) */
  bitMismatches: number;
  maxAbsDiff: { l2: number; min: number; max: number; latents: number; features: number };
  /** sumSq is a double sum in another order on the GPU: relative difference and its tolerance */
  sumSqRelative: number;
  sumSqTolerance: number;
}

export interface DeviceSelfTestResult {
  ok: boolean;
  /** why the device part did not run ("addon built without CUDA", "no usable CUDA device (...)") */
  skipped?: string;
  shape: TensorShape;
  host: SelfTestPart;
  device?: SelfTestPart & { deviceName: string; deviceResident: boolean; timings: unknown[] };
}

/** Names of the diagnostic functions, for the loader's check. */
export const DIAGNOSTIC_FUNCTIONS: ReadonlyArray<keyof InvadAddonDiagnostics> = [
  'ddimStepAsync',
  'channelNormAsync',
  'ddimLastStepReduceAsync',
  'resizeBilinearAsync',
  'ddimLastStepReduceUnfused',
  'cudaKernelCheck',
  'deviceSelfTest',
];

export interface CudaKernelCheckResult {
  available: boolean;
  /** why the check could not run ("addon built without CUDA", a CUDA error) */
  reason?: string;
  /** largest |GPU - CPU| per output (sumSq relative); fillI64Exact: the timestep fill kernel wrote the value everywhere */
  maxAbsDiff?: { ddimStep: number; l2: number; min: number; max: number; sumSqRelative: number; resize: number; fillI64Exact: boolean };
  /** mean microseconds per launch, measured with CUDA events */
  meanMicroseconds?: { ddimStep: number; lastStepReduce: number; resizeBilinear: number; fillI64: number };
  reps?: number;
  /** the size the maps were resized to (16x the feature grid) */
  resizeTo?: [number, number];
}
