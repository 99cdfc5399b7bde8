/**
 * Feature backbones by graph surgery (src/fit/onnx/backbone.ts), the presets
 * (src/fit/backbones.ts) and `invad backbone` (src/tools/cli/commands/backbone.ts).
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as ort from 'onnxruntime-node';
import { BACKBONE_PRESETS, modelSearchDirs, resolveBackboneModel } from '../src/fit/backbones';
import { backboneCommand } from '../src/tools/cli/commands/backbone';
import { InvalidArgumentError } from '../src/util/errors';
import { buildFeatureBackbone, listTapCandidates, nearestNames } from '../src/fit/onnx/backbone';
import {
  DataType,
  attr,
  decodeModel,
  encodeModel,
  floatTensor,
  int64Vector,
  makeGraph,
  makeModel,
  makeNode,
  opsetVersion,
  valueInfo,
  valueInfoShape,
} from '../src/fit/onnx/proto';
import { mulberry32 } from '../src/util/prng';
import { packageRoot } from '../src/util/package-info';
import { tempDir } from './helpers/bundles';
import { hasShared, MOBILENET } from './helpers/requirements';
const PYTHON = '/usr/bin/python3';

let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  tmp = tempDir('invad-backbone-');
});
afterAll(() => tmp.cleanup());

// ---------------------------------------------------------------- synthetic classifier

const SIDE = 32;
/** conv k3 s2 p1 + Relu, three times: 3 -> 4 -> 6 -> 8 channels at 16, 8, 4 px. */
const CONVS = [
  { cin: 3, cout: 4 },
  { cin: 4, cout: 6 },
  { cin: 6, cout: 8 },
];
const TAPS = ['relu1', 'relu2', 'relu3'];

/**
 * A small float classifier with a fixed batch of 1 (like many exported models):
 * image [1,3,32,32] -> 3 stride-2 convs -> GlobalAveragePool -> Reshape to [1,8]
 * (hard-coded batch) -> Gemm -> logits [1,10]. With `tapsAsOutputs` the graph
 * outputs the three Relu tensors instead: the reference for the taps.
 */
function syntheticClassifier(opts: { opset?: number; tapsAsOutputs?: boolean } = {}): Uint8Array {
  const rand = mulberry32(7);
  const r = (n: number, scale: number) => Float32Array.from({ length: n }, () => (rand() - 0.5) * scale);
  const inits = [];
  const nodes = [];
  let x = 'image';
  CONVS.forEach(({ cin, cout }, i) => {
    inits.push(floatTensor(`w${i + 1}`, [cout, cin, 3, 3], r(cout * cin * 9, 1)), floatTensor(`b${i + 1}`, [cout], r(cout, 0.5)));
    nodes.push(
      makeNode('Conv', [x, `w${i + 1}`, `b${i + 1}`], [`conv${i + 1}`], {
        attributes: [attr.ints('kernel_shape', [3, 3]), attr.ints('strides', [2, 2]), attr.ints('pads', [1, 1, 1, 1])],
      }),
      makeNode('Relu', [`conv${i + 1}`], [`relu${i + 1}`]),
    );
    x = `relu${i + 1}`;
  });
  inits.push(int64Vector('head_shape', [1, 8]), floatTensor('fc_w', [10, 8], r(80, 1)), floatTensor('fc_b', [10], r(10, 1)));
  nodes.push(
    makeNode('GlobalAveragePool', ['relu3'], ['pooled']),
    makeNode('Reshape', ['pooled', 'head_shape'], ['flat']),
    makeNode('Gemm', ['flat', 'fc_w', 'fc_b'], ['logits'], { attributes: [attr.int('transB', 1)] }),
  );
  const outputs = opts.tapsAsOutputs
    ? TAPS.map((t, i) => valueInfo(t, DataType.FLOAT, ['N', CONVS[i].cout, SIDE >> (i + 1), SIDE >> (i + 1)]))
    : [valueInfo('logits', DataType.FLOAT, [1, 10])];
  const graph = makeGraph({
    name: 'synthetic_classifier',
    inputs: [valueInfo('image', DataType.FLOAT, [opts.tapsAsOutputs ? 'N' : 1, 3, SIDE, SIDE])],
    outputs,
    initializers: inits,
    nodes,
  });
  return encodeModel(makeModel(graph, { opset: opts.opset ?? 17 }));
}

interface Nchw {
  data: Float32Array;
  c: number;
  h: number;
  w: number;
}

/** PyTorch F.interpolate(mode='bilinear', align_corners=False) of one sample [C,h,w] to [C,oh,ow]. */
function bilinearHalfPixel(x: Nchw, oh: number, ow: number): Float32Array {
  const out = new Float32Array(x.c * oh * ow);
  const src = (dst: number, inSize: number, outSize: number) => {
    const s = Math.max(0, ((dst + 0.5) * inSize) / outSize - 0.5);
    const i0 = Math.min(Math.floor(s), inSize - 1);
    const i1 = Math.min(i0 + 1, inSize - 1);
    return { i0, i1, l: s - i0 };
  };
  for (let c = 0; c < x.c; c++) {
    for (let oy = 0; oy < oh; oy++) {
      const y = src(oy, x.h, oh);
      for (let ox = 0; ox < ow; ox++) {
        const xx = src(ox, x.w, ow);
        const at = (yy: number, xi: number) => x.data[(c * x.h + yy) * x.w + xi];
        const top = at(y.i0, xx.i0) * (1 - xx.l) + at(y.i0, xx.i1) * xx.l;
        const bot = at(y.i1, xx.i0) * (1 - xx.l) + at(y.i1, xx.i1) * xx.l;
        out[(c * oh + oy) * ow + ox] = top * (1 - y.l) + bot * y.l;
      }
    }
  }
  return out;
}

/** Features of one sample computed outside the surgery: reference taps from ORT, resize + concat (+ norm) in TS. */
async function referenceFeatures(
  sample: Float32Array,
  grid: { height: number; width: number },
  norm?: { mean: Float32Array; std: Float32Array },
): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(syntheticClassifier({ tapsAsOutputs: true }));
  try {
    const out = await session.run({ image: new ort.Tensor('float32', sample, [1, 3, SIDE, SIDE]) });
    const parts = TAPS.map((t) => {
      const [, c, h, w] = out[t].dims.map(Number);
      const data = out[t].data as Float32Array;
      return h === grid.height && w === grid.width ? Float32Array.from(data) : bilinearHalfPixel({ data, c, h, w }, grid.height, grid.width);
    });
    const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let off = 0;
    for (const p of parts) {
      all.set(p, off);
      off += p.length;
    }
    if (norm) {
      const hw = grid.height * grid.width;
      for (let i = 0; i < all.length; i++) {
        const c = Math.floor(i / hw);
        all[i] = (all[i] - norm.mean[c]) / norm.std[c];
      }
    }
    return all;
  } finally {
    await session.release();
  }
}

function randomImages(n: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  return Float32Array.from({ length: n * 3 * SIDE * SIDE }, () => rand() * 4 - 2);
}

async function runFeatures(bytes: Uint8Array, input: string, x: Float32Array, dims: number[]): Promise<ort.Tensor> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const out = await session.run({ [input]: new ort.Tensor('float32', x, dims) });
    return out.features;
  } finally {
    await session.release();
  }
}

function expectClose(actual: Float32Array, expected: Float32Array, tol: number): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  expect(worst).toBeLessThanOrEqual(tol);
}

describe('buildFeatureBackbone on a synthetic float classifier', () => {
  const sampleSize = 3 * SIDE * SIDE;

  test.each([17, 11])('taps at strides 2, 4, 8 -> 18 x 4 x 4, equal to an ORT + TS reference at batch 1 and 3 (opset %i)', async (opset) => {
    const model = syntheticClassifier({ opset });
    const fb = await buildFeatureBackbone(model, { taps: TAPS, inputSize: { height: SIDE, width: SIDE } });
    expect(fb.featureShape).toEqual({ channels: 18, height: 4, width: 4 });
    expect(fb.taps.map((t) => [t.name, t.tensor, t.quantized, t.channels, t.height, t.width, t.stride])).toEqual([
      ['relu1', 'relu1', false, 4, 16, 16, 2],
      ['relu2', 'relu2', false, 6, 8, 8, 4],
      ['relu3', 'relu3', false, 8, 4, 4, 8],
    ]);

    // Head pruned, batch symbolic, declared output shape.
    const m = decodeModel(fb.bytes);
    const ops = m.graph!.node!.map((n) => n.opType);
    expect(ops).not.toContain('Gemm');
    expect(ops).not.toContain('GlobalAveragePool');
    expect(ops).not.toContain('Reshape');
    expect(ops.filter((o) => o === 'Resize')).toHaveLength(2); // relu3 is already 4x4
    const inits = m.graph!.initializer!.map((t) => t.name);
    for (const pruned of ['fc_w', 'fc_b', 'head_shape']) expect(inits).not.toContain(pruned);
    expect(valueInfoShape(m.graph!.input![0]).dims).toEqual(['N', 3, SIDE, SIDE]);
    expect(m.graph!.output!.map((o) => [o.name, valueInfoShape(o).dims])).toEqual([['features', ['N', 18, 4, 4]]]);
    const resize = m.graph!.node!.find((n) => n.opType === 'Resize')!;
    const attrs = Object.fromEntries(resize.attribute!.map((a) => [a.name, new TextDecoder().decode(a.s)]));
    expect(attrs).toMatchObject({ mode: 'linear', coordinate_transformation_mode: 'half_pixel' });
    expect(opsetVersion(m)).toBe(opset);

    const x = randomImages(3, 11);
    const one = await runFeatures(fb.bytes, 'image', x.slice(0, sampleSize), [1, 3, SIDE, SIDE]);
    const three = await runFeatures(fb.bytes, 'image', x, [3, 3, SIDE, SIDE]);
    expect(one.dims).toEqual([1, 18, 4, 4]);
    expect(three.dims).toEqual([3, 18, 4, 4]);
    const per = 18 * 16;
    for (let n = 0; n < 3; n++) {
      const ref = await referenceFeatures(x.slice(n * sampleSize, (n + 1) * sampleSize), { height: 4, width: 4 });
      expectClose((three.data as Float32Array).slice(n * per, (n + 1) * per), ref, 1e-5);
      if (n === 0) expectClose(one.data as Float32Array, ref, 1e-5);
    }
  });

  test('an explicit grid upsamples coarse taps like PyTorch (align_corners=False), and normalization is (f - mean) / std', async () => {
    const grid = { height: 6, width: 5 };
    const rand = mulberry32(3);
    const mean = Float32Array.from({ length: 18 }, () => rand() - 0.5);
    const std = Float32Array.from({ length: 18 }, () => 0.5 + rand());
    const fb = await buildFeatureBackbone(syntheticClassifier(), {
      taps: TAPS,
      inputSize: { height: SIDE, width: SIDE },
      grid,
      normalization: { mean, std },
      outputName: 'features',
    });
    expect(fb.featureShape).toEqual({ channels: 18, ...grid });
    const m = decodeModel(fb.bytes);
    const ops = m.graph!.node!.map((n) => n.opType);
    expect(ops.filter((o) => o === 'Resize')).toHaveLength(3);
    expect(ops.slice(-2)).toEqual(['Sub', 'Div']);
    const x = randomImages(2, 5);
    const out = await runFeatures(fb.bytes, 'image', x, [2, 3, SIDE, SIDE]);
    expect(out.dims).toEqual([2, 18, 6, 5]);
    const per = 18 * 30;
    for (let n = 0; n < 2; n++) {
      const ref = await referenceFeatures(x.slice(n * sampleSize, (n + 1) * sampleSize), grid, { mean, std });
      expectClose((out.data as Float32Array).slice(n * per, (n + 1) * per), ref, 1e-5);
    }
  });

  test('unknown taps are an InvalidArgumentError naming the nearest tensors', async () => {
    const model = syntheticClassifier();
    const err = await buildFeatureBackbone(model, { taps: ['relu1', 'relu9'], inputSize: { height: SIDE, width: SIDE } }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.argument).toBe('taps');
    expect(err.code).toBe('ERR_INVAD_INVALID_ARGUMENT');
    expect(err.message).toMatch(/^Unknown tap "relu9": nearest tensors are relu1, relu2, relu3, /);
    // Graph inputs and initializers are not taps.
    const init = await buildFeatureBackbone(model, { taps: ['w1'], inputSize: { height: SIDE, width: SIDE } }).catch((e) => e);
    expect(init).toBeInstanceOf(InvalidArgumentError);
    expect(init.message).toContain('"w1" is a graph input or initializer');
    expect(nearestNames('3399', ['401', '339_quantized', '339', '399', 'x'])).toEqual(['339', '339_quantized', '399', '401', 'x']);
  });

  test('other bad arguments are InvalidArgumentErrors', async () => {
    const model = syntheticClassifier();
    const size = { height: SIDE, width: SIDE };
    const cases: Array<[string, () => Promise<unknown>]> = [
      ['taps', () => buildFeatureBackbone(model, { taps: [], inputSize: size })],
      ['taps', () => buildFeatureBackbone(model, { taps: ['logits'], inputSize: size })], // rank 2, not a feature map
      ['taps', () => buildFeatureBackbone(model, { taps: ['relu1', 'relu1'], inputSize: size })],
      ['inputSize', () => buildFeatureBackbone(model, { taps: TAPS, inputSize: { height: 64, width: 64 } })], // input is fixed at 32
      ['inputName', () => buildFeatureBackbone(model, { taps: TAPS, inputSize: size, inputName: 'nope' })],
      [
        'normalization',
        () => buildFeatureBackbone(model, { taps: TAPS, inputSize: size, normalization: { mean: new Float32Array(3), std: new Float32Array(3).fill(1) } }),
      ],
      [
        'normalization',
        () => buildFeatureBackbone(model, { taps: TAPS, inputSize: size, normalization: { mean: new Float32Array(18), std: new Float32Array(18) } }),
      ],
      ['outputName', () => buildFeatureBackbone(model, { taps: TAPS, inputSize: size, outputName: 'relu2' })],
      ['model', () => buildFeatureBackbone(new Uint8Array([1, 2, 3, 4]), { taps: TAPS, inputSize: size })],
    ];
    for (const [argument, make] of cases) {
      const err = await make().then(
        () => null,
        (e) => e,
      );
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect(err.argument).toBe(argument);
    }
  });

  test('listTapCandidates: data tensors in graph order, no shape computations or initializers', () => {
    expect(listTapCandidates(syntheticClassifier())).toEqual(['conv1', 'relu1', 'conv2', 'relu2', 'conv3', 'relu3', 'pooled', 'flat', 'logits']);
  });
});

// ---------------------------------------------------------------- the CLI command

describe('invad backbone', () => {
  async function invadBackbone(args: string[]): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    let stdout = '';
    let stderr = '';
    const out = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((stdout += String(s)), true));
    const err = jest.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => ((stderr += String(s)), true));
    const saved = process.exitCode;
    process.exitCode = undefined;
    try {
      await backboneCommand().exitOverride().parseAsync(args, { from: 'user' });
      return { stdout, stderr, exitCode: Number(process.exitCode ?? 0) };
    } finally {
      process.exitCode = saved;
      out.mockRestore();
      err.mockRestore();
    }
  }

  test('writes the backbone and prints the tap table; --list prints candidates; errors are one line, exit code 2', async () => {
    const modelPath = join(tmp.dir, 'synthetic.onnx');
    writeFileSync(modelPath, syntheticClassifier());
    const outPath = join(tmp.dir, 'cli', 'backbone.onnx');
    const ok = await invadBackbone(['--model', modelPath, '--taps', 'relu1,relu2,relu3', '--input-size', '32', '--out', outPath]);
    expect(ok.stderr).toBe('');
    expect(ok.exitCode).toBe(0);
    expect(ok.stdout).toContain('features: 18 x 4 x 4');
    expect(ok.stdout).toMatch(/relu2\s+6\s+8x8\s+4/);
    const fb = decodeModel(readFileSync(outPath));
    expect(fb.graph!.output![0].name).toBe('features');

    const list = await invadBackbone(['--model', modelPath, '--input-size', '32', '--list']);
    expect(list.exitCode).toBe(0);
    expect(list.stdout).toMatch(/relu1\s+4\s+16x16\s+2/);
    expect(list.stdout).not.toContain('logits'); // rank 2

    const bad = await invadBackbone(['--model', modelPath, '--taps', 'relu7', '--input-size', '32', '--out', outPath]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/^invad backbone: Unknown tap "relu7": nearest tensors are relu1/);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);

    const missing = await invadBackbone(['--model', join(tmp.dir, 'nope.onnx'), '--taps', 'a', '--out', outPath]);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toContain('no such file');
    const preset = await invadBackbone(['--backbone-preset', 'resnet9000', '--out', outPath]);
    expect(preset.stderr).toContain('unknown preset "resnet9000"; presets are mobilenetv2-int8, efficientnet-b4');
  });

  test('--preset is a deprecated alias of --backbone-preset: one warning line on stderr', async () => {
    const modelPath = join(tmp.dir, 'synthetic-alias.onnx');
    writeFileSync(modelPath, syntheticClassifier());
    const outPath = join(tmp.dir, 'alias', 'backbone.onnx');
    const args = ['--model', modelPath, '--taps', 'relu1,relu2,relu3', '--input-size', '32', '--out', outPath];
    const old = await invadBackbone(['--preset', 'mobilenetv2-int8', ...args]);
    expect(old.exitCode).toBe(0);
    expect(old.stderr).toBe('invad backbone: warning: --preset is deprecated; use --backbone-preset\n');
    const current = await invadBackbone(['--backbone-preset', 'mobilenetv2-int8', ...args]);
    expect(current).toMatchObject({ exitCode: 0, stderr: '' });
    const both = await invadBackbone(['--backbone-preset', 'mobilenetv2-int8', '--preset', 'efficientnet-b4', ...args]);
    expect(both.exitCode).toBe(2);
    expect(both.stderr).toContain('disagree');
    expect(backboneCommand().helpInformation()).toContain('--backbone-preset');
    expect(backboneCommand().helpInformation()).not.toMatch(/^\s+--preset/m);
  });

  test("a preset's model file is looked for in $INVAD_MODELS_DIR, then ./models; the error lists where", async () => {
    const saved = process.env.INVAD_MODELS_DIR;
    const modelsDir = join(tmp.dir, 'models-env');
    const emptyDir = join(tmp.dir, 'models-empty');
    mkdirSync(modelsDir, { recursive: true });
    mkdirSync(emptyDir, { recursive: true });
    // A stand-in with the preset's file name; the taps and size are overridden to fit it.
    writeFileSync(join(modelsDir, BACKBONE_PRESETS['mobilenetv2-int8'].modelFile), syntheticClassifier());
    const outPath = join(tmp.dir, 'lookup', 'backbone.onnx');
    try {
      process.env.INVAD_MODELS_DIR = modelsDir;
      const found = await invadBackbone([
        '--backbone-preset',
        'mobilenetv2-int8',
        '--taps',
        'relu1,relu2,relu3',
        '--input-size',
        '32',
        '--out',
        outPath,
        '--json',
      ]);
      expect(found.exitCode).toBe(0);
      expect(JSON.parse(found.stdout).model).toBe(join(modelsDir, 'mobilenetv2-12-int8.onnx'));

      process.env.INVAD_MODELS_DIR = emptyDir;
      const missing = await invadBackbone(['--backbone-preset', 'mobilenetv2-int8', '--out', outPath]);
      expect(missing.exitCode).toBe(2);
      expect(missing.stderr.trim().split('\n')).toHaveLength(1);
      expect(missing.stderr).toContain(`${join(emptyDir, 'mobilenetv2-12-int8.onnx')} ($INVAD_MODELS_DIR)`);
      expect(missing.stderr).toContain(`${join(process.cwd(), 'models', 'mobilenetv2-12-int8.onnx')} (./models)`);
      expect(missing.stderr).toContain('--model <file>');
    } finally {
      if (saved === undefined) delete process.env.INVAD_MODELS_DIR;
      else process.env.INVAD_MODELS_DIR = saved;
    }
  });
});

describe('resolveBackboneModel', () => {
  test('explicit path first, then $INVAD_MODELS_DIR, then ./models under the working directory', () => {
    const cwd = join(tmp.dir, 'resolve-cwd');
    const envDir = join(tmp.dir, 'resolve-env');
    mkdirSync(join(cwd, 'models'), { recursive: true });
    mkdirSync(envDir, { recursive: true });
    const file = BACKBONE_PRESETS['efficientnet-b4'].modelFile;
    expect(file).toBe('efficientnet-b4.onnx');
    for (const p of Object.values(BACKBONE_PRESETS)) expect(p.modelFile).not.toMatch(/[\\/]/); // a file name, not a path
    expect(modelSearchDirs({}, cwd)).toEqual([{ label: './models', dir: join(cwd, 'models') }]);
    expect(modelSearchDirs({ INVAD_MODELS_DIR: envDir }, cwd).map((d) => d.dir)).toEqual([envDir, join(cwd, 'models')]);

    const err = (() => {
      try {
        resolveBackboneModel('efficientnet-b4', undefined, { env: {}, cwd });
      } catch (e) {
        return e as InvalidArgumentError;
      }
      throw new Error('expected a throw');
    })();
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.argument).toBe('backboneModel');
    expect(err.message).toContain(join(cwd, 'models', file));
    expect(err.message).toContain('$INVAD_MODELS_DIR is not set');
    expect(err.message).toContain('train/export_efficientnet.py'); // how to get it

    writeFileSync(join(cwd, 'models', file), 'x');
    expect(resolveBackboneModel('efficientnet-b4', undefined, { env: {}, cwd })).toBe(join(cwd, 'models', file));
    writeFileSync(join(envDir, file), 'x');
    expect(resolveBackboneModel('efficientnet-b4', undefined, { env: { INVAD_MODELS_DIR: envDir }, cwd })).toBe(join(envDir, file));
    const explicit = join(tmp.dir, 'elsewhere.onnx');
    writeFileSync(explicit, 'x');
    expect(resolveBackboneModel('efficientnet-b4', explicit, { env: { INVAD_MODELS_DIR: envDir }, cwd })).toBe(explicit);
    expect(() => resolveBackboneModel('efficientnet-b4', join(tmp.dir, 'nope.onnx'))).toThrow(/nope\.onnx not found/);
    expect(() => resolveBackboneModel('resnet9000')).toThrow(/unknown backbone preset/);
  });
});

// ---------------------------------------------------------------- real backbones

// Needs ../shared (the real MobileNetV2-int8): says so and skips when it is absent, fails under CI.
const haveMobilenet = hasShared(MOBILENET);

(haveMobilenet ? describe : describe.skip)('mobilenetv2-int8 preset', () => {
  const preset = BACKBONE_PRESETS['mobilenetv2-int8'];

  test('152 x 14 x 14 from uint8 taps at strides 4, 8, 16; batch 1 and 4 agree per sample; values finite', async () => {
    const model = readFileSync(MOBILENET);
    const fb = await buildFeatureBackbone(model, { taps: preset.taps, inputSize: preset.inputSize });
    expect(fb.featureShape).toEqual(preset.expectedFeatureShape);
    expect(fb.featureShape).toEqual({ channels: 152, height: 14, width: 14 });
    expect(fb.taps.map((t) => [t.name, t.tensor, t.quantized, t.channels, t.height, t.stride])).toEqual([
      ['339', '339_quantized', true, 24, 56, 4],
      ['365', '365_quantized', true, 32, 28, 8],
      ['426', '426_quantized', true, 96, 14, 16],
    ]);
    expect(fb.taps.map((t) => t.stride)).toEqual(preset.tapStrides);
    const original = decodeModel(model);
    const m = decodeModel(fb.bytes);
    expect(m.graph!.node!.length).toBeLessThan(original.graph!.node!.length);
    const ops = new Set(m.graph!.node!.map((n) => n.opType));
    for (const head of ['QLinearGlobalAveragePool', 'QLinearMatMul', 'Reshape', 'Gather']) expect(ops).not.toContain(head);
    expect(m.graph!.initializer!.length).toBeLessThan(original.graph!.initializer!.length);
    expect(valueInfoShape(m.graph!.input![0]).dims).toEqual(['N', 3, 224, 224]);

    // Tapping by the quantized name is the same model.
    const byQuantizedName = await buildFeatureBackbone(model, { taps: ['339_quantized', '365_quantized', '426_quantized'], inputSize: preset.inputSize });
    expect(byQuantizedName.featureShape).toEqual(fb.featureShape);
    expect(listTapCandidates(model)).toEqual(expect.arrayContaining(['339', '365', '426']));

    const rand = mulberry32(21);
    const per = 3 * 224 * 224;
    const x = Float32Array.from({ length: 4 * per }, () => rand() * 4 - 2);
    const four = await runFeatures(fb.bytes, 'input', x, [4, 3, 224, 224]);
    expect(four.dims).toEqual([4, 152, 14, 14]);
    const f4 = four.data as Float32Array;
    expect(f4.every(Number.isFinite)).toBe(true);
    const fper = 152 * 14 * 14;
    for (let n = 0; n < 4; n++) {
      const one = await runFeatures(fb.bytes, 'input', x.slice(n * per, (n + 1) * per), [1, 3, 224, 224]);
      expect(one.dims).toEqual([1, 152, 14, 14]);
      expectClose(one.data as Float32Array, f4.slice(n * fper, (n + 1) * fper), 1e-6);
    }
    // Features are not constant: samples differ somewhere.
    let differs = 0;
    for (let i = 0; i < fper; i++) differs = Math.max(differs, Math.abs(f4[i] - f4[fper + i]));
    expect(differs).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------- EfficientNet-B4 export

const torchCheck = existsSync(PYTHON) ? spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' }) : undefined;
const haveTorch = torchCheck?.status === 0;
if (!haveTorch) {
  const why = torchCheck ? (torchCheck.stderr || '').trim().split('\n').pop() : `${PYTHON} not found`;
  const msg = `*** PyTorch is unavailable in ${PYTHON} (${why}): the EfficientNet-B4 export test ${process.env.CI ? 'FAILS under CI' : 'is SKIPPED'} ***`;
  console.warn(`\n${msg}\n`);
}

(haveTorch || process.env.CI ? describe : describe.skip)('efficientnet-b4 preset', () => {
  test('train/export_efficientnet.py --weights random -> preset builds 272 x 16 x 16 at 256 px', async () => {
    expect(haveTorch).toBe(true); // under CI a missing torch is a failure
    const onnxPath = join(tmp.dir, 'efficientnet-b4.onnx');
    const script = join(packageRoot(), 'train', 'export_efficientnet.py');
    const t0 = Date.now();
    const { stdout } = await promisify(execFile)(PYTHON, [script, '--weights', 'random', '--out', onnxPath], { maxBuffer: 1 << 20 });
    const exportMs = Date.now() - t0;
    console.log(`EfficientNet-B4 export (--weights random) took ${(exportMs / 1000).toFixed(1)} s`);
    expect(stdout).toContain('tap_s16: [N, 160, 16, 16]');

    const preset = BACKBONE_PRESETS['efficientnet-b4'];
    const model = readFileSync(onnxPath);
    const fb = await buildFeatureBackbone(model, { taps: preset.taps, inputSize: preset.inputSize });
    expect(fb.featureShape).toEqual(preset.expectedFeatureShape);
    expect(fb.featureShape).toEqual({ channels: 272, height: 16, width: 16 });
    expect(fb.taps.map((t) => [t.name, t.channels, t.height, t.stride])).toEqual([
      ['tap_s2', 24, 128, 2],
      ['tap_s4', 32, 64, 4],
      ['tap_s8', 56, 32, 8],
      ['tap_s16', 160, 16, 16],
    ]);
    const m = decodeModel(fb.bytes);
    const ops = new Set(m.graph!.node!.map((n) => n.opType));
    expect(ops).not.toContain('Gemm');
    expect(ops).not.toContain('Flatten');
    const x = new Float32Array(2 * 3 * 256 * 256).map((_, i) => Math.sin(i * 0.01));
    const out = await runFeatures(fb.bytes, 'input', x, [2, 3, 256, 256]);
    expect(out.dims).toEqual([2, 272, 16, 16]);
    expect((out.data as Float32Array).every(Number.isFinite)).toBe(true);
  }, 300_000);
});
