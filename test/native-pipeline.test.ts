/**
 * The native engine: the addon's DeviceResidentPipeline on the ONNX Runtime C
 * API (CPU provider here) against the onnxruntime-node path on the same tiny
 * bundle, provider fallback, argument validation, a wrong ORT library, and
 * release. The CUDA/TensorRT parts need a GPU (scripts/gpu-check.sh).
 *
 * Errors thrown by the addon come from the main realm while jest runs this file
 * in a vm context, so they are matched on `name` and `message`.
 */
import * as ort from 'onnxruntime-node';
import { loadAddon, type DeviceResidentPipeline, type NativePipelineOptions } from '../src/binding';
import { Detector, type ScoreResult } from '../src';
import { loadBundle, type LoadedBundle } from '../src/runtime/bundle/load';
import { nativePipelineOptions, ortLibraryPath } from '../src/runtime/engine/native-engine';
import { extractFeatures, runInversion } from '../src/runtime/engine/ort-node-inversion';
import { randomBatch as randomInputs } from './helpers/images';
import { inversionSteps } from '../src/runtime/schedule';
import { tempDir, writeTinyBundle } from './helpers/bundles';
import { randomRaw } from './helpers/images';

const addon = loadAddon();
const TOL = 1e-5;

let tmp: ReturnType<typeof tempDir>;
let bundleDir: string;
let bundle: LoadedBundle;
let opts: NativePipelineOptions;
let sessions: { backbone: ort.InferenceSession; unet: ort.InferenceSession };
const pipelines: DeviceResidentPipeline[] = [];

function open(overrides: Partial<NativePipelineOptions> = {}): DeviceResidentPipeline {
  const p = new addon.DeviceResidentPipeline({ ...opts, ...overrides });
  pipelines.push(p);
  return p;
}

function randomBatch(n: number, seed: number): Float32Array {
  return randomInputs(n, bundle.manifest.input, seed);
}

/** max |a-b| / max(1, |b|) over the elements. */
function worstRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return worst;
}

function expectThrowsNamed(fn: () => unknown, name: string, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeDefined();
  expect((caught as Error).name).toBe(name);
  expect((caught as Error).message).toMatch(message);
}

beforeAll(async () => {
  tmp = tempDir();
  bundleDir = await writeTinyBundle(tmp.dir);
  bundle = await loadBundle(bundleDir);
  opts = nativePipelineOptions(
    { backbonePath: bundle.backbonePath, unetPath: bundle.unetPath, manifest: bundle.manifest, executionProviders: ['cpu'], intraOpThreads: 0 },
    bundle.unetPath,
    ['cpu'],
  );
  const make = (path: string) => ort.InferenceSession.create(path, { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
  sessions = { backbone: await make(bundle.backbonePath), unet: await make(bundle.unetPath) };
});

afterAll(async () => {
  for (const p of pipelines) p.release();
  await sessions?.backbone.release();
  await sessions?.unet.release();
  tmp?.cleanup();
});

describe('C API path equals the onnxruntime-node path (CPU provider)', () => {
  test.each([
    [2, 1],
    [2, 5],
    [3, 1],
    [3, 5],
  ])('S = %i, batch %i: l2, min, max, sumSq and x_T within 1e-5', async (S, n) => {
    const p = open();
    const steps = inversionSteps(S, bundle.manifest.schedule);
    const batch = randomBatch(n, 100 * S + n);
    const native = await p.runAsync(batch, n, steps, { latents: true });
    const ref = await runInversion(sessions, addon, bundle.manifest, new Float32Array(batch), n, steps);
    expect(worstRel(native.l2, ref.reduced.l2)).toBeLessThanOrEqual(TOL);
    expect(worstRel(native.min, ref.reduced.min)).toBeLessThanOrEqual(TOL);
    expect(worstRel(native.max, ref.reduced.max)).toBeLessThanOrEqual(TOL);
    expect(worstRel(native.sumSq, ref.reduced.sumSq)).toBeLessThanOrEqual(TOL);
    expect(worstRel(native.latents!, ref.latents)).toBeLessThanOrEqual(TOL);
    expect(native.timings.unetMs).toHaveLength(S);
    expect(native.timings.clock).toBe('host');
    // Without { latents: true } only the reduction comes back.
    const plain = await p.runAsync(batch, n, steps);
    expect(plain.latents).toBeUndefined();
    expect(Array.from(plain.l2)).toEqual(Array.from(native.l2));
  });

  test('featuresAsync equals the backbone output', async () => {
    const p = open();
    const batch = randomBatch(3, 5);
    const got = await p.featuresAsync(batch, 3);
    const want = await extractFeatures(sessions.backbone, bundle.manifest, new Float32Array(batch), 3);
    expect(worstRel(got, want)).toBeLessThanOrEqual(TOL);
  });

  test('buffers grow with the batch and smaller batches reuse them; concurrent calls are serialized', async () => {
    const p = open();
    const steps = inversionSteps(3, bundle.manifest.schedule);
    const b1 = randomBatch(1, 1);
    const b7 = randomBatch(7, 2);
    const first = await p.runAsync(b1, 1, steps);
    expect(p.providers().capacity).toBe(1);
    const [seven, again] = await Promise.all([p.runAsync(b7, 7, steps), p.runAsync(b1, 1, steps)]);
    expect(p.providers().capacity).toBe(7);
    expect(Array.from(again.l2)).toEqual(Array.from(first.l2));
    const fresh = await open().runAsync(b7, 7, steps);
    expect(Array.from(seven.l2)).toEqual(Array.from(fresh.l2));
    expect(Array.from(seven.sumSq)).toEqual(Array.from(fresh.sumSq));
  });

  test('metadata() reports the models exactly like onnxruntime-node does', () => {
    const meta = open().metadata();
    const plain = (v: readonly ort.InferenceSession.ValueMetadata[]) => JSON.parse(JSON.stringify(v)) as unknown;
    expect(meta.backbone.inputs).toEqual(plain(sessions.backbone.inputMetadata));
    expect(meta.backbone.outputs).toEqual(plain(sessions.backbone.outputMetadata));
    expect(meta.unet.inputs).toEqual(plain(sessions.unet.inputMetadata));
    expect(meta.unet.outputs).toEqual(plain(sessions.unet.outputMetadata));
  });
});

describe('Detector with engine "native"', () => {
  let base: Detector;
  let native: Detector;
  beforeAll(async () => {
    base = await Detector.load(bundleDir, { executionProviders: ['cpu'], engine: 'onnxruntime-node' });
    native = await Detector.load(bundleDir, { executionProviders: ['cpu'], engine: 'native' });
  });
  afterAll(async () => {
    await base?.dispose();
    await native?.dispose();
  });

  function expectSame(a: ScoreResult, b: ScoreResult): void {
    expect(Math.abs(a.components.spatialRange - b.components.spatialRange)).toBeLessThanOrEqual(TOL * Math.max(1, Math.abs(b.components.spatialRange)));
    expect(Math.abs(a.components.nll - b.components.nll)).toBeLessThanOrEqual(TOL * Math.max(1, Math.abs(b.components.nll)));
    expect(Math.abs(a.score - b.score)).toBeLessThanOrEqual(TOL * Math.max(1, Math.abs(b.score)));
    expect(worstRel(a.map, b.map)).toBeLessThanOrEqual(TOL);
    expect(worstRel(a.featureMaps.l2, b.featureMaps.l2)).toBeLessThanOrEqual(TOL);
  }

  test('info() reports the engine, the device and the providers', () => {
    const info = native.info();
    expect(info.engine).toBe('native');
    expect(info.device).toBe('cpu');
    expect(info.deviceResident).toBe(false);
    expect(info.providers).toEqual({ backbone: 'cpu', unet: 'cpu' });
    expect(base.info().engine).toBe('onnxruntime-node');
    expect(base.info().device).toBe('cpu');
  });

  test.each([
    [2, 1],
    [2, 5],
    [3, 1],
    [3, 5],
  ])('S = %i, batch %i: scores and maps equal the default engine within 1e-5', async (steps, n) => {
    const inputs = Array.from({ length: n }, (_, i) => randomRaw(24 + i * 5, 30 - i * 3, 3, 1000 * steps + i));
    const [a, b] = await Promise.all([native.scoreBatch(inputs, { steps, batchSize: n }), base.scoreBatch(inputs, { steps, batchSize: n })]);
    expect(a[0].timings.batchSize).toBe(n);
    a.forEach((r, i) => expectSame(r, b[i]));
  });

  test('latents() and the reconstruction ablation match too', async () => {
    const inputs = Array.from({ length: 3 }, (_, i) => randomRaw(32, 32, 3, 77 + i));
    expect(worstRel(await native.latents(inputs, 2), await base.latents(inputs, 2))).toBeLessThanOrEqual(TOL);
    const recon = { reconstruction: { tStart: 0.5, reconSteps: 2 } };
    const [a, b] = await Promise.all([native.score(inputs[0], recon), base.score(inputs[0], recon)]);
    expect(Math.abs(a.score - b.score)).toBeLessThanOrEqual(TOL * Math.max(1, Math.abs(b.score)));
  });

  test('fallback ["cuda", "cpu"] runs on the CPU and records why CUDA failed', async () => {
    const d = await Detector.load(bundleDir, { executionProviders: ['cuda', 'cpu'], engine: 'native' });
    try {
      const info = d.info();
      expect(info.providers).toEqual({ backbone: 'cpu', unet: 'cpu' });
      const cuda = info.fallbacks.filter((f) => f.provider === 'cuda');
      expect(cuda.map((f) => f.session).sort()).toEqual(['backbone', 'unet']);
      for (const f of cuda) expect(f.error.length).toBeGreaterThan(0);
      expect(Number.isFinite((await d.score(randomRaw(16, 16, 3, 1))).score)).toBe(true);
    } finally {
      await d.dispose();
    }
  });

  test('the default engine is native for cpu/cuda/tensorrt, onnxruntime-node when another provider is listed', async () => {
    const d = await Detector.load(bundleDir);
    try {
      expect(d.info().engine).toBe('native');
      expect(d.info().engineFallback).toBeNull();
    } finally {
      await d.dispose();
    }
    const w = await Detector.load(bundleDir, { executionProviders: ['webgpu', 'cpu'] });
    try {
      expect(w.info().engine).toBe('onnxruntime-node');
    } finally {
      await w.dispose();
    }
  });

  test('a defaulted native engine without ONNX Runtime falls back; an explicit one fails with BindingLoadError', async () => {
    const saved = process.env.INVAD_ORT_LIBRARY;
    process.env.INVAD_ORT_LIBRARY = '/nonexistent/libonnxruntime.so.1';
    try {
      const d = await Detector.load(bundleDir);
      try {
        expect(d.info().engine).toBe('onnxruntime-node');
        expect(d.info().engineFallback).toMatch(/Cannot load the ONNX Runtime library \/nonexistent/);
      } finally {
        await d.dispose();
      }
      await expect(Detector.load(bundleDir, { engine: 'native' })).rejects.toMatchObject({ code: 'ERR_INVAD_BINDING_LOAD' });
    } finally {
      if (saved === undefined) delete process.env.INVAD_ORT_LIBRARY;
      else process.env.INVAD_ORT_LIBRARY = saved;
    }
  });

  test('bad engine options are InvalidArgumentError naming the option', async () => {
    await expect(Detector.load(bundleDir, { engine: 'gpu' as never })).rejects.toMatchObject({ argument: 'options.engine' });
    await expect(Detector.load(bundleDir, { engine: 'native', tensorrt: { fp16: 'yes' as never } })).rejects.toMatchObject({
      argument: 'options.tensorrt.fp16',
    });
    await expect(Detector.load(bundleDir, { engine: 'native', cudaDeviceId: -1 })).rejects.toMatchObject({ argument: 'options.cudaDeviceId' });
  });

  test('no loadable provider is a ProviderError listing the attempts', async () => {
    await expect(Detector.load(bundleDir, { executionProviders: ['cuda'], engine: 'native' })).rejects.toMatchObject({
      code: 'ERR_INVAD_PROVIDER',
      attempts: expect.arrayContaining([expect.objectContaining({ provider: 'cuda' })]),
    });
  });
});

describe('DeviceResidentPipeline contract', () => {
  test('provider fallback ["cuda", "cpu"]: cpu in use, the cuda failure recorded, no crash', async () => {
    const p = open({ providers: ['cuda', 'cpu'] });
    const info = p.providers();
    expect(info.backbone).toBe('cpu');
    expect(info.unet).toBe('cpu');
    expect(info.deviceResident).toBe(false);
    expect(info.device).toBe('cpu');
    expect(info.ortVersion).toBe('1.30.0');
    expect(info.failures.map((f) => `${f.session}:${f.provider}`)).toEqual(['backbone:cuda', 'unet:cuda']);
    expect(info.failures[0].error).toMatch(/CUDA|cuda|provider/);
    const r = await p.runAsync(randomBatch(2, 3), 2, inversionSteps(2, bundle.manifest.schedule));
    expect(r.l2).toHaveLength(2 * 4 * 4);
  });

  test('["tensorrt"] alone fails with the attempts attached', () => {
    let caught: (Error & { attempts?: Array<{ session: string; provider: string; error: string }> }) | undefined;
    try {
      open({ providers: ['tensorrt'] });
    } catch (err) {
      caught = err as typeof caught;
    }
    expect(caught?.message).toMatch(/No execution provider could open the backbone model/);
    expect(caught?.attempts?.[0]).toMatchObject({ session: 'backbone', provider: 'tensorrt' });
  });

  test('a wrong ORT library path is a clear error', () => {
    expectThrowsNamed(
      () => open({ ortLibraryPath: '/nonexistent/libonnxruntime.so.1' }),
      'Error',
      /Cannot load the ONNX Runtime library \/nonexistent\/libonnxruntime\.so\.1/,
    );
    expectThrowsNamed(() => addon.ortProbe('/nonexistent/libonnxruntime.so.1'), 'Error', /Cannot load the ONNX Runtime library/);
    // A library that loads but is not ONNX Runtime (the addon itself).
    expectThrowsNamed(() => open({ ortLibraryPath: require.resolve('../build/Release/invad.node') }), 'Error', /is not an ONNX Runtime library/);
  });

  test('ortProbe reports the version, the providers compiled in and which load', () => {
    const probe = addon.ortProbe(ortLibraryPath());
    expect(probe.version).toBe('1.30.0');
    expect(probe.apiVersion).toBe(30);
    expect(probe.availableProviders).toContain('CPUExecutionProvider');
    const cpu = probe.providers.find((p) => p.name === 'cpu');
    expect(cpu?.ok).toBe(true);
    for (const name of ['cuda', 'tensorrt'] as const) {
      const r = probe.providers.find((p) => p.name === name);
      expect(typeof r?.ok).toBe('boolean');
      if (!r?.ok) expect(r?.error).toMatch(/\S/);
    }
  });

  test('bad constructor options throw TypeError/RangeError naming the option', () => {
    const C = addon.DeviceResidentPipeline;
    expectThrowsNamed(() => new (C as unknown as new () => unknown)(), 'TypeError', /missing argument options/);
    expectThrowsNamed(() => new C(42 as never), 'TypeError', /options/);
    expectThrowsNamed(() => new C({ ...opts, backbonePath: 7 as never }), 'TypeError', /options\.backbonePath/);
    expectThrowsNamed(() => new C({ ...opts, unet: { ...opts.unet, tName: '' } }), 'RangeError', /options\.unet\.tName/);
    expectThrowsNamed(() => new C({ ...opts, features: { ...opts.features, channels: 0 } }), 'RangeError', /options\.features\.channels/);
    expectThrowsNamed(() => new C({ ...opts, providers: [] }), 'RangeError', /options\.providers/);
    expectThrowsNamed(() => new C({ ...opts, providers: ['gpu' as never] }), 'RangeError', /options\.providers\[0\]/);
    expectThrowsNamed(() => new C({ ...opts, providers: 'cpu' as never }), 'TypeError', /options\.providers/);
    expectThrowsNamed(() => new C({ ...opts, cpuThreads: 1.5 }), 'RangeError', /options\.cpuThreads/);
    expectThrowsNamed(() => new C({ ...opts, cpuSpinning: true as never }), 'TypeError', /options\.cpuSpinning/);
    expectThrowsNamed(() => new C({ ...opts, cpuSpinning: 'some' as never }), 'RangeError', /options\.cpuSpinning must be one of none, unet, all/);
    expectThrowsNamed(() => new C({ ...opts, tensorrt: { fp16: 1 as never } }), 'TypeError', /options\.tensorrt\.fp16/);
    expectThrowsNamed(() => (C as unknown as () => unknown)(), 'TypeError', /new/);
  });

  test('bad runAsync arguments throw TypeError/RangeError naming the argument', () => {
    const p = open();
    const steps = inversionSteps(2, bundle.manifest.schedule);
    const batch = randomBatch(1, 9);
    expectThrowsNamed(() => p.runAsync([1, 2] as never, 1, steps), 'TypeError', /Float32Array for batch/);
    expectThrowsNamed(() => p.runAsync(new Float64Array(batch.length) as never, 1, steps), 'TypeError', /batch/);
    expectThrowsNamed(() => p.runAsync(batch, 2, steps), 'RangeError', /batch\.length \(3072\) must equal n\*3\*height\*width = 6144/);
    expectThrowsNamed(() => p.runAsync(batch, 0, steps), 'RangeError', /^n must be a positive integer, got 0/);
    expectThrowsNamed(() => p.runAsync(batch, '1' as never, steps), 'TypeError', /number for n/);
    expectThrowsNamed(() => p.runAsync(batch, 1, {} as never), 'TypeError', /Array of \{t, a, b\} for steps/);
    expectThrowsNamed(() => p.runAsync(batch, 1, []), 'RangeError', /steps must not be empty/);
    expectThrowsNamed(() => p.runAsync(batch, 1, [{ t: 0, a: NaN, b: 1 }]), 'RangeError', /steps\[0\]\.a must be a finite number, got NaN/);
    expectThrowsNamed(() => p.runAsync(batch, 1, [steps[0], { t: 1, a: 1, b: Infinity }]), 'RangeError', /steps\[1\]\.b/);
    expectThrowsNamed(() => p.runAsync(batch, 1, [{ t: -1, a: 1, b: 1 }]), 'RangeError', /steps\[0\]\.t/);
    expectThrowsNamed(() => p.runAsync(batch, 1, [{ t: 0, a: '1', b: 1 } as never]), 'TypeError', /steps\[0\]\.a/);
    expectThrowsNamed(() => p.runAsync(batch, 1, steps, { latents: 1 } as never), 'TypeError', /options\.latents/);
    expectThrowsNamed(() => (p.runAsync as unknown as (b: Float32Array) => unknown)(batch), 'TypeError', /runAsync\(\) takes 3 to 4 arguments/);
    expectThrowsNamed(() => p.featuresAsync(batch, 3), 'RangeError', /batch\.length/);
  });

  test('release(): in-flight runs finish, later use throws, release is idempotent', async () => {
    const p = open();
    const steps = inversionSteps(3, bundle.manifest.schedule);
    const pending = p.runAsync(randomBatch(2, 4), 2, steps);
    expect(p.released).toBe(false);
    p.release();
    expect(p.released).toBe(true);
    await expect(pending).resolves.toMatchObject({ min: expect.any(Float32Array) });
    expectThrowsNamed(() => p.runAsync(randomBatch(1, 1), 1, steps), 'Error', /runAsync\(\) was called after release\(\)/);
    expectThrowsNamed(() => p.providers(), 'Error', /after release/);
    expectThrowsNamed(() => p.featuresAsync(randomBatch(1, 1), 1), 'Error', /after release/);
    p.release();
  });

  test('a run that fails in ONNX Runtime rejects with its message and the pipeline stays usable', async () => {
    // ORT accepts any name in BindOutput; the run itself reports it.
    const p = open({ unet: { ...opts.unet, outputName: 'nope' } });
    const steps = inversionSteps(2, bundle.manifest.schedule);
    await expect(p.runAsync(randomBatch(1, 1), 1, steps)).rejects.toThrow(/OrtApi::RunWithBinding failed \(ORT_INVALID_ARGUMENT\): Invalid output name: nope/);
    await expect(p.runAsync(randomBatch(1, 1), 1, steps)).rejects.toThrow(/Invalid output name: nope/);
    expect(p.released).toBe(false);
  });
});
