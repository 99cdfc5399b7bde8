/**
 * Issue 12, findings 7 (load-time half), 8 and 9: a bundle that cannot score must fail at
 * load with a typed error naming the file and the field, never at every score() with a plain
 * TypeError/RangeError, a NaN score or an error about an option the caller never passed.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Detector, InvalidArgumentError, ModelBundleError, ModelMismatchError, loadBundle } from '../src';
import { writeBundle } from '../src/fit/write-bundle';
import { DataType, attr, decodeModel, encodeModel, floatScalar, floatTensor, makeGraph, makeModel, makeNode, valueInfo } from '../src/fit/onnx/proto';
import { linearUnet } from '../src/fit/onnx/synthetic';
import { writeLatentGaussian } from '../src/runtime/bundle/latent';
import type { LatentGaussian } from '../src/runtime/latent-gaussian';
import { MAX_INPUT_SIDE } from '../src/runtime/bundle/manifest';
import { DEFAULT_SCHEDULE, MAX_STEPS, inversionSteps, scheduleProblem, spaceTimesteps } from '../src/runtime/schedule';
import { encodeNpy } from '../src/util/npy';
import { editManifest, tempDir, tinyContents, TINY, writeTinyBundle } from './helpers/bundles';
import { randomRaw } from './helpers/images';

const ENGINES = ['onnxruntime-node', 'native'] as const;
const SIDE = TINY.inputSize / TINY.stride;
const POSITIONS = SIDE * SIDE;
const C = TINY.channels;
const sha256 = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex');

let tmp: ReturnType<typeof tempDir>;
beforeEach(() => {
  tmp = tempDir();
});
afterEach(() => tmp.cleanup());

/** The error a promise rejects with (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<any> {
  const result = await p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  if (!('error' in result)) {
    // A detector that loaded after all must not keep its worker alive past the test.
    const loaded = result.value as { dispose?: () => Promise<void> } | undefined;
    if (typeof loaded?.dispose === 'function') await loaded.dispose();
    throw new Error('expected a rejection, but the promise resolved');
  }
  return result.error;
}

/** Replaces a bundle file and updates its sha256 in the manifest, so only the content is wrong. */
function replaceFile(bundle: string, file: string, bytes: Uint8Array | string, setSha: (m: Record<string, any>, sha: string) => void): void {
  writeFileSync(join(bundle, file), bytes);
  editManifest(bundle, (m) => setSha(m, sha256(bytes)));
}

const setUnetSha = (m: Record<string, any>, sha: string) => (m.models.unet.sha256 = sha);
const setBackboneSha = (m: Record<string, any>, sha: string) => (m.models.backbone.sha256 = sha);

/** Well-formed latent statistics for the tiny bundle: zero mean, identity precision. */
function identityGaussian(): LatentGaussian {
  const precision = new Float32Array(POSITIONS * C * C);
  for (let p = 0; p < POSITIONS; p++) for (let c = 0; c < C; c++) precision[(p * C + c) * C + c] = 1;
  return { positions: POSITIONS, channels: C, mean: new Float32Array(POSITIONS * C), precision };
}

/**
 * Adds latent statistics for `steps` to a bundle; `mean` or `precision` bytes replace the
 * well-formed files (with matching hashes), to test what the loader makes of them.
 */
async function addLatentStats(bundle: string, steps: number, bad: { mean?: Uint8Array; precision?: Uint8Array } = {}): Promise<void> {
  const spec = await writeLatentGaussian(bundle, steps, identityGaussian(), 10, { amount: 0.01, relativeTo: 'mean-variance' });
  if (bad.mean) {
    writeFileSync(join(bundle, spec.meanFile), bad.mean);
    spec.meanSha256 = sha256(bad.mean);
  }
  if (bad.precision) {
    writeFileSync(join(bundle, spec.precisionFile), bad.precision);
    spec.precisionSha256 = sha256(bad.precision);
  }
  editManifest(bundle, (m) => (m.latentGaussian = [...(m.latentGaussian ?? []), spec]));
}

async function expectBundleError(p: Promise<unknown>, file: string, field: string): Promise<ModelBundleError> {
  const err = await rejection(p);
  expect(err).toBeInstanceOf(ModelBundleError);
  expect({ file: err.file, field: err.field }).toEqual({ file, field });
  return err;
}

const image = () => randomRaw(TINY.inputSize, TINY.inputSize, 3, 11);

describe('calibration numbers that would make scores NaN or infinite (finding 7)', () => {
  test.each([
    ['/calibration/sp/scale', (m: Record<string, any>) => (m.calibration.sp.scale = 5e-324)],
    ['/calibration/nll/center', (m: Record<string, any>) => (m.calibration.nll.center = 1.7e308)],
    ['/calibration/nll/scale', (m: Record<string, any>) => (m.calibration.nll.scale = 1e300)],
    ['/calibration/latentGaussian/scale', (m: Record<string, any>) => (m.calibration.latentGaussian = { center: 0, scale: 1e-310 })],
    [
      '/calibration/bySteps/0/sp/scale',
      (m: Record<string, any>) =>
        (m.calibration.bySteps = [
          { steps: 3, sp: { center: 0, scale: 5e-324 }, nll: { center: 0, scale: 1 }, imageThresholds: {}, pixelThresholds: { l2: 1 } },
        ]),
    ],
    ['/calibration/imageThreshold', (m: Record<string, any>) => (m.calibration.imageThreshold = 1.7e308)],
  ])('%s is rejected at load', async (field, edit) => {
    const b = await writeTinyBundle(tmp.dir);
    editManifest(b, edit);
    const err = await expectBundleError(loadBundle(b), 'manifest.json', field);
    expect(err.message).toContain(field);
  });

  test('realistic calibrations still load (nll centred near 1e5, tiny scales of SP)', async () => {
    const b = await writeTinyBundle(tmp.dir);
    editManifest(b, (m) => {
      m.calibration.nll = { center: 2.5e5, scale: 1.2e3 };
      m.calibration.sp = { center: 0.03, scale: 1e-4 };
      m.calibration.imageThreshold = 3.5;
    });
    await expect(loadBundle(b)).resolves.toMatchObject({ manifest: { calibration: { nll: { center: 2.5e5 } } } });
  });
});

describe('latent statistics files (findings 7 and 8)', () => {
  const precisionFile = 'latent_precision_s3.npy';
  const meanFile = 'latent_mean_s3.npy';

  test('a precision .npy with the wrong element count is rejected at load (it scored NaN)', async () => {
    const b = await writeTinyBundle(tmp.dir);
    await addLatentStats(b, 3, { precision: encodeNpy(new Float32Array(POSITIONS * C * (C - 1)), [POSITIONS, C, C - 1]) });
    const err = await expectBundleError(loadBundle(b), precisionFile, '/latentGaussian/0/precisionFile');
    expect(err.message).toMatch(/\[16, 6, 6\]/);
  });

  test('a precision with the right count but a flat shape is rejected too', async () => {
    const b = await writeTinyBundle(tmp.dir);
    await addLatentStats(b, 3, { precision: encodeNpy(new Float32Array(POSITIONS * C * C), [POSITIONS * C * C]) });
    await expectBundleError(loadBundle(b), precisionFile, '/latentGaussian/0/precisionFile');
  });

  test('a latent mean of the wrong shape is rejected at load', async () => {
    const b = await writeTinyBundle(tmp.dir);
    await addLatentStats(b, 3, { mean: encodeNpy(new Float32Array(POSITIONS * C), [C, POSITIONS]) });
    await expectBundleError(loadBundle(b), meanFile, '/latentGaussian/0/meanFile');
  });

  test('an int64 latent mean is rejected at load', async () => {
    const b = await writeTinyBundle(tmp.dir);
    await addLatentStats(b, 3, { mean: encodeNpy(new BigInt64Array(POSITIONS * C), [POSITIONS, C]) });
    const err = await expectBundleError(loadBundle(b), meanFile, '/latentGaussian/0/meanFile');
    expect(err.message).toMatch(/float32/);
  });

  test('non-finite statistics are rejected at load', async () => {
    const b = await writeTinyBundle(tmp.dir);
    const mean = new Float32Array(POSITIONS * C);
    mean[5] = Number.NaN;
    await addLatentStats(b, 3, { mean: encodeNpy(mean, [POSITIONS, C]) });
    const err = await expectBundleError(loadBundle(b), meanFile, '/latentGaussian/0/meanFile');
    expect(err.message).toMatch(/non-finite/);
  });

  test('a statistics file that is not .npy is rejected at load', async () => {
    const b = await writeTinyBundle(tmp.dir);
    await addLatentStats(b, 3, { precision: new TextEncoder().encode('not an npy') });
    await expectBundleError(loadBundle(b), precisionFile, '/latentGaussian/0/precisionFile');
  });

  test('the file checks apply with verifyHashes false too', async () => {
    const b = await writeTinyBundle(tmp.dir);
    await addLatentStats(b, 3, { precision: encodeNpy(new Float32Array(POSITIONS * C), [POSITIONS, C]) });
    await expectBundleError(loadBundle(b, { skipHashCheck: true }), precisionFile, '/latentGaussian/0/precisionFile');
  });

  test('two entries for the same S are rejected', async () => {
    const b = await writeTinyBundle(tmp.dir);
    await addLatentStats(b, 3);
    editManifest(b, (m) => m.latentGaussian.push({ ...m.latentGaussian[0] }));
    await expectBundleError(loadBundle(b), 'manifest.json', '/latentGaussian/1/steps');
  });

  test('well-formed statistics load and score (control)', async () => {
    const b = await writeTinyBundle(tmp.dir, TINY, { score: 'latent-gaussian' });
    await addLatentStats(b, 3);
    const det = await Detector.load(b, { engine: 'onnxruntime-node' });
    try {
      const r = await det.score(image());
      expect(Number.isFinite(r.score)).toBe(true);
      expect(r.components.latentGaussian).toBeGreaterThan(0);
    } finally {
      await det.dispose();
    }
  });
});

describe('latent-gaussian score without statistics for the S in use (finding 9)', () => {
  test('statistics only for S = 4 while the default S is 3: rejected at load, naming the default S', async () => {
    const b = await writeTinyBundle(tmp.dir, TINY, { score: 'latent-gaussian' });
    await addLatentStats(b, 4);
    for (const engine of ENGINES) {
      const err = await expectBundleError(Detector.load(b, { engine }), 'manifest.json', '/schedule/defaultSteps');
      expect(err.message).toMatch(/S = 3/);
    }
  });

  test('... but it loads and scores when the caller asks for S = 4', async () => {
    const b = await writeTinyBundle(tmp.dir, TINY, { score: 'latent-gaussian' });
    await addLatentStats(b, 4);
    const det = await Detector.load(b, { engine: 'onnxruntime-node', steps: 4 });
    try {
      expect((await det.score(image())).steps).toBe(4);
    } finally {
      await det.dispose();
    }
  });

  test('an options.steps or options.scoreDefinition that leaves latent-gaussian without statistics fails at load', async () => {
    const b = await writeTinyBundle(tmp.dir, TINY, { score: 'latent-gaussian' });
    await addLatentStats(b, 3);
    await expect(Detector.load(b, { engine: 'onnxruntime-node', steps: 5 })).rejects.toMatchObject({ name: 'InvalidArgumentError', argument: 'options.steps' });
    const plainDir = join(tmp.dir, 'plain');
    mkdirSync(plainDir);
    const plain = await writeTinyBundle(plainDir);
    await expect(Detector.load(plain, { engine: 'onnxruntime-node', scoreDefinition: 'latent-gaussian' })).rejects.toMatchObject({
      name: 'InvalidArgumentError',
      argument: 'options.scoreDefinition',
    });
  });

  test('loadBundle alone accepts it: fit writes the statistics after the manifest', async () => {
    const b = await writeTinyBundle(tmp.dir, TINY, { score: 'latent-gaussian' });
    await expect(loadBundle(b)).resolves.toBeDefined();
  });
});

/** A long schedule that can invert: 100000 steps with betas scaled down so abar_T stays near e^-10. */
const longSchedule = (m: Record<string, any>) => (m.schedule = { ...m.schedule, trainSteps: 100000, betaStart: 1e-6, betaEnd: 2e-4 });

describe('schedules that cannot invert (finding 8)', () => {
  test(`defaultSteps above ${MAX_STEPS} is rejected at load, whatever trainSteps allows`, async () => {
    const b = await writeTinyBundle(tmp.dir);
    editManifest(b, (m) => {
      longSchedule(m);
      m.schedule.defaultSteps = 5000;
    });
    const err = await expectBundleError(loadBundle(b), 'manifest.json', '/schedule/defaultSteps');
    expect(err.message).toContain(String(MAX_STEPS));
  });

  test.each(ENGINES)('score({ steps }) above the cap is the same InvalidArgumentError on both engines (%s)', async (engine) => {
    const b = await writeTinyBundle(tmp.dir);
    editManifest(b, longSchedule);
    const det = await Detector.load(b, { engine });
    try {
      const err = await rejection(det.score(image(), { steps: 5000 }));
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect(err.argument).toBe('options.steps');
      expect(Number.isFinite((await det.score(image(), { steps: 4 })).score)).toBe(true);
    } finally {
      await det.dispose();
    }
  });

  test('latent statistics for an S above the cap are rejected', async () => {
    const b = await writeTinyBundle(tmp.dir);
    editManifest(b, longSchedule);
    await addLatentStats(b, MAX_STEPS + 1);
    await expectBundleError(loadBundle(b), 'manifest.json', '/latentGaussian/0/steps');
  });

  test(`the schedule functions apply the same cap (${MAX_STEPS}) that the native engine has`, () => {
    expect(() => spaceTimesteps(100000, MAX_STEPS + 1)).toThrow(InvalidArgumentError);
    expect(spaceTimesteps(100000, MAX_STEPS)).toHaveLength(MAX_STEPS);
    expect(spaceTimesteps(100, 100)).toHaveLength(100);
  });

  test('scheduleProblem names the t where abar_t underflows, and passes a sane schedule', () => {
    const bad = { kind: 'linear' as const, betaStart: 0.999, betaEnd: 0.9999999, trainSteps: 1000 };
    expect(inversionSteps(3, bad).some((st) => !Number.isFinite(st.a) || !Number.isFinite(st.b))).toBe(true); // the finding
    expect(scheduleProblem(bad)).toMatch(/at t = \d+ of 1000/);
    expect(scheduleProblem(DEFAULT_SCHEDULE)).toBeNull();
  });

  test('trainSteps 100000 with the default betas underflows abar_t: caught at load', async () => {
    const b = await writeTinyBundle(tmp.dir);
    editManifest(b, (m) => (m.schedule.trainSteps = 100000));
    await expectBundleError(loadBundle(b), 'manifest.json', '/schedule');
  });

  test('betaStart 0.999, betaEnd 0.9999999: the NaN coefficient is caught at load', async () => {
    const b = await writeTinyBundle(tmp.dir);
    editManifest(b, (m) => {
      m.schedule.betaStart = 0.999;
      m.schedule.betaEnd = 0.9999999;
    });
    const err = await expectBundleError(loadBundle(b), 'manifest.json', '/schedule');
    expect(err.message).toMatch(/alpha/i);
  });

  test('a steep but usable schedule still loads', async () => {
    const b = await writeTinyBundle(tmp.dir);
    editManifest(b, (m) => {
      m.schedule.betaStart = 0.1;
      m.schedule.betaEnd = 0.5;
    });
    await expect(loadBundle(b)).resolves.toBeDefined();
  });
});

/** A backbone that takes any image size: image [N,3,H,W] -> features [N,C,H/8,W/8]. */
function dynamicBackbone(): Uint8Array {
  const s = TINY.stride;
  const weights = new Float32Array(C * 3 * s * s).fill(0.01);
  const graph = makeGraph({
    name: 'dynamic_backbone',
    inputs: [valueInfo('image', DataType.FLOAT, ['N', 3, 'H', 'W'])],
    outputs: [valueInfo('features', DataType.FLOAT, ['N', C, 'h', 'w'])],
    initializers: [floatTensor('w', [C, 3, s, s], weights)],
    nodes: [makeNode('Conv', ['image', 'w'], ['features'], { attributes: [attr.ints('kernel_shape', [s, s]), attr.ints('strides', [s, s])] })],
  });
  return encodeModel(makeModel(graph));
}

describe('input and feature sizes (finding 8)', () => {
  test(`a dynamic-size backbone with a 16384 x 16384 input is rejected at load (cap ${MAX_INPUT_SIDE} a side)`, async () => {
    const b = join(tmp.dir, 'dynamic');
    await writeBundle(b, { ...tinyContents(), backbone: { name: 'dynamic', bytes: dynamicBackbone() } });
    editManifest(b, (m) => {
      m.input.width = 16384;
      m.input.height = 16384;
    });
    const err = await expectBundleError(Detector.load(b, { engine: 'onnxruntime-node' }), 'manifest.json', '/input/width');
    expect(err.message).toContain(String(MAX_INPUT_SIDE));
  });

  test('the same backbone at a size under the cap loads (control)', async () => {
    const b = join(tmp.dir, 'dynamic');
    await writeBundle(b, { ...tinyContents(), backbone: { name: 'dynamic', bytes: dynamicBackbone() } });
    const det = await Detector.load(b, { engine: 'onnxruntime-node' });
    await det.dispose();
  });

  test('features too large to hold per image are rejected', async () => {
    const b = await writeTinyBundle(tmp.dir);
    editManifest(b, (m) => {
      m.input.width = m.input.height = MAX_INPUT_SIDE;
      m.features = { channels: 65536, height: 32, width: 32 };
    });
    await expectBundleError(loadBundle(b), 'manifest.json', '/features');
  });
});

/** The tiny UNet re-stamped with another default-domain opset. */
function unetWithOpset(opset: number): Uint8Array {
  const model = decodeModel(linearUnet({ channels: C, height: SIDE, width: SIDE, k: TINY.k, m: TINY.m }));
  model.opsetImport = [{ domain: '', version: opset }];
  return encodeModel(model);
}

/** A UNet that needs a third input, `extra`, besides x and t: eps = k*x + extra. */
function unetWithExtraInput(): Uint8Array {
  const graph = makeGraph({
    name: 'extra_input_unet',
    inputs: [
      valueInfo('x', DataType.FLOAT, ['N', C, SIDE, SIDE]),
      valueInfo('t', DataType.INT64, ['N']),
      valueInfo('extra', DataType.FLOAT, ['N', C, SIDE, SIDE]),
    ],
    outputs: [valueInfo('eps', DataType.FLOAT, ['N', C, SIDE, SIDE])],
    initializers: [floatScalar('k', TINY.k)],
    nodes: [makeNode('Mul', ['x', 'k'], ['kx']), makeNode('Add', ['kx', 'extra'], ['eps'])],
  });
  return encodeModel(makeModel(graph));
}

describe('corrupt model files whose sha256 matches (finding 9)', () => {
  const unetBytes = () => linearUnet({ channels: C, height: SIDE, width: SIDE, k: TINY.k, m: TINY.m });
  const corrupt: Array<[string, () => Uint8Array | string]> = [
    ['truncated', () => unetBytes().subarray(0, Math.floor(unetBytes().length / 2))],
    ['garbage', () => 'garbage, not a protobuf'],
    ['opset 999', () => unetWithOpset(999)],
  ];

  describe.each(ENGINES)('%s engine', (engine) => {
    test.each(corrupt)("a %s UNet is a ModelBundleError naming unet.onnx, with ORT's message as the cause", async (_, bytes) => {
      const b = await writeTinyBundle(tmp.dir);
      replaceFile(b, 'unet.onnx', bytes(), setUnetSha);
      const err = await expectBundleError(Detector.load(b, { engine }), 'unet.onnx', '/models/unet/file');
      expect(err.cause).toBeInstanceOf(Error);
      expect((err.cause as Error).message.length).toBeGreaterThan(0);
      expect(err.message).toContain((err.cause as Error).message.split('\n')[0]);
    });

    test('a garbage backbone names backbone.onnx', async () => {
      const b = await writeTinyBundle(tmp.dir);
      replaceFile(b, 'backbone.onnx', 'garbage', setBackboneSha);
      await expectBundleError(Detector.load(b, { engine }), 'backbone.onnx', '/models/backbone/file');
    });

    test('a UNet with an extra required input fails at load', async () => {
      const b = await writeTinyBundle(tmp.dir);
      replaceFile(b, 'unet.onnx', unetWithExtraInput(), setUnetSha);
      const err = await rejection(Detector.load(b, { engine }));
      expect(err).toBeInstanceOf(ModelMismatchError);
      expect({ file: err.file, field: err.field }).toEqual({ file: 'unet.onnx', field: '/models/unet' });
      expect(err.message).toContain('"extra"');
    });
  });

  test('an empty model file is rejected by loadBundle itself', async () => {
    const b = await writeTinyBundle(tmp.dir);
    replaceFile(b, 'unet.onnx', '', setUnetSha);
    const err = await expectBundleError(loadBundle(b), 'unet.onnx', '/models/unet/file');
    expect(err.message).toMatch(/empty/);
  });

  test('a provider that cannot load is still a ProviderError, not blamed on a good model', async () => {
    const b = await writeTinyBundle(tmp.dir);
    const err = await rejection(Detector.load(b, { engine: 'onnxruntime-node', executionProviders: ['coreml'] }));
    expect(err).toMatchObject({ code: 'ERR_INVAD_PROVIDER' });
  });
});
