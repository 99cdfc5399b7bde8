/**
 * Encode and decode KServe v2 ("Open Inference Protocol") REST inference requests and
 * responses, with Triton's binary tensor data extension. Both sides use it: `RemoteDetector`
 * encodes requests and decodes responses, `invad serve` decodes requests and encodes responses.
 *
 * References (the section names are those of the documents):
 * - KServe "Predict Protocol - Version 2" (kserve/kserve docs/predict-api/v2/required_api.md):
 *   "Inference Request JSON Object", "Request Input", "Request Output", "Inference Response JSON
 *   Object", "Response Output", "Parameters", "Tensor Data", "Tensor Data Types";
 * - Triton "Binary Tensor Data Extension" (triton-inference-server/server
 *   docs/protocol/extension_binary_data.md): little-endian, row-major raw bytes after the JSON
 *   object, in tensor order; `binary_data_size` on inputs and outputs; `binary_data` on a
 *   requested output; `binary_data_output` on the request; the `Inference-Header-Content-Length`
 *   header giving the JSON object's length.
 *
 * Errors: decoding bytes from the wire throws InvalidInputError (its `input` names the place:
 * `inputs[0]`, `body`, the header, ...); encoding a caller's malformed tensor throws
 * InvalidArgumentError. BYTES tensors (variable size) are not supported.
 */
import { InvalidArgumentError, InvalidInputError } from '../../util/errors';
import type { TensorSpec } from './tensor-spec';

/** The header that gives the JSON object's length when binary tensor data follows it. */
export const INFERENCE_HEADER_CONTENT_LENGTH = 'Inference-Header-Content-Length';

/** Size in bytes of each fixed-size tensor data type ("Tensor Data Types"; BOOL is one byte). */
export const DATATYPE_SIZE = {
  BOOL: 1,
  UINT8: 1,
  UINT16: 2,
  UINT32: 4,
  UINT64: 8,
  INT8: 1,
  INT16: 2,
  INT32: 4,
  INT64: 8,
  FP16: 2,
  FP32: 4,
  FP64: 8,
} as const;

/** A KServe v2 data type this codec handles (every one but BYTES). */
export type Datatype = keyof typeof DATATYPE_SIZE;

/**
 * The array each data type is held in. BOOL is a Uint8Array of 0 and 1; FP16 is the raw
 * half-precision bits in a Uint16Array (it travels as binary data only, as the spec advises).
 */
export interface DatatypeArrays {
  BOOL: Uint8Array;
  UINT8: Uint8Array;
  UINT16: Uint16Array;
  UINT32: Uint32Array;
  UINT64: BigUint64Array;
  INT8: Int8Array;
  INT16: Int16Array;
  INT32: Int32Array;
  INT64: BigInt64Array;
  FP16: Uint16Array;
  FP32: Float32Array;
  FP64: Float64Array;
}

export type TensorData = DatatypeArrays[Datatype];

/** "$parameters": name/value pairs whose values are strings, numbers or booleans. */
export type Parameters = Record<string, string | number | boolean>;

/** A tensor of a request ("$request_input") or a response ("$response_output"). */
export interface Tensor {
  name: string;
  datatype: Datatype;
  /** Row-major shape; the element count is the product of the dimensions. */
  shape: readonly number[];
  /** The elements, row-major, in a fresh array the tensor owns. */
  data: TensorData;
  /** Other parameters of the tensor. `binary_data_size` is transport and never appears here. */
  parameters?: Parameters;
}

/** "$request_output": an output the client asks for, e.g. `{ name: 'score', parameters: { binary_data: true } }`. */
export interface RequestedOutput {
  name: string;
  parameters?: Parameters;
}

/** "$inference_request". */
export interface InferenceRequest {
  id?: string;
  /** Request parameters, e.g. `binary_data_output: true` to get every output as binary data. */
  parameters?: Parameters;
  inputs: Tensor[];
  /** The outputs to return; absent means every output of the model. */
  outputs?: RequestedOutput[];
}

/** "$inference_response". */
export interface InferenceResponse {
  modelName: string;
  modelVersion?: string;
  /** The request's `id`, when it had one. */
  id?: string;
  parameters?: Parameters;
  outputs: Tensor[];
}

/** "$metadata_tensor" of a model metadata response; -1 marks a variable dimension. */
export interface TensorMetadata {
  name: string;
  /** a data type name as the server gave it (not necessarily one this codec handles) */
  datatype: string;
  shape: number[];
}

/** "$metadata_model_response". */
export interface ModelMetadata {
  name: string;
  versions?: string[];
  platform: string;
  inputs: TensorMetadata[];
  outputs: TensorMetadata[];
  /** Not in the spec's schema; a server may add its own (invad serve does). */
  parameters?: Parameters;
}

/** An encoded HTTP body and the headers that must go with it. */
export interface EncodedBody {
  body: Buffer;
  /** `Content-Type`, and `Inference-Header-Content-Length` when binary data follows the JSON. */
  headers: Record<string, string>;
}

/** Bounds on what a decoder accepts; the server's body limit bounds the rest. */
export interface DecodeLimits {
  /** Largest JSON object, in bytes. Default 64 MiB. */
  maxJsonBytes?: number;
  /** Deepest nesting of JSON arrays and objects. Default 32 (a request needs 4 plus the tensor rank). */
  maxJsonDepth?: number;
}

/** A header value as Node gives it (a repeated header is an array). */
export type HeaderValue = string | readonly string[] | number | undefined;

const DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_JSON_DEPTH = 32;

// ---------------------------------------------------------------------------------------------
// Data types and arrays

type ArrayConstructorFor = {
  [D in Datatype]: { new (buffer: ArrayBuffer, byteOffset?: number, length?: number): DatatypeArrays[D]; new (length: number): DatatypeArrays[D] };
};

const ARRAY_OF: ArrayConstructorFor = {
  BOOL: Uint8Array,
  UINT8: Uint8Array,
  UINT16: Uint16Array,
  UINT32: Uint32Array,
  UINT64: BigUint64Array,
  INT8: Int8Array,
  INT16: Int16Array,
  INT32: Int32Array,
  INT64: BigInt64Array,
  FP16: Uint16Array,
  FP32: Float32Array,
  FP64: Float64Array,
};

/** Integer ranges a JSON number must fall in; 64-bit types are limited to what a JSON number holds exactly. */
const INTEGER_RANGE: Partial<Record<Datatype, readonly [number, number]>> = {
  UINT8: [0, 0xff],
  UINT16: [0, 0xffff],
  UINT32: [0, 0xffffffff],
  UINT64: [0, Number.MAX_SAFE_INTEGER],
  INT8: [-0x80, 0x7f],
  INT16: [-0x8000, 0x7fff],
  INT32: [-0x80000000, 0x7fffffff],
  INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

/** True when `name` is a data type this codec handles. */
export function isDatatype(name: unknown): name is Datatype {
  return typeof name === 'string' && Object.prototype.hasOwnProperty.call(DATATYPE_SIZE, name);
}

// The binary extension is little-endian; on a big-endian host each element's bytes are swapped.
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function swapToHost(bytes: Buffer, size: number): void {
  if (LITTLE_ENDIAN_HOST || size === 1) return;
  if (size === 2) bytes.swap16();
  else if (size === 4) bytes.swap32();
  else bytes.swap64();
}

/**
 * The class tag of a typed array, compared instead of `instanceof` so that arrays from another
 * realm (a vm context, a worker's structured clone) are accepted. Buffer is a Uint8Array.
 */
function arrayTag(v: unknown): string | undefined {
  return ArrayBuffer.isView(v) ? Object.prototype.toString.call(v).slice(8, -1) : undefined;
}

// ---------------------------------------------------------------------------------------------
// Shapes

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** The element count of a shape, or undefined when a dimension is not a non-negative safe integer or the product overflows. */
function elementCount(shape: unknown): number | undefined {
  if (!Array.isArray(shape)) return undefined;
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) return undefined;
    n *= d;
    if (!Number.isSafeInteger(n)) return undefined;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Encoding (a caller's tensors -> bytes)

function checkTensorForEncoding(t: Tensor, where: string): { count: number; size: number } {
  if (typeof t !== 'object' || t === null)
    throw new InvalidArgumentError(where, `Expected a tensor object for ${where} but received ${t === null ? 'null' : typeof t}`);
  if (typeof t.name !== 'string' || t.name.length === 0) throw new InvalidArgumentError(`${where}.name`, `Expected a non-empty string for ${where}.name`);
  if (!isDatatype(t.datatype)) {
    throw new InvalidArgumentError(
      `${where}.datatype`,
      `${where} ("${t.name}"): datatype ${JSON.stringify(t.datatype)} is not one of ${Object.keys(DATATYPE_SIZE).join(', ')}`,
    );
  }
  const count = elementCount(t.shape);
  if (count === undefined) throw new InvalidArgumentError(`${where}.shape`, `${where} ("${t.name}"): shape must be an array of non-negative integers`);
  const want = ARRAY_OF[t.datatype].name;
  if (arrayTag(t.data) !== want) {
    throw new InvalidArgumentError(`${where}.data`, `${where} ("${t.name}"): ${t.datatype} data must be a ${want} but is ${arrayTag(t.data) ?? typeof t.data}`);
  }
  if (t.data.length !== count) {
    throw new InvalidArgumentError(
      `${where}.data`,
      `${where} ("${t.name}"): data has ${t.data.length} elements but shape ${shapeText(t.shape)} needs ${count}`,
    );
  }
  if (t.datatype === 'BOOL') {
    const bad = (t.data as Uint8Array).findIndex((v) => v > 1);
    if (bad >= 0) throw new InvalidArgumentError(`${where}.data`, `${where} ("${t.name}"): BOOL element ${bad} is ${t.data[bad]}; BOOL data holds 0 or 1`);
  }
  return { count, size: DATATYPE_SIZE[t.datatype] };
}

/** A tensor's elements as little-endian bytes (a copy only on big-endian hosts). */
function toLittleEndianBytes(data: TensorData, size: number): Buffer {
  const view = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (LITTLE_ENDIAN_HOST || size === 1) return view;
  const copy = Buffer.from(view);
  swapToHost(copy, size);
  return copy;
}

/** A tensor's elements as a flat JSON array. */
function toJsonData(t: Tensor, where: string): Array<number | boolean> {
  if (t.datatype === 'FP16') throw new InvalidArgumentError(`${where}.data`, `${where} ("${t.name}"): FP16 has no JSON form; send it as binary data`);
  if (t.datatype === 'BOOL') return Array.from(t.data as Uint8Array, (v) => v === 1);
  if (t.datatype === 'INT64' || t.datatype === 'UINT64') {
    return Array.from(t.data as BigInt64Array, (v, i) => {
      const n = Number(v);
      if (!Number.isSafeInteger(n))
        throw new InvalidArgumentError(`${where}.data`, `${where} ("${t.name}"): element ${i} (${v}) is not exact as a JSON number; send it as binary data`);
      return n;
    });
  }
  const out = Array.from(t.data as Float64Array);
  // JSON has no NaN or Infinity: JSON.stringify would write null.
  const bad = out.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0)
    throw new InvalidArgumentError(`${where}.data`, `${where} ("${t.name}"): element ${bad} is ${out[bad]}, which JSON cannot hold; send it as binary data`);
  return out;
}

function checkParameters(p: Parameters | undefined, where: string): void {
  if (p === undefined) return;
  if (typeof p !== 'object' || p === null || Array.isArray(p)) throw new InvalidArgumentError(where, `Expected an object for ${where}`);
  for (const [k, v] of Object.entries(p)) {
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
      throw new InvalidArgumentError(`${where}.${k}`, `${where}.${k} must be a string, number or boolean but is ${v === null ? 'null' : typeof v}`);
    }
  }
}

/** Builds the JSON tensors and the binary sections of a request's inputs or a response's outputs. */
function encodeTensors(tensors: readonly Tensor[], field: 'inputs' | 'outputs', binary: (name: string) => boolean) {
  // (as unknown: Array.isArray would narrow a readonly array to any[])
  if (!Array.isArray(tensors as unknown)) throw new InvalidArgumentError(field, `Expected an array for ${field}`);
  const chunks: Buffer[] = [];
  const json = tensors.map((t, i) => {
    const where = `${field}[${i}]`;
    const { size } = checkTensorForEncoding(t, where);
    checkParameters(t.parameters, `${where}.parameters`);
    const { binary_data_size: _transport, ...parameters } = t.parameters ?? {};
    const head = { name: t.name, shape: [...t.shape], datatype: t.datatype };
    if (binary(t.name)) {
      const bytes = toLittleEndianBytes(t.data, size);
      chunks.push(bytes);
      return { ...head, parameters: { ...parameters, binary_data_size: bytes.length } };
    }
    return { ...head, ...(Object.keys(parameters).length > 0 ? { parameters } : {}), data: toJsonData(t, where) };
  });
  return { json, chunks };
}

function assembleBody(header: object, chunks: readonly Buffer[]): EncodedBody {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  if (chunks.length === 0) return { body: json, headers: { 'Content-Type': 'application/json' } };
  return {
    body: Buffer.concat([json, ...chunks]),
    headers: { 'Content-Type': 'application/octet-stream', [INFERENCE_HEADER_CONTENT_LENGTH]: String(json.length) },
  };
}

/**
 * Encodes an inference request (client side). With `binaryData` (the default) every input
 * travels as binary data after the JSON object; otherwise as JSON arrays. Which outputs come
 * back as binary data is the request's business: set `parameters.binary_data_output` or each
 * output's `parameters.binary_data`. Throws InvalidArgumentError for a malformed tensor.
 */
export function encodeInferenceRequest(request: InferenceRequest, options: { binaryData?: boolean } = {}): EncodedBody {
  const binary = options.binaryData ?? true;
  checkParameters(request.parameters, 'parameters');
  const { json: inputs, chunks } = encodeTensors(request.inputs, 'inputs', () => binary);
  const outputs = request.outputs?.map((o, i) => {
    if (typeof o?.name !== 'string' || o.name.length === 0)
      throw new InvalidArgumentError(`outputs[${i}].name`, `Expected a non-empty string for outputs[${i}].name`);
    checkParameters(o.parameters, `outputs[${i}].parameters`);
    return o.parameters === undefined ? { name: o.name } : { name: o.name, parameters: o.parameters };
  });
  const header = {
    ...(request.id === undefined ? {} : { id: request.id }),
    ...(request.parameters === undefined ? {} : { parameters: request.parameters }),
    inputs,
    ...(outputs === undefined ? {} : { outputs }),
  };
  return assembleBody(header, chunks);
}

/**
 * Encodes an inference response (server side). `binaryData` says, per output name, whether it
 * goes as binary data: pass {@link binaryOutputChoice}(request) to honour what the client
 * asked for. Throws InvalidArgumentError for a malformed tensor, or for a value JSON cannot
 * hold (NaN, an FP16 tensor) in an output sent as JSON.
 */
export function encodeInferenceResponse(response: InferenceResponse, options: { binaryData: boolean | ((name: string) => boolean) }): EncodedBody {
  const choice = options.binaryData;
  if (typeof response.modelName !== 'string') throw new InvalidArgumentError('modelName', 'Expected a string for modelName');
  checkParameters(response.parameters, 'parameters');
  const { json: outputs, chunks } = encodeTensors(response.outputs, 'outputs', typeof choice === 'function' ? choice : () => choice);
  const header = {
    model_name: response.modelName,
    ...(response.modelVersion === undefined ? {} : { model_version: response.modelVersion }),
    ...(response.id === undefined ? {} : { id: response.id }),
    ...(response.parameters === undefined ? {} : { parameters: response.parameters }),
    outputs,
  };
  return assembleBody(header, chunks);
}

// ---------------------------------------------------------------------------------------------
// Decoding (bytes from the wire -> tensors)

function invalid(where: string, message: string): InvalidInputError {
  return new InvalidInputError(where, message);
}

function parseHeaderLength(value: HeaderValue, bodyLength: number, what: string): number | undefined {
  if (value === undefined) return undefined;
  const name = INFERENCE_HEADER_CONTENT_LENGTH;
  if (typeof value !== 'string' && typeof value !== 'number') throw invalid(name, `The ${what} has ${value.length} ${name} headers; expected one`);
  const text = String(value).trim();
  if (!/^\d{1,15}$/.test(text)) throw invalid(name, `${name} is ${JSON.stringify(String(value))}; expected the JSON object's length in bytes`);
  const n = Number(text);
  if (n > bodyLength) throw invalid(name, `${name} says the JSON object is ${n} bytes but the ${what} body has only ${bodyLength}: the body is truncated`);
  return n;
}

/**
 * Refuses JSON nested deeper than `max` before parsing it: the scan is linear and keeps no
 * stack, while a parse and the walk over nested `data` arrays would not.
 */
function checkJsonDepth(bytes: Uint8Array, max: number, what: string): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (inString) {
      if (b === 0x5c)
        i++; // backslash: skip the escaped byte
      else if (b === 0x22) inString = false;
    } else if (b === 0x22) {
      inString = true;
    } else if (b === 0x5b || b === 0x7b) {
      if (++depth > max) throw invalid('body', `The ${what} JSON is nested more than ${max} levels deep`);
    } else if (b === 0x5d || b === 0x7d) {
      depth--;
    }
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

function parseJson(bytes: Uint8Array, limits: DecodeLimits, what: string): Record<string, unknown> {
  const maxBytes = limits.maxJsonBytes ?? DEFAULT_MAX_JSON_BYTES;
  if (bytes.length > maxBytes) throw invalid('body', `The ${what} JSON is ${bytes.length} bytes, over the limit of ${maxBytes}; send tensors as binary data`);
  if (bytes.length === 0) throw invalid('body', `The ${what} body is empty; expected a JSON object`);
  checkJsonDepth(bytes, limits.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH, what);
  let value: unknown;
  try {
    value = JSON.parse(UTF8.decode(bytes));
  } catch (cause) {
    throw new InvalidInputError('body', `The ${what} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('body', `The ${what} JSON must be an object`);
  return value as Record<string, unknown>;
}

function readParameters(v: unknown, where: string): Parameters | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(where, `${where} must be an object`);
  for (const [k, p] of Object.entries(v)) {
    if (typeof p !== 'string' && typeof p !== 'number' && typeof p !== 'boolean') throw invalid(where, `${where}.${k} must be a string, number or boolean`);
  }
  return v as Parameters;
}

function readString(v: unknown, where: string, field: string): string {
  if (typeof v !== 'string') throw invalid(where, `${where}.${field} must be a string`);
  return v;
}

/** Flattens `data` (flat or nested arrays, "Tensor Data") into `out`. Depth is already bounded by the JSON scan. */
function flatten(v: unknown, out: unknown[]): void {
  if (!Array.isArray(v)) {
    out.push(v);
    return;
  }
  for (const e of v) flatten(e, out);
}

function fromJsonData(values: unknown[], datatype: Datatype, where: string, label: string): TensorData {
  if (datatype === 'FP16') throw invalid(where, `${label}: FP16 data must be sent as binary data (JSON has no half-precision numbers)`);
  const out = new ARRAY_OF[datatype](values.length);
  if (datatype === 'BOOL') {
    values.forEach((v, i) => {
      if (typeof v !== 'boolean') throw invalid(where, `${label}: BOOL element ${i} is ${JSON.stringify(v)}; expected true or false`);
      out[i] = v ? 1 : 0;
    });
    return out;
  }
  const range = INTEGER_RANGE[datatype];
  const big = datatype === 'INT64' || datatype === 'UINT64';
  values.forEach((v, i) => {
    if (typeof v !== 'number') throw invalid(where, `${label}: ${datatype} element ${i} is ${JSON.stringify(v)}; expected a number`);
    if (range && (!Number.isInteger(v) || v < range[0] || v > range[1])) {
      throw invalid(where, `${label}: ${datatype} element ${i} is ${v}; expected an integer in [${range[0]}, ${range[1]}]`);
    }
    (out as unknown as Array<number | bigint>)[i] = big ? BigInt(v) : v;
  });
  return out;
}

/** A fresh, aligned, host-order array of `count` elements from little-endian bytes. */
function fromBinaryData(bytes: Uint8Array, datatype: Datatype, count: number, where: string, label: string): TensorData {
  // A copy in an ArrayBuffer of its own: aligned for any element size (the binary section
  // starts at any offset of the body), and the body can be freed.
  const copy = new Uint8Array(bytes);
  swapToHost(Buffer.from(copy.buffer, 0, copy.length), DATATYPE_SIZE[datatype]);
  if (datatype === 'BOOL') {
    const bad = copy.findIndex((v) => v > 1);
    if (bad >= 0) throw invalid(where, `${label}: BOOL byte ${bad} is ${copy[bad]}; the binary form of BOOL is one byte, 0 or 1`);
  }
  return new ARRAY_OF[datatype](copy.buffer, 0, count);
}

interface TensorFrame {
  /** 'inputs' or 'outputs' */
  field: 'inputs' | 'outputs';
  /** 'request' or 'response', for messages */
  what: string;
  binary: Uint8Array;
  hasHeader: boolean;
}

/** Reads one tensor; binary data is taken from `frame.binary` at `offset`, and the new offset returned. */
function readTensor(v: unknown, i: number, frame: TensorFrame, offset: number): { tensor: Tensor; offset: number } {
  const where = `${frame.field}[${i}]`;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(where, `${where} must be an object`);
  const o = v as Record<string, unknown>;
  const name = readString(o.name, where, 'name');
  const label = `${where} ("${name}")`;
  const datatype = readString(o.datatype, where, 'datatype');
  if (!isDatatype(datatype)) {
    const hint = datatype === 'BYTES' ? 'BYTES tensors are not supported' : `expected one of ${Object.keys(DATATYPE_SIZE).join(', ')} (case-sensitive)`;
    throw invalid(where, `${label}: datatype "${datatype}" is not supported; ${hint}`);
  }
  const count = elementCount(o.shape);
  if (count === undefined) throw invalid(where, `${label}: shape must be an array of non-negative integers whose product is a safe integer`);
  const shape = o.shape as number[];
  const all = readParameters(o.parameters, `${where}.parameters`);
  const { binary_data_size: size, ...rest } = all ?? {};
  // binary_data_size is transport: a tensor whose only parameter it was has none.
  const parameters = Object.keys(rest).length === 0 ? {} : { parameters: rest };
  const need = count * DATATYPE_SIZE[datatype];

  if (size === undefined) {
    if (o.data === undefined) throw invalid(where, `${label}: has neither data nor parameters.binary_data_size`);
    const values: unknown[] = [];
    flatten(o.data, values);
    if (values.length !== count) throw invalid(where, `${label}: data has ${values.length} elements but shape ${shapeText(shape)} needs ${count}`);
    return { tensor: { name, datatype, shape, data: fromJsonData(values, datatype, where, label), ...parameters }, offset };
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw invalid(where, `${label}: binary_data_size must be a non-negative integer`);
  if (o.data !== undefined) throw invalid(where, `${label}: has both data and parameters.binary_data_size`);
  if (!frame.hasHeader) {
    throw invalid(
      INFERENCE_HEADER_CONTENT_LENGTH,
      `${label} is binary data (binary_data_size ${size}) but the ${frame.what} has no ${INFERENCE_HEADER_CONTENT_LENGTH} header`,
    );
  }
  if (size !== need) throw invalid(where, `${label}: binary_data_size is ${size} but shape ${shapeText(shape)} of ${datatype} needs ${need} bytes`);
  if (offset + size > frame.binary.length) {
    throw invalid(
      where,
      `${label}: its ${size} bytes run past the end of the ${frame.what} body (${frame.binary.length - offset} left): the binary data is truncated`,
    );
  }
  const data = fromBinaryData(frame.binary.subarray(offset, offset + size), datatype, count, where, label);
  return { tensor: { name, datatype, shape, data, ...parameters }, offset: offset + size };
}

function readTensors(list: unknown, frame: TensorFrame): Tensor[] {
  if (!Array.isArray(list)) throw invalid(frame.field, `The ${frame.what} has no ${frame.field} array`);
  let offset = 0;
  const seen = new Set<string>();
  const tensors = list.map((v, i) => {
    const r = readTensor(v, i, frame, offset);
    if (seen.has(r.tensor.name)) throw invalid(`${frame.field}[${i}]`, `${frame.field}[${i}]: the name "${r.tensor.name}" appears twice`);
    seen.add(r.tensor.name);
    offset = r.offset;
    return r.tensor;
  });
  if (offset !== frame.binary.length) {
    throw invalid('body', `The ${frame.what} has ${frame.binary.length - offset} bytes after the binary tensor data that no tensor claims`);
  }
  return tensors;
}

function splitBody(body: Uint8Array, headerLength: HeaderValue, limits: DecodeLimits, what: string) {
  if (!(body instanceof Uint8Array)) throw new InvalidArgumentError('body', `Expected the ${what} body as a Uint8Array`);
  const jsonLength = parseHeaderLength(headerLength, body.length, what);
  const hasHeader = jsonLength !== undefined;
  const json = parseJson(hasHeader ? body.subarray(0, jsonLength) : body, limits, what);
  return { json, binary: hasHeader ? body.subarray(jsonLength) : new Uint8Array(0), hasHeader };
}

/**
 * Decodes an inference request (server side) from its body and the value of its
 * `Inference-Header-Content-Length` header (undefined when absent: the whole body is JSON).
 * Throws InvalidInputError naming the place at fault; answer it with HTTP 400.
 */
export function decodeInferenceRequest(body: Uint8Array, headerLength: HeaderValue, limits: DecodeLimits = {}): InferenceRequest {
  const { json, binary, hasHeader } = splitBody(body, headerLength, limits, 'request');
  const id = json.id === undefined ? undefined : readString(json.id, 'request', 'id');
  const parameters = readParameters(json.parameters, 'parameters');
  const inputs = readTensors(json.inputs, { field: 'inputs', what: 'request', binary, hasHeader });
  let outputs: RequestedOutput[] | undefined;
  if (json.outputs !== undefined) {
    if (!Array.isArray(json.outputs)) throw invalid('outputs', 'The request outputs must be an array');
    outputs = json.outputs.map((v: unknown, i) => {
      const where = `outputs[${i}]`;
      if (typeof v !== 'object' || v === null) throw invalid(where, `${where} must be an object`);
      const o = v as Record<string, unknown>;
      const p = readParameters(o.parameters, `${where}.parameters`);
      if (p?.binary_data !== undefined && typeof p.binary_data !== 'boolean') throw invalid(where, `${where}.parameters.binary_data must be a boolean`);
      return { name: readString(o.name, where, 'name'), ...(p === undefined ? {} : { parameters: p }) };
    });
  }
  if (parameters?.binary_data_output !== undefined && typeof parameters.binary_data_output !== 'boolean') {
    throw invalid('parameters', 'parameters.binary_data_output must be a boolean');
  }
  return { ...(id === undefined ? {} : { id }), ...(parameters === undefined ? {} : { parameters }), inputs, ...(outputs === undefined ? {} : { outputs }) };
}

/**
 * Decodes an inference response (client side) from its body and the value of its
 * `Inference-Header-Content-Length` header. Throws InvalidInputError naming the place at fault.
 */
export function decodeInferenceResponse(body: Uint8Array, headerLength: HeaderValue, limits: DecodeLimits = {}): InferenceResponse {
  const { json, binary, hasHeader } = splitBody(body, headerLength, limits, 'response');
  const modelName = readString(json.model_name, 'response', 'model_name');
  const modelVersion = json.model_version === undefined ? undefined : readString(json.model_version, 'response', 'model_version');
  const id = json.id === undefined ? undefined : readString(json.id, 'response', 'id');
  const parameters = readParameters(json.parameters, 'parameters');
  const outputs = readTensors(json.outputs, { field: 'outputs', what: 'response', binary, hasHeader });
  return {
    modelName,
    ...(modelVersion === undefined ? {} : { modelVersion }),
    ...(id === undefined ? {} : { id }),
    ...(parameters === undefined ? {} : { parameters }),
    outputs,
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers for either side

/**
 * Whether the client asked for an output as binary data: its own `binary_data` parameter if
 * given, else the request's `binary_data_output`, else JSON (Binary Tensor Data Extension).
 */
export function binaryOutputChoice(request: Pick<InferenceRequest, 'parameters' | 'outputs'>): (name: string) => boolean {
  const all = request.parameters?.binary_data_output === true;
  const own = new Map<string, unknown>((request.outputs ?? []).map((o) => [o.name, o.parameters?.binary_data]));
  return (name) => {
    const v = own.get(name);
    return typeof v === 'boolean' ? v : all;
  };
}

/**
 * The output names to return for a request, in the model's order when the request names none
 * ("outputs ... if not specified all outputs produced by the model will be returned"), else in
 * the request's order. Throws InvalidInputError for an unknown or repeated name.
 */
export function selectOutputs(request: Pick<InferenceRequest, 'outputs'>, available: readonly string[]): string[] {
  if (request.outputs === undefined) return [...available];
  const seen = new Set<string>();
  return request.outputs.map((o, i) => {
    if (!available.includes(o.name)) throw invalid(`outputs[${i}]`, `outputs[${i}]: the model has no output "${o.name}" (it has ${available.join(', ')})`);
    if (seen.has(o.name)) throw invalid(`outputs[${i}]`, `outputs[${i}]: "${o.name}" is requested twice`);
    seen.add(o.name);
    return o.name;
  });
}

/**
 * The tensor named `spec.name`, checked against the spec: same datatype, same rank, and each
 * dimension equal where the spec's is not -1. Throws InvalidInputError (the place is `field[i]`,
 * or `field` when the tensor is missing).
 */
export function expectTensor(tensors: readonly Tensor[], spec: TensorSpec, field: 'inputs' | 'outputs'): Tensor {
  const i = tensors.findIndex((t) => t.name === spec.name);
  if (i < 0)
    throw invalid(field, `No ${field === 'inputs' ? 'input' : 'output'} named "${spec.name}" (got ${tensors.map((t) => `"${t.name}"`).join(', ') || 'none'})`);
  const t = tensors[i];
  const label = `${field}[${i}] ("${t.name}")`;
  if (t.datatype !== spec.datatype) throw invalid(`${field}[${i}]`, `${label}: datatype is ${t.datatype}, expected ${spec.datatype}`);
  const fits = t.shape.length === spec.shape.length && spec.shape.every((d, k) => d === -1 || d === t.shape[k]);
  if (!fits) throw invalid(`${field}[${i}]`, `${label}: shape is ${shapeText(t.shape)}, expected ${shapeText(spec.shape)} (-1: any size)`);
  return t;
}

/** Checks a model metadata response ("$metadata_model_response"); throws InvalidInputError. */
export function parseModelMetadata(json: unknown): ModelMetadata {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw invalid('body', 'The model metadata must be a JSON object');
  const o = json as Record<string, unknown>;
  const tensors = (field: 'inputs' | 'outputs'): TensorMetadata[] => {
    if (!Array.isArray(o[field])) throw invalid(field, `The model metadata has no ${field} array`);
    return (o[field] as unknown[]).map((v, i) => {
      const where = `${field}[${i}]`;
      if (typeof v !== 'object' || v === null) throw invalid(where, `${where} must be an object`);
      const t = v as Record<string, unknown>;
      const shape = t.shape;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= -1))
        throw invalid(where, `${where}.shape must be an array of integers (-1: variable)`);
      return { name: readString(t.name, where, 'name'), datatype: readString(t.datatype, where, 'datatype'), shape: shape as number[] };
    });
  };
  const versions = o.versions;
  if (versions !== undefined && !(Array.isArray(versions) && versions.every((v) => typeof v === 'string')))
    throw invalid('versions', 'The model metadata versions must be strings');
  const parameters = readParameters(o.parameters, 'parameters');
  return {
    name: readString(o.name, 'metadata', 'name'),
    ...(versions === undefined ? {} : { versions }),
    platform: o.platform === undefined ? '' : readString(o.platform, 'metadata', 'platform'),
    inputs: tensors('inputs'),
    outputs: tensors('outputs'),
    ...(parameters === undefined ? {} : { parameters }),
  };
}
