/**
 * Raises a model's default-domain operator set, so that two models exported at different opsets
 * (the ONNX zoo's MobileNetV2 at 12, the PyTorch UNet at 17) can share one graph.
 *
 * Most operators keep their meaning from one opset to the next; the ones that do not are exactly
 * those for which ONNX's own version converter (onnx/version_converter/convert.h) registers a
 * non-trivial adapter. Those are rewritten here, from opset 11 up to {@link MAX_UPGRADE_OPSET}:
 *
 * | step | operators | change |
 * | --- | --- | --- |
 * | 11 -> 12 | Dropout | `ratio` attribute -> input |
 * | 12 -> 13 | ReduceSum, Squeeze, Unsqueeze | `axes` attribute -> input |
 * | 12 -> 13 | Split | `split` attribute -> input |
 * | 12 -> 13 | Softmax, LogSoftmax, Hardmax | the input was coerced to 2-D at `axis` (default 1); now one axis (default -1) |
 * | 13 -> 14 | BatchNormalization | the training outputs are gone |
 * | 15 -> 16 | RoiAlign | the default `coordinate_transformation_mode` changed |
 * | 17 -> 18 | ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceMax, ReduceMean, ReduceMin, ReduceProd, ReduceSumSquare | `axes` attribute -> input |
 * | 17 -> 18 | Split | needs `num_outputs` when `split` is not given |
 *
 * Every other change in that range only adds types or optional inputs. Other domains
 * (com.microsoft, ...) are left as they are.
 */
import { attr, AttributeType, floatScalar, int64Vector, makeNode, onnx, toNumber } from '../../fit/onnx/proto';
import { ExportError } from '../../util/errors';

/** The oldest default-domain opset the upgrade starts from (the backbone's tapping needs 11 too). */
export const MIN_UPGRADE_OPSET = 11;
/** The newest opset whose breaking changes the table above covers. */
export const MAX_UPGRADE_OPSET = 19;

/** The default-domain opset a model imports ('' and 'ai.onnx' are the same domain). */
export function defaultOpset(model: onnx.IModelProto): number | undefined {
  const entry = (model.opsetImport ?? []).find((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx');
  return entry ? Number(entry.version) : undefined;
}

const isDefaultDomain = (node: onnx.INodeProto) => (node.domain ?? '') === '' || node.domain === 'ai.onnx';

const REDUCE_18 = new Set(['ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceMax', 'ReduceMean', 'ReduceMin', 'ReduceProd', 'ReduceSumSquare']);
const SOFTMAX_LIKE = new Set(['Softmax', 'LogSoftmax', 'Hardmax']);

/** Rewrites one graph (and its subgraphs) in place. */
class Upgrader {
  private counter = 0;
  constructor(
    private readonly file: string,
    private readonly from: number,
    private readonly to: number,
  ) {}

  private fresh(base: string): string {
    return `invad_upgrade_${this.counter++}/${base}`;
  }

  /** The opset steps v -> v + 1 this upgrade crosses. */
  private crosses(v: number): boolean {
    return this.from <= v && v < this.to;
  }

  graph(g: onnx.IGraphProto): void {
    const out: onnx.INodeProto[] = [];
    for (const node of g.node ?? []) {
      for (const a of node.attribute ?? []) {
        if (a.g) this.graph(a.g);
        for (const sub of a.graphs ?? []) this.graph(sub);
      }
      out.push(...(isDefaultDomain(node) ? this.node(node) : [node]));
    }
    g.node = out;
  }

  /** One node, as the nodes that replace it at the target opset. */
  private node(node: onnx.INodeProto): onnx.INodeProto[] {
    const op = node.opType ?? '';
    const before: onnx.INodeProto[] = [];
    if (op === 'Dropout' && this.crosses(11)) this.attributeToInput(node, 'ratio', 1, before, (v) => floatScalar(this.fresh('ratio'), v.f ?? 0.5));
    if ((op === 'ReduceSum' || op === 'Squeeze' || op === 'Unsqueeze') && this.crosses(12)) this.axesToInput(node, before);
    if (op === 'Split' && this.crosses(12))
      this.attributeToInput(node, 'split', 1, before, (v) => int64Vector(this.fresh('split'), (v.ints ?? []).map(toNumber)));
    if (SOFTMAX_LIKE.has(op) && this.crosses(12)) return this.softmax12To13(node);
    if (op === 'BatchNormalization' && this.crosses(13) && (node.output ?? []).filter((o) => o !== '').length > 1) {
      throw new ExportError(
        this.file,
        `${this.file}: node "${node.name}" is a BatchNormalization in training mode (several outputs), which opset 14 no longer has; export the model for inference`,
      );
    }
    if (op === 'RoiAlign' && this.crosses(15) && !hasAttribute(node, 'coordinate_transformation_mode')) {
      node.attribute = [...(node.attribute ?? []), attr.string('coordinate_transformation_mode', 'output_half_pixel')];
    }
    if (REDUCE_18.has(op) && this.crosses(17)) this.axesToInput(node, before);
    if (op === 'Split' && this.crosses(17) && !(node.input?.[1] ?? '')) {
      node.attribute = [...(node.attribute ?? []), attr.int('num_outputs', (node.output ?? []).length)];
    }
    return [...before, node];
  }

  /** Moves an attribute into a Constant node feeding input `index` (after padding the optional inputs before it). */
  private attributeToInput(
    node: onnx.INodeProto,
    name: string,
    index: number,
    before: onnx.INodeProto[],
    tensor: (a: onnx.IAttributeProto) => onnx.ITensorProto,
  ): void {
    const a = (node.attribute ?? []).find((x) => x.name === name);
    if (!a) return;
    const value = tensor(a);
    before.push(makeNode('Constant', [], [value.name!], { name: value.name!, attributes: [attr.tensor('value', value)] }));
    const inputs = [...(node.input ?? [])];
    while (inputs.length < index) inputs.push('');
    inputs[index] = value.name!;
    node.input = inputs;
    node.attribute = (node.attribute ?? []).filter((x) => x !== a);
  }

  private axesToInput(node: onnx.INodeProto, before: onnx.INodeProto[]): void {
    this.attributeToInput(node, 'axes', 1, before, (a) => {
      if (a.type !== AttributeType.INTS) throw new ExportError(this.file, `${this.file}: node "${node.name}" has an axes attribute that is not a list of ints`);
      return int64Vector(this.fresh('axes'), (a.ints ?? []).map(toNumber));
    });
  }

  /**
   * Before opset 13 these operators flattened the input to 2-D at `axis` (default 1) and worked
   * on the second dimension; from 13 they work on one axis. Flatten -> op(axis -1) -> Reshape
   * back to the input's shape keeps the old meaning for any rank.
   */
  private softmax12To13(node: onnx.INodeProto): onnx.INodeProto[] {
    const axisAttr = (node.attribute ?? []).find((a) => a.name === 'axis');
    const axis = axisAttr ? Number(axisAttr.i) : 1;
    const x = node.input?.[0] ?? '';
    const y = node.output?.[0] ?? '';
    const [shape, flat, flatOut] = [this.fresh('shape'), this.fresh('flat'), this.fresh('flat_out')];
    const name = node.name ?? y;
    return [
      makeNode('Shape', [x], [shape], { name: `${name}/shape` }),
      makeNode('Flatten', [x], [flat], { name: `${name}/flatten`, attributes: [attr.int('axis', axis)] }),
      makeNode(node.opType!, [flat], [flatOut], { name, attributes: [attr.int('axis', -1)] }),
      makeNode('Reshape', [flatOut, shape], [y], { name: `${name}/reshape` }),
    ];
  }
}

function hasAttribute(node: onnx.INodeProto, name: string): boolean {
  return (node.attribute ?? []).some((a) => a.name === name);
}

/**
 * Rewrites `model`'s graph in place so that it means the same at default-domain opset `to`, and
 * sets its opset import to `to`. A model already at `to` is left alone.
 * @param file - the bundle file the model came from, for errors
 * @throws ExportError when the model's opset is below {@link MIN_UPGRADE_OPSET}, when `to` is
 *   above {@link MAX_UPGRADE_OPSET} (changes this code does not know), when `to` is below the
 *   model's own opset, or for a node that cannot be carried over (BatchNormalization in training mode)
 */
export function upgradeOpset(model: onnx.IModelProto, to: number, file: string): void {
  const from = defaultOpset(model);
  if (from === undefined) throw new ExportError(file, `${file} imports no default-domain (ai.onnx) operator set`);
  if (from === to) return;
  if (from > to) throw new ExportError(file, `${file} uses ONNX opset ${from}, newer than the target opset ${to}`);
  if (from < MIN_UPGRADE_OPSET)
    throw new ExportError(
      file,
      `${file} uses ONNX opset ${from}; the export can raise opsets from ${MIN_UPGRADE_OPSET} only. Convert it first (onnx.version_converter).`,
    );
  if (to > MAX_UPGRADE_OPSET) {
    throw new ExportError(
      file,
      `${file} uses ONNX opset ${from} and the other model ${to}; the export knows the operator changes up to opset ${MAX_UPGRADE_OPSET} only. Export both models at the same opset.`,
    );
  }
  if (!model.graph) throw new ExportError(file, `${file} has no graph`);
  new Upgrader(file, from, to).graph(model.graph);
  model.opsetImport = [
    ...(model.opsetImport ?? []).filter((o) => !((o.domain ?? '') === '' || o.domain === 'ai.onnx')),
    onnx.OperatorSetIdProto.create({ domain: '', version: to }),
  ];
}
