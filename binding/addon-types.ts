// Typed mirror of the native addon (native/addon.cc). Public classes keep the
// addon object internal; only src/ touches it through binding/index.
//
// Conventions shared by every kernel:
// - Tensors are float32, NCHW, contiguous. Shapes are passed explicitly and the
//   addon checks that every length equals the product of the shape it was handed
//   (with overflow checks), so a wrong length is a RangeError naming the argument.
// - A wrong JS type is a TypeError naming the argument; a bad value (zero or
//   negative size, non-finite scalar, length mismatch) is a RangeError.
// - `*Async` variants run on the libuv pool and split the batch over the addon's
//   threads; they keep references to the buffers until the promise settles.
//   The sync variants exist for tiny inputs and for tests.

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

export interface InvadAddon {
  buildInfo(): AddonBuildInfo;
  /** Probes the driver and devices at run time; never throws. */
  cudaStatus(): CudaStatus;

  /** In place: x <- a*x + b*eps. x and eps have the same length (> 0). */
  ddimStep(x: Float32Array, eps: Float32Array, a: number, b: number): void;
  ddimStepAsync(x: Float32Array, eps: Float32Array, a: number, b: number): Promise<void>;

  /** Channel-norm reduction of x (length n*c*h*w). */
  channelNorm(x: Float32Array, shape: TensorShape): ChannelNormResult;
  channelNormAsync(x: Float32Array, shape: TensorShape): Promise<ChannelNormResult>;

  /**
   * Last inversion step fused with the reduction, one pass over memory:
   * x <- a*x + b*eps in place, then the channel-norm reduction of the new x.
   */
  ddimLastStepReduce(x: Float32Array, eps: Float32Array, a: number, b: number, shape: TensorShape): ChannelNormResult;
  ddimLastStepReduceAsync(
    x: Float32Array,
    eps: Float32Array,
    a: number,
    b: number,
    shape: TensorShape,
  ): Promise<ChannelNormResult>;

  /**
   * Bilinear resize of one or more single-channel maps, (planes x inH x inW) to
   * (planes x outH x outW), with PyTorch's F.interpolate(mode='bilinear',
   * align_corners=False) convention. Returns a new array.
   */
  resizeBilinear(src: Float32Array, planes: number, inH: number, inW: number, outH: number, outW: number): Float32Array;
  resizeBilinearAsync(
    src: Float32Array,
    planes: number,
    inH: number,
    inW: number,
    outH: number,
    outW: number,
  ): Promise<Float32Array>;

  /**
   * The unfused two-pass path (step, then a separate reduction pass), kept only so
   * the kernel benchmark can compare it with the fused one. Same result.
   */
  ddimLastStepReduceUnfused(x: Float32Array, eps: Float32Array, a: number, b: number, shape: TensorShape): ChannelNormResult;
}
