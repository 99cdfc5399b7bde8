/**
 * A bundle model (backbone.onnx or unet.onnx) made ready to be inlined into the exported graph,
 * once or S times. Its weights are stored once, under a shared prefix; each call copies only the
 * nodes, with the call's own prefix on every tensor they make, so S UNet calls add S copies of
 * the (small) node list and no weights.
 */
import { onnx, valueInfoShape } from '../../fit/onnx/proto';
import { ExportError } from '../../util/errors';

export interface InlineSpec {
  /** the bundle file the model came from, for errors */
  file: string;
  /** the decoded model, already at the export's opset (it is modified) */
  model: onnx.IModelProto;
  /** the graph inputs the pipeline feeds; the model must have exactly these */
  inputs: readonly string[];
  /** the graph output the pipeline reads */
  output: string;
  /** prefix of the weights (initializers and hoisted constants), which every call shares */
  sharedPrefix: string;
}

const EXTERNAL = onnx.TensorProto.DataLocation.EXTERNAL;

/** A top-level `Constant` node holding a tensor: it becomes a shared initializer, stored once. */
function hoistable(node: onnx.INodeProto): onnx.ITensorProto | undefined {
  if (node.opType !== 'Constant' || !((node.domain ?? '') === '' || node.domain === 'ai.onnx')) return undefined;
  const attrs = node.attribute ?? [];
  if (attrs.length !== 1 || attrs[0].name !== 'value' || !attrs[0].t || (node.output ?? []).length !== 1) return undefined;
  return onnx.TensorProto.create({ ...attrs[0].t, name: node.output![0] });
}

export class InlinedModel {
  /** the model's weights, renamed under the shared prefix: add them to the graph once */
  readonly initializers: onnx.ITensorProto[];
  /** model-local functions the nodes may call */
  readonly functions: onnx.IFunctionProto[];
  private readonly nodes: onnx.INodeProto[];
  private readonly shared = new Set<string>();

  constructor(private readonly spec: InlineSpec) {
    const { file, model } = spec;
    const g = model.graph;
    if (!g) throw new ExportError(file, `${file} has no graph`);
    if ((g.sparseInitializer ?? []).length > 0)
      throw new ExportError(file, `${file} has sparse initializers, which the export does not carry over; densify them first`);
    const weights: onnx.ITensorProto[] = [];
    for (const t of g.initializer ?? []) {
      if (t.dataLocation === EXTERNAL)
        throw new ExportError(file, `${file}: initializer "${t.name}" keeps its data in an external file; the export needs the weights inside the model`);
      weights.push(t);
    }
    this.nodes = [];
    for (const node of g.node ?? []) {
      const t = hoistable(node);
      if (t) weights.push(t);
      else this.nodes.push(node);
    }
    for (const t of weights) this.shared.add(t.name ?? '');
    this.initializers = weights.map((t) => onnx.TensorProto.create({ ...t, name: spec.sharedPrefix + (t.name ?? '') }));
    this.functions = [...(model.functions ?? [])];
    this.checkInterface(g);
  }

  /** The graph's real inputs (not initializers) are exactly the fed ones, with a dynamic batch dimension. */
  private checkInterface(g: onnx.IGraphProto): void {
    const { file, inputs, output } = this.spec;
    const real = (g.input ?? []).filter((vi) => !this.shared.has(vi.name ?? ''));
    const names = real.map((vi) => vi.name ?? '');
    const missing = inputs.filter((n) => !names.includes(n));
    const extra = names.filter((n) => !inputs.includes(n));
    if (missing.length > 0 || extra.length > 0) {
      throw new ExportError(file, `${file} has inputs [${names.join(', ')}]; the pipeline feeds exactly [${inputs.join(', ')}]`);
    }
    for (const vi of real) {
      const { dims } = valueInfoShape(vi);
      const batch = dims?.[0];
      if (typeof batch === 'number' && batch > 0) {
        throw new ExportError(
          file,
          `${file} input "${vi.name}" has a fixed batch size of ${batch}; the exported graph needs a dynamic batch dimension (re-export the model with a symbolic first dimension)`,
        );
      }
    }
    if (!(g.output ?? []).some((vi) => vi.name === output)) {
      throw new ExportError(file, `${file} has no output named "${output}"; its outputs are [${(g.output ?? []).map((vi) => vi.name).join(', ')}]`);
    }
  }

  /**
   * The model's nodes as one call inside the pipeline.
   * @param prefix - prepended to every tensor and node name the call makes; unique per call
   * @param feeds - the pipeline tensor fed to each model input
   * @param target - the pipeline tensor the model's output is written to
   */
  call(prefix: string, feeds: Readonly<Record<string, string>>, target: string): onnx.INodeProto[] {
    const { sharedPrefix, output } = this.spec;
    const rename = (name: string | null | undefined): string => {
      if (!name) return ''; // an omitted optional input stays omitted
      if (Object.prototype.hasOwnProperty.call(feeds, name)) return feeds[name];
      return this.shared.has(name) ? sharedPrefix + name : prefix + name;
    };
    const copyGraph = (g: onnx.IGraphProto): onnx.GraphProto =>
      onnx.GraphProto.create({
        ...g,
        node: (g.node ?? []).map(copyNode),
        input: (g.input ?? []).map((vi) => onnx.ValueInfoProto.create({ ...vi, name: rename(vi.name) })),
        output: (g.output ?? []).map((vi) => onnx.ValueInfoProto.create({ ...vi, name: rename(vi.name) })),
        valueInfo: (g.valueInfo ?? []).map((vi) => onnx.ValueInfoProto.create({ ...vi, name: rename(vi.name) })),
        initializer: (g.initializer ?? []).map((t) => onnx.TensorProto.create({ ...t, name: rename(t.name) })),
      });
    // Subgraphs (If, Loop, Scan bodies) may read outer tensors, so they are renamed the same way.
    const copyAttribute = (a: onnx.IAttributeProto): onnx.AttributeProto =>
      onnx.AttributeProto.create({ ...a, ...(a.g ? { g: copyGraph(a.g) } : {}), ...(a.graphs?.length ? { graphs: a.graphs.map(copyGraph) } : {}) });
    const copyNode = (node: onnx.INodeProto, index: number): onnx.NodeProto =>
      onnx.NodeProto.create({
        ...node,
        name: prefix + (node.name || `${node.opType}_${index}`),
        input: (node.input ?? []).map(rename),
        output: (node.output ?? []).map(rename),
        attribute: (node.attribute ?? []).map(copyAttribute),
      });
    const nodes = this.nodes.map(copyNode);
    // An Identity, not a renamed output: the output may also be an input or a weight.
    nodes.push(onnx.NodeProto.create({ opType: 'Identity', name: `${prefix}output`, input: [rename(output)], output: [target] }));
    return nodes;
  }
}
