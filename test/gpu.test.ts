/**
 * The GPU checks that jest can run (issue 13):
 * - the kernel parity check (cudaKernelCheck: the CUDA kernels against the CPU
 *   kernels) and the addon's device self-test, when a GPU is present; skipped,
 *   saying why, when not (the reason is in the describe's title and printed);
 * - what needs no GPU: the self-test's host part, cudaKernelCheck reporting
 *   instead of throwing, and the mapping of the addon's "engine broken" error
 *   (a sticky CUDA error) to EngineBrokenError, through a stand-in pipeline and,
 *   where the addon has it, its sticky-error test hook.
 *
 * Errors the addon throws come from the main realm while jest runs this file in
 * a vm context, so they are matched on `name`, `code` and `message`.
 */
import { loadAddonWithDiagnostics, type DeviceResidentPipeline, type InvadAddon, type NativePipelineOptions } from '../src/binding';
import { loadBundle, type LoadedBundle } from '../src/runtime/bundle/load';
import { ENGINE_BROKEN_PREFIX, mapRunError, NativeEngine, nativePipelineOptions } from '../src/runtime/engine/native-engine';
import type { EngineConfig } from '../src/runtime/engine/protocol';
import { inversionSteps } from '../src/runtime/schedule';
import { EngineBrokenError, InvadError, reviveError, serializeError } from '../src/util/errors';
import * as api from '../src';
import { tempDir, writeTinyBundle } from './helpers/bundles';

const addon = loadAddonWithDiagnostics();
const cuda = addon.cudaStatus();
const build = addon.buildInfo();
const GPU_SKIP = !build.cuda ? 'the addon was built without CUDA' : !cuda.available ? `no usable GPU (${cuda.reason})` : '';
if (GPU_SKIP) console.warn(`\n*** SKIPPING the GPU tests of gpu.test.ts: ${GPU_SKIP} ***\n`);
const describeGpu = GPU_SKIP ? describe.skip : describe;
const gpuTitle = (title: string) => (GPU_SKIP ? `${title} [skipped: ${GPU_SKIP}]` : `${title} on ${cuda.deviceName}`);

/** The paper's feature shape at batch 1, 8 and 64. */
const SHAPES = [1, 8, 64].map((n) => ({ n, c: 272, h: 16, w: 16 }));

describeGpu(gpuTitle('kernel parity: CUDA kernels against the CPU kernels'), () => {
  test.each(SHAPES)('n=$n c=$c h=$h w=$w: bit-identical except sumSq (relative 1e-12)', (shape) => {
    const r = addon.cudaKernelCheck(shape, 20);
    expect(r.reason).toBeUndefined();
    expect(r.available).toBe(true);
    const d = r.maxAbsDiff!;
    // kernel_math.h: one rounding per operation on both sides, the same order.
    expect(d.ddimStep).toBe(0);
    expect(d.l2).toBe(0);
    expect(d.min).toBe(0);
    expect(d.max).toBe(0);
    expect(d.resize).toBe(0);
    expect(d.fillI64Exact).toBe(true);
    expect(d.sumSqRelative).toBeLessThanOrEqual(1e-12);
    const t = r.meanMicroseconds!;
    for (const v of Object.values(t)) expect(v).toBeGreaterThan(0);
    console.log(`cudaKernelCheck ${JSON.stringify(shape)}: ${JSON.stringify(r.meanMicroseconds)} us`);
  });
});

describeGpu(gpuTitle('device self-test: the device-resident path with stand-in CUDA models'), () => {
  test('host and device engines agree with the CPU reference', () => {
    const r = addon.deviceSelfTest();
    expect(r.skipped).toBeUndefined();
    expect(r.host.ok).toBe(true);
    expect(r.device).toBeDefined();
    const d = r.device!;
    expect(d.error).toBeUndefined();
    expect(d.deviceResident).toBe(true);
    expect(d.bitMismatches).toBe(0);
    expect(d.sumSqRelative).toBeLessThanOrEqual(d.sumSqTolerance);
    expect(d.ok).toBe(true);
    expect(r.ok).toBe(true);
  });
});

describe('without a GPU as well', () => {
  test("the self-test's host part runs everywhere; the device part says why it did not run", () => {
    const r = addon.deviceSelfTest();
    expect(r.host.ok).toBe(true);
    expect(r.host.bitMismatches).toBe(0);
    if (GPU_SKIP) {
      expect(typeof r.skipped).toBe('string');
      expect(r.skipped!.length).toBeGreaterThan(0);
      expect(r.device).toBeUndefined();
    }
  });

  test('cudaKernelCheck reports a missing GPU instead of throwing', () => {
    const r = addon.cudaKernelCheck({ n: 1, c: 4, h: 4, w: 4 }, 2);
    if (GPU_SKIP) {
      expect(r.available).toBe(false);
      expect(r.reason).toEqual(expect.any(String));
    } else {
      expect(r.available).toBe(true);
    }
  });
});

describe('a sticky CUDA error becomes EngineBrokenError', () => {
  const NATIVE_BROKEN =
    `${ENGINE_BROKEN_PREFIX}the GPU hit a sticky CUDA error (cudaErrorIllegalAddress: an illegal memory access was encountered) ` +
    'during this call: a run failed. CUDA cannot be used again in this process: release this engine and load the engine again in a new process';

  let tmp: ReturnType<typeof tempDir>;
  let bundle: LoadedBundle;
  let config: EngineConfig;
  const engines: NativeEngine[] = [];

  beforeAll(async () => {
    tmp = tempDir('invad-gpu-test-');
    bundle = await loadBundle(await writeTinyBundle(tmp.dir));
    config = { backbonePath: bundle.backbonePath, unetPath: bundle.unetPath, manifest: bundle.manifest, executionProviders: ['cpu'], intraOpThreads: 1 };
  });

  afterAll(async () => {
    for (const e of engines) await e.release();
    tmp?.cleanup();
  });

  function batch(n: number): Float32Array {
    const { width, height } = bundle.manifest.input;
    return new Float32Array(n * 3 * width * height).fill(0.25);
  }

  /** An addon whose pipelines are the real ones, except that runs fail with `error` (when given). */
  function standInAddon(fail: (() => Error) | null): InvadAddon {
    const Real = addon.DeviceResidentPipeline;
    function DeviceResidentPipeline(options: NativePipelineOptions): DeviceResidentPipeline {
      const real = new Real(options);
      if (!fail) return real;
      return {
        runAsync: () => Promise.reject(fail()),
        featuresAsync: () => Promise.reject(fail()),
        providers: () => real.providers(),
        metadata: () => real.metadata(),
        release: () => real.release(),
        get released() {
          return real.released;
        },
      };
    }
    return { ...addon, DeviceResidentPipeline: DeviceResidentPipeline as unknown as InvadAddon['DeviceResidentPipeline'] };
  }

  function expectBroken(err: unknown): void {
    const e = err as EngineBrokenError;
    expect(e).toBeInstanceOf(EngineBrokenError);
    expect(e).toBeInstanceOf(InvadError);
    expect(e.name).toBe('EngineBrokenError');
    expect(e.code).toBe('ERR_INVAD_ENGINE_BROKEN');
    expect(e.message).toMatch(/^The native engine is broken and cannot run again: /);
    expect(e.message).toContain('Dispose this Detector and load it again (Detector.load) in a new process');
    expect(e.message).not.toContain(ENGINE_BROKEN_PREFIX);
  }

  test('stand-in: the runs and the features of a broken engine reject with EngineBrokenError, naming the CUDA error', async () => {
    const engine = NativeEngine.open(
      standInAddon(() => new Error(NATIVE_BROKEN)),
      config,
      bundle.unetPath,
    );
    engines.push(engine);
    const steps = inversionSteps(2, bundle.manifest.schedule);
    const run = await engine.inversion(batch(2), 2, steps, false).catch((e: unknown) => e);
    expectBroken(run);
    expect((run as Error).message).toContain('cudaErrorIllegalAddress: an illegal memory access was encountered');
    expect(((run as Error).cause as Error).message).toBe(NATIVE_BROKEN);
    expectBroken(await engine.features(batch(1), 1).catch((e: unknown) => e));
  });

  test('stand-in: any other run error passes through unchanged', async () => {
    const other = new RangeError('batch too large');
    const engine = NativeEngine.open(
      standInAddon(() => other),
      config,
      bundle.unetPath,
    );
    engines.push(engine);
    await expect(engine.inversion(batch(1), 1, inversionSteps(1, bundle.manifest.schedule), false)).rejects.toBe(other);
    expect(mapRunError('plain text')).toBe('plain text');
    expect(mapRunError(undefined)).toBeUndefined();
  });

  test('the typed error crosses the worker boundary and is exported from the package', () => {
    const revived = reviveError(serializeError(new EngineBrokenError('broken')));
    expect(revived).toBeInstanceOf(EngineBrokenError);
    expect((revived as EngineBrokenError).code).toBe('ERR_INVAD_ENGINE_BROKEN');
    expect(api.EngineBrokenError).toBe(EngineBrokenError);
  });

  test("the addon's own broken state (test hook sticky-error-at-call=1) maps the same way, and later calls fail fast", async () => {
    const Real = addon.DeviceResidentPipeline;
    let probe: DeviceResidentPipeline | undefined;
    let why = '';
    try {
      probe = new Real({ ...nativePipelineOptions(config, bundle.unetPath, ['cpu']), testHooks: 'sticky-error-at-call=1' } as NativePipelineOptions);
    } catch (err) {
      why = (err as Error).message;
    }
    probe?.release();
    if (!probe) {
      console.warn(`\n*** SKIPPING the addon's sticky-error hook: this addon refuses it (${why}) ***\n`);
      return;
    }
    function Hooked(options: NativePipelineOptions): DeviceResidentPipeline {
      return new Real({ ...options, testHooks: 'sticky-error-at-call=1' } as NativePipelineOptions);
    }
    const engine = NativeEngine.open({ ...addon, DeviceResidentPipeline: Hooked as unknown as InvadAddon['DeviceResidentPipeline'] }, config, bundle.unetPath);
    engines.push(engine);
    const steps = inversionSteps(2, bundle.manifest.schedule);
    const first = await engine.inversion(batch(1), 1, steps, false).then(
      () => null,
      (e: unknown) => e,
    );
    if (first === null) {
      console.warn("\n*** SKIPPING the addon's sticky-error hook: this addon ignores it (an older build) ***\n");
      return;
    }
    expectBroken(first);
    expectBroken(await engine.inversion(batch(1), 1, steps, false).catch((e: unknown) => e));
    expectBroken(await engine.features(batch(1), 1).catch((e: unknown) => e));
  });
});
