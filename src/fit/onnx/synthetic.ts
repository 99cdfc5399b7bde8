/**
 * Small synthetic ONNX models with closed-form outputs, for tests and for a
 * demo that needs no downloads. All have a dynamic batch dimension 'N'.
 */
import { mulberry32 } from '../../util/prng';
import { InvalidArgumentError } from '../../util/errors';
import { DataType, Dim, attr, encodeModel, floatScalar, floatTensor, int64Vector, makeGraph, makeModel, makeNode, onnx, valueInfo } from './proto';

export const BATCH_DIM = 'N';

function positiveInt(name: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0) throw new InvalidArgumentError(name, `${name} must be a positive integer, got ${v}`);
}

function finite(name: string, v: number): void {
  if (!Number.isFinite(v)) throw new InvalidArgumentError(name, `${name} must be a finite number, got ${v}`);
}

function toBytes(graph: onnx.GraphProto, doc: string): Uint8Array {
  return encodeModel(makeModel(graph, { docString: doc }));
}

// ---------------------------------------------------------------- conv backbone

export interface ConvBackboneOptions {
  height: number;
  width: number;
  /** Output feature channels C. */
  channels: number;
  /** Kernel size and stride (non-overlapping patches). */
  stride: number;
  /** PRNG seed for weights and bias not given explicitly (default 1). */
  seed?: number;
  /** [C,3,stride,stride] row-major. */
  weights?: Float32Array;
  /** [C]. */
  bias?: Float32Array;
  inputName?: string;
  outputName?: string;
}

/** The exact weights and bias `convBackbone(opts)` uses, for a reference implementation. */
export function convBackboneWeights(opts: ConvBackboneOptions): { weights: Float32Array; bias: Float32Array } {
  const { channels: c, stride: s } = opts;
  positiveInt('channels', c);
  positiveInt('stride', s);
  const nW = c * 3 * s * s;
  // Weights first, then bias, from one stream: giving only one of them does
  // not change the other.
  const rand = mulberry32(opts.seed ?? 1);
  const gen = (n: number) => Float32Array.from({ length: n }, () => rand() - 0.5);
  const genW = gen(nW);
  const genB = gen(c);
  const weights = opts.weights ?? genW;
  const bias = opts.bias ?? genB;
  if (weights.length !== nW) throw new InvalidArgumentError('weights', `weights must hold C*3*stride*stride = ${nW} values`);
  if (bias.length !== c) throw new InvalidArgumentError('bias', `bias must hold C = ${c} values`);
  return { weights: Float32Array.from(weights), bias: Float32Array.from(bias) };
}

/** image [N,3,H,W] -> features [N,C,floor(H/stride),floor(W/stride)]: one Conv, kernel = stride, no padding. */
export function convBackbone(opts: ConvBackboneOptions): Uint8Array {
  positiveInt('height', opts.height);
  positiveInt('width', opts.width);
  const { channels: c, stride: s } = opts;
  const { weights, bias } = convBackboneWeights(opts);
  if (opts.height < s || opts.width < s) throw new InvalidArgumentError('stride', 'stride exceeds the image size');
  const inName = opts.inputName ?? 'image';
  const outName = opts.outputName ?? 'features';
  const graph = makeGraph({
    name: 'conv_backbone',
    inputs: [valueInfo(inName, DataType.FLOAT, [BATCH_DIM, 3, opts.height, opts.width])],
    outputs: [valueInfo(outName, DataType.FLOAT, [BATCH_DIM, c, Math.floor(opts.height / s), Math.floor(opts.width / s)])],
    initializers: [floatTensor('conv.weight', [c, 3, s, s], weights), floatTensor('conv.bias', [c], bias)],
    nodes: [
      makeNode('Conv', [inName, 'conv.weight', 'conv.bias'], [outName], {
        attributes: [attr.ints('kernel_shape', [s, s]), attr.ints('strides', [s, s]), attr.ints('pads', [0, 0, 0, 0])],
      }),
    ],
  });
  return toBytes(graph, 'invad synthetic conv backbone');
}

// ---------------------------------------------------------------- linear unet

export interface UnetShapeOptions {
  channels: number;
  height: number;
  width: number;
  xName?: string;
  tName?: string;
  outputName?: string;
}

export interface LinearUnetOptions extends UnetShapeOptions {
  k: number;
  m: number;
  /**
   * Deliberately wrong models for rejection tests: output channel count
   * (channel o copies k*x[:, o % C] + m*t), element type of t, batch dim.
   */
  outputChannels?: number;
  tElemType?: 'int64' | 'float32';
  batchDim?: Dim;
}

/** eps[n] = k*x[n] + m*float(t[n]); x [N,C,h,w] float32, t [N] int64. */
export function linearUnet(opts: LinearUnetOptions): Uint8Array {
  const { channels: c, height: h, width: w, k, m } = opts;
  positiveInt('channels', c);
  positiveInt('height', h);
  positiveInt('width', w);
  finite('k', k);
  finite('m', m);
  const outC = opts.outputChannels ?? c;
  positiveInt('outputChannels', outC);
  const n = opts.batchDim ?? BATCH_DIM;
  const xName = opts.xName ?? 'x';
  const tName = opts.tName ?? 't';
  const outName = opts.outputName ?? 'eps';

  const initializers = [floatScalar('k', k), floatScalar('m', m), int64Vector('shape_n111', [-1, 1, 1, 1])];
  const nodes = [
    makeNode('Mul', [xName, 'k'], ['kx']),
    makeNode('Cast', [tName], ['t_f'], { attributes: [attr.int('to', DataType.FLOAT)] }),
    makeNode('Reshape', ['t_f', 'shape_n111'], ['t_n111']),
    makeNode('Mul', ['t_n111', 'm'], ['mt']),
  ];
  let kxOut = 'kx';
  if (outC !== c) {
    // 1x1 Conv with a 0/1 selection matrix: exact copies, any channel count.
    const sel = new Float32Array(outC * c);
    for (let o = 0; o < outC; o++) sel[o * c + (o % c)] = 1;
    initializers.push(floatTensor('select', [outC, c, 1, 1], sel));
    nodes.push(makeNode('Conv', ['kx', 'select'], ['kx_sel'], { attributes: [attr.ints('kernel_shape', [1, 1])] }));
    kxOut = 'kx_sel';
  }
  nodes.push(makeNode('Add', [kxOut, 'mt'], [outName]));

  const graph = makeGraph({
    name: 'linear_unet',
    inputs: [valueInfo(xName, DataType.FLOAT, [n, c, h, w]), valueInfo(tName, opts.tElemType === 'float32' ? DataType.FLOAT : DataType.INT64, [n])],
    outputs: [valueInfo(outName, DataType.FLOAT, [n, outC, h, w])],
    initializers,
    nodes,
  });
  return toBytes(graph, 'invad synthetic linear unet: eps = k*x + m*t');
}

// ---------------------------------------------------------------- slow unet

export interface SlowUnetOptions extends UnetShapeOptions {
  k: number;
  /** Side of the square work matrix; each repeat is one [size,size]x[size,size] MatMul per sample. */
  size?: number;
  /** Number of chained MatMuls; overrides targetMs. */
  repeats?: number;
  /** Rough per-sample run time wanted, converted to repeats with SLOW_UNET_MS_PER_REPEAT. */
  targetMs?: number;
}

export const SLOW_UNET_DEFAULT_SIZE = 512;
/**
 * Measured ms per repeat at size 512, batch 1, onnxruntime-node 1.30 CPU
 * defaults on the 2-vCPU dev box (~200 GFLOP/s, one intra-op thread there;
 * 512 is steadier than 1024, whose 4 MB matrices miss cache). The test logs
 * the real time. More cores finish sooner unless intraOpNumThreads is 1;
 * pass `repeats` for a fixed amount of work.
 */
export const SLOW_UNET_MS_PER_REPEAT = 1.35;
export const SLOW_UNET_DEFAULT_TARGET_MS = 350;

/** Chained MatMuls per sample `slowUnet(opts)` builds. */
export function slowUnetRepeats(opts: Pick<SlowUnetOptions, 'repeats' | 'targetMs' | 'size'>): number {
  if (opts.repeats !== undefined) {
    positiveInt('repeats', opts.repeats);
    return opts.repeats;
  }
  const size = opts.size ?? SLOW_UNET_DEFAULT_SIZE;
  const scale = (size / SLOW_UNET_DEFAULT_SIZE) ** 3; // MatMul cost grows with size^3
  return Math.max(1, Math.ceil((opts.targetMs ?? SLOW_UNET_DEFAULT_TARGET_MS) / (SLOW_UNET_MS_PER_REPEAT * scale)));
}

/**
 * Same interface as linearUnet with eps = k*x exactly (t is declared but unused),
 * plus a chain of MatMuls ORT has to run: their input comes from x, so it
 * cannot be constant-folded, and their result is turned into an exact 0
 * (Less(g, -inf) is false even for NaN/Inf) that is added to k*x.
 */
export function slowUnet(opts: SlowUnetOptions): Uint8Array {
  const { channels: c, height: h, width: w, k } = opts;
  positiveInt('channels', c);
  positiveInt('height', h);
  positiveInt('width', w);
  finite('k', k);
  const size = opts.size ?? SLOW_UNET_DEFAULT_SIZE;
  positiveInt('size', size);
  const repeats = slowUnetRepeats(opts);
  const xName = opts.xName ?? 'x';
  const tName = opts.tName ?? 't';
  const outName = opts.outputName ?? 'eps';

  // Signed permutation: keeps magnitudes exactly (no overflow, no denormals
  // however many repeats), yet MatMul still does the full dense work.
  const rand = mulberry32(7);
  const perm = Array.from({ length: size }, (_, i) => i);
  for (let i = size - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  const p = new Float32Array(size * size);
  for (let i = 0; i < size; i++) p[i * size + perm[i]] = rand() < 0.5 ? -1 : 1;

  const nodes = [
    makeNode('Mul', [xName, 'k'], ['kx']),
    makeNode('ReduceSum', [xName, 'axes_123'], ['x_sum'], { attributes: [attr.int('keepdims', 1)] }),
    makeNode('Reshape', ['x_sum', 'shape_n11'], ['x_sum3']),
    // Tanh + 1.5 keeps the seed value in [0.5, 2.5]: no tiny/huge floats.
    makeNode('Tanh', ['x_sum3'], ['x_tanh']),
    makeNode('Add', ['x_tanh', 'one_half3'], ['h0']),
    makeNode('Expand', ['h0', 'work_shape'], ['work0']),
  ];
  for (let r = 1; r <= repeats; r++) nodes.push(makeNode('MatMul', [`work${r - 1}`, 'perm'], [`work${r}`]));
  nodes.push(
    makeNode('ReduceSum', [`work${repeats}`, 'axes_12'], ['g'], { attributes: [attr.int('keepdims', 1)] }),
    makeNode('Reshape', ['g', 'shape_n111'], ['g4']),
    makeNode('Less', ['g4', 'neg_inf'], ['never']),
    makeNode('Cast', ['never'], ['zero'], { attributes: [attr.int('to', DataType.FLOAT)] }),
    makeNode('Add', ['kx', 'zero'], [outName]),
  );

  const graph = makeGraph({
    name: 'slow_unet',
    inputs: [valueInfo(xName, DataType.FLOAT, [BATCH_DIM, c, h, w]), valueInfo(tName, DataType.INT64, [BATCH_DIM])],
    outputs: [valueInfo(outName, DataType.FLOAT, [BATCH_DIM, c, h, w])],
    initializers: [
      floatScalar('k', k),
      floatScalar('one_half3', 1.5),
      floatScalar('neg_inf', -Infinity),
      int64Vector('axes_123', [1, 2, 3]),
      int64Vector('axes_12', [1, 2]),
      int64Vector('shape_n11', [-1, 1, 1]),
      int64Vector('shape_n111', [-1, 1, 1, 1]),
      int64Vector('work_shape', [1, size, size]),
      floatTensor('perm', [size, size], p),
    ],
    nodes,
  });
  return toBytes(graph, `invad synthetic slow unet: eps = k*x, ${repeats} MatMuls of ${size}x${size}`);
}
