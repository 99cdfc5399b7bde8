/**
 * Static int8 quantization of a bundle's UNet in QDQ format (issue 16), and the int8 bundle.
 *
 * The usual tool for this is onnxruntime's Python quantizer
 * (`onnxruntime.quantization.quantize_static`); it is Python-only and cannot be installed here,
 * so this is a small QDQ quantizer written with the project's own ONNX tooling (onnx-proto,
 * ./onnx/proto). What it writes is what that tool writes in its default QDQ mode:
 *
 * - every Conv, Gemm and MatMul (except one that writes a graph output) gets
 *   QuantizeLinear -> DequantizeLinear pairs on its float activation inputs and on its output,
 *   per tensor: uint8 asymmetric by default (int8 symmetric on request);
 * - Conv and Gemm weights are per-output-channel symmetric int8 (DequantizeLinear with an axis),
 *   MatMul weights per-tensor symmetric int8; biases int32 with scale x_scale * w_scale[c];
 * - every consumer of a quantized activation reads the dequantized tensor.
 *
 * ONNX Runtime then fuses DQ -> Conv -> Q into QLinearConv (and Gemm into com.microsoft QGemm,
 * MatMul into QLinearMatMul or MatMulIntegerToFloat) at graph-optimization level 2 or more,
 * which both engines use ('all'). `optimizedNodeTypes` saves ORT's optimized model and counts
 * its node types, so whether the integer kernels really run is checked, not assumed.
 *
 * Activation ranges come from calibration data: the fp32 UNet runs the DDIM inversion (the same
 * schedule as the runtime) over clean features x_0 — the bundle's training features (the fit work
 * folder's train.npy) or the backbone's features of a folder of normal images — in a copy of the
 * graph that exposes every tensor to be quantized as an extra output; ranges are min/max (or a
 * two-sided percentile) over all calls.
 */
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';
import { loadBundle } from '../runtime/bundle/load';
import { sha256Bytes } from '../runtime/bundle/hash';
import type { Manifest } from '../runtime/bundle/manifest';
import type { ExecutionProvider } from '../runtime/engine/protocol';
import { inversionSteps } from '../runtime/schedule';
import { InvalidArgumentError } from '../util/errors';
import { readNpy } from '../util/npy';
import { mulberry32 } from '../util/prng';
import { calibrateBundle, DEFAULT_STEP_RANGE, fitBundleLatents } from './calibrate-bundle';
import { FeatureExtractor } from './features';
import { DataType, attr, decodeModel, encodeModel, floatTensor, makeNode, onnx, opsetVersion, readFloatTensor, toNumber, valueInfo } from './onnx/proto';
import { commitFolder, writeManifest } from './write-bundle';

export type ActivationType = 'uint8' | 'int8';
export type RangeMethod = 'minmax' | 'percentile';

export interface QdqOptions {
  /** activation type: 'uint8' asymmetric (default, ORT's U8S8 kernels) or 'int8' symmetric */
  activationType?: ActivationType;
  /** 7-bit weights, for CPUs without VNNI whose U8S8 dot products can saturate; default false */
  reduceRange?: boolean;
  /**
   * Quantize the node that writes a graph output (the UNet's output convolution) too: its output
   * then passes a uint8 Q/DQ, so eps carries the quantization error, but the convolution runs as
   * an integer kernel. Default false: it stays fp32.
   */
  quantizeOutput?: boolean;
  /** op types to quantize; default Conv, Gemm, MatMul */
  opTypes?: readonly string[];
}

export interface TensorRange {
  min: number;
  max: number;
}

/** What the quantizer will touch in a graph. */
export interface QuantizationPlan {
  /** the nodes (by index) quantized */
  nodes: number[];
  /** float activation tensors given a Q/DQ pair, in a stable order */
  activations: string[];
}

export const DEFAULT_QUANTIZED_OPS = ['Conv', 'Gemm', 'MatMul'] as const;

// ---------------------------------------------------------------- tensors of other types

function rawTensor(name: string, dims: readonly number[], dataType: number, bytes: Uint8Array): onnx.TensorProto {
  return onnx.TensorProto.create({ name, dims: [...dims], dataType, rawData: bytes });
}
const int8Tensor = (name: string, dims: readonly number[], v: Int8Array) =>
  rawTensor(name, dims, DataType.INT8, new Uint8Array(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength)));
const uint8Tensor = (name: string, dims: readonly number[], v: Uint8Array) => rawTensor(name, dims, DataType.UINT8, Uint8Array.from(v));
const int32Tensor = (name: string, dims: readonly number[], v: Int32Array) =>
  rawTensor(name, dims, DataType.INT32, new Uint8Array(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength)));

/** A decoded graph: protobufjs decodes every repeated field as an array (its interfaces say optional). */
interface DecodedGraph {
  node: onnx.NodeProto[];
  initializer: onnx.TensorProto[];
  output: onnx.ValueInfoProto[];
}
const decoded = (m: onnx.ModelProto) => m.graph as unknown as DecodedGraph;

// ---------------------------------------------------------------- the plan

function attrInt(node: onnx.INodeProto, name: string, dflt: number): number {
  const a = (node.attribute ?? []).find((x) => x.name === name);
  return a ? toNumber(a.i as unknown as Parameters<typeof toNumber>[0]) : dflt;
}
function attrFloat(node: onnx.INodeProto, name: string, dflt: number): number {
  const a = (node.attribute ?? []).find((x) => x.name === name);
  return a ? (a.f ?? dflt) : dflt;
}

/** Which nodes and activation tensors a QDQ quantization of `model` covers. */
export function planQuantization(model: onnx.IModelProto, options: QdqOptions = {}): QuantizationPlan {
  const g = model.graph!;
  const ops = new Set(options.opTypes ?? DEFAULT_QUANTIZED_OPS);
  const inits = new Map((g.initializer ?? []).map((t) => [t.name!, t]));
  const outputs = new Set((g.output ?? []).map((o) => o.name!));
  const isFloatInit = (name: string) => inits.get(name)?.dataType === DataType.FLOAT;
  const nodes: number[] = [];
  const activations = new Set<string>();
  (g.node ?? []).forEach((n, i) => {
    if ((n.domain ?? '') !== '' || !ops.has(n.opType!)) return;
    const ins = n.input ?? [];
    const out = n.output?.[0];
    // A node writing a graph output stays fp32 unless asked: the output is the UNet's eps, whose
    // precision the scores depend on directly.
    if (!out || (outputs.has(out) && !options.quantizeOutput)) return;
    if (n.opType === 'Conv') {
      if (!isFloatInit(ins[1]) || (ins[2] && !isFloatInit(ins[2]))) return;
    } else if (n.opType === 'Gemm') {
      if (attrInt(n, 'transA', 0) !== 0 || attrFloat(n, 'alpha', 1) !== 1 || attrFloat(n, 'beta', 1) !== 1) return;
      if (!isFloatInit(ins[1])) return;
      if (ins[2]) {
        const c = inits.get(ins[2]);
        if (!c || c.dataType !== DataType.FLOAT || (c.dims ?? []).length !== 1) return;
      }
    } else if (n.opType === 'MatMul') {
      const w = inits.get(ins[1]);
      if (w && w.dataType !== DataType.FLOAT) return;
      if (inits.has(ins[0])) return;
    }
    nodes.push(i);
    activations.add(ins[0]);
    if (n.opType === 'MatMul' && !inits.has(ins[1])) activations.add(ins[1]);
    activations.add(out);
  });
  return { nodes, activations: [...activations] };
}

/** A copy of `model` with every planned activation also exposed as a graph output `<name>__range`. */
export function rangeModel(model: onnx.IModelProto, plan: QuantizationPlan): Uint8Array {
  const m = onnx.ModelProto.decode(onnx.ModelProto.encode(model).finish());
  const g = decoded(m);
  for (const a of plan.activations) {
    g.node.push(makeNode('Identity', [a], [`${a}__range`], { name: `range_${a}` }));
    g.output.push(valueInfo(`${a}__range`, DataType.FLOAT));
  }
  return encodeModel(m);
}

// ---------------------------------------------------------------- activation ranges

export interface RangeOptions {
  method?: RangeMethod;
  /** percentile for method 'percentile', default 99.99 (and 100 - it below) */
  percentile?: number;
  /** step counts S whose inversion inputs the ranges cover; default 2, 3, 4, 5 */
  steps?: readonly number[];
  /** UNet calls batch this many feature maps; default 8 */
  batchSize?: number;
  onProgress?: (message: string) => void;
}

const PERCENTILE_KEEP = 1 << 16;

/**
 * Runs the fp32 UNet's DDIM inversion over `x0` ([n, C, h, w] clean features) at each S and
 * returns the range of every planned activation over all UNet calls.
 */
export async function activationRanges(
  model: onnx.IModelProto,
  plan: QuantizationPlan,
  manifest: Manifest,
  x0: Float32Array,
  count: number,
  options: RangeOptions = {},
): Promise<Map<string, TensorRange>> {
  const { channels, height, width } = manifest.features;
  const per = channels * height * width;
  if (count < 1 || x0.length !== count * per)
    throw new InvalidArgumentError('features', `calibration features must hold n x ${channels} x ${height} x ${width} values`);
  const method = options.method ?? 'minmax';
  const steps = options.steps ?? DEFAULT_STEP_RANGE;
  const batch = options.batchSize ?? 8;
  const { xName, tName, outputName } = manifest.models.unet;
  const session = await ort.InferenceSession.create(rangeModel(model, plan), {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
  });
  const ranges = new Map<string, TensorRange>(plan.activations.map((a) => [a, { min: Infinity, max: -Infinity }]));
  // Percentiles: a uniform reservoir sample of each activation's values (bounded memory).
  const kept = new Map<string, { values: Float32Array; seen: number }>(
    method === 'percentile' ? plan.activations.map((a) => [a, { values: new Float32Array(PERCENTILE_KEEP), seen: 0 }]) : [],
  );
  const rand = mulberry32(1);
  const fetches = [outputName, ...plan.activations.map((a) => `${a}__range`)];
  try {
    for (const s of steps) {
      const schedule = inversionSteps(s, manifest.schedule);
      options.onProgress?.(`activation ranges at S = ${s}: ${count} feature maps, ${Math.ceil(count / batch) * schedule.length} UNet calls`);
      for (let from = 0; from < count; from += batch) {
        const n = Math.min(batch, count - from);
        let x = x0.slice(from * per, (from + n) * per);
        for (const st of schedule) {
          const feeds = {
            [xName]: new ort.Tensor('float32', x, [n, channels, height, width]),
            [tName]: new ort.Tensor('int64', new BigInt64Array(n).fill(BigInt(st.t)), [n]),
          };
          const out = await session.run(feeds, fetches);
          for (const a of plan.activations) {
            const v = out[`${a}__range`].data as Float32Array;
            const r = ranges.get(a)!;
            for (let i = 0; i < v.length; i++) {
              const y = v[i];
              if (y < r.min) r.min = y;
              if (y > r.max) r.max = y;
            }
            const keep = kept.get(a);
            if (keep) {
              for (let i = 0; i < v.length; i++, keep.seen++) {
                if (keep.seen < PERCENTILE_KEEP) keep.values[keep.seen] = v[i];
                else {
                  const j = Math.floor(rand() * (keep.seen + 1));
                  if (j < PERCENTILE_KEEP) keep.values[j] = v[i];
                }
              }
            }
          }
          const eps = out[outputName].data as Float32Array;
          const next = new Float32Array(x.length);
          for (let i = 0; i < x.length; i++) next[i] = st.a * x[i] + st.b * eps[i];
          x = next;
        }
      }
    }
  } finally {
    await session.release();
  }
  if (method === 'percentile') {
    const p = options.percentile ?? 99.99;
    for (const a of plan.activations) {
      const keep = kept.get(a)!;
      const sorted = keep.values.slice(0, Math.min(keep.seen, PERCENTILE_KEEP)).sort();
      const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.round((q / 100) * (sorted.length - 1))))];
      ranges.set(a, { min: at(100 - p), max: at(p) });
    }
  }
  for (const [a, r] of ranges)
    if (!Number.isFinite(r.min) || !Number.isFinite(r.max))
      throw new InvalidArgumentError('features', `activation '${a}' took non-finite values during calibration`);
  return ranges;
}

// ---------------------------------------------------------------- the QDQ graph

interface QParams {
  scale: number;
  zeroPoint: number;
}

/** Scale and zero point of an activation range (ONNX Runtime's rules: the range always holds 0). */
export function activationParams(r: TensorRange, type: ActivationType): QParams {
  const lo = Math.min(0, r.min);
  const hi = Math.max(0, r.max);
  if (type === 'int8') {
    const a = Math.max(-lo, hi);
    return { scale: a > 0 ? a / 127 : 1, zeroPoint: 0 };
  }
  if (hi === lo) return { scale: 1, zeroPoint: 0 };
  const scale = (hi - lo) / 255;
  return { scale, zeroPoint: Math.min(255, Math.max(0, Math.round(-lo / scale))) };
}

/** Symmetric int8 quantization of `w` along `axis` (-1: per tensor). */
function quantizeWeight(w: Float32Array, dims: number[], axis: number, qmax: number): { q: Int8Array; scales: Float32Array } {
  const channels = axis < 0 ? 1 : dims[axis];
  const inner = axis < 0 ? w.length : dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const chOf = (i: number) => (axis < 0 ? 0 : Math.floor(i / inner) % channels);
  const amax = new Float64Array(channels);
  for (let i = 0; i < w.length; i++) amax[chOf(i)] = Math.max(amax[chOf(i)], Math.abs(w[i]));
  const scales = Float32Array.from(amax, (a) => (a > 0 ? a / qmax : 1));
  const q = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) q[i] = Math.max(-qmax, Math.min(qmax, Math.round(w[i] / scales[chOf(i)])));
  return { q, scales };
}

export interface QdqSummary {
  quantizedNodes: Record<string, number>;
  activations: number;
  weights: number;
  skippedNodes: Record<string, number>;
}

/** The QDQ model: `model` with Q/DQ pairs from `ranges` around the planned nodes. */
export function quantizeQdq(
  model: onnx.IModelProto,
  plan: QuantizationPlan,
  ranges: ReadonlyMap<string, TensorRange>,
  options: QdqOptions = {},
): { model: onnx.ModelProto; summary: QdqSummary } {
  if ((opsetVersion(model) ?? 0) < 13) throw new InvalidArgumentError('model', 'per-channel QDQ needs opset 13 or newer; re-export the UNet');
  const actType = options.activationType ?? 'uint8';
  const qmax = options.reduceRange ? 63 : 127;
  const m = onnx.ModelProto.decode(onnx.ModelProto.encode(model).finish());
  const g = decoded(m);
  const inits = new Map(g.initializer.map((t) => [t.name, t]));
  const newInits: onnx.TensorProto[] = [];
  const head: onnx.NodeProto[] = [];
  const after = new Map<onnx.NodeProto, onnx.NodeProto[]>();
  const act = new Map<string, QParams>();
  const graphOutputs = new Set(g.output.map((o) => o.name));
  // Every name added is fresh: a graph may already hold 'att_scale' next to an activation 'att'.
  const taken = new Set<string>([
    ...g.initializer.map((t) => t.name),
    ...g.node.flatMap((n) => [...n.input, ...n.output, n.name]),
    ...(m.graph?.input ?? []).map((v) => v.name ?? ''),
  ]);
  const fresh = (name: string): string => {
    let out = name;
    for (let k = 1; taken.has(out); k++) out = `${name}_${k}`;
    taken.add(out);
    return out;
  };
  const qdqNames = (base: string) => ({
    quantized: fresh(`${base}_quantized`),
    scale: fresh(`${base}_scale`),
    zeroPoint: fresh(`${base}_zero_point`),
    q: fresh(`${base}_QuantizeLinear_Output`),
    dq: fresh(`${base}_DequantizeLinear_Output`),
  });
  /** activation -> its dequantized tensor, and back */
  const dqOf = new Map<string, string>();
  const actOfDq = new Map<string, string>();

  // Activations: T -> Q -> DQ -> every consumer.
  for (const a of plan.activations) {
    const r = ranges.get(a);
    if (!r) throw new InvalidArgumentError('ranges', `no calibration range for activation '${a}'`);
    const p = activationParams(r, actType);
    act.set(a, p);
    const nm = qdqNames(a);
    const producer = g.node.find((n) => n.output.includes(a));
    // A graph output keeps its name on the DQ's output: its producer writes a fresh float tensor
    // the Q reads, so ORT sees DQ -> Conv -> Q and nothing else reads the float result.
    const isOutput = producer !== undefined && graphOutputs.has(a);
    let qIn = a;
    if (isOutput) {
      qIn = fresh(`${a}_float`);
      producer.output = producer.output.map((o) => (o === a ? qIn : o));
      nm.dq = a;
    } else {
      dqOf.set(a, nm.dq);
    }
    actOfDq.set(nm.dq, a);
    newInits.push(floatTensor(nm.scale, [], [p.scale]));
    newInits.push(actType === 'uint8' ? uint8Tensor(nm.zeroPoint, [], Uint8Array.of(p.zeroPoint)) : int8Tensor(nm.zeroPoint, [], Int8Array.of(p.zeroPoint)));
    const pair = [
      makeNode('QuantizeLinear', [qIn, nm.scale, nm.zeroPoint], [nm.q], { name: fresh(`${a}_QuantizeLinear`) }),
      makeNode('DequantizeLinear', [nm.q, nm.scale, nm.zeroPoint], [nm.dq], { name: fresh(`${a}_DequantizeLinear`) }),
    ];
    if (producer) after.set(producer, [...(after.get(producer) ?? []), ...pair]);
    else head.push(...pair);
  }
  for (const n of g.node) n.input = n.input.map((i) => dqOf.get(i) ?? i);

  // Weights and biases of the planned nodes.
  const summary: QdqSummary = { quantizedNodes: {}, activations: plan.activations.length, weights: 0, skippedNodes: {} };
  const done = new Map<string, string>();
  const weightScales = new Map<string, Float32Array>();
  for (const i of plan.nodes) {
    const n = g.node[i];
    summary.quantizedNodes[n.opType] = (summary.quantizedNodes[n.opType] ?? 0) + 1;
    const wName = n.input[1];
    const w = inits.get(wName);
    if (w) {
      const dims = w.dims.map(toNumber);
      const axis = n.opType === 'Conv' ? 0 : n.opType === 'Gemm' ? (attrInt(n, 'transB', 0) ? 0 : 1) : -1;
      const key = `${wName}@${axis}`;
      if (!done.has(key)) {
        const { q, scales } = quantizeWeight(readFloatTensor(w), dims, axis, qmax);
        const nm = qdqNames(wName);
        newInits.push(int8Tensor(nm.quantized, dims, q));
        newInits.push(floatTensor(nm.scale, axis < 0 ? [] : [scales.length], scales));
        newInits.push(int8Tensor(nm.zeroPoint, axis < 0 ? [] : [scales.length], new Int8Array(scales.length)));
        head.push(
          makeNode('DequantizeLinear', [nm.quantized, nm.scale, nm.zeroPoint], [nm.dq], {
            name: fresh(`${wName}_DequantizeLinear`),
            attributes: axis < 0 ? [] : [attr.int('axis', axis)],
          }),
        );
        done.set(key, nm.dq);
        weightScales.set(key, scales);
        summary.weights++;
      }
      n.input[1] = done.get(key)!;
      const bName = n.input[2];
      const b = bName ? inits.get(bName) : undefined;
      if (bName && b && n.opType !== 'MatMul') {
        const xs = act.get(actOfDq.get(n.input[0])!)!.scale;
        const ws = weightScales.get(key)!;
        const bv = readFloatTensor(b);
        const scales = Float32Array.from(bv, (_, c) => xs * ws[ws.length === 1 ? 0 : c]);
        const q = Int32Array.from(bv, (v, c) => Math.max(-2147483647, Math.min(2147483647, Math.round(v / scales[c]))));
        const nm = qdqNames(bName);
        newInits.push(
          int32Tensor(nm.quantized, [bv.length], q),
          floatTensor(nm.scale, [bv.length], scales),
          int32Tensor(nm.zeroPoint, [bv.length], new Int32Array(bv.length)),
        );
        head.push(
          makeNode('DequantizeLinear', [nm.quantized, nm.scale, nm.zeroPoint], [nm.dq], {
            name: fresh(`${bName}_DequantizeLinear`),
            attributes: [attr.int('axis', 0)],
          }),
        );
        n.input[2] = nm.dq;
      }
    }
  }
  const plannedSet = new Set(plan.nodes);
  g.node.forEach((n, i) => {
    if ((DEFAULT_QUANTIZED_OPS as readonly string[]).includes(n.opType) && !plannedSet.has(i))
      summary.skippedNodes[n.opType] = (summary.skippedNodes[n.opType] ?? 0) + 1;
  });

  // Nodes in order: weight DQs and graph-input Q/DQs first, each activation's pair after its producer.
  const nodes: onnx.NodeProto[] = [...head];
  for (const n of g.node) nodes.push(n, ...(after.get(n) ?? []));
  g.node = nodes;
  // Float initializers nothing reads any more go.
  const used = new Set(nodes.flatMap((n) => n.input));
  g.initializer = [...g.initializer.filter((t) => used.has(t.name)), ...newInits];
  m.producerName = 'invad quantize';
  return { model: m, summary };
}

// ---------------------------------------------------------------- does ORT run integer kernels?

/** Node types (domain:opType) that run integer arithmetic in ORT's CPU provider. */
export const INTEGER_NODE_TYPES = [
  'QLinearConv',
  'com.microsoft:QLinearConv',
  'com.microsoft:NhwcQLinearConv',
  'ConvInteger',
  'QLinearMatMul',
  'MatMulInteger',
  'com.microsoft:MatMulIntegerToFloat',
  'com.microsoft:QGemm',
  'com.microsoft:DynamicQuantizeMatMul',
  'com.microsoft:QLinearAdd',
  'com.microsoft:QLinearMul',
  'com.microsoft:QLinearSigmoid',
  'com.microsoft:QLinearConcat',
] as const;

/** Node types that run float convolutions or matrix products. */
export const FLOAT_COMPUTE_NODE_TYPES = [
  'Conv',
  'com.microsoft:FusedConv',
  'com.microsoft.nchwc:Conv',
  'MatMul',
  'com.microsoft:FusedMatMul',
  'Gemm',
  'com.microsoft:FusedGemm',
] as const;

export interface OptimizedNodeCount {
  /** every node type of ORT's optimized graph, 'domain:opType' ('' domain: opType alone) */
  counts: Record<string, number>;
  /** nodes of INTEGER_NODE_TYPES */
  integer: number;
  /** nodes of FLOAT_COMPUTE_NODE_TYPES */
  floatCompute: number;
}

function countNodes(model: onnx.IModelProto): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const n of model.graph?.node ?? []) {
    const key = n.domain ? `${n.domain}:${n.opType}` : n.opType!;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

/**
 * Lets ORT optimize `modelBytes` as the engines do (CPU, level 'all'), saves the optimized graph
 * (the optimizedModelFilePath session option) and counts its node types.
 */
export async function optimizedNodeTypes(modelBytes: Uint8Array): Promise<OptimizedNodeCount> {
  const dir = await mkdtemp(join(tmpdir(), 'invad-ortopt-'));
  try {
    const out = join(dir, 'optimized.onnx');
    const session = await ort.InferenceSession.create(modelBytes, {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      optimizedModelFilePath: out,
      logSeverityLevel: 3,
    });
    await session.release();
    const counts = countNodes(decodeModel(await readFile(out)));
    const sum = (keys: readonly string[]) => keys.reduce((a, k) => a + (counts[k] ?? 0), 0);
    return { counts, integer: sum(INTEGER_NODE_TYPES), floatCompute: sum(FLOAT_COMPUTE_NODE_TYPES) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- the int8 bundle

export interface QuantizeBundleOptions extends QdqOptions, Omit<RangeOptions, 'onProgress'> {
  /** clean features x_0 for the activation ranges: a [n, C, h, w] float32 .npy (the fit work folder's train.npy) */
  features?: string;
  /** normal images for the activation ranges when `features` is not given */
  normals?: readonly string[];
  /** at most this many feature maps for the ranges (a seeded random subset); default 64 */
  maxSamples?: number;
  /** held-out normal images the int8 bundle is calibrated on again; none keeps the fp32 calibration, with a warning */
  calibrationNormals?: readonly string[];
  /** training normals to refit the latent-Gaussian statistics on with the int8 UNet (and score out of fold) */
  refitLatent?: readonly string[];
  falseAlarmRate?: number;
  overwrite?: boolean;
  executionProviders?: ExecutionProvider[];
  onProgress?: (message: string) => void;
}

export interface QuantizeResult {
  out: string;
  manifest: Manifest;
  summary: QdqSummary;
  calibrationSamples: number;
  /** ORT's optimized fp32 and int8 UNets, counted */
  nodeTypes: { fp32: OptimizedNodeCount; int8: OptimizedNodeCount };
  recalibrated: boolean;
  warnings: string[];
}

async function calibrationFeatures(dir: string, manifest: Manifest, o: QuantizeBundleOptions): Promise<{ x0: Float32Array; count: number; source: string }> {
  const { channels, height, width } = manifest.features;
  const per = channels * height * width;
  let all: Float32Array;
  let n: number;
  let source: string;
  if (o.features) {
    const npy = await readNpy(o.features);
    const [, c, h, w] = npy.shape;
    if (npy.dtype !== '<f4' || npy.shape.length !== 4 || c !== channels || h !== height || w !== width) {
      throw new InvalidArgumentError(
        'features',
        `${o.features} must be float32 [n, ${channels}, ${height}, ${width}] (the bundle's feature shape), got ${npy.dtype} [${npy.shape.join(', ')}]`,
      );
    }
    all = npy.data as Float32Array;
    n = npy.shape[0]!;
    source = `features ${o.features}`;
  } else if (o.normals && o.normals.length > 0) {
    const bb = manifest.models.backbone;
    const ex = await FeatureExtractor.open(
      join(dir, bb.file),
      { input: manifest.input, features: manifest.features, inputName: bb.inputName, outputName: bb.outputName },
      o.executionProviders,
    );
    try {
      const files = subset(o.normals.length, o.maxSamples ?? 64).map((i) => o.normals![i]);
      const f = await ex.extract(files);
      all = f.features;
      n = f.files.length;
    } finally {
      await ex.close();
    }
    source = `${n} normal images`;
  } else {
    throw new InvalidArgumentError('features', 'activation ranges need calibration data: the training features (features) or normal images (normals)');
  }
  if (n < 1) throw new InvalidArgumentError('features', 'no calibration feature maps');
  const pick = subset(n, o.maxSamples ?? 64);
  const x0 = new Float32Array(pick.length * per);
  pick.forEach((i, k) => x0.set(all.subarray(i * per, (i + 1) * per), k * per));
  return { x0, count: pick.length, source };
}

/** `k` indices of `n`, a seeded random subset in increasing order (all of them when k >= n). */
function subset(n: number, k: number): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  if (k >= n) return idx;
  const rand = mulberry32(16);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, k).sort((a, b) => a - b);
}

/**
 * Writes `out`, a copy of the bundle at `dir` whose UNet is statically quantized to int8 (QDQ),
 * with `precision: "int8"` in the manifest, calibrated again on `calibrationNormals`.
 */
export async function quantizeBundle(dir: string, out: string, o: QuantizeBundleOptions = {}): Promise<QuantizeResult> {
  const bundle = await loadBundle(dir);
  const m = bundle.manifest;
  if ((m.precision ?? 'fp32') !== 'fp32') throw new InvalidArgumentError('model', `bundle ${dir} is already ${m.precision}`);
  const target = resolve(out);
  if (target === resolve(dir)) throw new InvalidArgumentError('out', 'write the int8 bundle to another folder than the fp32 one');
  const say = o.onProgress ?? (() => undefined);
  const fp32Bytes = new Uint8Array(await readFile(bundle.unetPath));
  const model = decodeModel(fp32Bytes);
  const plan = planQuantization(model, o);
  if (plan.nodes.length === 0) throw new InvalidArgumentError('model', 'the UNet has no Conv, Gemm or MatMul the quantizer can handle');
  const { x0, count, source } = await calibrationFeatures(dir, m, o);
  say(`activation ranges of ${plan.activations.length} tensors from ${count} feature maps (${source})`);
  const ranges = await activationRanges(model, plan, m, x0, count, { ...o, onProgress: say });
  const { model: q, summary } = quantizeQdq(model, plan, ranges, o);
  const int8Bytes = encodeModel(q);
  say("checking the node types of ORT's optimized graphs");
  const nodeTypes = { fp32: await optimizedNodeTypes(fp32Bytes), int8: await optimizedNodeTypes(int8Bytes) };

  const warnings: string[] = [];
  const tmp = await mkdtemp(join(dirname(target), `.${basename(target)}.tmp-`));
  try {
    await cp(dir, tmp, { recursive: true });
    await writeFile(join(tmp, m.models.unet.file), int8Bytes);
    const quantization = {
      format: 'qdq',
      tool: 'invad quantize (onnx-proto; onnxruntime.quantization is Python-only)',
      activations: `${o.activationType ?? 'uint8'} per tensor${(o.activationType ?? 'uint8') === 'int8' ? ', symmetric' : ', asymmetric'}`,
      weights: `int8 symmetric, per output channel (Conv, Gemm), per tensor (MatMul)${o.reduceRange ? ', 7-bit (reduce range)' : ''}`,
      ranges: o.method === 'percentile' ? `percentile ${o.percentile ?? 99.99}` : 'minmax',
      outputQuantized: o.quantizeOutput === true,
      rangeSteps: [...(o.steps ?? DEFAULT_STEP_RANGE)],
      calibrationSamples: count,
      calibrationSource: source,
      quantizedNodes: summary.quantizedNodes,
      fp32Sha256: m.models.unet.sha256,
      ortIntegerNodes: nodeTypes.int8.integer,
      ortFloatComputeNodes: nodeTypes.int8.floatCompute,
    };
    let next: Manifest = { ...m, precision: 'int8', quantization, models: { ...m.models, unet: { ...m.models.unet, sha256: sha256Bytes(int8Bytes) } } };
    const recalibrated = (o.calibrationNormals?.length ?? 0) > 0;
    if (!recalibrated) {
      const w =
        "the calibration (normalizations, thresholds) is the fp32 UNet's: recalibrate this int8 bundle on held-out normals (invad calibrate) before trusting its thresholds";
      warnings.push(w);
      next = { ...next, calibration: { ...next.calibration, warnings: [...(next.calibration.warnings ?? []), w] } };
    }
    if (m.latentGaussian?.length && !o.refitLatent?.length)
      warnings.push(
        "the latent-Gaussian statistics are the fp32 UNet's: refit them on the training normals (refitLatent / --refit-latent) for the int8 latents",
      );
    await writeManifest(tmp, next);
    const stepOpts = { steps: (m.calibration.bySteps ?? []).map((s) => s.steps), executionProviders: o.executionProviders, onProgress: say };
    if (stepOpts.steps.length === 0) stepOpts.steps = [m.schedule.defaultSteps];
    const latentSteps = m.latentGaussian?.length ? m.latentGaussian.map((g) => g.steps) : stepOpts.steps;
    if (o.refitLatent?.length) await fitBundleLatents(tmp, o.refitLatent, { ...stepOpts, steps: latentSteps });
    if (recalibrated) {
      const cal = await calibrateBundle(tmp, o.calibrationNormals!, {
        ...stepOpts,
        falseAlarmRate: o.falseAlarmRate ?? m.calibration.falseAlarmRate ?? undefined,
        training: o.refitLatent,
      });
      warnings.push(...(cal.warnings ?? []));
    }
    const final = (await loadBundle(tmp)).manifest;
    await commitFolder(tmp, target, o.overwrite === true);
    return { out: target, manifest: final, summary, calibrationSamples: count, nodeTypes, recalibrated, warnings };
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}
