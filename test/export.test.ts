/**
 * `invad export`: the whole pipeline of one S as one ONNX graph. The graph, run with
 * onnxruntime-node, must give Detector's scores, decisions and feature-grid maps on the same
 * uint8 pixels (1e-4 relative); the opset upgrade must keep every rewritten operator's meaning;
 * the Triton configuration must match a golden file and the graph's own inputs and outputs.
 *
 * The test bundle is built to exercise what a real one has: a backbone at opset 12 (the ONNX
 * zoo's MobileNetV2 is) with operators whose meaning changed at 13, and a UNet at opset 17 with
 * Constant nodes, an If subgraph reading an outer tensor, a large weight, and a use of t.
 */
import { execFile } from 'node:child_process';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { calibrateBundle, fitBundleLatents } from '../src/fit/calibrate-bundle';
import {
  attr,
  DataType,
  decodeModel,
  encodeModel,
  floatScalar,
  floatTensor,
  int64Vector,
  makeGraph,
  makeModel,
  makeNode,
  onnx,
  valueInfo,
} from '../src/fit/onnx/proto';
import { BACKBONE_PRESETS } from '../src/fit/backbones';
import { buildFeatureBackbone } from '../src/fit/onnx/backbone';
import { writeBundle } from '../src/fit/write-bundle';
import {
  buildExport,
  compareWithDetector,
  exportPipeline,
  PARITY_TOLERANCE,
  parityImages,
  relativeDifference,
  runExported,
  SCORE_FLOOR,
  tritonConfig,
  unsupportedDefinition,
} from '../src/deploy/export';
import { upgradeOpset } from '../src/deploy/export/opset';
import { Detector } from '../src/runtime/detector';
import { sha256Bytes } from '../src/runtime/bundle/hash';
import type { Manifest } from '../src/runtime/bundle/manifest';
import type { RawImage } from '../src/runtime/preprocess';
import {
  binaryOutputChoice,
  decodeInferenceRequest,
  encodeInferenceResponse,
  INFERENCE_HEADER_CONTENT_LENGTH,
  type Tensor,
} from '../src/runtime/remote/kserve-codec';
import { RemoteDetector } from '../src/runtime/remote/remote-detector';
import { modelTensors, OUTPUT } from '../src/runtime/remote/tensor-spec';
import { SCORE_DEFINITIONS } from '../src/runtime/scores';
import { ExportError } from '../src/util/errors';
import { packageRoot } from '../src/util/package-info';
import { mulberry32 } from '../src/util/prng';
import { tempDir, TINY, writeTinyBundle } from './helpers/bundles';
import { hasShared, MOBILENET } from './helpers/requirements';

const SIZE = 48;
const STRIDE = 8;
const C = 8;
const SIDE = SIZE / STRIDE;
const P = SIDE * SIDE;
const STEPS = [2, 3, 5];

const rand = mulberry32(11);
const weights = (n: number, scale: number) => Float32Array.from({ length: n }, () => (rand() - 0.5) * scale);

/**
 * image [N,3,48,48] -> features [N,8,6,6] at opset 12: a strided Conv, then Split with a `split`
 * attribute, ReduceSum, Squeeze and Unsqueeze with `axes` attributes, and a Softmax on the
 * 4-D tensor at axis 1 (before opset 13 that is a softmax over all of C*h*w).
 */
function backboneOpset12(): Uint8Array {
  const graph = makeGraph({
    name: 'backbone12',
    inputs: [valueInfo('image', DataType.FLOAT, ['N', 3, SIZE, SIZE])],
    outputs: [valueInfo('features', DataType.FLOAT, ['N', C, SIDE, SIDE])],
    initializers: [
      floatTensor('conv.w', [C, 3, STRIDE, STRIDE], weights(C * 3 * STRIDE * STRIDE, 0.2)),
      floatTensor('conv.b', [C], weights(C, 0.1)),
      floatScalar('soft_scale', 40),
      floatScalar('sum_scale', 0.1),
    ],
    nodes: [
      makeNode('Conv', ['image', 'conv.w', 'conv.b'], ['y'], {
        attributes: [attr.ints('kernel_shape', [STRIDE, STRIDE]), attr.ints('strides', [STRIDE, STRIDE])],
      }),
      makeNode('Split', ['y'], ['y_a', 'y_b'], { attributes: [attr.int('axis', 1), attr.ints('split', [3, C - 3])] }),
      makeNode('Concat', ['y_b', 'y_a'], ['y_swapped'], { attributes: [attr.int('axis', 1)] }),
      makeNode('ReduceSum', ['y'], ['y_sum'], { attributes: [attr.ints('axes', [1]), attr.int('keepdims', 1)] }),
      makeNode('Squeeze', ['y_sum'], ['y_sum_3d'], { attributes: [attr.ints('axes', [1])] }),
      makeNode('Unsqueeze', ['y_sum_3d'], ['y_sum_4d'], { attributes: [attr.ints('axes', [1])] }),
      makeNode('Mul', ['y_sum_4d', 'sum_scale'], ['y_sum_scaled']),
      makeNode('Softmax', ['y'], ['y_soft'], { attributes: [attr.int('axis', 1)] }),
      makeNode('Mul', ['y_soft', 'soft_scale'], ['y_soft_scaled']),
      makeNode('Add', ['y_swapped', 'y_sum_scaled'], ['partial']),
      makeNode('Add', ['partial', 'y_soft_scaled'], ['features']),
    ],
  });
  return encodeModel(makeModel(graph, { opset: 12, irVersion: 7 }));
}

/**
 * eps = 0.5 tanh(conv3x3(x) + 0.01 * (x_flat @ W)) + If(true: tanh(pre), else: pre) * 0.1 + 1e-4 t,
 * at opset 17, with its small constants as Constant nodes and (when `bigWeight`) a
 * (C*h*w) x (C*h*w) weight W, 331 KB for the main test bundle.
 */
function unetOpset17(c: number, side: number, bigWeight: boolean): { bytes: Uint8Array; bigWeightBytes: number } {
  const flat = c * side * side;
  const constant = (name: string, t: onnx.TensorProto) => makeNode('Constant', [], [name], { attributes: [attr.tensor('value', t)] });
  const branch = (name: string, op: string) =>
    makeGraph({ name, inputs: [], outputs: [valueInfo(`${name}_out`, DataType.FLOAT)], nodes: [makeNode(op, ['pre'], [`${name}_out`])] });
  const mixing = bigWeight
    ? [
        constant('flat_shape', int64Vector('flat_shape', [-1, flat])),
        constant('x_shape', int64Vector('x_shape', [-1, c, side, side])),
        constant('mix', floatScalar('mix', 0.01)),
        makeNode('Reshape', ['x', 'flat_shape'], ['x_flat']),
        makeNode('MatMul', ['x_flat', 'W'], ['xw']),
        makeNode('Reshape', ['xw', 'x_shape'], ['xw_4d']),
        makeNode('Mul', ['xw_4d', 'mix'], ['xw_mixed']),
        makeNode('Add', ['conv', 'xw_mixed'], ['pre']),
      ]
    : [makeNode('Identity', ['conv'], ['pre'])];
  const graph = makeGraph({
    name: 'unet17',
    inputs: [valueInfo('x', DataType.FLOAT, ['N', c, side, side]), valueInfo('t', DataType.INT64, ['N'])],
    outputs: [valueInfo('eps', DataType.FLOAT, ['N', c, side, side])],
    initializers: [
      floatTensor('conv.w', [c, c, 3, 3], weights(c * c * 9, 0.3 / Math.sqrt(c / C))),
      ...(bigWeight ? [floatTensor('W', [flat, flat], weights(flat * flat, 0.1))] : []),
    ],
    nodes: [
      constant('half', floatScalar('half', 0.5)),
      constant('tenth', floatScalar('tenth', 0.1)),
      constant('m', floatScalar('m', 1e-4)),
      constant('t_shape', int64Vector('t_shape', [-1, 1, 1, 1])),
      constant('cond', onnx.TensorProto.create({ name: 'cond', dims: [], dataType: DataType.BOOL, int32Data: [1] })),
      makeNode('Conv', ['x', 'conv.w'], ['conv'], { attributes: [attr.ints('kernel_shape', [3, 3]), attr.ints('pads', [1, 1, 1, 1])] }),
      ...mixing,
      makeNode('Tanh', ['pre'], ['act']),
      makeNode('Mul', ['act', 'half'], ['main']),
      makeNode('If', ['cond'], ['branch'], {
        attributes: [graphAttr('then_branch', branch('then', 'Tanh')), graphAttr('else_branch', branch('else', 'Identity'))],
      }),
      makeNode('Mul', ['branch', 'tenth'], ['branch_scaled']),
      makeNode('Cast', ['t'], ['t_f'], { attributes: [attr.int('to', DataType.FLOAT)] }),
      makeNode('Reshape', ['t_f', 't_shape'], ['t_4d']),
      makeNode('Mul', ['t_4d', 'm'], ['mt']),
      makeNode('Add', ['main', 'branch_scaled'], ['main_branch']),
      makeNode('Add', ['main_branch', 'mt'], ['eps']),
    ],
  });
  return { bytes: encodeModel(makeModel(graph, { opset: 17 })), bigWeightBytes: bigWeight ? flat * flat * 4 : 0 };
}

function graphAttr(name: string, g: onnx.GraphProto): onnx.AttributeProto {
  return onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.GRAPH, g });
}

/** A textured part; `defect` adds a bright square. */
function part(seed: number, defect: boolean, size = SIZE): RawImage {
  const r = mulberry32(seed);
  const data = new Uint8Array(size * size * 3);
  const [cx, cy] = [8 + Math.floor(r() * (size - 20)), 8 + Math.floor(r() * (size - 20))];
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++)
      for (let c = 0; c < 3; c++) {
        let v = 120 + 30 * Math.sin(x / 3 + c) * Math.cos(y / 4) + 16 * (r() - 0.5);
        if (defect && Math.abs(x - cx) < 5 && Math.abs(y - cy) < 5) v = 250;
        data[(y * size + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
  return { data, width: size, height: size, channels: 3 };
}

/** `count` normal parts as PNG files, for fitting and calibrating a bundle. */
async function writeNormals(dir: string, count: number, size: number): Promise<string[]> {
  mkdirSync(dir);
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    const file = join(dir, `${i}.png`);
    const img = part(i, false, size);
    await sharp(Buffer.from(img.data), { raw: { width: size, height: size, channels: 3 } })
      .png()
      .toFile(file);
    files.push(file);
  }
  return files;
}

let tmp: ReturnType<typeof tempDir>;
let bundle: string;
let bigWeightBytes: number;
/** normal and defective parts plus noise: both decisions occur */
let images: RawImage[];

beforeAll(async () => {
  tmp = tempDir('invad-export-');
  const unet = unetOpset17(C, SIDE, true);
  bigWeightBytes = unet.bigWeightBytes;
  bundle = join(tmp.dir, 'model');
  await writeBundle(bundle, {
    input: { width: SIZE, height: SIZE, mean: [0.45, 0.5, 0.55], std: [0.2, 0.25, 0.3] },
    features: { channels: C, height: SIDE, width: SIDE },
    defaultSteps: 3,
    backbone: { bytes: backboneOpset12(), name: 'test-opset12' },
    unet: { bytes: unet.bytes },
  });
  const normals = await writeNormals(join(tmp.dir, 'normals'), 32, SIZE);
  await fitBundleLatents(bundle, normals.slice(0, 20), { steps: STEPS });
  await calibrateBundle(bundle, normals.slice(20), { steps: STEPS });
  images = [part(100, false), part(101, false), part(102, true), part(103, true), ...parityImages({ width: SIZE, height: SIZE }, 2, 5)];
});
afterAll(() => tmp?.cleanup());

describe('parity with Detector', () => {
  // The definitions of SP, NLL and the latent Gaussian; the graph refuses any other (unsupportedDefinition).
  const EXPORTABLE = ['sp', 'nll', 'combined', 'latent-gaussian'];

  test('the exportable definitions are exactly those the graph computes', () => {
    expect(SCORE_DEFINITIONS.filter((d) => unsupportedDefinition(d) === null)).toEqual(EXPORTABLE);
  });

  // Every S and every score definition: the same scores, parts, maps and decisions.
  for (const steps of STEPS) {
    for (const scoreDefinition of SCORE_DEFINITIONS) {
      if (!EXPORTABLE.includes(scoreDefinition)) {
        test(`S = ${steps}, ${scoreDefinition}: refused with an ExportError`, async () => {
          await expect(buildExport(bundle, { steps, scoreDefinition })).rejects.toMatchObject({ code: 'ERR_INVAD_EXPORT', file: 'manifest.json' });
        });
        continue;
      }
      test(`S = ${steps}, ${scoreDefinition}`, async () => {
        const built = await buildExport(bundle, { steps, scoreDefinition });
        const report = await compareWithDetector(bundle, built.bytes, images, { steps, scoreDefinition });
        expect(report.maxRelative.score).toBeLessThanOrEqual(PARITY_TOLERANCE);
        expect(report.maxRelative.spatialRange).toBeLessThanOrEqual(PARITY_TOLERANCE);
        expect(report.maxRelative.nll).toBeLessThanOrEqual(PARITY_TOLERANCE);
        expect(report.maxRelative.latentGaussian).toBeLessThanOrEqual(PARITY_TOLERANCE);
        expect(report.maxRelative.map).toBeLessThanOrEqual(PARITY_TOLERANCE);
        expect(report.decisionMismatches).toBe(0);
        expect(report.ok).toBe(true);
      });
    }
  }

  test('both decisions occur on the test images, and each agrees with Detector', async () => {
    const steps = 3;
    const det = await Detector.load(bundle, { steps, scoreDefinition: 'combined' });
    const session = await ort.InferenceSession.create((await buildExport(bundle, { steps, scoreDefinition: 'combined' })).bytes);
    try {
      const want = await det.scoreBatch(images);
      const got = await runExported(session, concat(images), images.length, { width: SIZE, height: SIZE });
      expect(new Set(want.map((r) => r.isAnomalous))).toEqual(new Set([true, false]));
      expect(got.isAnomalous).toEqual(want.map((r) => r.isAnomalous));
      // The graph's parts of each image, one by one, against Detector's (the report takes maxima).
      want.forEach((r, i) => {
        expect(relativeDifference(r.score, got.score[i])).toBeLessThanOrEqual(PARITY_TOLERANCE);
        expect(relativeDifference(r.components.nll, got.nll[i])).toBeLessThanOrEqual(PARITY_TOLERANCE);
      });
    } finally {
      await Promise.all([det.dispose(), session.release()]);
    }
  });

  test('dynamic batch: one image at a time gives what the whole batch gives', async () => {
    const session = await ort.InferenceSession.create((await buildExport(bundle, { steps: 2, scoreDefinition: 'latent-gaussian' })).bytes);
    try {
      expect(session.inputMetadata[0]).toMatchObject({ name: 'image', type: 'uint8', shape: ['N', SIZE, SIZE, 3] });
      const all = await runExported(session, concat(images), images.length, { width: SIZE, height: SIZE });
      for (let i = 0; i < images.length; i++) {
        const one = await runExported(session, images[i].data as Uint8Array, 1, { width: SIZE, height: SIZE });
        // ORT blocks its MatMuls by batch size, so the float32 rounding may differ a little.
        expect(relativeDifference(one.score[0], all.score[i])).toBeLessThanOrEqual(PARITY_TOLERANCE);
        expect(one.map).toHaveLength(P);
      }
    } finally {
      await session.release();
    }
  });

  test('scores near 0 are compared in absolute terms below SCORE_FLOOR; parts and maps relatively', () => {
    expect(relativeDifference(1e-6, 2e-6)).toBeCloseTo(0.5, 12);
    expect(relativeDifference(1e-6, 2e-6, SCORE_FLOOR)).toBeCloseTo(1e-6, 18);
    expect(relativeDifference(-300, -300.03, SCORE_FLOOR)).toBeCloseTo(0.03 / 300.03, 12);
    expect(relativeDifference(NaN, 1)).toBe(Infinity);
    expect(relativeDifference(NaN, NaN)).toBe(0);
  });

  test('the comparison itself catches a graph that disagrees (a changed threshold flips decisions)', async () => {
    const det = await Detector.load(bundle, { steps: 3, scoreDefinition: 'sp' });
    const results = await det.scoreBatch(images);
    await det.dispose();
    expect(results.some((r) => r.isAnomalous)).toBe(true);
    // A threshold above every score: the graph flags nothing, Detector flags some.
    const above = Math.max(...results.map((r) => r.score)) + 1;
    const built = await buildExport(bundle, { steps: 3, scoreDefinition: 'sp', threshold: above });
    const report = await compareWithDetector(bundle, built.bytes, images, { steps: 3, scoreDefinition: 'sp' });
    expect(report.decisionMismatches).toBeGreaterThan(0);
    expect(report.ok).toBe(false);
  });
});

function freshDir(name: string): string {
  const dir = join(tmp.dir, name);
  mkdirSync(dir);
  return dir;
}

function concat(list: readonly RawImage[]): Uint8Array {
  const out = new Uint8Array(list.reduce((n, img) => n + img.data.length, 0));
  let at = 0;
  for (const img of list) {
    out.set(img.data, at);
    at += img.data.length;
  }
  return out;
}

describe('the graph', () => {
  test('stores the UNet weights once, whatever S', async () => {
    const [s2, s5] = await Promise.all([buildExport(bundle, { steps: 2, scoreDefinition: 'sp' }), buildExport(bundle, { steps: 5, scoreDefinition: 'sp' })]);
    // Three more UNet calls add nodes, not a copy of the 331 KB weight.
    expect(s5.bytes.length - s2.bytes.length).toBeLessThan(bigWeightBytes / 10);
    expect(s2.bytes.length).toBeLessThan(s2.bundleModelBytes + 64 * 1024);
    const model = decodeModel(s5.bytes);
    const names = (model.graph?.initializer ?? []).map((t) => t.name);
    expect(names.filter((n) => n === 'unet/W')).toHaveLength(1);
    expect(names.filter((n) => n?.endsWith('/W'))).toEqual(['unet/W']);
    // The UNet's Constant nodes became shared weights too: no Constant node is left at the top level.
    expect((model.graph?.node ?? []).filter((n) => n.opType === 'Constant')).toEqual([]);
    expect((model.graph?.node ?? []).filter((n) => n.opType === 'If')).toHaveLength(5);
  });

  test("metadata: the manifest hash, S, the definition, the threshold and the input spec, under invad serve's names", async () => {
    const built = await buildExport(bundle, { steps: 5, scoreDefinition: 'latent-gaussian' });
    const meta = Object.fromEntries((decodeModel(built.bytes).metadataProps ?? []).map((p) => [p.key, p.value]));
    const manifest = JSON.parse(readFileSync(join(bundle, 'manifest.json'), 'utf8')) as Manifest;
    const threshold = manifest.calibration.bySteps!.find((s) => s.steps === 5)!.imageThresholds['latent-gaussian']!;
    expect(meta).toEqual({
      'invad.steps': '5',
      'invad.score_definition': 'latent-gaussian',
      'invad.calibrated': 'true',
      'invad.threshold': String(threshold),
      'invad.pixel_threshold': String(manifest.calibration.pixelThreshold),
      'invad.alpha': manifest.input.alpha,
      'invad.resize_kernel': manifest.input.resizeKernel,
      'invad.timesteps': '0,250,500,749,999',
      'invad.map': 'latentGaussian',
      'invad.manifest_sha256': sha256Bytes(readFileSync(join(bundle, 'manifest.json'))),
      'invad.input': JSON.stringify({ name: 'image', datatype: 'UINT8', layout: 'NHWC', channels: 'RGB', width: SIZE, height: SIZE }),
      'invad.features': JSON.stringify({ channels: C, height: SIDE, width: SIDE }),
      'invad.export_version': '1',
    });
    // The same, unprefixed, is what a client reads from Triton's configuration: the names invad serve's metadata uses.
    expect(Object.fromEntries(Object.entries(built.parameters).map(([k, v]) => [`invad.${k}`, v]))).toEqual(meta);
    expect(Number(built.parameters.threshold)).toBe(threshold);
    expect(built.opset).toBe(17);
    expect(built.tensors.outputs.map((t) => t.name)).toEqual(['score', 'is_anomalous', 'map', 'spatial_range', 'nll', 'latent_gaussian']);
  });

  test('without latent statistics at S there is no latent_gaussian output, and latent-gaussian is refused', async () => {
    const b = await writeTinyBundle(freshDir('tiny-1'));
    const built = await buildExport(b, { steps: 2, scoreDefinition: 'sp' });
    expect(built.tensors.outputs.map((t) => t.name)).not.toContain(OUTPUT.latentGaussian);
    await expect(buildExport(b, { steps: 2, scoreDefinition: 'latent-gaussian' })).rejects.toMatchObject({
      code: 'ERR_INVAD_INVALID_ARGUMENT',
      argument: 'options.steps',
    });
  });

  test('an uncalibrated bundle flags nothing finite, as Detector (no threshold)', async () => {
    const b = await writeTinyBundle(freshDir('tiny-2'));
    const built = await buildExport(b, { steps: TINY.steps });
    expect(built.threshold).toBeNull();
    expect(built.parameters).not.toHaveProperty('threshold');
    expect(built.parameters.calibrated).toBe('false');
    const report = await compareWithDetector(b, built.bytes, parityImages({ width: TINY.inputSize, height: TINY.inputSize }, 3), {
      steps: TINY.steps,
      scoreDefinition: 'combined',
    });
    expect(report.ok).toBe(true);
    const session = await ort.InferenceSession.create(built.bytes);
    const got = await runExported(session, concat(parityImages({ width: TINY.inputSize, height: TINY.inputSize }, 3)), 3, {
      width: TINY.inputSize,
      height: TINY.inputSize,
    });
    await session.release();
    expect(got.isAnomalous).toEqual([false, false, false]);
  });

  test('a UNet with a fixed batch size is refused with an ExportError naming the file', async () => {
    const b = await writeTinyBundle(freshDir('tiny-3'));
    const unet = decodeModel(readFileSync(join(b, 'unet.onnx')));
    unet.graph!.input![0].type!.tensorType!.shape!.dim![0] = { dimValue: 1 };
    writeFileSync(join(b, 'unet.onnx'), encodeModel(unet));
    const err = await buildExport(b, { verifyHashes: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExportError);
    expect(err).toMatchObject({ code: 'ERR_INVAD_EXPORT', file: 'unet.onnx' });
  });
});

(hasShared(MOBILENET) ? describe : describe.skip)('a real backbone: mobilenetv2-int8 (opset 12, uint8 QLinear ops of com.microsoft)', () => {
  test('S = 2: the graph gives what Detector gives, for combined and latent-gaussian', async () => {
    const preset = BACKBONE_PRESETS['mobilenetv2-int8'];
    const fb = await buildFeatureBackbone(readFileSync(MOBILENET), { taps: preset.taps, inputSize: preset.inputSize });
    const { channels, height } = fb.featureShape;
    const dir = join(freshDir('mobilenet'), 'model');
    await writeBundle(dir, {
      input: { ...preset.inputSize, mean: preset.mean, std: preset.std },
      features: fb.featureShape,
      defaultSteps: 2,
      backbone: { bytes: fb.bytes, name: 'mobilenetv2-int8', inputName: fb.inputName, outputName: fb.outputName },
      unet: { bytes: unetOpset17(channels, height, false).bytes },
    });
    const normals = await writeNormals(join(tmp.dir, 'mobilenet-normals'), 12, preset.inputSize.width);
    await fitBundleLatents(dir, normals.slice(0, 8), { steps: [2] });
    await calibrateBundle(dir, normals.slice(8), { steps: [2] });
    const parts = [part(300, false, 224), part(301, true, 224), part(302, true, 224)];
    for (const scoreDefinition of ['combined', 'latent-gaussian'] as const) {
      const built = await buildExport(dir, { steps: 2, scoreDefinition });
      expect(built.opset).toBe(17);
      const report = await compareWithDetector(dir, built.bytes, parts, { steps: 2, scoreDefinition });
      expect(report).toMatchObject({ ok: true, decisionMismatches: 0 });
    }
  });
});

describe('opset upgrade keeps each rewritten operator meaning what it meant', () => {
  /** One-node model at `opset`, run before and after the upgrade to `to` on the same input. */
  async function sameAfterUpgrade(node: onnx.NodeProto, inputShape: number[], outputs: string[], opset: number, to: number, extra: onnx.TensorProto[] = []) {
    const x = weights(
      inputShape.reduce((a, b) => a * b, 1),
      4,
    );
    const graph = makeGraph({
      name: 'g',
      inputs: [valueInfo('x', DataType.FLOAT, inputShape)],
      outputs: outputs.map((o) => valueInfo(o, DataType.FLOAT)),
      initializers: extra,
      nodes: [node],
    });
    const before = makeModel(graph, { opset, irVersion: 7 });
    const after = decodeModel(encodeModel(before));
    upgradeOpset(after, to, 'test.onnx');
    expect(after.opsetImport?.find((o) => (o.domain ?? '') === '')?.version).toBe(to);
    const run = async (m: onnx.IModelProto) => {
      const s = await ort.InferenceSession.create(encodeModel(m));
      const r = await s.run({ x: new ort.Tensor('float32', x, inputShape) });
      await s.release();
      return outputs.map((o) => ({ dims: r[o].dims, data: Array.from(r[o].data as Float32Array) }));
    };
    const [a, b] = [await run(before), await run(after)];
    expect(b).toEqual(a);
  }

  test.each([
    ['Softmax', 1],
    ['LogSoftmax', 2],
    ['Hardmax', -2],
  ])('%s at axis %d (12 -> 17)', async (op, axis) => {
    await sameAfterUpgrade(makeNode(op, ['x'], ['y'], { attributes: [attr.int('axis', axis)] }), [2, 3, 4, 5], ['y'], 12, 17);
  });

  test('Softmax with the default axis (12 -> 13)', async () => {
    await sameAfterUpgrade(makeNode('Softmax', ['x'], ['y']), [2, 3, 4], ['y'], 12, 13);
  });

  test('ReduceSum, Squeeze, Unsqueeze with axes attributes (12 -> 17)', async () => {
    await sameAfterUpgrade(
      makeNode('ReduceSum', ['x'], ['y'], { attributes: [attr.ints('axes', [1, 3]), attr.int('keepdims', 0)] }),
      [2, 3, 4, 5],
      ['y'],
      12,
      17,
    );
    await sameAfterUpgrade(makeNode('Squeeze', ['x'], ['y'], { attributes: [attr.ints('axes', [1])] }), [2, 1, 4], ['y'], 12, 17);
    await sameAfterUpgrade(makeNode('Unsqueeze', ['x'], ['y'], { attributes: [attr.ints('axes', [0, 3])] }), [2, 4], ['y'], 12, 17);
  });

  test('Split with a split attribute (12 -> 19), and without one (17 -> 18)', async () => {
    await sameAfterUpgrade(makeNode('Split', ['x'], ['a', 'b'], { attributes: [attr.int('axis', 1), attr.ints('split', [1, 3])] }), [2, 4], ['a', 'b'], 12, 19);
    await sameAfterUpgrade(makeNode('Split', ['x'], ['a', 'b'], { attributes: [attr.int('axis', 1)] }), [2, 4], ['a', 'b'], 17, 18);
  });

  test.each(['ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceSumSquare', 'ReduceL2', 'ReduceLogSumExp', 'ReduceProd'])(
    '%s with an axes attribute (17 -> 18)',
    async (op) => {
      await sameAfterUpgrade(makeNode(op, ['x'], ['y'], { attributes: [attr.ints('axes', [2]), attr.int('keepdims', 1)] }), [2, 3, 4], ['y'], 17, 18);
    },
  );

  test('Dropout with a ratio attribute (11 -> 13)', async () => {
    await sameAfterUpgrade(makeNode('Dropout', ['x'], ['y'], { attributes: [attr.float('ratio', 0.3)] }), [2, 3], ['y'], 11, 13);
  });

  test('refuses what it cannot convert', () => {
    const model = (opset: number, node: onnx.NodeProto) => makeModel(makeGraph({ name: 'g', inputs: [], outputs: [], nodes: [node] }), { opset });
    const relu = makeNode('Relu', ['x'], ['y']);
    expect(() => upgradeOpset(model(10, relu), 17, 'old.onnx')).toThrow(ExportError);
    expect(() => upgradeOpset(model(17, relu), 21, 'new.onnx')).toThrow(/up to opset 19/);
    expect(() => upgradeOpset(model(17, relu), 13, 'newer.onnx')).toThrow(/newer than the target/);
    const bnTraining = makeNode('BatchNormalization', ['x', 's', 'b', 'm', 'v'], ['y', 'rm', 'rv']);
    expect(() => upgradeOpset(model(12, bnTraining), 17, 'bn.onnx')).toThrow(/training mode/);
  });
});

describe('Triton model repository', () => {
  /** A fixed model description, so the golden files never depend on a bundle's timestamps. */
  const FIXED_TENSORS = modelTensors({ input: { width: 256, height: 256 }, features: { channels: 272, height: 16, width: 16 } } as Manifest, true);
  const PARAMETERS = { steps: '3', score_definition: 'latent-gaussian', threshold: '2.5', input: '{"name":"image","width":256}' };

  test.each([
    ['config.gpu-tensorrt-fp16.pbtxt', { tensorrtFp16: true }],
    ['config.cpu.pbtxt', { instanceKind: 'cpu' as const, maxBatchSize: 4, preferredBatchSizes: [1, 4], maxQueueDelayMicroseconds: 500, instanceCount: 2 }],
  ])('%s matches its golden file', (file, options) => {
    const golden = readFileSync(join(__dirname, 'fixtures', 'triton', file), 'utf8');
    expect(tritonConfig(FIXED_TENSORS, options, PARAMETERS)).toBe(golden);
  });

  test('refuses TensorRT on CPU instances and preferred sizes above the maximum', () => {
    expect(() => tritonConfig(FIXED_TENSORS, { instanceKind: 'cpu', tensorrtFp16: true })).toThrow(/TensorRT/);
    expect(() => tritonConfig(FIXED_TENSORS, { maxBatchSize: 4, preferredBatchSizes: [8] })).toThrow(/preferredBatchSizes/);
  });

  test('every input and output in config.pbtxt matches the exported graph: name, type and shape', async () => {
    const out = join(tmp.dir, 'triton');
    const result = await exportPipeline(bundle, {
      out,
      format: 'triton',
      steps: 2,
      scoreDefinition: 'latent-gaussian',
      triton: { tensorrtFp16: true },
      verifyImages: 2,
    });
    expect(result.parity?.ok).toBe(true);
    expect(result.files).toEqual([join(out, 'invad', '1', 'model.onnx'), join(out, 'invad', 'config.pbtxt')]);
    expect(statSync(result.files[0]).size).toBe(result.bytes.length);
    const config = parsePbtxt(readFileSync(result.files[1], 'utf8'));
    expect(config.platform).toBe('onnxruntime_onnx');
    expect(config.max_batch_size).toBe(8);
    const session = await ort.InferenceSession.create(readFileSync(result.files[0]));
    try {
      const declared = (list: PbtxtValue) =>
        (list as PbtxtMessage[]).map((t) => {
          // Triton's shape: the batch dimension, then dims (a [1] reshaped to [] is the batch alone).
          const dims = t.dims as number[];
          const reshaped = t.reshape !== undefined ? ((t.reshape as PbtxtMessage).shape as number[]) : dims;
          return { name: t.name, type: t.data_type, shape: ['N', ...reshaped] };
        });
      const TYPES: Record<string, string> = { uint8: 'TYPE_UINT8', float32: 'TYPE_FP32', bool: 'TYPE_BOOL' };
      const actual = (metas: readonly ort.InferenceSession.ValueMetadata[]) =>
        metas.map((m) => ({ name: m.name, type: m.isTensor ? TYPES[m.type] : 'not a tensor', shape: m.isTensor ? m.shape : [] }));
      expect(declared(config.input)).toEqual(actual(session.inputMetadata));
      expect(declared(config.output)).toEqual(actual(session.outputMetadata));
      expect(config.output).toHaveLength(6);
    } finally {
      await session.release();
    }
    // The TensorRT block, and the metadata as parameters a client can read from Triton.
    const accel = ((config.optimization as PbtxtMessage).execution_accelerators as PbtxtMessage).gpu_execution_accelerator as PbtxtMessage[];
    expect(accel[0]).toEqual({ name: 'tensorrt', parameters: { key: 'precision_mode', value: 'FP16' } });
    const params = Object.fromEntries((asList(config.parameters) as PbtxtMessage[]).map((p) => [p.key, (p.value as PbtxtMessage).string_value]));
    expect(params).toEqual(result.parameters);
  });

  test('--format onnx writes model.onnx only', async () => {
    const out = join(tmp.dir, 'plain');
    const result = await exportPipeline(bundle, { out, steps: 3, verifyImages: 0 });
    expect(result.files).toEqual([join(out, 'model.onnx')]);
    expect(result.parity).toBeNull();
    expect(existsSync(join(out, 'invad'))).toBe(false);
  });
});

describe('RemoteDetector against a Triton stand-in serving the exported repository', () => {
  /**
   * What Triton does with the repository, as far as a client sees it: model metadata from
   * config.pbtxt (no parameters; a batch-only output as [-1, 1]), the configuration with its
   * string parameters at /config, and infer runs model.onnx in ONNX Runtime, answering the
   * batch-only outputs as [N, 1] (the config's reshape).
   */
  async function startTritonStandIn(repo: string): Promise<{ url: string; close: () => Promise<void> }> {
    const config = parsePbtxt(readFileSync(join(repo, 'invad', 'config.pbtxt'), 'utf8'));
    const session = await ort.InferenceSession.create(readFileSync(join(repo, 'invad', '1', 'model.onnx')));
    const types: Record<string, string> = { TYPE_UINT8: 'UINT8', TYPE_FP32: 'FP32', TYPE_BOOL: 'BOOL' };
    const tensors = (list: PbtxtValue) => asList(list).map((v) => v as PbtxtMessage);
    const meta = (t: PbtxtMessage) => ({ name: t.name, datatype: types[t.data_type as string], shape: [-1, ...(t.dims as number[])] });
    const metadata = {
      name: 'invad',
      versions: ['1'],
      platform: config.platform,
      inputs: tensors(config.input).map(meta),
      outputs: tensors(config.output).map(meta),
    };
    const parameters = Object.fromEntries(tensors(config.parameters).map((p) => [p.key, { string_value: (p.value as PbtxtMessage).string_value }]));
    const reshaped = new Set(
      tensors(config.output)
        .filter((t) => t.reshape !== undefined)
        .map((t) => t.name as string),
    );
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        void (async () => {
          const json = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
          if (req.method === 'GET' && req.url === '/v2/models/invad') return json(200, metadata);
          if (req.method === 'GET' && req.url === '/v2/models/invad/config')
            return json(200, { name: 'invad', max_batch_size: config.max_batch_size, parameters });
          if (req.method !== 'POST' || req.url !== '/v2/models/invad/infer') return json(404, { error: 'not found' });
          const request = decodeInferenceRequest(Buffer.concat(chunks), req.headers[INFERENCE_HEADER_CONTENT_LENGTH.toLowerCase()]);
          const image = request.inputs[0];
          const result = await session.run({ image: new ort.Tensor('uint8', image.data as Uint8Array, [...image.shape]) });
          const outputs = session.outputNames.map((name): Tensor => {
            const t = result[name];
            const shape = reshaped.has(name) ? [...t.dims, 1] : [...t.dims];
            return { name, datatype: t.type === 'bool' ? 'BOOL' : 'FP32', shape, data: t.data as Float32Array };
          });
          const encoded = encodeInferenceResponse({ modelName: 'invad', modelVersion: '1', outputs }, { binaryData: binaryOutputChoice(request) });
          res.writeHead(200, encoded.headers).end(encoded.body);
        })();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      close: async () => {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
        await session.release();
      },
    };
  }

  test('the same scores, decisions and feature-grid maps as Detector, with no client option', async () => {
    const repo = join(tmp.dir, 'triton-stand-in');
    await exportPipeline(bundle, { out: repo, format: 'triton', steps: 3, scoreDefinition: 'latent-gaussian', verifyImages: 0 });
    const triton = await startTritonStandIn(repo);
    const remote = await RemoteDetector.connect(triton.url, { model: 'invad' });
    const det = await Detector.load(bundle, { steps: 3, scoreDefinition: 'latent-gaussian' });
    try {
      expect(remote.info()).toMatchObject({ steps: 3, scoreDefinition: 'latent-gaussian', calibrated: true, hasLatentGaussian: true, maxBatchSize: 8 });
      expect(remote.info().preprocessing.source).toBe('server');
      expect(remote.info().threshold).toBe(det.threshold);
      // Encoded images, at the model's size and larger: both sides decode and resize with Detector's code.
      const png = (img: RawImage) =>
        sharp(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: 3 } })
          .png()
          .toBuffer();
      const pngs = await Promise.all([part(25, false), part(26, false), part(401, true, 64), part(402, true, 64)].map(png));
      const [want, got] = await Promise.all([det.scoreBatch(pngs), remote.scoreBatch(pngs)]);
      expect(new Set(want.map((r) => r.isAnomalous))).toEqual(new Set([true, false]));
      want.forEach((r, i) => {
        expect(relativeDifference(r.score, got[i].score)).toBeLessThanOrEqual(PARITY_TOLERANCE);
        expect(got[i].isAnomalous).toBe(r.isAnomalous);
        const map = r.featureMaps.latentGaussian!;
        expect(got[i].map).toHaveLength(map.length);
        map.forEach((v, j) => expect(relativeDifference(v, got[i].map[j])).toBeLessThanOrEqual(PARITY_TOLERANCE));
      });
    } finally {
      await Promise.all([remote.dispose(), det.dispose(), triton.close()]);
    }
  });
});

describe('invad export (the command)', () => {
  const cli = join(packageRoot(), 'dist', 'src', 'tools', 'cli', 'main.js');
  const invad = (args: string[]) =>
    promisify(execFile)(process.execPath, [cli, 'export', ...args]).then(
      (r) => ({ ...r, code: 0 }),
      (e: { stdout: string; stderr: string; code: number }) => e,
    );

  test('writes a Triton repository for CPU instances after checking the graph against Detector', async () => {
    const out = join(tmp.dir, 'cli-triton');
    const res = await invad(['--model', bundle, '--steps', '3', '--out', out, '--format', 'triton', '--cpu', '--max-batch-size', '4', '--verify-images', '2']);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('checked against Detector on 2 test images');
    expect(res.stdout).toContain('image UINT8 [N,48,48,3]');
    const config = parsePbtxt(readFileSync(join(out, 'invad', 'config.pbtxt'), 'utf8'));
    expect(config.max_batch_size).toBe(4);
    expect((asList(config.instance_group)[0] as PbtxtMessage).kind).toBe('KIND_CPU');
    expect(config.optimization).toBeUndefined();
    expect(existsSync(join(out, 'invad', '1', 'model.onnx'))).toBe(true);
  });

  test('usage and setup errors end with exit code 2 and write nothing', async () => {
    const out = join(tmp.dir, 'cli-refused');
    const onnxWithTritonFlag = await invad(['--model', bundle, '--out', out, '--cpu']);
    expect(onnxWithTritonFlag.code).toBe(2);
    expect(onnxWithTritonFlag.stderr).toContain('--cpu applies to --format triton only');
    const both = await invad(['--model', bundle, '--out', out, '--format', 'triton', '--cpu', '--tensorrt-fp16']);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--tensorrt-fp16 needs GPU instances');
    const noStats = await invad(['--model', bundle, '--out', out, '--steps', '4', '--score', 'latent-gaussian']);
    expect(noStats.code).toBe(2);
    expect(noStats.stderr).toContain('ERR_INVAD_INVALID_ARGUMENT');
    expect(existsSync(out)).toBe(false);
  });
});

// ---------------------------------------------------------------- a small protobuf text-format reader

type PbtxtValue = string | number | boolean | PbtxtMessage | PbtxtValue[];
interface PbtxtMessage {
  [key: string]: PbtxtValue;
}

const asList = (v: PbtxtValue | undefined): PbtxtValue[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/**
 * Parses the protobuf text format config.pbtxt uses (messages, lists, enums, strings, numbers,
 * # comments). A field that repeats becomes a list.
 */
function parsePbtxt(text: string): PbtxtMessage {
  const tokens = text.replace(/#[^\n]*/g, '').match(/"(?:[^"\\]|\\.)*"|[{}[\]:,]|[^\s{}[\]:,"]+/g) ?? [];
  let i = 0;
  const value = (): PbtxtValue => {
    const tok = tokens[i++];
    if (tok === '{') return message('}');
    if (tok === '[') {
      const list: PbtxtValue[] = [];
      while (tokens[i] !== ']') {
        list.push(value());
        if (tokens[i] === ',') i++;
      }
      i++;
      return list;
    }
    if (tok.startsWith('"')) return JSON.parse(tok) as string;
    if (tok === 'true' || tok === 'false') return tok === 'true';
    return /^-?\d+(\.\d+)?$/.test(tok) ? Number(tok) : tok;
  };
  const message = (end: string | undefined): PbtxtMessage => {
    const msg: PbtxtMessage = {};
    while (i < tokens.length && tokens[i] !== end) {
      const key = tokens[i++];
      if (tokens[i] === ':') i++;
      const v = value();
      msg[key] = key in msg ? [...asList(msg[key]), v] : v;
      if (tokens[i] === ',') i++;
    }
    i++;
    return msg;
  };
  return message(undefined);
}
