/**
 * Thin, typed helpers over onnx-proto's generated protobufjs classes, for
 * building small ONNX graphs from scratch and for editing real ones (e.g.
 * tapping intermediate tensors of a backbone with Resize + Concat).
 */
import { onnx } from 'onnx-proto';

export { onnx };

export const DataType = onnx.TensorProto.DataType;
export type DataType = onnx.TensorProto.DataType;
export const AttributeType = onnx.AttributeProto.AttributeType;

/** A tensor dimension: a fixed size or a symbolic name such as 'N'. */
export type Dim = number | string;

/** int64 fields decode as `Long` when the `long` package is present, as numbers otherwise. */
export function toNumber(v: number | { toNumber(): number } | null | undefined): number {
  if (v === null || v === undefined) return 0;
  if (typeof v === 'number') return v;
  return v.toNumber();
}

// ---------------------------------------------------------------- tensors

function littleEndianBytes(view: ArrayBufferView): Uint8Array {
  // Copy so the proto owns its bytes (callers may reuse their arrays). ONNX
  // raw_data is little-endian, which is every platform Node ships on.
  return new Uint8Array(view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength));
}

function checkCount(name: string, dims: readonly number[], n: number): void {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (expected !== n) {
    throw new RangeError(`tensor '${name}': dims [${dims.join(',')}] hold ${expected} values, got ${n}`);
  }
}

/** A float32 tensor (stored as raw_data, compact for large initializers). */
export function floatTensor(name: string, dims: readonly number[], data: Float32Array | readonly number[]): onnx.TensorProto {
  const arr = data instanceof Float32Array ? data : Float32Array.from(data);
  checkCount(name, dims, arr.length);
  return onnx.TensorProto.create({ name, dims: [...dims], dataType: DataType.FLOAT, rawData: littleEndianBytes(arr) });
}

/** An int64 tensor; numbers must be safe integers. */
export function int64Tensor(name: string, dims: readonly number[], data: BigInt64Array | readonly (number | bigint)[]): onnx.TensorProto {
  const arr = data instanceof BigInt64Array ? data : BigInt64Array.from(data, (v) => BigInt(v));
  checkCount(name, dims, arr.length);
  return onnx.TensorProto.create({ name, dims: [...dims], dataType: DataType.INT64, rawData: littleEndianBytes(arr) });
}

/** A float32 scalar (rank 0). */
export function floatScalar(name: string, value: number): onnx.TensorProto {
  return floatTensor(name, [], [value]);
}

/** An int64 scalar (rank 0). */
export function int64Scalar(name: string, value: number | bigint): onnx.TensorProto {
  return int64Tensor(name, [], [value]);
}

/** A 1-D int64 tensor, the usual form of shape/axes/pads inputs. */
export function int64Vector(name: string, values: readonly (number | bigint)[]): onnx.TensorProto {
  return int64Tensor(name, [values.length], values);
}

/** The values of a float32 tensor, from raw_data or float_data. */
export function readFloatTensor(t: onnx.ITensorProto): Float32Array {
  if (t.dataType !== DataType.FLOAT) throw new TypeError(`tensor '${t.name}' is not float32`);
  if (t.rawData && t.rawData.length > 0) {
    const raw = t.rawData;
    return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  }
  return Float32Array.from(t.floatData ?? []);
}

/** The values of an int64 tensor as numbers, from raw_data or int64_data. */
export function readInt64Tensor(t: onnx.ITensorProto): number[] {
  if (t.dataType !== DataType.INT64) throw new TypeError(`tensor '${t.name}' is not int64`);
  if (t.rawData && t.rawData.length > 0) {
    const raw = t.rawData;
    return Array.from(new BigInt64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength)), Number);
  }
  return (t.int64Data ?? []).map(toNumber);
}

// ---------------------------------------------------------------- attributes

export const attr = {
  int(name: string, i: number): onnx.AttributeProto {
    return onnx.AttributeProto.create({ name, type: AttributeType.INT, i });
  },
  float(name: string, f: number): onnx.AttributeProto {
    return onnx.AttributeProto.create({ name, type: AttributeType.FLOAT, f });
  },
  string(name: string, s: string): onnx.AttributeProto {
    return onnx.AttributeProto.create({ name, type: AttributeType.STRING, s: new TextEncoder().encode(s) });
  },
  ints(name: string, ints: readonly number[]): onnx.AttributeProto {
    return onnx.AttributeProto.create({ name, type: AttributeType.INTS, ints: [...ints] });
  },
  floats(name: string, floats: readonly number[]): onnx.AttributeProto {
    return onnx.AttributeProto.create({ name, type: AttributeType.FLOATS, floats: [...floats] });
  },
  strings(name: string, strings: readonly string[]): onnx.AttributeProto {
    const enc = new TextEncoder();
    return onnx.AttributeProto.create({ name, type: AttributeType.STRINGS, strings: strings.map((s) => enc.encode(s)) });
  },
  tensor(name: string, t: onnx.ITensorProto): onnx.AttributeProto {
    return onnx.AttributeProto.create({ name, type: AttributeType.TENSOR, t });
  },
};

// ---------------------------------------------------------------- nodes, values, graphs, models

export interface NodeOptions {
  name?: string;
  domain?: string;
  attributes?: readonly onnx.IAttributeProto[];
}

/** A node. An empty-string input marks an omitted optional input, as in ONNX. */
export function makeNode(opType: string, inputs: readonly string[], outputs: readonly string[], opts: NodeOptions = {}): onnx.NodeProto {
  return onnx.NodeProto.create({
    opType,
    input: [...inputs],
    output: [...outputs],
    name: opts.name ?? `${opType}_${outputs[0] ?? ''}`,
    domain: opts.domain ?? '',
    attribute: [...(opts.attributes ?? [])],
  });
}

/** A tensor value info; `dims` undefined means unknown rank. */
export function valueInfo(name: string, elemType: DataType, dims?: readonly Dim[]): onnx.ValueInfoProto {
  const tensorType: onnx.TypeProto.ITensor = { elemType };
  if (dims !== undefined) {
    tensorType.shape = {
      dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })),
    };
  }
  return onnx.ValueInfoProto.create({ name, type: { tensorType } });
}

/** The element type and dims of a tensor value info (undefined dims: unknown rank; '' an unnamed unknown dim). */
export function valueInfoShape(vi: onnx.IValueInfoProto): { elemType: number; dims: Dim[] | undefined } {
  const tt = vi.type?.tensorType;
  if (!tt) throw new TypeError(`value '${vi.name}' is not a tensor`);
  const dims = tt.shape ? (tt.shape.dim ?? []).map((d): Dim => (d.dimParam ? d.dimParam : d.dimValue != null ? toNumber(d.dimValue) : '')) : undefined;
  return { elemType: tt.elemType ?? DataType.UNDEFINED, dims };
}

export interface GraphSpec {
  name?: string;
  nodes: readonly onnx.INodeProto[];
  inputs: readonly onnx.IValueInfoProto[];
  outputs: readonly onnx.IValueInfoProto[];
  initializers?: readonly onnx.ITensorProto[];
  /** Shapes of intermediate values (optional; ORT infers them). */
  valueInfo?: readonly onnx.IValueInfoProto[];
}

export function makeGraph(spec: GraphSpec): onnx.GraphProto {
  return onnx.GraphProto.create({
    name: spec.name ?? 'graph',
    node: [...spec.nodes],
    input: [...spec.inputs],
    output: [...spec.outputs],
    initializer: [...(spec.initializers ?? [])],
    valueInfo: [...(spec.valueInfo ?? [])],
  });
}

export interface ModelOptions {
  irVersion?: number;
  /** Default-domain opset version. */
  opset?: number;
  /** Further opsets, e.g. { 'com.microsoft': 1 }. */
  extraOpsets?: Readonly<Record<string, number>>;
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  metadata?: Readonly<Record<string, string>>;
}

export const DEFAULT_IR_VERSION = 8;
export const DEFAULT_OPSET = 17;

export function makeModel(graph: onnx.IGraphProto, opts: ModelOptions = {}): onnx.ModelProto {
  const opsetImport: onnx.IOperatorSetIdProto[] = [{ domain: '', version: opts.opset ?? DEFAULT_OPSET }];
  for (const [domain, version] of Object.entries(opts.extraOpsets ?? {})) opsetImport.push({ domain, version });
  return onnx.ModelProto.create({
    irVersion: opts.irVersion ?? DEFAULT_IR_VERSION,
    opsetImport,
    producerName: opts.producerName ?? 'invad',
    producerVersion: opts.producerVersion ?? '',
    docString: opts.docString ?? '',
    graph,
    metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
  });
}

export function encodeModel(model: onnx.IModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

export function decodeModel(bytes: Uint8Array): onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}

/** Opset version of a decoded model for a domain ('' = default), or undefined. */
export function opsetVersion(model: onnx.IModelProto, domain = ''): number | undefined {
  const entry = (model.opsetImport ?? []).find((o) => (o.domain ?? '') === domain);
  return entry ? toNumber(entry.version) : undefined;
}
