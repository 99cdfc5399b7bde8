/**
 * ORT's profiler in the native engine (issue 16): options.profileFilePrefix turns it on for
 * both sessions, endProfiling() writes the chrome-trace JSON and resolves with the paths,
 * and the events are the ones src/tools/bench/compare.ts aggregates (per-node kernel times).
 *
 * Errors thrown by the addon come from the main realm while jest runs this file in a vm
 * context, so they are matched on `name` and `message`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAddon, type DeviceResidentPipeline, type NativePipelineOptions } from '../src/binding';
import { loadBundle, type LoadedBundle } from '../src/runtime/bundle/load';
import { nativePipelineOptions } from '../src/runtime/engine/native-engine';
import { inversionSteps } from '../src/runtime/schedule';
import { ortProfileByOp, type ProfileEvent } from '../src/tools/bench/compare';
import { tempDir, writeTinyBundle } from './helpers/bundles';

const addon = loadAddon();

let tmp: ReturnType<typeof tempDir>;
let bundle: LoadedBundle;
let opts: NativePipelineOptions;
const pipelines: DeviceResidentPipeline[] = [];

function open(overrides: Partial<NativePipelineOptions> = {}): DeviceResidentPipeline {
  const p = new addon.DeviceResidentPipeline({ ...opts, ...overrides });
  pipelines.push(p);
  return p;
}

async function caught(fn: () => unknown): Promise<Error> {
  try {
    await fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

beforeAll(async () => {
  tmp = tempDir();
  bundle = await loadBundle(await writeTinyBundle(tmp.dir));
  opts = nativePipelineOptions(
    { backbonePath: bundle.backbonePath, unetPath: bundle.unetPath, manifest: bundle.manifest, executionProviders: ['cpu'], intraOpThreads: 1 },
    bundle.unetPath,
    ['cpu'],
  );
});

afterAll(() => {
  for (const p of pipelines) p.release();
  tmp?.cleanup();
});

function batch(n: number): Float32Array {
  const { width, height } = bundle.manifest.input;
  return new Float32Array(n * 3 * width * height).fill(0.5);
}

describe('native engine profiling (options.profileFilePrefix, endProfiling())', () => {
  test('writes one JSON profile per session with model_run and per-node kernel events', async () => {
    const prefix = join(tmp.dir, 'prof');
    const p = open({ profileFilePrefix: prefix });
    const steps = inversionSteps(2, bundle.manifest.schedule).map((s) => ({ t: s.t, a: s.a, b: s.b }));
    await p.runAsync(batch(2), 2, steps);
    await p.runAsync(batch(1), 1, steps);
    const files = await p.endProfiling();
    expect(files.backbone.startsWith(`${prefix}_backbone_`)).toBe(true);
    expect(files.unet.startsWith(`${prefix}_unet_`)).toBe(true);
    for (const [session, file] of Object.entries(files)) {
      expect(file.endsWith('.json')).toBe(true);
      expect(existsSync(file)).toBe(true);
      const events = JSON.parse(readFileSync(file, 'utf8')) as ProfileEvent[];
      const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
      // the backbone runs once per call, the UNet once per step
      expect(runs).toHaveLength(session === 'unet' ? 4 : 2);
      const ops = ortProfileByOp(events);
      expect(ops.length).toBeGreaterThan(0);
      expect(ops.every((o) => o.calls > 0 && o.selfMs >= 0)).toBe(true);
    }
    // still runs after profiling ended; ORT profiles a session once
    await expect(p.runAsync(batch(1), 1, steps)).resolves.toBeDefined();
    const again = await caught(() => p.endProfiling());
    expect(again.name).toBe('Error');
    expect(again.message).toMatch(/already called/);
  });

  test('endProfiling() without the option, with arguments, or after release() throws', async () => {
    const p = open();
    const off = await caught(() => p.endProfiling());
    expect(off.name).toBe('Error');
    expect(off.message).toMatch(/profiling is off.*profileFilePrefix/);
    const extra = await caught(() => (p.endProfiling as (x: unknown) => unknown)(1));
    expect(extra.name).toBe('TypeError');
    expect(extra.message).toMatch(/endProfiling\(\) takes 0 arguments/);
    p.release();
    const released = await caught(() => p.endProfiling());
    expect(released.message).toMatch(/after release\(\)/);
  });

  test('a bad profileFilePrefix is a TypeError or RangeError naming the option', () => {
    const expectThrow = (value: unknown, name: string, message: RegExp) => {
      let err: Error | undefined;
      try {
        open({ profileFilePrefix: value as string });
      } catch (e) {
        err = e as Error;
      }
      expect(err?.name).toBe(name);
      expect(err?.message).toMatch(message);
    };
    expectThrow(42, 'TypeError', /Expected string for options\.profileFilePrefix but received number/);
    expectThrow('', 'RangeError', /options\.profileFilePrefix must not be empty/);
    expectThrow('a\0b', 'RangeError', /options\.profileFilePrefix must not contain NUL/);
  });
});
