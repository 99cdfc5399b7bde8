/**
 * The whole scoring pipeline of one S as one ONNX graph:
 *
 *   image uint8 [N,H,W,3] -> normalized float [N,3,H,W] -> backbone -> x_0
 *   -> S x (UNet call, DDIM update a x + b eps) -> x_T
 *   -> l2 [N,h,w] -> SP, NLL (and the latent-Gaussian map d [N,h,w] and its max)
 *   -> calibrated score [N], is_anomalous [N], map [N,h,w]
 *
 * Each step is written to give what Detector gives (docs/method.md), bit for bit where the
 * operations allow it:
 * - normalization uses preprocess's own coefficients with its float64 arithmetic, so the graph's
 *   input tensor is exactly Detector's;
 * - the DDIM update rounds like the kernels: two float32 products, then their sum;
 * - from the reductions on, as in Detector's JavaScript, the score parts, the Mahalanobis
 *   distance, the calibration and the threshold comparison are float64. Only the per-position
 *   sums of squares are float32, as in the kernels (their channel order may differ).
 *
 * Where Detector throws for a non-finite score, the graph cannot: it flags the image instead
 * (is_anomalous = not (score <= threshold), true for NaN), so a broken result never passes as good.
 */
import { attr, DataType, type Dim, floatTensor, int64Vector, makeGraph, makeModel, makeNode, onnx, valueInfo } from '../../fit/onnx/proto';
import type { Manifest } from '../../runtime/bundle/manifest';
import type { LatentGaussian } from '../../runtime/latent-gaussian';
import { pixelNormalization } from '../../runtime/preprocess';
import { IMAGE_INPUT, modelTensors, OUTPUT, type TensorSpec } from '../../runtime/remote/tensor-spec';
import { type InversionStep } from '../../runtime/schedule';
import { type FeatureMap, partNormalization, type ScoreDefinition, type ScoreNormalization, type ScorePart, SCORES } from '../../runtime/scores';
import { ExportError } from '../../util/errors';
import { InlinedModel } from './inline';
import { defaultOpset, upgradeOpset } from './opset';

/** The lowest default-domain opset the graph is written at (ReduceSum with an axes input). */
export const MIN_EXPORT_OPSET = 13;

/** The symbolic batch dimension of every input and output. */
export const BATCH = 'N';

/** Everything the graph is built from. */
export interface PipelineParts {
  manifest: Manifest;
  /** decoded backbone.onnx and unet.onnx; they are modified (opset upgrade) */
  backbone: onnx.IModelProto;
  unet: onnx.IModelProto;
  /** the S inversion steps (schedule.ts) */
  steps: readonly InversionStep[];
  definition: ScoreDefinition;
  /** the normalization of the parts at S */
  normalization: ScoreNormalization;
  /** the image threshold; null: none (nothing finite is flagged) */
  threshold: number | null;
  /** the latent-Gaussian statistics at S, when the bundle has them */
  gaussian?: LatentGaussian;
  /** written to the model's metadata_props */
  metadata: Readonly<Record<string, string>>;
  producerVersion: string;
}

export interface PipelineModel {
  model: onnx.ModelProto;
  /** the graph's inputs and outputs, as tensor-spec.ts names them */
  tensors: { inputs: TensorSpec[]; outputs: TensorSpec[] };
  /** the default-domain opset of the graph */
  opset: number;
}

/** Raw little-endian tensor data (every platform Node ships on is little-endian). */
function rawTensor(name: string, dataType: DataType, dims: readonly number[], data: Float64Array): onnx.TensorProto {
  const bytes = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  return onnx.TensorProto.create({ name, dims: [...dims], dataType, rawData: bytes });
}

/** Appends nodes and constants under one prefix, with the reductions written for the graph's opset. */
class Builder {
  readonly nodes: onnx.INodeProto[] = [];
  readonly initializers: onnx.ITensorProto[] = [];
  private readonly used = new Set<string>();

  constructor(
    readonly opset: number,
    private readonly prefix = 'invad/',
  ) {}

  /** A fresh tensor name, or exactly `exact` (a graph output). */
  name(base: string, exact = false): string {
    const name = exact ? base : this.prefix + base;
    if (this.used.has(name)) throw new Error(`internal: tensor name ${name} used twice`);
    this.used.add(name);
    return name;
  }

  op(opType: string, inputs: readonly string[], out: string, attributes: onnx.IAttributeProto[] = [], exact = false): string {
    const output = this.name(out, exact);
    this.nodes.push(makeNode(opType, inputs, [output], { name: `invad/${out}`, attributes }));
    return output;
  }

  constant(tensor: onnx.TensorProto): string {
    this.name(tensor.name, true);
    this.initializers.push(tensor);
    return tensor.name;
  }

  float32(base: string, dims: readonly number[], data: Float32Array | readonly number[]): string {
    return this.constant(floatTensor(this.prefix + base, dims, data));
  }

  float64(base: string, value: number): string {
    return this.float64Tensor(base, [], [value]);
  }

  float64Tensor(base: string, dims: readonly number[], values: readonly number[]): string {
    return this.constant(rawTensor(this.prefix + base, DataType.DOUBLE, dims, Float64Array.from(values)));
  }

  int64(base: string, values: readonly number[]): string {
    return this.constant(int64Vector(this.prefix + base, values));
  }

  cast(x: string, to: DataType, out: string, exact = false): string {
    return this.op('Cast', [x], out, [attr.int('to', to)], exact);
  }

  /** ReduceX over `axes`: axes as an input from opset 18 (ReduceSum: 13), an attribute before. */
  reduce(op: 'ReduceSum' | 'ReduceSumSquare' | 'ReduceMax' | 'ReduceMin', x: string, axes: readonly number[], out: string): string {
    const keep = attr.int('keepdims', 0);
    if (op === 'ReduceSum' || this.opset >= 18) return this.op(op, [x, this.int64(`${out}_axes`, axes)], out, [keep]);
    return this.op(op, [x], out, [keep, attr.ints('axes', axes)]);
  }
}

/** The merged imports of the other domains (com.microsoft, ...); one version per domain. */
function otherOpsets(models: ReadonlyArray<{ file: string; model: onnx.IModelProto }>): onnx.IOperatorSetIdProto[] {
  const seen = new Map<string, { version: number; file: string }>();
  for (const { file, model } of models) {
    for (const o of model.opsetImport ?? []) {
      const domain = o.domain ?? '';
      if (domain === '' || domain === 'ai.onnx') continue;
      const version = Number(o.version ?? 0);
      const prior = seen.get(domain);
      if (prior && prior.version !== version) {
        throw new ExportError(
          file,
          `${prior.file} imports operator set ${domain} version ${prior.version} and ${file} version ${version}; one graph can import only one`,
        );
      }
      seen.set(domain, { version, file });
    }
  }
  return [...seen].map(([domain, { version }]) => ({ domain, version }));
}

/** The score parts and feature maps the graph computes; a definition that needs others is refused. */
const GRAPH_PARTS: ReadonlySet<ScorePart> = new Set<ScorePart>(['spatialRange', 'nll', 'latentGaussian']);
const GRAPH_MAPS: ReadonlySet<FeatureMap> = new Set<FeatureMap>(['l2', 'latentGaussian']);

/**
 * Why the exported graph cannot compute a score definition (a part or a map other than SP, NLL,
 * the latent Gaussian and their maps), or null when it can.
 */
export function unsupportedDefinition(definition: ScoreDefinition): string | null {
  const spec = SCORES[definition];
  const parts = spec.parts.filter((part) => !GRAPH_PARTS.has(part));
  if (parts.length > 0)
    return `the ${definition} score needs ${parts.join(' and ')}, which the exported graph does not compute (it has SP, NLL and the latent Gaussian)`;
  if (!GRAPH_MAPS.has(spec.map))
    return `the ${definition} score's map is ${spec.map}, which the exported graph does not compute (it has l2 and latentGaussian)`;
  return null;
}

/**
 * The image score of a definition as weights on its normalized parts plus a bias, read off its
 * `combine` function; the graph can only express an affine combination.
 */
export function affineCombine(definition: ScoreDefinition): { parts: readonly ScorePart[]; weights: number[]; bias: number } {
  const spec = SCORES[definition];
  const parts = spec.parts;
  const at = (values: readonly number[]) => spec.combine(Object.fromEntries(parts.map((p, i) => [p, values[i]])) as Record<ScorePart, number>);
  const zeros = parts.map(() => 0);
  const bias = at(zeros);
  const weights = parts.map((_, i) => at(zeros.map((_, j) => (j === i ? 1 : 0))) - bias);
  for (const probe of [parts.map((_, i) => 1.5 + 2.25 * i), parts.map((_, i) => -3.75 * (i + 1))]) {
    const want = at(probe);
    const affine = probe.reduce((acc, v, i) => acc + weights[i] * v, bias);
    if (!(Math.abs(want - affine) <= 1e-9 * Math.max(1, Math.abs(want)))) {
      throw new ExportError(
        'manifest.json',
        `the ${definition} score combines its parts in a way that is not a weighted sum, which the exported graph cannot express`,
      );
    }
  }
  return { parts, weights, bias };
}

/** Builds the pipeline graph (see the file comment). */
export function buildPipelineModel(p: PipelineParts): PipelineModel {
  const m = p.manifest;
  const files = { backbone: m.models.backbone.file, unet: m.models.unet.file };
  const opset = Math.max(MIN_EXPORT_OPSET, defaultOpset(p.backbone) ?? 0, defaultOpset(p.unet) ?? 0);
  upgradeOpset(p.backbone, opset, files.backbone);
  upgradeOpset(p.unet, opset, files.unet);
  const backbone = new InlinedModel({
    file: files.backbone,
    model: p.backbone,
    inputs: [m.models.backbone.inputName],
    output: m.models.backbone.outputName,
    sharedPrefix: 'backbone/',
  });
  const unet = new InlinedModel({
    file: files.unet,
    model: p.unet,
    inputs: [m.models.unet.xName, m.models.unet.tName],
    output: m.models.unet.outputName,
    sharedPrefix: 'unet/',
  });
  if (p.steps.length === 0) throw new ExportError('manifest.json', 'the export needs at least one inversion step');

  const b = new Builder(opset);
  const { channels: C, height: h, width: w } = m.features;
  const P = h * w;

  // Normalization as preprocess does it: p * scale + shift in float64, rounded once to float32.
  // Transposed while a pixel is one byte, the cheapest place to move it.
  const { scale, shift } = pixelNormalization(m.input);
  const nchw = b.op('Transpose', [IMAGE_INPUT], 'image_nchw', [attr.ints('perm', [0, 3, 1, 2])]);
  const scaled = b.op('Mul', [b.cast(nchw, DataType.DOUBLE, 'image_f64'), b.float64Tensor('pixel_scale', [1, 3, 1, 1], scale)], 'pixels_scaled');
  const pixels = b.cast(b.op('Add', [scaled, b.float64Tensor('pixel_shift', [1, 3, 1, 1], shift)], 'pixels_f64'), DataType.FLOAT, 'pixels');

  // Backbone, then the S UNet calls on one set of weights.
  let x = b.name('x_0');
  b.nodes.push(...backbone.call('backbone.call/', { [m.models.backbone.inputName]: pixels }, x));
  const batch = b.op('Slice', [b.op('Shape', [IMAGE_INPUT], 'image_shape'), b.int64('zero', [0]), b.int64('one', [1])], 'batch');
  p.steps.forEach((step, i) => {
    const t = b.op('ConstantOfShape', [batch], `t_${i}`, [attr.tensor('value', int64Vector(`t_${i}_value`, [step.t]))]);
    const eps = b.name(`eps_${i}`);
    b.nodes.push(...unet.call(`unet.${i}/`, { [m.models.unet.xName]: x, [m.models.unet.tName]: t }, eps));
    if (i === p.steps.length - 1) {
      // The last step has a = 0, b = 1: x_T is the last eps.
      x = eps;
      return;
    }
    // a * x + b * eps with float32 a and b, two roundings then the sum, as the kernels do.
    const ax = b.op('Mul', [x, b.float32(`a_${i}`, [], [Math.fround(step.a)])], `a_x_${i}`);
    const beps = b.op('Mul', [eps, b.float32(`b_${i}`, [], [Math.fround(step.b)])], `b_eps_${i}`);
    x = b.op('Add', [ax, beps], `x_${i + 1}`);
  });

  // l2 map, SP and NLL.
  const sq = b.reduce('ReduceSumSquare', x, [1], 'sum_sq_position');
  const l2 = b.op('Sqrt', [sq], 'l2');
  const f64 = (v: string, out: string) => b.cast(v, DataType.DOUBLE, out);
  const sp = b.op(
    'Sub',
    [f64(b.reduce('ReduceMax', l2, [1, 2], 'l2_max'), 'l2_max_f64'), f64(b.reduce('ReduceMin', l2, [1, 2], 'l2_min'), 'l2_min_f64')],
    'spatial_range_f64',
  );
  const sumSq = b.reduce('ReduceSum', f64(sq, 'sum_sq_position_f64'), [1, 2], 'sum_sq');
  const D = C * P;
  const nll = b.op(
    'Add',
    [b.op('Mul', [sumSq, b.float64('half', 0.5)], 'half_sum_sq'), b.float64('nll_constant', D * (0.5 * Math.log(2 * Math.PI)))],
    'nll_f64',
  );
  const raw: Partial<Record<ScorePart, string>> = { spatialRange: sp, nll };

  // The latent-Gaussian map: per position p, sqrt((x - mu_p)^T Prec_p (x - mu_p)), in float64.
  let lgMap: string | undefined;
  if (p.gaussian) {
    const g = p.gaussian;
    if (g.channels !== C || g.positions !== P)
      throw new ExportError('manifest.json', `the latent statistics are for ${g.positions} positions x ${g.channels} channels; the features are ${P} x ${C}`);
    const byPosition = b.op('Transpose', [b.op('Reshape', [x, b.int64('shape_ncp', [0, C, P])], 'x_ncp')], 'x_pnc', [attr.ints('perm', [2, 0, 1])]);
    const mean = f64(b.float32('latent_mean', [P, 1, C], g.mean), 'latent_mean_f64');
    const precision = f64(b.float32('latent_precision', [P, C, C], g.precision), 'latent_precision_f64');
    const diff = b.op('Sub', [f64(byPosition, 'x_pnc_f64'), mean], 'latent_diff');
    // Prec is symmetric, so diff . Prec holds the products Prec . diff the runtime computes.
    const prod = b.op('MatMul', [diff, precision], 'latent_diff_prec');
    const q = b.reduce('ReduceSum', b.op('Mul', [diff, prod], 'latent_terms'), [2], 'latent_quadratic');
    const dist = b.op('Sqrt', [b.op('Max', [q, b.float64('zero_f64', 0)], 'latent_quadratic_pos')], 'latent_distance');
    const distNp = b.cast(b.op('Transpose', [dist], 'latent_distance_np', [attr.ints('perm', [1, 0])]), DataType.FLOAT, 'latent_distance_f32');
    lgMap = b.op('Reshape', [distNp, b.int64('shape_nhw', [0, h, w])], 'latent_gaussian_map');
    raw.latentGaussian = f64(b.reduce('ReduceMax', lgMap, [1, 2], 'latent_gaussian_max'), 'latent_gaussian_f64');
  }

  // Calibration: normalize each part, combine, compare with the threshold (float64, as Detector).
  const unsupported = unsupportedDefinition(p.definition);
  if (unsupported !== null) throw new ExportError('manifest.json', unsupported);
  const { parts, weights, bias } = affineCombine(p.definition);
  let score: string | undefined;
  parts.forEach((part, i) => {
    const value = raw[part];
    if (value === undefined) throw new ExportError('manifest.json', `the ${p.definition} score needs the bundle's latent statistics for S = ${p.steps.length}`);
    const n = partNormalization(part, p.normalization);
    let term = b.op(
      'Div',
      [b.op('Sub', [value, b.float64(`${part}_center`, n.center)], `${part}_centered`), b.float64(`${part}_scale`, n.scale)],
      `${part}_normalized`,
    );
    if (weights[i] !== 1) term = b.op('Mul', [term, b.float64(`${part}_weight`, weights[i])], `${part}_weighted`);
    score = score === undefined ? term : b.op('Add', [score, term], `score_sum_${i}`);
  });
  if (bias !== 0) score = b.op('Add', [score!, b.float64('score_bias', bias)], 'score_biased');
  // No threshold: +inf, so that only a NaN score is flagged.
  const threshold = b.float64('threshold', p.threshold ?? Infinity);
  b.op('Not', [b.op('LessOrEqual', [score!, threshold], 'score_within')], OUTPUT.isAnomalous, [], true);
  b.cast(score!, DataType.FLOAT, OUTPUT.score, true);
  const wantsLatentMap = SCORES[p.definition].map === 'latentGaussian';
  if (wantsLatentMap && lgMap === undefined)
    throw new ExportError('manifest.json', `the ${p.definition} map needs the bundle's latent statistics for S = ${p.steps.length}`);
  b.op('Identity', [wantsLatentMap ? lgMap! : l2], OUTPUT.map, [], true);
  b.cast(sp, DataType.FLOAT, OUTPUT.spatialRange, true);
  b.cast(nll, DataType.FLOAT, OUTPUT.nll, true);
  if (raw.latentGaussian) b.cast(raw.latentGaussian, DataType.FLOAT, OUTPUT.latentGaussian, true);

  const tensors = modelTensors(m, p.gaussian !== undefined);
  const toValueInfo = (t: TensorSpec) =>
    valueInfo(
      t.name,
      ELEMENT_TYPE[t.datatype],
      t.shape.map((d): Dim => (d < 0 ? BATCH : d)),
    );
  const graph = makeGraph({
    name: 'invad',
    inputs: tensors.inputs.map(toValueInfo),
    outputs: tensors.outputs.map(toValueInfo),
    initializers: [...b.initializers, ...backbone.initializers, ...unet.initializers],
    nodes: b.nodes,
  });
  const model = makeModel(graph, {
    irVersion: Math.max(8, Number(p.backbone.irVersion ?? 0), Number(p.unet.irVersion ?? 0)),
    opset,
    extraOpsets: Object.fromEntries(
      otherOpsets([
        { file: files.backbone, model: p.backbone },
        { file: files.unet, model: p.unet },
      ]).map((o) => [o.domain!, Number(o.version)]),
    ),
    producerVersion: p.producerVersion,
    docString: `invad pipeline: backbone, ${p.steps.length} UNet calls, ${p.definition} score`,
    metadata: p.metadata,
  });
  model.functions = mergeFunctions([
    { file: files.backbone, functions: backbone.functions },
    { file: files.unet, functions: unet.functions },
  ]);
  return { model, tensors, opset };
}

/** The model-local functions of both models, each once; two different functions of one name are refused. */
function mergeFunctions(sources: ReadonlyArray<{ file: string; functions: readonly onnx.IFunctionProto[] }>): onnx.IFunctionProto[] {
  const byName = new Map<string, { file: string; fn: onnx.IFunctionProto; bytes: string }>();
  for (const { file, functions } of sources) {
    for (const fn of functions) {
      const key = `${fn.domain ?? ''}:${fn.name ?? ''}`;
      const bytes = Buffer.from(onnx.FunctionProto.encode(fn).finish()).toString('base64');
      const prior = byName.get(key);
      if (prior && prior.bytes !== bytes) throw new ExportError(file, `${prior.file} and ${file} both define a different model-local function ${key}`);
      byName.set(key, { file, fn, bytes });
    }
  }
  return [...byName.values()].map((v) => v.fn);
}

/** ONNX element types of the tensor-spec data types. */
export const ELEMENT_TYPE: Readonly<Record<TensorSpec['datatype'], DataType>> = { UINT8: DataType.UINT8, FP32: DataType.FLOAT, BOOL: DataType.BOOL };
