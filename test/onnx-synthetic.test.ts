import * as ort from 'onnxruntime-node';
import {
  DataType,
  attr,
  decodeModel,
  encodeModel,
  floatTensor,
  int64Scalar,
  int64Vector,
  makeGraph,
  makeModel,
  makeNode,
  onnx,
  opsetVersion,
  readFloatTensor,
  readInt64Tensor,
  toNumber,
  valueInfo,
  valueInfoShape,
} from '../src/fit/onnx/proto';
import {
  ConvBackboneOptions,
  SLOW_UNET_DEFAULT_SIZE,
  SLOW_UNET_MS_PER_REPEAT,
  convBackbone,
  convBackboneWeights,
  linearUnet,
  slowUnet,
  slowUnetRepeats,
} from '../src/fit/onnx/synthetic';
import { mulberry32 } from '../src/util/prng';

const rand = mulberry32(12345);
const randomArray = (n: number, lo = -1, hi = 1) => Float32Array.from({ length: n }, () => lo + (hi - lo) * rand());

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-5): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    if (!(err <= tol * Math.max(1, Math.abs(expected[i])))) {
      throw new Error(`index ${i}: got ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

function tensorMeta(meta: readonly ort.InferenceSession.ValueMetadata[]) {
  return meta.map((m) => (m.isTensor ? { name: m.name, type: m.type, shape: [...m.shape] } : { name: m.name }));
}

/** Plain-loop reference of convBackbone: kernel = stride, no padding. */
function referenceConv(opts: ConvBackboneOptions, image: Float32Array, n: number): Float32Array {
  const { weights, bias } = convBackboneWeights(opts);
  const { height: H, width: W, channels: C, stride: s } = opts;
  const oh = Math.floor(H / s);
  const ow = Math.floor(W / s);
  const out = new Float32Array(n * C * oh * ow);
  for (let b = 0; b < n; b++)
    for (let c = 0; c < C; c++)
      for (let y = 0; y < oh; y++)
        for (let x = 0; x < ow; x++) {
          let acc = bias[c];
          for (let ci = 0; ci < 3; ci++)
            for (let ky = 0; ky < s; ky++)
              for (let kx = 0; kx < s; kx++) {
                acc += weights[((c * 3 + ci) * s + ky) * s + kx] * image[((b * 3 + ci) * H + y * s + ky) * W + x * s + kx];
              }
          out[((b * C + c) * oh + y) * ow + x] = acc;
        }
  return out;
}

function unetFeeds(n: number, c: number, h: number, w: number, tValues?: number[]) {
  const x = randomArray(n * c * h * w, -2, 2);
  const t = tValues ?? Array.from({ length: n }, () => Math.floor(rand() * 1000));
  return {
    xData: x,
    tData: t,
    feeds: {
      x: new ort.Tensor('float32', x, [n, c, h, w]),
      t: new ort.Tensor(
        'int64',
        BigInt64Array.from(t, (v) => BigInt(v)),
        [n],
      ),
    },
  };
}

describe('onnx/proto', () => {
  it('builds, encodes and decodes a model losslessly', () => {
    const model = makeModel(
      makeGraph({
        name: 'g',
        inputs: [valueInfo('a', DataType.FLOAT, ['N', 3, 'H', 7])],
        outputs: [valueInfo('b', DataType.FLOAT)],
        initializers: [floatTensor('w', [2, 2], new Float32Array([1.5, -2, 0.25, 3e-8])), int64Vector('shape', [-1, 1, 1, 1]), int64Scalar('big', 2 ** 40)],
        nodes: [
          makeNode('Resize', ['a', '', 'scales'], ['b'], {
            attributes: [
              attr.string('mode', 'linear'),
              attr.float('cubic_coeff_a', -0.75),
              attr.int('exclude_outside', 0),
              attr.ints('axes', [-2, -1]),
              attr.floats('fs', [0.5, 2]),
              attr.tensor('value', floatTensor('v', [1], [4])),
            ],
          }),
        ],
      }),
      { metadata: { purpose: 'test' }, extraOpsets: { 'com.microsoft': 1 } },
    );
    const bytes = encodeModel(model);
    const back = decodeModel(bytes);

    expect(toNumber(back.irVersion)).toBe(8);
    expect(opsetVersion(back)).toBe(17);
    expect(opsetVersion(back, 'com.microsoft')).toBe(1);
    expect(back.producerName).toBe('invad');
    expect(back.metadataProps).toEqual([expect.objectContaining({ key: 'purpose', value: 'test' })]);

    const g = back.graph as onnx.GraphProto; // decode yields class instances: repeated fields are arrays
    expect(valueInfoShape(g.input[0])).toEqual({ elemType: DataType.FLOAT, dims: ['N', 3, 'H', 7] });
    expect(valueInfoShape(g.output[0]).dims).toBeUndefined();
    expect(Array.from(readFloatTensor(g.initializer[0]))).toEqual(Array.from(new Float32Array([1.5, -2, 0.25, 3e-8])));
    expect(g.initializer[0].dims!.map(toNumber)).toEqual([2, 2]);
    expect(readInt64Tensor(g.initializer[1])).toEqual([-1, 1, 1, 1]);
    expect(readInt64Tensor(g.initializer[2])).toEqual([2 ** 40]);
    expect(g.initializer[2].dims).toEqual([]);

    const node = g.node[0] as onnx.NodeProto;
    expect(node.opType).toBe('Resize');
    expect(node.input).toEqual(['a', '', 'scales']);
    const a = Object.fromEntries(node.attribute.map((x) => [x.name, x]));
    expect(new TextDecoder().decode(a['mode']!.s)).toBe('linear');
    expect(a['cubic_coeff_a']!.f).toBeCloseTo(-0.75);
    expect(toNumber(a['exclude_outside']!.i)).toBe(0);
    expect(a['axes']!.ints.map(toNumber)).toEqual([-2, -1]);
    expect(a['fs']!.floats).toEqual([0.5, 2]);
    expect(Array.from(readFloatTensor(a['value']!.t))).toEqual([4]);

    // Re-encoding the decoded model gives the same bytes.
    expect(Buffer.from(encodeModel(back)).equals(Buffer.from(bytes))).toBe(true);
  });

  it('rejects tensors whose data does not match their dims', () => {
    expect(() => floatTensor('w', [2, 3], new Float32Array(5))).toThrow(RangeError);
  });
});

describe('synthetic convBackbone', () => {
  const opts: ConvBackboneOptions = { height: 12, width: 16, channels: 5, stride: 4, seed: 3 };

  it('has a dynamic batch and the documented names and shapes', async () => {
    const session = await ort.InferenceSession.create(convBackbone(opts));
    expect(session.inputNames).toEqual(['image']);
    expect(session.outputNames).toEqual(['features']);
    expect(tensorMeta(session.inputMetadata)).toEqual([{ name: 'image', type: 'float32', shape: ['N', 3, 12, 16] }]);
    expect(tensorMeta(session.outputMetadata)).toEqual([{ name: 'features', type: 'float32', shape: ['N', 5, 3, 4] }]);
    await session.release();
  });

  it.each([1, 3])('matches a plain-loop conv at batch %i', async (n) => {
    const session = await ort.InferenceSession.create(convBackbone(opts));
    const image = randomArray(n * 3 * 12 * 16, 0, 1);
    const out = await session.run({ image: new ort.Tensor('float32', image, [n, 3, 12, 16]) });
    expect(out['features'].dims).toEqual([n, 5, 3, 4]);
    expectClose(out['features'].data as Float32Array, referenceConv(opts, image, n));
    await session.release();
  });

  it('is deterministic per seed and honours given weights, names and odd sizes', async () => {
    expect(convBackboneWeights(opts)).toEqual(convBackboneWeights({ ...opts }));
    expect(convBackboneWeights(opts).weights).not.toEqual(convBackboneWeights({ ...opts, seed: 4 }).weights);
    expect(Buffer.from(convBackbone(opts)).equals(Buffer.from(convBackbone(opts)))).toBe(true);

    const custom: ConvBackboneOptions = {
      height: 13,
      width: 9,
      channels: 2,
      stride: 2,
      weights: randomArray(2 * 3 * 2 * 2),
      bias: new Float32Array([0.5, -0.25]),
      inputName: 'pixels',
      outputName: 'fmap',
    };
    expect(convBackboneWeights(custom).bias).toEqual(new Float32Array([0.5, -0.25]));
    const session = await ort.InferenceSession.create(convBackbone(custom));
    expect(tensorMeta(session.outputMetadata)).toEqual([{ name: 'fmap', type: 'float32', shape: ['N', 2, 6, 4] }]);
    const image = randomArray(2 * 3 * 13 * 9, 0, 1);
    const out = await session.run({ pixels: new ort.Tensor('float32', image, [2, 3, 13, 9]) });
    expectClose(out['fmap'].data as Float32Array, referenceConv(custom, image, 2));
    await session.release();
  });

  it('rejects bad options', () => {
    expect(() => convBackbone({ ...opts, stride: 0 })).toThrow(expect.objectContaining({ code: 'ERR_INVAD_INVALID_ARGUMENT' }));
    expect(() => convBackbone({ ...opts, weights: new Float32Array(3) })).toThrow(
      expect.objectContaining({ code: 'ERR_INVAD_INVALID_ARGUMENT', argument: 'weights' }),
    );
  });
});

describe('synthetic linearUnet', () => {
  const [C, h, w, k, m] = [4, 3, 5, 0.75, -0.002];

  it('has a dynamic batch and the documented names and shapes', async () => {
    const session = await ort.InferenceSession.create(linearUnet({ channels: C, height: h, width: w, k, m }));
    expect(session.inputNames).toEqual(['x', 't']);
    expect(session.outputNames).toEqual(['eps']);
    expect(tensorMeta(session.inputMetadata)).toEqual([
      { name: 'x', type: 'float32', shape: ['N', C, h, w] },
      { name: 't', type: 'int64', shape: ['N'] },
    ]);
    expect(tensorMeta(session.outputMetadata)).toEqual([{ name: 'eps', type: 'float32', shape: ['N', C, h, w] }]);
    await session.release();
  });

  it.each([1, 3])('computes eps = k*x + m*t per sample at batch %i', async (n) => {
    const session = await ort.InferenceSession.create(linearUnet({ channels: C, height: h, width: w, k, m }));
    const { xData, tData, feeds } = unetFeeds(n, C, h, w, n === 3 ? [0, 999, 421] : undefined);
    const out = await session.run(feeds);
    expect(out['eps'].dims).toEqual([n, C, h, w]);
    const per = C * h * w;
    const ref = xData.map((x, i) => k * x + m * tData[Math.floor(i / per)]);
    expectClose(out['eps'].data as Float32Array, ref);
    await session.release();
  });

  it('builds deliberately mismatched variants for rejection tests', async () => {
    const wide = await ort.InferenceSession.create(
      linearUnet({ channels: C, height: h, width: w, k, m, outputChannels: 6, xName: 'sample', tName: 'timestep', outputName: 'out' }),
    );
    expect(wide.inputNames).toEqual(['sample', 'timestep']);
    expect(tensorMeta(wide.outputMetadata)).toEqual([{ name: 'out', type: 'float32', shape: ['N', 6, h, w] }]);
    const { xData, tData, feeds } = unetFeeds(2, C, h, w);
    const out = await wide.run({ sample: feeds.x, timestep: feeds.t });
    const per = h * w;
    const ref = new Float32Array(2 * 6 * per);
    for (let b = 0; b < 2; b++)
      for (let o = 0; o < 6; o++) for (let p = 0; p < per; p++) ref[(b * 6 + o) * per + p] = k * xData[(b * C + (o % C)) * per + p] + m * tData[b];
    expectClose(out['out'].data as Float32Array, ref);
    await wide.release();

    const narrow = await ort.InferenceSession.create(linearUnet({ channels: C, height: h, width: w, k, m, outputChannels: 2 }));
    expect(tensorMeta(narrow.outputMetadata)[0]).toMatchObject({ shape: ['N', 2, h, w] });
    expect((await narrow.run(unetFeeds(1, C, h, w).feeds))['eps'].dims).toEqual([1, 2, h, w]);
    await narrow.release();

    const floatT = await ort.InferenceSession.create(linearUnet({ channels: C, height: h, width: w, k, m, tElemType: 'float32' }));
    expect(tensorMeta(floatT.inputMetadata)[1]).toEqual({ name: 't', type: 'float32', shape: ['N'] });
    await floatT.release();

    const fixed = await ort.InferenceSession.create(linearUnet({ channels: C, height: h, width: w, k, m, batchDim: 1 }));
    expect(tensorMeta(fixed.inputMetadata)[0]).toMatchObject({ shape: [1, C, h, w] });
    await fixed.release();
  });
});

describe('synthetic slowUnet', () => {
  const [C, h, w, k] = [4, 8, 8, 0.5];

  it.each([1, 3])('computes eps = k*x exactly at batch %i (small work knob)', async (n) => {
    const session = await ort.InferenceSession.create(slowUnet({ channels: C, height: h, width: w, k, size: 64, repeats: 3 }));
    expect(session.inputNames).toEqual(['x', 't']);
    expect(tensorMeta(session.outputMetadata)).toEqual([{ name: 'eps', type: 'float32', shape: ['N', C, h, w] }]);
    const { xData, feeds } = unetFeeds(n, C, h, w);
    const out = await session.run(feeds);
    expect(out['eps'].dims).toEqual([n, C, h, w]);
    expect(Array.from(out['eps'].data as Float32Array)).toEqual(Array.from(xData, (x) => Math.fround(k * x)));
    await session.release();
  });

  it('does not leak NaN/Inf from the hidden work into other elements', async () => {
    const session = await ort.InferenceSession.create(slowUnet({ channels: C, height: h, width: w, k, size: 32, repeats: 2 }));
    for (const special of [NaN, Infinity, -Infinity, 3e38]) {
      const { xData, feeds } = unetFeeds(1, C, h, w);
      xData[5] = special;
      xData[6] = special;
      const eps = (await session.run(feeds))['eps'].data as Float32Array;
      const ref = Array.from(xData, (x) => Math.fround(k * x));
      expect(Array.from(eps)).toEqual(ref); // toEqual treats NaN as equal to NaN
    }
    await session.release();
  });

  it('maps targetMs to repeats and honours an explicit repeats', () => {
    expect(slowUnetRepeats({ repeats: 7 })).toBe(7);
    expect(slowUnetRepeats({ targetMs: 1000 })).toBe(Math.ceil(1000 / SLOW_UNET_MS_PER_REPEAT));
    // Cost grows with size^3.
    expect(slowUnetRepeats({ targetMs: 1000, size: 2 * SLOW_UNET_DEFAULT_SIZE })).toBe(Math.ceil(1000 / (8 * SLOW_UNET_MS_PER_REPEAT)));
  });

  it('takes a few hundred ms per single-sample run with the default knobs', async () => {
    const repeats = slowUnetRepeats({});
    const session = await ort.InferenceSession.create(slowUnet({ channels: C, height: h, width: w, k }));
    const { xData, feeds } = unetFeeds(1, C, h, w);
    await session.run(feeds); // warm-up
    const times: number[] = [];
    let eps: Float32Array = new Float32Array();
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      eps = (await session.run(feeds))['eps'].data as Float32Array;
      times.push(performance.now() - t0);
    }
    console.log(`slowUnet size=${SLOW_UNET_DEFAULT_SIZE} repeats=${repeats}: batch-1 run ms ${times.map((t) => t.toFixed(1)).join(', ')}`);
    expect(Array.from(eps)).toEqual(Array.from(xData, (x) => Math.fround(k * x)));
    await session.release();
  });
});
