/**
 * The KServe v2 codec against the two specifications (no Triton server is available here):
 * - [KServe v2] KServe "Predict Protocol - Version 2", kserve/kserve docs/predict-api/v2/required_api.md;
 * - [Triton binary] Triton "Binary Tensor Data Extension", triton-inference-server/server
 *   docs/protocol/extension_binary_data.md.
 * Each test names the section it checks. The fixtures are the specs' own examples
 * (test/fixtures/kserve/README.md says what was corrected in them).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  DATATYPE_SIZE,
  INFERENCE_HEADER_CONTENT_LENGTH,
  binaryOutputChoice,
  decodeInferenceRequest,
  decodeInferenceResponse,
  encodeInferenceRequest,
  encodeInferenceResponse,
  expectTensor,
  parseModelMetadata,
  selectOutputs,
  type Datatype,
  type Tensor,
  type TensorData,
} from '../src/runtime/remote/kserve-codec';
import { InvalidArgumentError, InvalidInputError } from '../src/util/errors';

const fixture = (name: string): Buffer => fs.readFileSync(path.join(__dirname, 'fixtures', 'kserve', name));
const HEADER = INFERENCE_HEADER_CONTENT_LENGTH;

/** A body as the binary extension lays it out: the JSON object, then the raw tensor bytes. */
function body(json: Buffer | string, ...binary: number[][]): { bytes: Buffer; header: string } {
  const head = typeof json === 'string' ? Buffer.from(json, 'utf8') : json;
  return { bytes: Buffer.concat([head, ...binary.map((b) => Buffer.from(b))]), header: String(head.length) };
}

/** Expects `fn` to throw `cls` with `field` (`input` or `argument`) and a message matching `message`. */
function expectError(fn: () => unknown, cls: typeof InvalidInputError | typeof InvalidArgumentError, where: string, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(cls);
  const err = caught as InvalidInputError & InvalidArgumentError;
  expect(err.code).toBe(cls === InvalidInputError ? 'ERR_INVAD_INVALID_INPUT' : 'ERR_INVAD_INVALID_ARGUMENT');
  expect(cls === InvalidInputError ? err.input : err.argument).toBe(where);
  expect(err.message).toMatch(message);
}
const expectInvalidInput = (fn: () => unknown, where: string, message: RegExp) => expectError(fn, InvalidInputError, where, message);
const expectInvalidArgument = (fn: () => unknown, where: string, message: RegExp) => expectError(fn, InvalidArgumentError, where, message);

/** A request body whose JSON is `json` (no binary data). */
const jsonRequest = (json: unknown) => () => decodeInferenceRequest(Buffer.from(JSON.stringify(json)), undefined);
const input = (extra: Record<string, unknown>) => ({ inputs: [{ name: 'x', shape: [2], datatype: 'FP32', data: [1, 2], ...extra }] });

describe('[KServe v2] "Inference Request Examples": JSON tensors', () => {
  test('the example request decodes ("Request Input", "Request Output", "Tensor Data")', () => {
    const req = decodeInferenceRequest(fixture('kserve-json-request.json'), undefined);
    expect(req.id).toBe('42');
    expect(req.inputs.map((t) => [t.name, t.datatype, t.shape])).toEqual([
      ['input0', 'UINT32', [2, 2]],
      ['input1', 'BOOL', [3]],
    ]);
    expect(req.inputs[0].data).toBeInstanceOf(Uint32Array);
    expect(Array.from(req.inputs[0].data)).toEqual([1, 2, 3, 4]);
    // BOOL is held as bytes 0/1 ("Tensor Data Types": BOOL is 1 byte).
    expect(Array.from(req.inputs[1].data)).toEqual([1, 0, 1]);
    expect(req.outputs).toEqual([{ name: 'output0' }]);
    // No binary_data parameter anywhere: every output goes back as JSON.
    expect(binaryOutputChoice(req)('output0')).toBe(false);
  });

  test('the example as printed in the spec ("data" : [ true ] for shape [ 3 ]) is refused: 1 element, 3 needed', () => {
    const printed = JSON.parse(fixture('kserve-json-request.json').toString()) as { inputs: Array<{ data: unknown }> };
    printed.inputs[1].data = [true];
    expectInvalidInput(jsonRequest(printed), 'inputs[1]', /inputs\[1\] \("input1"\): data has 1 elements but shape \[3\] needs 3/);
  });

  test('the example response decodes ("Inference Response JSON Object", "Response Output")', () => {
    const res = decodeInferenceResponse(fixture('kserve-json-response.json'), undefined);
    expect(res.modelName).toBe('mymodel');
    expect(res.id).toBe('42');
    const [out] = res.outputs;
    expect(out.shape).toEqual([3, 2]);
    expect(out.data).toBeInstanceOf(Float32Array);
    expect(Array.from(out.data)).toEqual(Array.from(new Float32Array([1.0, 1.1, 2.0, 2.1, 3.0, 3.1])));
  });

  test('"Tensor Data": the natural nested form and the flat form give the same tensor', () => {
    const flat = decodeInferenceRequest(Buffer.from(JSON.stringify(input({ shape: [2, 2], datatype: 'INT32', data: [1, 2, 4, 5] }))), undefined);
    const nested = decodeInferenceRequest(
      Buffer.from(
        JSON.stringify(
          input({
            shape: [2, 2],
            datatype: 'INT32',
            data: [
              [1, 2],
              [4, 5],
            ],
          }),
        ),
      ),
      undefined,
    );
    expect(nested).toEqual(flat);
    expect(Array.from(nested.inputs[0].data)).toEqual([1, 2, 4, 5]);
  });

  test('a JSON-only request encodes as application/json with no Inference-Header-Content-Length', () => {
    const enc = encodeInferenceRequest(
      { id: '42', inputs: [{ name: 'input0', datatype: 'UINT32', shape: [2, 2], data: new Uint32Array([1, 2, 3, 4]) }], outputs: [{ name: 'output0' }] },
      { binaryData: false },
    );
    expect(enc.headers).toEqual({ 'Content-Type': 'application/json' });
    expect(JSON.parse(enc.body.toString())).toEqual({
      id: '42',
      inputs: [{ name: 'input0', shape: [2, 2], datatype: 'UINT32', data: [1, 2, 3, 4] }],
      outputs: [{ name: 'output0' }],
    });
  });
});

describe('[Triton binary] "Examples": binary tensor data after the JSON object', () => {
  // input0: UINT32 [2, 2] = 1, 2, 3, 4 (16 bytes); input1: BOOL [3] = true, false, true (3 bytes)
  const INPUT0 = [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0];
  const INPUT1 = [1, 0, 1];
  // output0: FP32 [3, 2] = 1, 1.5, 2, -2, 0.25, 3 (24 bytes, little-endian IEEE 754)
  const OUTPUT0 = [0, 0, 0x80, 0x3f, 0, 0, 0xc0, 0x3f, 0, 0, 0, 0x40, 0, 0, 0, 0xc0, 0, 0, 0x80, 0x3e, 0, 0, 0x40, 0x40];

  test('the example request (19 bytes of binary data) decodes, with binary_data on output0', () => {
    const { bytes, header } = body(fixture('triton-binary-request.json'), INPUT0, INPUT1);
    expect(bytes.length - Number(header)).toBe(19);
    const req = decodeInferenceRequest(bytes, header);
    expect(Array.from(req.inputs[0].data)).toEqual([1, 2, 3, 4]);
    expect(Array.from(req.inputs[1].data)).toEqual([1, 0, 1]);
    // binary_data_size is transport: it is not left among the tensor's parameters.
    expect(req.inputs[0].parameters).toBeUndefined();
    expect(binaryOutputChoice(req)('output0')).toBe(true);
  });

  test('the example response (24 bytes of FP32) decodes', () => {
    const { bytes, header } = body(fixture('triton-binary-response.json'), OUTPUT0);
    const res = decodeInferenceResponse(bytes, header);
    expect(res.outputs[0].shape).toEqual([3, 2]);
    expect(Array.from(res.outputs[0].data)).toEqual([1, 1.5, 2, -2, 0.25, 3]);
  });

  test('encoding the example request gives the same bytes: header = JSON length, then the 19 bytes in input order', () => {
    const enc = encodeInferenceRequest({
      inputs: [
        { name: 'input0', datatype: 'UINT32', shape: [2, 2], data: new Uint32Array([1, 2, 3, 4]) },
        { name: 'input1', datatype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) },
      ],
      outputs: [{ name: 'output0', parameters: { binary_data: true } }],
    });
    const jsonLength = Number(enc.headers[HEADER]);
    expect(enc.headers['Content-Type']).toBe('application/octet-stream');
    expect(enc.body.length).toBe(jsonLength + 19);
    const { model_name: _m, ...expected } = JSON.parse(fixture('triton-binary-request.json').toString()) as Record<string, unknown>;
    expect(JSON.parse(enc.body.subarray(0, jsonLength).toString())).toEqual(expected);
    expect([...enc.body.subarray(jsonLength)]).toEqual([...INPUT0, ...INPUT1]);
  });

  test('encoding the example response gives the same bytes', () => {
    const enc = encodeInferenceResponse(
      { modelName: 'mymodel', outputs: [{ name: 'output0', datatype: 'FP32', shape: [3, 2], data: new Float32Array([1, 1.5, 2, -2, 0.25, 3]) }] },
      { binaryData: true },
    );
    const jsonLength = Number(enc.headers[HEADER]);
    expect(JSON.parse(enc.body.subarray(0, jsonLength).toString())).toEqual(JSON.parse(fixture('triton-binary-response.json').toString()));
    expect([...enc.body.subarray(jsonLength)]).toEqual(OUTPUT0);
  });

  test('"binary_data" on an output overrides "binary_data_output" on the request, either way', () => {
    const choice = binaryOutputChoice({
      parameters: { binary_data_output: true },
      outputs: [{ name: 'a', parameters: { binary_data: false } }, { name: 'b' }],
    });
    expect([choice('a'), choice('b'), choice('c')]).toEqual([false, true, true]);
    const off = binaryOutputChoice({ outputs: [{ name: 'a', parameters: { binary_data: true } }] });
    expect([off('a'), off('b')]).toEqual([true, false]);
  });

  test('a response mixes binary and JSON outputs; binary ones keep their order after the JSON', () => {
    const enc = encodeInferenceResponse(
      {
        modelName: 'invad',
        id: 'r1',
        outputs: [
          { name: 'score', datatype: 'FP32', shape: [2], data: new Float32Array([0.5, -1]) },
          { name: 'is_anomalous', datatype: 'BOOL', shape: [2], data: new Uint8Array([0, 1]) },
          { name: 'map', datatype: 'FP32', shape: [2, 1, 2], data: new Float32Array([1, 2, 3, 4]) },
        ],
      },
      { binaryData: (name) => name !== 'score' },
    );
    const jsonLength = Number(enc.headers[HEADER]);
    const head = JSON.parse(enc.body.subarray(0, jsonLength).toString()) as { outputs: Array<Record<string, unknown>> };
    expect(head.outputs[0]).toEqual({ name: 'score', shape: [2], datatype: 'FP32', data: [0.5, -1] });
    expect(head.outputs[1].parameters).toEqual({ binary_data_size: 2 });
    expect(head.outputs[2].parameters).toEqual({ binary_data_size: 16 });
    expect([...enc.body.subarray(jsonLength, jsonLength + 2)]).toEqual([0, 1]);
    const res = decodeInferenceResponse(enc.body, enc.headers[HEADER]);
    expect(res.id).toBe('r1');
    expect(res.outputs.map((t) => Array.from(t.data))).toEqual([
      [0.5, -1],
      [0, 1],
      [1, 2, 3, 4],
    ]);
  });

  test('an FP32 tensor whose bytes start at an odd offset of the body decodes (the data is copied, aligned)', () => {
    const json = JSON.stringify({
      inputs: [
        { name: 'a', shape: [3], datatype: 'UINT8', parameters: { binary_data_size: 3 } },
        { name: 'b', shape: [2], datatype: 'FP32', parameters: { binary_data_size: 8 } },
      ],
    });
    const { bytes, header } = body(` ${json}`, [7, 8, 9], [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
    const req = decodeInferenceRequest(bytes, header);
    expect(Array.from(req.inputs[1].data)).toEqual([1, -2]);
    expect(req.inputs[1].data.byteOffset % 4).toBe(0);
    // The tensor owns its data: changing the body afterwards changes nothing.
    bytes.fill(0);
    expect(Array.from(req.inputs[0].data)).toEqual([7, 8, 9]);
  });
});

describe('round trips of every data type ("Tensor Data Types")', () => {
  const samples: { [D in Datatype]: TensorData } = {
    BOOL: new Uint8Array([1, 0, 0, 1]),
    UINT8: new Uint8Array([0, 1, 254, 255]),
    UINT16: new Uint16Array([0, 1, 0xfffe, 0xffff]),
    UINT32: new Uint32Array([0, 1, 0xfffffffe, 0xffffffff]),
    UINT64: new BigUint64Array([0n, 1n, 2n ** 53n - 1n, 42n]),
    INT8: new Int8Array([-128, -1, 0, 127]),
    INT16: new Int16Array([-32768, -1, 0, 32767]),
    INT32: new Int32Array([-(2 ** 31), -1, 0, 2 ** 31 - 1]),
    INT64: new BigInt64Array([-(2n ** 53n) + 1n, -1n, 0n, 2n ** 53n - 1n]),
    FP16: new Uint16Array([0x3c00, 0xc000, 0x0000, 0x7c00]),
    // (not -0: JSON writes it as 0)
    FP32: new Float32Array([0.1, -2.5e-38, 3.4e38, 1.4e-45]),
    FP64: new Float64Array([0.1, -1e-300, 1e300, Math.PI]),
  };

  test.each(Object.keys(DATATYPE_SIZE) as Datatype[])('%s, binary: request and response, byte size from the table', (datatype) => {
    const tensor: Tensor = { name: 't', datatype, shape: [2, 2], data: samples[datatype] };
    const req = encodeInferenceRequest({ inputs: [tensor] });
    expect(req.body.length - Number(req.headers[HEADER])).toBe(4 * DATATYPE_SIZE[datatype]);
    const back = decodeInferenceRequest(req.body, req.headers[HEADER]).inputs[0];
    expect(back).toEqual(tensor);
    const res = encodeInferenceResponse({ modelName: 'm', outputs: [tensor] }, { binaryData: true });
    expect(decodeInferenceResponse(res.body, res.headers[HEADER]).outputs[0]).toEqual(tensor);
  });

  test.each((Object.keys(DATATYPE_SIZE) as Datatype[]).filter((d) => d !== 'FP16'))('%s, JSON: request and response', (datatype) => {
    const tensor: Tensor = { name: 't', datatype, shape: [4], data: samples[datatype], parameters: { note: 'kept' } };
    const req = encodeInferenceRequest({ inputs: [tensor] }, { binaryData: false });
    expect(decodeInferenceRequest(req.body, undefined).inputs[0]).toEqual(tensor);
    const res = encodeInferenceResponse({ modelName: 'm', modelVersion: '1', outputs: [tensor] }, { binaryData: false });
    const back = decodeInferenceResponse(res.body, undefined);
    expect(back.modelVersion).toBe('1');
    expect(back.outputs[0]).toEqual(tensor);
  });

  test('an empty tensor (a 0 dimension) round-trips with binary_data_size 0', () => {
    const tensor: Tensor = { name: 'e', datatype: 'FP32', shape: [0, 3], data: new Float32Array(0) };
    const req = encodeInferenceRequest({ inputs: [tensor] });
    expect(decodeInferenceRequest(req.body, req.headers[HEADER]).inputs[0]).toEqual(tensor);
  });
});

describe('decoding refuses malformed bodies with InvalidInputError naming the place', () => {
  test('wrong datatype: unknown, BYTES, lower case (all strings are case-sensitive)', () => {
    expectInvalidInput(jsonRequest(input({ datatype: 'FLOAT32' })), 'inputs[0]', /datatype "FLOAT32" is not supported; expected one of BOOL, UINT8/);
    expectInvalidInput(jsonRequest(input({ datatype: 'BYTES' })), 'inputs[0]', /BYTES tensors are not supported/);
    expectInvalidInput(jsonRequest(input({ datatype: 'fp32' })), 'inputs[0]', /case-sensitive/);
    expectInvalidInput(jsonRequest(input({ datatype: 7 })), 'inputs[0]', /datatype must be a string/);
  });

  test('bad shapes: negative, fractional, not an array, overflowing', () => {
    for (const shape of [[-1, 2], [1.5], '2', [2 ** 40, 2 ** 40]]) {
      expectInvalidInput(jsonRequest(input({ shape })), 'inputs[0]', /shape must be an array of non-negative integers/);
    }
  });

  test('JSON data of the wrong count or the wrong element type', () => {
    expectInvalidInput(jsonRequest(input({ data: [1, 2, 3] })), 'inputs[0]', /data has 3 elements but shape \[2\] needs 2/);
    expectInvalidInput(jsonRequest(input({ data: [1, '2'] })), 'inputs[0]', /FP32 element 1 is "2"; expected a number/);
    expectInvalidInput(jsonRequest(input({ datatype: 'UINT8', data: [1, 256] })), 'inputs[0]', /UINT8 element 1 is 256; expected an integer in \[0, 255\]/);
    expectInvalidInput(jsonRequest(input({ datatype: 'INT32', data: [1.5, 2] })), 'inputs[0]', /INT32 element 0 is 1.5/);
    expectInvalidInput(jsonRequest(input({ datatype: 'INT64', data: [2 ** 60, 0] })), 'inputs[0]', /INT64 element 0/);
    expectInvalidInput(jsonRequest(input({ datatype: 'BOOL', data: [1, 0] })), 'inputs[0]', /BOOL element 0 is 1; expected true or false/);
    expectInvalidInput(jsonRequest(input({ datatype: 'FP16', data: [1, 0] })), 'inputs[0]', /FP16 data must be sent as binary data/);
  });

  test('a tensor with neither data nor binary_data_size, or with both', () => {
    expectInvalidInput(jsonRequest(input({ data: undefined })), 'inputs[0]', /neither data nor parameters.binary_data_size/);
    const both = body(JSON.stringify(input({ parameters: { binary_data_size: 8 } })), [0, 0, 0, 0, 0, 0, 0, 0]);
    expectInvalidInput(() => decodeInferenceRequest(both.bytes, both.header), 'inputs[0]', /both data and parameters.binary_data_size/);
  });

  const binaryInput = (size: number, shape = [2]) =>
    JSON.stringify({ inputs: [{ name: 'x', shape, datatype: 'FP32', parameters: { binary_data_size: size } }], outputs: [{ name: 'y' }] });

  test('binary_data_size that does not match the shape', () => {
    const b = body(binaryInput(7), [0, 0, 0, 0, 0, 0, 0]);
    expectInvalidInput(() => decodeInferenceRequest(b.bytes, b.header), 'inputs[0]', /binary_data_size is 7 but shape \[2\] of FP32 needs 8 bytes/);
    const neg = body(binaryInput(-8), []);
    expectInvalidInput(() => decodeInferenceRequest(neg.bytes, neg.header), 'inputs[0]', /binary_data_size must be a non-negative integer/);
  });

  test('a truncated binary section: fewer bytes than binary_data_size', () => {
    const b = body(binaryInput(8), [0, 0, 0x80, 0x3f, 0]);
    expectInvalidInput(
      () => decodeInferenceRequest(b.bytes, b.header),
      'inputs[0]',
      /run past the end of the request body \(5 left\): the binary data is truncated/,
    );
  });

  test('a body cut inside the JSON object: the header is longer than the body', () => {
    const b = body(binaryInput(8), [0, 0, 0x80, 0x3f, 0, 0, 0x80, 0x3f]);
    const cut = b.bytes.subarray(0, Number(b.header) - 5);
    expectInvalidInput(
      () => decodeInferenceRequest(cut, b.header),
      HEADER,
      /says the JSON object is \d+ bytes but the request body has only \d+: the body is truncated/,
    );
  });

  test('binary data without the Inference-Header-Content-Length header', () => {
    const b = body(binaryInput(8), [0, 0, 0x80, 0x3f, 0, 0, 0x80, 0x3f]);
    // Without the header the whole body is taken as JSON, and the bytes after it make it invalid...
    expectInvalidInput(() => decodeInferenceRequest(b.bytes, undefined), 'body', /not valid JSON/);
    // ...and a JSON-only body that claims binary data names the missing header.
    expectInvalidInput(
      () => decodeInferenceRequest(Buffer.from(binaryInput(8)), undefined),
      HEADER,
      /binary data \(binary_data_size 8\) but the request has no Inference-Header-Content-Length header/,
    );
  });

  test('a malformed or repeated Inference-Header-Content-Length header', () => {
    const b = body(binaryInput(8), [0, 0, 0x80, 0x3f, 0, 0, 0x80, 0x3f]);
    for (const bad of ['abc', '-1', '1e3', '']) {
      expectInvalidInput(() => decodeInferenceRequest(b.bytes, bad), HEADER, /expected the JSON object's length in bytes/);
    }
    expectInvalidInput(() => decodeInferenceRequest(b.bytes, [b.header, b.header]), HEADER, /has 2 Inference-Header-Content-Length headers/);
    // A header of 0 makes the JSON object empty.
    expectInvalidInput(() => decodeInferenceRequest(b.bytes, '0'), 'body', /body is empty/);
  });

  test('bytes after the binary data that no tensor claims', () => {
    const b = body(binaryInput(8), [0, 0, 0x80, 0x3f, 0, 0, 0x80, 0x3f, 9, 9]);
    expectInvalidInput(() => decodeInferenceRequest(b.bytes, b.header), 'body', /has 2 bytes after the binary tensor data that no tensor claims/);
  });

  test('a BOOL byte other than 0 or 1 ("true is a single byte with value 1 and false ... 0")', () => {
    const json = JSON.stringify({ inputs: [{ name: 'x', shape: [3], datatype: 'BOOL', parameters: { binary_data_size: 3 } }] });
    const b = body(json, [1, 0, 2]);
    expectInvalidInput(() => decodeInferenceRequest(b.bytes, b.header), 'inputs[0]', /BOOL byte 2 is 2/);
  });

  test('JSON too deep is refused before parsing; brackets inside strings do not count', () => {
    const deep = Buffer.from(`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":${'['.repeat(100)}1${']'.repeat(100)}}]}`);
    expectInvalidInput(() => decodeInferenceRequest(deep, undefined), 'body', /nested more than 32 levels deep/);
    expectInvalidInput(() => decodeInferenceRequest(deep, undefined, { maxJsonDepth: 8 }), 'body', /more than 8 levels/);
    const quoted = JSON.stringify({ id: '[[[[[[[[[[\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[', ...input({}) });
    expect(decodeInferenceRequest(Buffer.from(quoted), undefined, { maxJsonDepth: 5 }).id).toMatch(/^\[{10}\\"/);
  });

  test('JSON over the size limit', () => {
    const big = Buffer.from(JSON.stringify(input({ shape: [1000], data: new Array<number>(1000).fill(1) })));
    expectInvalidInput(
      () => decodeInferenceRequest(big, undefined, { maxJsonBytes: 1000 }),
      'body',
      /JSON is \d+ bytes, over the limit of 1000; send tensors as binary data/,
    );
    expect(decodeInferenceRequest(big, undefined, { maxJsonBytes: big.length }).inputs[0].data.length).toBe(1000);
  });

  test('not JSON, not UTF-8, not an object, no inputs, duplicate names', () => {
    expectInvalidInput(() => decodeInferenceRequest(Buffer.from('{"inputs": ['), undefined), 'body', /request is not valid JSON/);
    expectInvalidInput(() => decodeInferenceRequest(Buffer.from([0x7b, 0xff, 0x7d]), undefined), 'body', /not valid JSON/);
    expectInvalidInput(() => decodeInferenceRequest(Buffer.from('[1]'), undefined), 'body', /must be an object/);
    expectInvalidInput(() => decodeInferenceRequest(Buffer.from('{}'), undefined), 'inputs', /has no inputs array/);
    const twice = { inputs: [input({}).inputs[0], input({}).inputs[0]] };
    expectInvalidInput(jsonRequest(twice), 'inputs[1]', /the name "x" appears twice/);
  });

  test('parameters of the wrong form ("$parameter = $string : $string | $number | $boolean")', () => {
    expectInvalidInput(jsonRequest({ ...input({}), parameters: { a: [1] } }), 'parameters', /parameters.a must be a string, number or boolean/);
    expectInvalidInput(jsonRequest({ ...input({}), parameters: { binary_data_output: 'yes' } }), 'parameters', /binary_data_output must be a boolean/);
    expectInvalidInput(jsonRequest({ ...input({}), outputs: [{ name: 'y', parameters: { binary_data: 1 } }] }), 'outputs[0]', /binary_data must be a boolean/);
    expectInvalidInput(jsonRequest({ ...input({}), outputs: {} }), 'outputs', /must be an array/);
  });

  test('a response without model_name (required by "Inference Response JSON Object")', () => {
    expectInvalidInput(() => decodeInferenceResponse(Buffer.from('{"outputs": []}'), undefined), 'response', /response.model_name must be a string/);
  });
});

describe('encoding refuses malformed tensors with InvalidArgumentError', () => {
  const t = (extra: Partial<Tensor>): Tensor => ({ name: 'x', datatype: 'FP32', shape: [2], data: new Float32Array(2), ...extra });

  test('data of the wrong array type or length, an unknown datatype, a bad shape or name', () => {
    expectInvalidArgument(
      () => encodeInferenceRequest({ inputs: [t({ data: new Float64Array(2) })] }),
      'inputs[0].data',
      /FP32 data must be a Float32Array but is Float64Array/,
    );
    expectInvalidArgument(
      () => encodeInferenceRequest({ inputs: [t({ data: new Float32Array(3) })] }),
      'inputs[0].data',
      /data has 3 elements but shape \[2\] needs 2/,
    );
    expectInvalidArgument(
      () => encodeInferenceRequest({ inputs: [t({ datatype: 'BYTES' as Datatype })] }),
      'inputs[0].datatype',
      /datatype "BYTES" is not one of/,
    );
    expectInvalidArgument(() => encodeInferenceRequest({ inputs: [t({ shape: [-2] })] }), 'inputs[0].shape', /non-negative integers/);
    expectInvalidArgument(() => encodeInferenceRequest({ inputs: [t({ name: '' })] }), 'inputs[0].name', /non-empty string/);
    expectInvalidArgument(() => encodeInferenceRequest({ inputs: [t({})], outputs: [{ name: '' }] }), 'outputs[0].name', /non-empty string/);
  });

  test('BOOL data other than 0 or 1', () => {
    expectInvalidArgument(
      () => encodeInferenceRequest({ inputs: [t({ datatype: 'BOOL', data: new Uint8Array([1, 2]) })] }),
      'inputs[0].data',
      /BOOL element 1 is 2/,
    );
  });

  test('values JSON cannot hold, when sent as JSON: NaN, Infinity, FP16, INT64 past 2^53', () => {
    const res = (tensor: Tensor) => () => encodeInferenceResponse({ modelName: 'm', outputs: [tensor] }, { binaryData: false });
    expectInvalidArgument(res(t({ data: new Float32Array([1, NaN]) })), 'outputs[0].data', /element 1 is NaN, which JSON cannot hold; send it as binary data/);
    expectInvalidArgument(res(t({ data: new Float32Array([Infinity, 1]) })), 'outputs[0].data', /element 0 is Infinity/);
    expectInvalidArgument(res(t({ datatype: 'FP16', data: new Uint16Array(2) })), 'outputs[0].data', /FP16 has no JSON form/);
    expectInvalidArgument(
      res(t({ datatype: 'INT64', data: new BigInt64Array([1n, 2n ** 60n]) })),
      'outputs[0].data',
      /element 1 \(1152921504606846976\) is not exact as a JSON number/,
    );
    // As binary data, all of them are fine.
    const nan = encodeInferenceResponse({ modelName: 'm', outputs: [t({ data: new Float32Array([1, NaN]) })] }, { binaryData: true });
    expect(Array.from(decodeInferenceResponse(nan.body, nan.headers[HEADER]).outputs[0].data)).toEqual([1, NaN]);
  });
});

describe('server and client helpers', () => {
  test('selectOutputs: all outputs when none are named, else the named ones; unknown or repeated names are refused', () => {
    const model = ['score', 'is_anomalous', 'map'];
    expect(selectOutputs({}, model)).toEqual(model);
    expect(selectOutputs({ outputs: [{ name: 'map' }, { name: 'score' }] }, model)).toEqual(['map', 'score']);
    expectInvalidInput(() => selectOutputs({ outputs: [{ name: 'heatmap' }] }, model), 'outputs[0]', /no output "heatmap" \(it has score, is_anomalous, map\)/);
    expectInvalidInput(() => selectOutputs({ outputs: [{ name: 'map' }, { name: 'map' }] }, model), 'outputs[1]', /"map" is requested twice/);
  });

  test('expectTensor checks the datatype and each dimension but -1 ("Variable-size dimensions are specified as -1")', () => {
    const spec = { name: 'image', datatype: 'UINT8' as const, shape: [-1, 4, 4, 3] };
    const ok: Tensor = { name: 'image', datatype: 'UINT8', shape: [2, 4, 4, 3], data: new Uint8Array(96) };
    expect(expectTensor([ok], spec, 'inputs')).toBe(ok);
    expectInvalidInput(
      () => expectTensor([{ ...ok, datatype: 'FP32', data: new Float32Array(96) }], spec, 'inputs'),
      'inputs[0]',
      /datatype is FP32, expected UINT8/,
    );
    expectInvalidInput(() => expectTensor([{ ...ok, shape: [2, 4, 5, 3] }], spec, 'inputs'), 'inputs[0]', /shape is \[2, 4, 5, 3\], expected \[-1, 4, 4, 3\]/);
    expectInvalidInput(() => expectTensor([{ ...ok, shape: [96] }], spec, 'inputs'), 'inputs[0]', /shape is \[96\]/);
    expectInvalidInput(() => expectTensor([{ ...ok, name: 'img' }], spec, 'inputs'), 'inputs', /No input named "image" \(got "img"\)/);
  });

  test('parseModelMetadata reads "$metadata_model_response" and refuses a malformed one', () => {
    const meta = {
      name: 'invad',
      versions: ['1'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'image', datatype: 'UINT8', shape: [-1, 64, 64, 3] }],
      outputs: [{ name: 'score', datatype: 'FP32', shape: [-1] }],
    };
    expect(parseModelMetadata(meta)).toEqual(meta);
    expectInvalidInput(() => parseModelMetadata({ ...meta, inputs: undefined }), 'inputs', /no inputs array/);
    expectInvalidInput(
      () => parseModelMetadata({ ...meta, outputs: [{ name: 'score', datatype: 'FP32', shape: [-2] }] }),
      'outputs[0]',
      /shape must be an array of integers/,
    );
    expectInvalidInput(() => parseModelMetadata('invad'), 'body', /must be a JSON object/);
  });
});
