/**
 * invad quantize (issue 16): the static int8 QDQ UNet on tiny bundles. A small convolutional
 * UNet (Conv, a Gemm time embedding, attention-like MatMuls, SiLU) stands in for the real one.
 * Checks: score parity of int8 against fp32, the manifest's precision, the recalibration on
 * normals, and that ORT's optimized graph runs the quantized convolutions as integer kernels.
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { packageRoot } from '../src/util/package-info';
import { Detector } from '../src/runtime/detector';
import * as ort from 'onnxruntime-node';
import { bundlePrecision, validateManifest, type Manifest } from '../src/runtime/bundle/manifest';
import { writeBundle } from '../src/fit/write-bundle';
import { FeatureExtractor } from '../src/fit/features';
import { activationParams, activationRanges, optimizedNodeTypes, planQuantization, quantizeBundle, quantizeQdq } from '../src/fit/quantize';
import { whichEngine } from '../src/tools/bench/engine-choice';
import {
  DataType,
  attr,
  decodeModel,
  encodeModel,
  floatScalar,
  floatTensor,
  int64Vector,
  makeGraph,
  makeModel,
  makeNode,
  valueInfo,
} from '../src/fit/onnx/proto';
import { mulberry32 } from '../src/util/prng';
import { writeNpy } from '../src/util/npy';
import { TINY, tempDir, tinyContents } from './helpers/bundles';
import { pngOf, randomRaw } from './helpers/images';

/** Relative tolerance of int8 against fp32 score parts (SP and NLL) on the tiny conv UNet. */
const PARITY_REL = 0.05;

/** `outputConv`: eps is the last Conv's output itself (as in the real UNet) instead of k*x + it. */
function convUnet(c: number, side: number, hidden = 8, seed = 3, outputConv = false): Uint8Array {
  const rand = mulberry32(seed);
  const uni = (n: number, a: number) => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * a);
  const hw = side * side;
  const nodes = [
    makeNode('Conv', ['x', 'w1', 'b1'], ['h1'], { attributes: [attr.ints('kernel_shape', [3, 3]), attr.ints('pads', [1, 1, 1, 1])] }),
    makeNode('Cast', ['t'], ['t_f'], { attributes: [attr.int('to', DataType.FLOAT)] }),
    makeNode('Reshape', ['t_f', 'shape_n1'], ['t2']),
    makeNode('Mul', ['t2', 'milli'], ['t3']),
    makeNode('Gemm', ['t3', 'we', 'be'], ['e'], { attributes: [attr.int('transB', 1)] }),
    makeNode('Reshape', ['e', 'shape_nh11'], ['e4']),
    makeNode('Add', ['h1', 'e4'], ['h2']),
    makeNode('Sigmoid', ['h2'], ['s2']),
    makeNode('Mul', ['h2', 's2'], ['h3']),
    makeNode('Reshape', ['h3', 'shape_nhp'], ['hr']),
    makeNode('Transpose', ['hr'], ['ht'], { attributes: [attr.ints('perm', [0, 2, 1])] }),
    makeNode('MatMul', ['hr', 'ht'], ['att']),
    makeNode('Mul', ['att', 'att_scale'], ['att2']),
    makeNode('Softmax', ['att2'], ['p'], { attributes: [attr.int('axis', -1)] }),
    makeNode('MatMul', ['p', 'hr'], ['o']),
    makeNode('Transpose', ['o'], ['ot'], { attributes: [attr.ints('perm', [0, 2, 1])] }),
    makeNode('MatMul', ['ot', 'wm'], ['om']),
    makeNode('Transpose', ['om'], ['omt'], { attributes: [attr.ints('perm', [0, 2, 1])] }),
    makeNode('Reshape', ['omt', 'shape_nhss'], ['o4']),
    makeNode('Add', ['h3', 'o4'], ['h4']),
    makeNode('Conv', ['h4', 'w2', 'b2'], ['h5'], { attributes: [attr.ints('kernel_shape', [3, 3]), attr.ints('pads', [1, 1, 1, 1])] }),
    makeNode('Mul', ['x', 'k'], ['kx']),
    makeNode('Add', ['kx', 'h5'], ['eps']),
  ];
  if (outputConv) {
    nodes.splice(-2, 2);
    nodes[nodes.length - 1].output = ['eps'];
  }
  const graph = makeGraph({
    name: 'conv_unet',
    inputs: [valueInfo('x', DataType.FLOAT, ['N', c, side, side]), valueInfo('t', DataType.INT64, ['N'])],
    outputs: [valueInfo('eps', DataType.FLOAT, ['N', c, side, side])],
    initializers: [
      floatTensor('w1', [hidden, c, 3, 3], uni(hidden * c * 9, 1 / Math.sqrt(c * 9))),
      floatTensor('b1', [hidden], uni(hidden, 0.1)),
      floatTensor('we', [hidden, 1], uni(hidden, 1)),
      floatTensor('be', [hidden], uni(hidden, 0.1)),
      floatTensor('wm', [hidden, hidden], uni(hidden * hidden, 1 / Math.sqrt(hidden))),
      floatTensor('w2', [c, hidden, 3, 3], uni(c * hidden * 9, 0.3 / Math.sqrt(hidden * 9))),
      floatTensor('b2', [c], uni(c, 0.05)),
      floatScalar('milli', 1e-3),
      floatScalar('att_scale', 1 / Math.sqrt(hw)),
      floatScalar('k', 0.7),
      int64Vector('shape_n1', [-1, 1]),
      int64Vector('shape_nh11', [-1, hidden, 1, 1]),
      int64Vector('shape_nhp', [-1, hidden, hw]),
      int64Vector('shape_nhss', [-1, hidden, side, side]),
    ],
    nodes,
  });
  return encodeModel(makeModel(graph, { docString: 'invad test conv unet' }));
}

async function writeImages(dir: string, count: number, seed: number): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    const file = join(dir, `${i}.png`);
    writeFileSync(file, await pngOf(randomRaw(32, 32, 3, seed + i)));
    files.push(file);
  }
  return files;
}

async function parts(bundle: string, files: string[], steps: number) {
  const det = await Detector.load(bundle, { scoreDefinition: 'sp' });
  try {
    return (await det.scoreBatch(files, { steps })).map((r) => r.components);
  } finally {
    await det.dispose();
  }
}

describe('invad quantize: static int8 QDQ UNet', () => {
  const side = TINY.inputSize / TINY.stride;
  let tmp: ReturnType<typeof tempDir>;
  let fp32: string;
  let train: string[];
  let held: string[];
  let unseen: string[];

  beforeAll(async () => {
    tmp = tempDir('invad-quantize-');
    fp32 = join(tmp.dir, 'fp32');
    await writeBundle(fp32, tinyContents(TINY, { unet: { bytes: convUnet(TINY.channels, side) } }));
    train = await writeImages(join(tmp.dir, 'train'), 24, 100);
    held = await writeImages(join(tmp.dir, 'held'), 12, 200);
    unseen = await writeImages(join(tmp.dir, 'test'), 8, 300);
  });
  afterAll(() => tmp.cleanup());

  /** The int8 bundle from the normals, made once (by whichever test runs first). */
  let int8: ReturnType<typeof quantizeBundle> | undefined;
  const int8Bundle = () => (int8 ??= quantizeBundle(fp32, join(tmp.dir, 'int8'), { normals: train, calibrationNormals: held, steps: [2, 3] }));

  test('activation parameters follow ORT: the range holds 0, uint8 asymmetric, int8 symmetric', () => {
    const q = activationParams({ min: 0.5, max: 2.55 }, 'uint8');
    expect(q.scale).toBeCloseTo(0.01, 12);
    expect(q.zeroPoint).toBe(0);
    const p = activationParams({ min: -1, max: 3 }, 'uint8');
    expect(p.scale).toBeCloseTo(4 / 255, 12);
    expect(p.zeroPoint).toBe(64);
    const s = activationParams({ min: -2.54, max: 1 }, 'int8');
    expect(s.scale).toBeCloseTo(0.02, 12);
    expect(s.zeroPoint).toBe(0);
    expect(activationParams({ min: 0, max: 0 }, 'uint8')).toEqual({ scale: 1, zeroPoint: 0 });
  });

  test('from normals: int8 scores within tolerance of fp32, precision int8, calibrated again, integer kernels in ORT', async () => {
    const r = await int8Bundle();
    const out = r.out;
    // The manifest says int8 and still validates; the fp32 bundle reads as fp32.
    const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(m.precision).toBe('int8');
    expect(bundlePrecision(m)).toBe('int8');
    expect(validateManifest(m)).toBe(true);
    expect(bundlePrecision(JSON.parse(readFileSync(join(fp32, 'manifest.json'), 'utf8')))).toBe('fp32');
    expect(r.summary.quantizedNodes).toEqual({ Conv: 2, Gemm: 1, MatMul: 3 });
    expect(r.calibrationSamples).toBe(24);

    // Calibration redone on the held-out normals with the int8 UNet.
    expect(r.recalibrated).toBe(true);
    expect(m.calibration.status).toBe('calibrated');
    expect(m.calibration.samples).toBe(held.length);
    expect(m.calibration.bySteps.map((s: { steps: number }) => s.steps)).toEqual([3]);
    expect(readFileSync(join(out, 'calibration.json')).length).toBeGreaterThan(0);

    // ORT fuses the QDQ Conv into integer kernels; fp32 has none.
    process.stderr.write(`ORT optimized node types, fp32: ${JSON.stringify(r.nodeTypes.fp32.counts)}\nint8: ${JSON.stringify(r.nodeTypes.int8.counts)}\n`);
    expect(r.nodeTypes.fp32.integer).toBe(0);
    const convs =
      (r.nodeTypes.int8.counts['QLinearConv'] ?? 0) +
      (r.nodeTypes.int8.counts['com.microsoft:QLinearConv'] ?? 0) +
      (r.nodeTypes.int8.counts['com.microsoft:NhwcQLinearConv'] ?? 0);
    expect(convs).toBe(2);
    expect(r.nodeTypes.int8.integer).toBeGreaterThanOrEqual(3);
    const again = await optimizedNodeTypes(readFileSync(join(out, 'unet.onnx')));
    // Fresh names only: the graph's own 'att_scale' initializer sits next to the activation 'att'.
    const names = (decodeModel(readFileSync(join(out, 'unet.onnx'))).graph?.initializer ?? []).map((t) => t.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toContain('att_scale_1');
    expect(again.counts).toEqual(r.nodeTypes.int8.counts);

    // Raw score parts of unseen images: int8 against fp32.
    for (const steps of [2, 3]) {
      const [a, b] = [await parts(fp32, unseen, steps), await parts(out, unseen, steps)];
      const rel = (x: number, y: number) => Math.abs(x - y) / Math.max(Math.abs(x), 1e-9);
      const worst = Math.max(...a.map((c, i) => Math.max(rel(c.spatialRange, b[i].spatialRange), rel(c.nll, b[i].nll))));
      process.stderr.write(`int8 vs fp32, S = ${steps}: worst relative difference of SP/NLL ${worst.toExponential(2)} (tolerance ${PARITY_REL})\n`);
      expect(worst).toBeLessThan(PARITY_REL);
      expect(worst).toBeGreaterThan(0); // it really is another model
    }
  });

  test('both engines run the int8 UNet alike, and --which-engine times them side by side', async () => {
    const { out } = await int8Bundle();
    const [nat, node] = await Promise.all(
      (['native', 'onnxruntime-node'] as const).map(async (engine) => {
        const det = await Detector.load(out, { scoreDefinition: 'sp', engine });
        try {
          return (await det.scoreBatch(unseen, { steps: 3 })).map((r) => r.components);
        } finally {
          await det.dispose();
        }
      }),
    );
    nat.forEach((c, i) => {
      expect(c.nll).toBeCloseTo(node[i].nll, 2);
      expect(Math.abs(c.spatialRange - node[i].spatialRange)).toBeLessThan(1e-3 * Math.max(1, Math.abs(c.spatialRange)));
    });
    const r = await whichEngine({ model: out, batches: [1, 2], steps: [2], reps: 2, warmup: 1 });
    expect(r.precision).toBe('int8');
    expect(r.rows.map((x) => [x.batch, x.steps])).toEqual([
      [1, 2],
      [2, 2],
    ]);
    expect(r.rows.every((x) => Number.isFinite(x.ratio) && x.ratio > 0 && x.nativeMs.n === 2)).toBe(true);
    expect(['native', 'onnxruntime-node']).toContain(r.faster);
    expect(r.loadAverageBefore).toHaveLength(3);
    // --against: the fp32 bundle timed in the same alternation.
    const both = await whichEngine({ model: fp32, against: out, batches: [1], steps: [2], reps: 2, warmup: 1 });
    expect(both.againstPrecision).toBe('int8');
    expect(both.rows[0].against!.speedup).toBeGreaterThan(0);
  });

  test('from the training features (train.npy): ranges without images; without normals the fp32 calibration is kept, with a warning', async () => {
    const ex = await FeatureExtractor.open(join(fp32, 'backbone.onnx'), {
      input: { width: TINY.inputSize, height: TINY.inputSize, resizeKernel: 'linear' },
      features: { channels: TINY.channels, height: side, width: side },
    });
    const f = await ex.extract(train).finally(() => ex.close());
    const npy = join(tmp.dir, 'train.npy');
    await writeNpy(npy, f.features, f.shape);
    const out = join(tmp.dir, 'int8-features');
    const r = await quantizeBundle(fp32, out, { features: npy, maxSamples: 16, steps: [3], method: 'percentile', percentile: 99.9 });
    expect(r.calibrationSamples).toBe(16);
    expect(r.recalibrated).toBe(false);
    expect(r.warnings.join(' ')).toMatch(/recalibrate/);
    const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(m.precision).toBe('int8');
    expect(m.quantization.ranges).toBe('percentile 99.9');
    expect(m.calibration.warnings.join(' ')).toMatch(/fp32 UNet/);
    // It loads and scores.
    expect((await parts(out, unseen.slice(0, 2), 3)).every((c) => Number.isFinite(c.nll))).toBe(true);
    // An already quantized bundle is refused; a manifest with another precision does not validate.
    await expect(quantizeBundle(out, join(tmp.dir, 'twice'), { features: npy })).rejects.toMatchObject({ argument: 'model' });
    expect(validateManifest({ ...m, precision: 'int4' })).toBe(false);
  });

  test('the CLI: invad quantize --normal writes a recalibrated int8 bundle and prints the node types; no calibration data is a usage error', async () => {
    const cli = join(packageRoot(), 'dist', 'src', 'tools', 'cli', 'main.js');
    const run = (args: string[]) =>
      promisify(execFile)(process.execPath, [cli, ...args]).then(
        (r) => ({ ...r, code: 0 }),
        (e: { stdout: string; stderr: string; code: number }) => e,
      );
    const out = join(tmp.dir, 'int8-cli');
    const r = await run(['quantize', '--model', fp32, '--out', out, '--normal', join(tmp.dir, 'train'), '--calibrate', join(tmp.dir, 'held'), '--steps', '3']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout.trim()) as { precision: string; recalibrated: boolean; ortNodeTypes: { int8: Record<string, number> } };
    expect(report.precision).toBe('int8');
    expect(report.recalibrated).toBe(true);
    expect(report.ortNodeTypes.int8['com.microsoft:QLinearConv'] ?? report.ortNodeTypes.int8['QLinearConv']).toBe(2);
    expect(r.stderr).toMatch(/integer nodes/);
    const bad = await run(['quantize', '--model', fp32, '--out', join(tmp.dir, 'never')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--features/);
  });

  test('quantizeOutput: the output convolution becomes an integer kernel too, and the output keeps its name', async () => {
    const bytes = convUnet(TINY.channels, side, 8, 3, true);
    const model = decodeModel(bytes);
    const m = JSON.parse(readFileSync(join(fp32, 'manifest.json'), 'utf8')) as Manifest;
    const x0 = Float32Array.from({ length: 8 * TINY.channels * side * side }, (_, i) => Math.sin(i));
    const counts: Record<string, number> = {};
    for (const quantizeOutput of [false, true]) {
      const plan = planQuantization(model, { quantizeOutput });
      const ranges = await activationRanges(model, plan, m, x0, 8, { steps: [3] });
      const q = encodeModel(quantizeQdq(model, plan, ranges).model);
      const types = await optimizedNodeTypes(q);
      counts[String(quantizeOutput)] = (types.counts['com.microsoft:QLinearConv'] ?? 0) + (types.counts['QLinearConv'] ?? 0);
      expect(decodeModel(q).graph?.output?.map((o) => o.name)).toEqual(['eps']);
      // It runs and stays near fp32.
      const feeds = { x: new ort.Tensor('float32', x0.slice(0, 96), [1, TINY.channels, side, side]), t: new ort.Tensor('int64', BigInt64Array.of(500n), [1]) };
      const [a, b] = [await ort.InferenceSession.create(bytes), await ort.InferenceSession.create(q)];
      const [ea, eb] = [(await a.run(feeds)).eps.data as Float32Array, (await b.run(feeds)).eps.data as Float32Array];
      const rel = Math.sqrt(ea.reduce((acc, v, i) => acc + (v - eb[i]) ** 2, 0) / ea.reduce((acc, v) => acc + v * v, 0));
      expect(rel).toBeLessThan(0.1);
      await Promise.all([a.release(), b.release()]);
    }
    expect(counts).toEqual({ false: 1, true: 2 });
  });
});
