/**
 * Feature backbones by ONNX graph surgery: take an ImageNet classifier, tap a
 * few intermediate tensors, resize each bilinearly to a common grid, concat on
 * channels (optionally standardize per channel), and prune everything else.
 *
 *   image [N,3,H,W] -> ... -> tap_i [N,C_i,h_i,w_i] -> Resize(linear, half_pixel) -> [N,C_i,gh,gw]
 *                                                   -> Concat(axis 1) -> [(x - mean) / std] -> features [N,sum C_i,gh,gw]
 *
 * Quantized graphs (QLinearConv/QLinearAdd, uint8 activations with `_scale` and
 * `_zero_point` initializers) are tapped through a DequantizeLinear. Tap shapes
 * come from one run of a probe model (the pruned graph exposing the taps) in
 * onnxruntime-node on zeros, so no shape information is needed in the model.
 */
import * as ort from 'onnxruntime-node';
import { InvalidArgumentError } from '../../util/errors';
import { DataType, type Dim, attr, encodeModel, decodeModel, floatTensor, int64Vector, makeNode, onnx, opsetVersion, valueInfo, valueInfoShape } from './proto';

export const FEATURES_OUTPUT = 'features';
export const BATCH_DIM = 'N';

export interface Size2D {
  height: number;
  width: number;
}

export interface FeatureBackboneOptions {
  /** Tensor names inside the graph, fine to coarse. Quantized tensors may be named by their float base name. */
  taps: readonly string[];
  /** The image input (default: the model's first graph input that is not an initializer). */
  inputName?: string;
  /** Name of the features output (default 'features'). */
  outputName?: string;
  /** Common grid every tap is resized to (default: the spatial size of the last tap). */
  grid?: Size2D;
  /** Image size the backbone runs at; fixes the input's spatial dims. */
  inputSize: Size2D;
  /** Per-channel feature standardization baked into the graph: (features - mean[c]) / std[c]. */
  normalization?: { mean: Float32Array; std: Float32Array };
}

export interface TapInfo {
  /** The name as given (or the base name of a quantized tensor). */
  name: string;
  /** The graph tensor actually tapped (e.g. '339_quantized'). */
  tensor: string;
  /** True when the tap is dequantized inside the graph. */
  quantized: boolean;
  channels: number;
  height: number;
  width: number;
  /** inputSize.height / height. */
  stride: number;
}

export interface FeatureShape {
  channels: number;
  height: number;
  width: number;
}

export interface FeatureBackbone {
  /** The serialized ONNX model: input [N,3,H,W] float32 -> features [N,C,gh,gw] float32. */
  bytes: Uint8Array;
  featureShape: FeatureShape;
  taps: TapInfo[];
  inputName: string;
  outputName: string;
}

// ---------------------------------------------------------------- graph analysis

/** Where the output scale and zero point of a quantizing op sit among its inputs. */
const QUANT_OUTPUT_PARAMS: Readonly<Record<string, readonly [number, number]>> = {
  QuantizeLinear: [1, 2],
  QLinearConv: [6, 7],
  QLinearMatMul: [6, 7],
  QLinearAdd: [6, 7],
  QLinearMul: [6, 7],
  QLinearAveragePool: [3, 4],
  QLinearGlobalAveragePool: [3, 4],
  QLinearLeakyRelu: [3, 4],
  QLinearSigmoid: [3, 4],
  QLinearSoftmax: [3, 4],
  QLinearConcat: [0, 1],
  QLinearReduceMean: [3, 4],
};

/** Ops whose output describes a shape, not image data. */
const SHAPE_OPS = new Set(['Shape', 'Size']);

const QUANTIZED_SUFFIX = '_quantized';

interface QuantParams {
  scale: string;
  zeroPoint: string;
}

class GraphIndex {
  readonly graph: onnx.IGraphProto;
  readonly nodes: onnx.INodeProto[];
  readonly initializers: Set<string>;
  /** Graph inputs that are not initializers, in order. */
  readonly realInputs: onnx.IValueInfoProto[];
  /** tensor name -> index of the node producing it. */
  readonly producer = new Map<string, number>();
  /** Node outputs that depend on image data (not on shapes or constants alone), in graph order. */
  readonly dataTensors: string[] = [];
  readonly allNames = new Set<string>();

  constructor(graph: onnx.IGraphProto) {
    this.graph = graph;
    this.nodes = graph.node ?? [];
    this.initializers = new Set([...(graph.initializer ?? []).map((t) => t.name ?? ''), ...(graph.sparseInitializer ?? []).map((t) => t.values?.name ?? '')]);
    this.realInputs = (graph.input ?? []).filter((i) => !this.initializers.has(i.name ?? ''));
    for (const n of this.initializers) this.allNames.add(n);
    for (const i of graph.input ?? []) this.allNames.add(i.name ?? '');
    const data = new Set(this.realInputs.map((i) => i.name ?? ''));
    this.nodes.forEach((node, idx) => {
      const isData = !SHAPE_OPS.has(node.opType ?? '') && (node.input ?? []).some((i) => data.has(i));
      for (const o of node.output ?? []) {
        if (!o) continue;
        this.producer.set(o, idx);
        this.allNames.add(o);
        if (isData) {
          data.add(o);
          this.dataTensors.push(o);
        }
      }
    });
  }

  /** Scale and zero point of a quantized node output, or undefined for a float one. */
  quantParams(tensor: string): QuantParams | undefined {
    const idx = this.producer.get(tensor);
    if (idx !== undefined) {
      const node = this.nodes[idx];
      const slots = QUANT_OUTPUT_PARAMS[node.opType ?? ''];
      const inputs = node.input ?? [];
      if (slots && (node.output ?? [])[0] === tensor && inputs[slots[0]] && inputs[slots[1]]) {
        return { scale: inputs[slots[0]], zeroPoint: inputs[slots[1]] };
      }
    }
    // onnxruntime's quantizer naming: X_quantized with X_scale and X_zero_point.
    if (tensor.endsWith(QUANTIZED_SUFFIX)) {
      const base = tensor.slice(0, -QUANTIZED_SUFFIX.length);
      if (this.initializers.has(`${base}_scale`) && this.initializers.has(`${base}_zero_point`)) {
        return { scale: `${base}_scale`, zeroPoint: `${base}_zero_point` };
      }
    }
    // A producer without known slots (e.g. a quantized op we do not know) is treated as float.
    return undefined;
  }

  /** The name a tensor is listed under: the float base name for X_quantized tensors. */
  displayName(tensor: string): string {
    if (tensor.endsWith(QUANTIZED_SUFFIX) && this.quantParams(tensor)) return tensor.slice(0, -QUANTIZED_SUFFIX.length);
    return tensor;
  }
}

function decodeGraph(model: Uint8Array): { model: onnx.ModelProto; graph: onnx.GraphProto } {
  if (!(model instanceof Uint8Array)) throw new InvalidArgumentError('model', 'model must be the bytes of an ONNX file (Uint8Array or Buffer)');
  let m: onnx.ModelProto;
  try {
    // A Buffer view (no copy): protobufjs then reads strings with Buffer's decoder, in
    // every realm (under jest, a plain Uint8Array can be mistaken for a Buffer).
    m = decodeModel(Buffer.from(model.buffer, model.byteOffset, model.byteLength));
  } catch (err) {
    throw new InvalidArgumentError('model', `not an ONNX model: ${(err as Error).message}`, { cause: err });
  }
  if (!m.graph || (m.graph.node ?? []).length === 0) throw new InvalidArgumentError('model', 'the ONNX model has no graph nodes');
  return { model: m, graph: m.graph as onnx.GraphProto };
}

/**
 * Intermediate tensors usable as taps, in graph order: node outputs that depend
 * on the image (not shape computations); quantized tensors under their float
 * base name ('339' for '339_quantized').
 */
export function listTapCandidates(model: Uint8Array): string[] {
  const { graph } = decodeGraph(model);
  const index = new GraphIndex(graph);
  const seen = new Set<string>();
  const out: string[] = [];
  for (const t of index.dataTensors) {
    const name = index.displayName(t);
    if (!seen.has(name)) {
      seen.add(name);
      out.push(name);
    }
  }
  return out;
}

// ---------------------------------------------------------------- suggestions

function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length];
}

const NUMERIC = /^\d+$/;

function commonPrefix(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/**
 * Up to `limit` tensor names nearest to `query`: by edit distance (comparing
 * float base names), then longest common prefix, then numeric closeness, then
 * graph order; a quantized tensor right after its base name.
 */
export function nearestNames(query: string, names: readonly string[], limit = 5): string[] {
  const strip = (n: string) => (n.endsWith(QUANTIZED_SUFFIX) ? n.slice(0, -QUANTIZED_SUFFIX.length) : n);
  const q = strip(query);
  const qNum = NUMERIC.test(q) ? Number(q) : undefined;
  const firstSeen = new Map<string, number>();
  names.forEach((n, i) => {
    const b = strip(n);
    if (!firstSeen.has(b)) firstSeen.set(b, i);
  });
  const scored = names.map((name) => {
    const base = strip(name);
    return {
      name,
      dist: Math.min(levenshtein(q, base), levenshtein(query, name)),
      prefix: commonPrefix(q, base),
      numeric: qNum !== undefined && NUMERIC.test(base) ? Math.abs(Number(base) - qNum) : Number.POSITIVE_INFINITY,
      order: firstSeen.get(base) ?? 0,
      twin: base !== name ? 1 : 0,
    };
  });
  scored.sort((a, b) => a.dist - b.dist || b.prefix - a.prefix || a.numeric - b.numeric || a.order - b.order || a.twin - b.twin);
  return scored.slice(0, limit).map((s) => s.name);
}

// ---------------------------------------------------------------- tap resolution

interface ResolvedTap {
  name: string;
  tensor: string;
  quant: QuantParams | undefined;
  /** The float tensor carrying the tap in the new graph. */
  floatName: string;
}

function uniqueName(base: string, taken: Set<string>): string {
  let name = base;
  for (let i = 1; taken.has(name); i++) name = `${base}_${i}`;
  taken.add(name);
  return name;
}

function resolveTaps(index: GraphIndex, taps: readonly string[], taken: Set<string>): ResolvedTap[] {
  if (!Array.isArray(taps) || taps.length === 0) throw new InvalidArgumentError('taps', 'taps must name at least one tensor');
  const pool = (): string[] => {
    const names: string[] = [];
    const seen = new Set<string>();
    for (const t of index.dataTensors) {
      for (const n of [index.displayName(t), t]) {
        if (!seen.has(n)) {
          seen.add(n);
          names.push(n);
        }
      }
    }
    return names;
  };
  const seenTaps = new Set<string>();
  return taps.map((raw, i) => {
    if (typeof raw !== 'string' || raw.trim() === '') throw new InvalidArgumentError('taps', `taps[${i}] must be a non-empty tensor name`);
    const name = raw.trim();
    let tensor: string | undefined;
    if (index.producer.has(name)) tensor = name;
    else if (index.producer.has(name + QUANTIZED_SUFFIX) && index.quantParams(name + QUANTIZED_SUFFIX)) tensor = name + QUANTIZED_SUFFIX;
    if (tensor === undefined) {
      const near = nearestNames(name, pool());
      const hint =
        index.realInputs.some((inp) => inp.name === name) || index.initializers.has(name)
          ? `"${name}" is a graph input or initializer, not an intermediate tensor`
          : `Unknown tap "${name}"`;
      throw new InvalidArgumentError('taps', `${hint}: nearest tensors are ${near.join(', ')}`);
    }
    if (seenTaps.has(tensor)) throw new InvalidArgumentError('taps', `tap "${name}" is listed twice`);
    seenTaps.add(tensor);
    const quant = index.quantParams(tensor);
    const display = quant ? index.displayName(tensor) : tensor;
    const floatName = quant ? uniqueName(`invad_tap${i}_${display}_float`, taken) : tensor;
    return { name: display, tensor, quant, floatName };
  });
}

// ---------------------------------------------------------------- pruning

/** Names a node reads, including outer-scope names used inside its subgraphs. */
function nodeReads(node: onnx.INodeProto): string[] {
  const names = (node.input ?? []).filter((n) => n !== '');
  const visitGraph = (g: onnx.IGraphProto): void => {
    const local = new Set<string>([...(g.input ?? []).map((i) => i.name ?? ''), ...(g.initializer ?? []).map((t) => t.name ?? '')]);
    for (const n of g.node ?? []) for (const o of n.output ?? []) local.add(o);
    for (const n of g.node ?? []) {
      for (const r of nodeReads(n)) if (!local.has(r)) names.push(r);
    }
  };
  for (const a of node.attribute ?? []) {
    if (a.g) visitGraph(a.g);
    for (const g of a.graphs ?? []) visitGraph(g);
  }
  return names;
}

/** Indices of the nodes needed to compute `targets`, in graph order, and every name they read. */
function prune(index: GraphIndex, targets: readonly string[]): { keep: number[]; needed: Set<string> } {
  const needed = new Set(targets);
  const keep: number[] = [];
  for (let i = index.nodes.length - 1; i >= 0; i--) {
    const node = index.nodes[i];
    if (!(node.output ?? []).some((o) => needed.has(o))) continue;
    keep.push(i);
    for (const r of nodeReads(node)) needed.add(r);
  }
  keep.reverse();
  return { keep, needed };
}

// ---------------------------------------------------------------- probe

interface TapShape {
  channels: number;
  height: number;
  width: number;
}

function checkSize(name: string, s: Size2D | undefined): asserts s is Size2D {
  if (!s || typeof s !== 'object') throw new InvalidArgumentError(name, `${name} must be { height, width }`);
  for (const k of ['height', 'width'] as const) {
    if (!Number.isInteger(s[k]) || s[k] < 1) throw new InvalidArgumentError(`${name}.${k}`, `${name}.${k} must be a positive integer, got ${s[k]}`);
  }
}

/** The image input's value info with batch 'N' and spatial dims fixed to inputSize. */
function imageInput(input: onnx.IValueInfoProto, inputSize: Size2D): { vi: onnx.ValueInfoProto; channels: number } {
  const name = input.name ?? '';
  const { elemType, dims } = valueInfoShape(input);
  // elemType is the int32 read from the file, not necessarily one of DataType's members.
  if (elemType !== (DataType.FLOAT as number)) throw new InvalidArgumentError('inputName', `input "${name}" is not float32 (element type ${elemType})`);
  if (dims !== undefined && dims.length !== 4)
    throw new InvalidArgumentError('inputName', `input "${name}" has rank ${dims.length}, expected an NCHW image [N,C,H,W]`);
  const fixed = (d: Dim | undefined, want: number, what: string): void => {
    if (typeof d === 'number' && d > 0 && d !== want) {
      throw new InvalidArgumentError('inputSize', `input "${name}" has a fixed ${what} of ${d}, but inputSize.${what} is ${want}`);
    }
  };
  fixed(dims?.[2], inputSize.height, 'height');
  fixed(dims?.[3], inputSize.width, 'width');
  const c: Dim = dims?.[1] !== undefined && dims[1] !== '' && dims[1] !== 0 ? dims[1] : 3;
  return { vi: valueInfo(name, DataType.FLOAT, [BATCH_DIM, c, inputSize.height, inputSize.width]), channels: typeof c === 'number' ? c : 3 };
}

async function runProbe(
  bytes: Uint8Array,
  inputName: string,
  channels: number,
  inputSize: Size2D,
  outputs: readonly string[],
): Promise<Record<string, ort.Tensor>> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'basic', logSeverityLevel: 3 });
  } catch (err) {
    throw new InvalidArgumentError('model', `onnxruntime cannot load the tapped model: ${(err as Error).message}`, { cause: err });
  }
  try {
    const n = channels * inputSize.height * inputSize.width;
    const feeds = { [inputName]: new ort.Tensor('float32', new Float32Array(n), [1, channels, inputSize.height, inputSize.width]) };
    try {
      return await session.run(feeds, [...outputs]);
    } catch (err) {
      throw new InvalidArgumentError('model', `onnxruntime cannot run the tapped model at ${inputSize.height}x${inputSize.width}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  } finally {
    await session.release();
  }
}

interface Surgery {
  model: onnx.ModelProto;
  graph: onnx.GraphProto;
  index: GraphIndex;
  input: onnx.IValueInfoProto;
  inputVi: onnx.ValueInfoProto;
  channels: number;
  taken: Set<string>;
}

function prepare(modelBytes: Uint8Array, inputName: string | undefined, inputSize: Size2D): Surgery {
  checkSize('inputSize', inputSize);
  const { model, graph } = decodeGraph(modelBytes);
  const index = new GraphIndex(graph);
  const opset = opsetVersion(model, '') ?? 0;
  if (opset < 11) {
    throw new InvalidArgumentError(
      'model',
      `the model imports ONNX opset ${opset}; tapping needs opset 11 or later (Resize with half_pixel). Re-export or convert it.`,
    );
  }
  if (index.realInputs.length === 0) throw new InvalidArgumentError('model', 'the model has no graph inputs');
  const input = inputName === undefined ? index.realInputs[0] : index.realInputs.find((i) => i.name === inputName);
  if (!input) {
    throw new InvalidArgumentError('inputName', `no graph input "${inputName}"; inputs are ${index.realInputs.map((i) => i.name).join(', ')}`);
  }
  const { vi, channels } = imageInput(input, inputSize);
  return { model, graph, index, input, inputVi: vi, channels, taken: new Set(index.allNames) };
}

/** The pruned graph plus DequantizeLinear nodes: computes every tap's float tensor. */
function tapGraphNodes(
  s: Surgery,
  resolved: readonly ResolvedTap[],
): { nodes: onnx.INodeProto[]; initializers: onnx.ITensorProto[]; inputs: onnx.IValueInfoProto[] } {
  const targets = resolved.flatMap((r) => (r.quant ? [r.tensor, r.quant.scale, r.quant.zeroPoint] : [r.tensor]));
  const { keep, needed } = prune(s.index, targets);
  const inputName = s.input.name ?? '';
  const others = s.index.realInputs.filter((i) => i.name !== inputName && needed.has(i.name ?? '')).map((i) => i.name);
  if (others.length > 0) {
    throw new InvalidArgumentError('taps', `the taps depend on graph input(s) ${others.join(', ')} besides the image input "${inputName}"`);
  }
  const nodes: onnx.INodeProto[] = keep.map((i) => s.index.nodes[i]);
  for (const r of resolved) {
    if (r.quant) {
      nodes.push(
        makeNode('DequantizeLinear', [r.tensor, r.quant.scale, r.quant.zeroPoint], [r.floatName], { name: uniqueName(`invad_dequantize_${r.name}`, s.taken) }),
      );
    }
  }
  const initializers = (s.graph.initializer ?? []).filter((t) => needed.has(t.name ?? ''));
  // IR < 4 models also list initializers as graph inputs; keep the ones still used.
  const inputs: onnx.IValueInfoProto[] = [
    s.inputVi,
    ...(s.graph.input ?? []).filter((i) => i.name !== inputName && s.index.initializers.has(i.name ?? '') && needed.has(i.name ?? '')),
  ];
  return { nodes, initializers, inputs };
}

function withGraph(s: Surgery, graph: onnx.IGraphProto, doc: string, metadata: Record<string, string> = {}): Uint8Array {
  const m = onnx.ModelProto.create({
    irVersion: s.model.irVersion,
    opsetImport: s.model.opsetImport,
    producerName: s.model.producerName,
    producerVersion: s.model.producerVersion,
    domain: s.model.domain,
    modelVersion: s.model.modelVersion,
    docString: doc,
    graph,
    functions: s.model.functions,
    metadataProps: [
      ...(s.model.metadataProps ?? []).filter((p) => !(p.key ?? '').startsWith('invad.')),
      ...Object.entries(metadata).map(([key, value]) => ({ key, value })),
    ],
  });
  return encodeModel(m);
}

type TapGraph = ReturnType<typeof tapGraphNodes>;

/** Runs the pruned tap graph once on zeros; returns each tap's float tensor by float name. */
async function runTapProbe(s: Surgery, resolved: readonly ResolvedTap[], tapGraph: TapGraph, inputSize: Size2D): Promise<Record<string, ort.Tensor>> {
  const graph = onnx.GraphProto.create({
    name: `${s.graph.name ?? 'graph'}_probe`,
    node: [...tapGraph.nodes],
    input: tapGraph.inputs,
    // Untyped outputs: onnxruntime infers their types.
    output: resolved.map((r) => onnx.ValueInfoProto.create({ name: r.floatName })),
    initializer: tapGraph.initializers,
    sparseInitializer: s.graph.sparseInitializer,
  });
  return runProbe(
    withGraph(s, graph, 'invad tap probe'),
    s.input.name ?? '',
    s.channels,
    inputSize,
    resolved.map((r) => r.floatName),
  );
}

/** A probed tensor's NCHW shape, or undefined when it is not a float 4-D feature map. */
function featureMapShape(t: ort.Tensor | undefined): TapShape | undefined {
  if (!t || t.type !== 'float32' || t.dims.length !== 4) return undefined;
  const [, channels, height, width] = t.dims.map(Number);
  return { channels, height, width };
}

/** Each tap's shape at `inputSize`, from one probe run. */
async function probeShapes(s: Surgery, resolved: readonly ResolvedTap[], tapGraph: TapGraph, inputSize: Size2D): Promise<TapShape[]> {
  const out = await runTapProbe(s, resolved, tapGraph, inputSize);
  return resolved.map((r) => {
    const t = out[r.floatName];
    const shape = featureMapShape(t);
    if (!shape) throw new InvalidArgumentError('taps', `tap "${r.name}" is a ${t.type} tensor of shape [${t.dims.join(',')}], not a float NCHW feature map`);
    return shape;
  });
}

// ---------------------------------------------------------------- the backbone

/** Nodes and initializers added to the tap graph; names come from `fresh` so none collide. */
interface GraphAdditions {
  nodes: onnx.INodeProto[];
  initializers: onnx.ITensorProto[];
}

/**
 * Resizes every tap that is not already on the grid to it (Resize, half_pixel) and
 * returns the tensor names to concatenate, in tap order.
 */
function resizeTapsToGrid(
  resolved: readonly ResolvedTap[],
  shapes: readonly TapShape[],
  grid: Size2D,
  opset: number,
  fresh: (base: string) => string,
  add: GraphAdditions,
): string[] {
  let constants: { grid: string; starts: string; ends: string; roi: string; scales: string } | undefined;
  return resolved.map((r, i) => {
    const sh = shapes[i];
    if (sh.height === grid.height && sh.width === grid.width) return r.floatName;
    if (constants === undefined) {
      constants = { grid: fresh('invad_grid_hw'), starts: fresh('invad_slice_starts'), ends: fresh('invad_slice_ends'), roi: '', scales: '' };
      add.initializers.push(int64Vector(constants.grid, [grid.height, grid.width]));
      add.initializers.push(int64Vector(constants.starts, [0]), int64Vector(constants.ends, [2]));
      if (opset < 13) {
        // Resize-11: roi and scales are required inputs; empty tensors mean "use sizes".
        constants.roi = fresh('invad_resize_roi');
        constants.scales = fresh('invad_resize_scales');
        add.initializers.push(floatTensor(constants.roi, [0], []));
        add.initializers.push(floatTensor(constants.scales, [0], []));
      }
    }
    const tag = `tap${i}`;
    const shape = fresh(`invad_${tag}_shape`);
    const nc = fresh(`invad_${tag}_nc`);
    const sizes = fresh(`invad_${tag}_sizes`);
    const out = fresh(`invad_${tag}_resized`);
    // sizes = [N, C, gh, gw] with N read at run time: the batch stays dynamic.
    add.nodes.push(makeNode('Shape', [r.floatName], [shape], { name: shape }));
    add.nodes.push(makeNode('Slice', [shape, constants.starts, constants.ends], [nc], { name: nc }));
    add.nodes.push(makeNode('Concat', [nc, constants.grid], [sizes], { name: sizes, attributes: [attr.int('axis', 0)] }));
    add.nodes.push(
      makeNode('Resize', [r.floatName, constants.roi, constants.scales, sizes], [out], {
        name: out,
        attributes: [attr.string('mode', 'linear'), attr.string('coordinate_transformation_mode', 'half_pixel')],
      }),
    );
    return out;
  });
}

/** @throws InvalidArgumentError unless mean and std are Float32Arrays of `channels` finite values, std > 0 */
function checkNormalization(norm: FeatureBackboneOptions['normalization'], channels: number): void {
  if (norm === undefined) return;
  if (!(norm.mean instanceof Float32Array) || !(norm.std instanceof Float32Array)) {
    throw new InvalidArgumentError('normalization', 'normalization.mean and .std must be Float32Arrays');
  }
  if (norm.mean.length !== channels || norm.std.length !== channels) {
    throw new InvalidArgumentError(
      'normalization',
      `normalization.mean and .std must hold ${channels} values (one per feature channel), got ${norm.mean.length} and ${norm.std.length}`,
    );
  }
  for (let c = 0; c < channels; c++) {
    if (!Number.isFinite(norm.mean[c])) throw new InvalidArgumentError('normalization', `normalization.mean[${c}] is not finite`);
    if (!(norm.std[c] > 0) || !Number.isFinite(norm.std[c]))
      throw new InvalidArgumentError('normalization', `normalization.std[${c}] must be positive and finite, got ${norm.std[c]}`);
  }
}

/** Concatenates the resized taps into `outputName`, standardizing per channel when `norm` is given. */
function concatFeatures(
  resized: readonly string[],
  outputName: string,
  norm: FeatureBackboneOptions['normalization'],
  channels: number,
  fresh: (base: string) => string,
  add: GraphAdditions,
): void {
  const concatOut = norm ? fresh('invad_features_raw') : outputName;
  add.nodes.push(makeNode('Concat', [...resized], [concatOut], { name: fresh('invad_concat'), attributes: [attr.int('axis', 1)] }));
  if (!norm) return;
  const meanName = fresh('invad_feature_mean');
  const stdName = fresh('invad_feature_std');
  const centered = fresh('invad_features_centered');
  add.initializers.push(floatTensor(meanName, [1, channels, 1, 1], norm.mean));
  add.initializers.push(floatTensor(stdName, [1, channels, 1, 1], norm.std));
  add.nodes.push(makeNode('Sub', [concatOut, meanName], [centered], { name: fresh('invad_sub_mean') }));
  add.nodes.push(makeNode('Div', [centered, stdName], [outputName], { name: fresh('invad_div_std') }));
}

/**
 * Writes a model image [N,3,H,W] -> features [N,C_total,gh,gw]: each tap
 * resized bilinearly (half_pixel, i.e. PyTorch align_corners=False; no Resize
 * when it already has the grid size), concatenated on channels and, with
 * `normalization`, standardized per channel. The head and every node the taps
 * do not need are pruned; the batch dimension is symbolic 'N'.
 */
export async function buildFeatureBackbone(model: Uint8Array, opts: FeatureBackboneOptions): Promise<FeatureBackbone> {
  if (!opts || typeof opts !== 'object') throw new InvalidArgumentError('options', 'options are required');
  const s = prepare(model, opts.inputName, opts.inputSize);
  const inputName = s.input.name ?? '';
  const outputName = opts.outputName ?? FEATURES_OUTPUT;
  if (typeof outputName !== 'string' || outputName === '') throw new InvalidArgumentError('outputName', 'outputName must be a non-empty string');
  if (opts.grid !== undefined) checkSize('grid', opts.grid);

  // One pruned tap graph: probed for the shapes, then extended into the backbone.
  const resolved = resolveTaps(s.index, opts.taps, s.taken);
  const tapGraph = tapGraphNodes(s, resolved);
  const shapes = await probeShapes(s, resolved, tapGraph, opts.inputSize);
  const grid = opts.grid ?? { height: shapes[shapes.length - 1].height, width: shapes[shapes.length - 1].width };
  const channels = shapes.reduce((a, t) => a + t.channels, 0);
  const norm = opts.normalization;
  checkNormalization(norm, channels);

  const kept = new Set([
    inputName,
    ...tapGraph.initializers.map((t) => t.name ?? ''),
    ...tapGraph.nodes.flatMap((n) => [...(n.input ?? []), ...(n.output ?? [])]),
  ]);
  if (kept.has(outputName))
    throw new InvalidArgumentError('outputName', `outputName "${outputName}" is already a tensor of the backbone graph; choose another`);
  s.taken.add(outputName);
  const fresh = (base: string): string => uniqueName(base, s.taken);
  const add: GraphAdditions = { nodes: [...tapGraph.nodes], initializers: [] };
  const resized = resizeTapsToGrid(resolved, shapes, grid, opsetVersion(s.model, '') ?? 0, fresh, add);
  concatFeatures(resized, outputName, norm, channels, fresh, add);

  const taps: TapInfo[] = resolved.map((r, i) => ({
    name: r.name,
    tensor: r.tensor,
    quantized: r.quant !== undefined,
    ...shapes[i],
    stride: opts.inputSize.height / shapes[i].height,
  }));
  const graph = onnx.GraphProto.create({
    name: `${s.graph.name || 'graph'}_features`,
    node: add.nodes,
    input: tapGraph.inputs,
    output: [valueInfo(outputName, DataType.FLOAT, [BATCH_DIM, channels, grid.height, grid.width])],
    initializer: [...tapGraph.initializers, ...add.initializers],
    sparseInitializer: s.graph.sparseInitializer,
  });
  const doc =
    `invad feature backbone: ${inputName} [N,${s.channels},${opts.inputSize.height},${opts.inputSize.width}] -> ` +
    `${outputName} [N,${channels},${grid.height},${grid.width}] from taps ${taps.map((t) => t.name).join(', ')}` +
    (norm ? ', standardized per channel' : '');
  const bytes = withGraph(s, graph, doc, {
    'invad.taps': JSON.stringify(taps),
    'invad.input_size': JSON.stringify(opts.inputSize),
    'invad.normalized': norm ? 'true' : 'false',
  });
  return { bytes, featureShape: { channels, height: grid.height, width: grid.width }, taps, inputName, outputName };
}

/** A tensor that could be tapped, with its shape at the probe's input size. */
export type TapCandidate = TapInfo;

/**
 * The tap candidates that are float (or dequantizable) 4-D feature maps, with
 * their shapes at `inputSize`, in graph order: one probe run exposing all of them.
 */
export async function describeTapCandidates(model: Uint8Array, opts: { inputSize: Size2D; inputName?: string }): Promise<TapCandidate[]> {
  const s = prepare(model, opts.inputName, opts.inputSize);
  const resolved = resolveTaps(s.index, listTapCandidates(model), s.taken);
  const out = await runTapProbe(s, resolved, tapGraphNodes(s, resolved), opts.inputSize);
  const result: TapCandidate[] = [];
  for (const r of resolved) {
    const shape = featureMapShape(out[r.floatName]);
    if (!shape) continue;
    result.push({ name: r.name, tensor: r.tensor, quantized: r.quant !== undefined, ...shape, stride: opts.inputSize.height / shape.height });
  }
  return result;
}
