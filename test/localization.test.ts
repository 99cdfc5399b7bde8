/**
 * Localization levers (issue 17): the map smoothing (item 2) — the addon's gaussianBlur against
 * a float32 JS reference, its argument errors, the bundle's `mapSmoothing` in both engines, at
 * load and in calibration — and the hash and shape checks of the feature-statistics files.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAddon } from '../src/binding';
import { calibrateBundle } from '../src/fit/calibrate-bundle';
import { writeManifest } from '../src/fit/write-bundle';
import { sha256Bytes } from '../src/runtime/bundle/hash';
import { loadBundle } from '../src/runtime/bundle/load';
import type { Manifest, MapSmoothingSpec } from '../src/runtime/bundle/manifest';
import { Detector } from '../src/runtime/detector';
import type { EngineKind } from '../src/runtime/engine/protocol';
import { calibrationMapValues, mapSmoothingSpec, sigmaAtInput, smoothingSigmas } from '../src/runtime/map-smoothing';
import { ModelBundleError } from '../src/util/errors';
import { encodeNpy } from '../src/util/npy';
import { mulberry32 } from '../src/util/prng';
import { tempDir, TINY, writeTinyBundle } from './helpers/bundles';
import { pngOf, randomRaw } from './helpers/images';

const addon = loadAddon();
const f32 = Math.fround;

/** scipy.ndimage's 'reflect' (half-sample symmetric), folded for any offset. */
function reflect(i: number, n: number): number {
  const period = 2 * n;
  const m = ((i % period) + period) % period;
  return m < n ? m : period - 1 - m;
}

/** The float32 weights of one pass: exp(-k^2 / 2 sigma^2), k = -r..r, r = floor(4 sigma + 0.5), normalized in double. */
function weights(sigma: number): Float32Array {
  const r = Math.floor(4 * sigma + 0.5);
  const d = Array.from({ length: 2 * r + 1 }, (_, i) => Math.exp((-0.5 * (i - r) * (i - r)) / (sigma * sigma)));
  const sum = d.reduce((a, v) => a + v, 0);
  return Float32Array.from(d, (v) => v / sum);
}

/** The blur in float32, one rounding per product and per sum, taps in order: the kernels' arithmetic. */
function referenceBlur(src: Float32Array, planes: number, h: number, w: number, sigmaY: number, sigmaX: number): Float32Array {
  const wx = weights(sigmaX);
  const wy = weights(sigmaY);
  const rx = (wx.length - 1) / 2;
  const ry = (wy.length - 1) / 2;
  const tmp = new Float32Array(src.length);
  const out = new Float32Array(src.length);
  for (let p = 0; p < planes; p++) {
    const o = p * h * w;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        let acc = 0;
        for (let k = 0; k < wx.length; k++) acc = f32(acc + f32(wx[k] * src[o + y * w + reflect(x + k - rx, w)]));
        tmp[o + y * w + x] = acc;
      }
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        let acc = 0;
        for (let k = 0; k < wy.length; k++) acc = f32(acc + f32(wy[k] * tmp[o + reflect(y + k - ry, h) * w + x]));
        out[o + y * w + x] = acc;
      }
  }
  return out;
}

function randomMap(length: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  return Float32Array.from({ length }, () => rand() * 10 - 2);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('gaussianBlur (the addon kernel)', () => {
  test.each([
    { planes: 1, h: 5, w: 7, sigmaY: 1.3, sigmaX: 0.7 },
    { planes: 2, h: 3, w: 4, sigmaY: 5, sigmaX: 5 }, // radius 20: the border folds several times
    { planes: 1, h: 1, w: 9, sigmaY: 2, sigmaX: 1 },
    { planes: 3, h: 16, w: 12, sigmaY: 4, sigmaX: 2.5 },
    { planes: 1, h: 40, w: 300, sigmaY: 6, sigmaX: 6 }, // more rows than one pool range
  ])('matches the float32 reference: %o', ({ planes, h, w, sigmaY, sigmaX }) => {
    const src = randomMap(planes * h * w, planes * 100 + h + w);
    const got = addon.gaussianBlur(src, planes, h, w, sigmaY, sigmaX);
    const want = referenceBlur(src, planes, h, w, sigmaY, sigmaX);
    expect(got.length).toBe(want.length);
    // Same weights and the same operation order: equal, bar a last-bit difference of exp() between C++ and V8.
    expect(maxAbsDiff(got, want)).toBeLessThanOrEqual(1e-6);
    expect(got).not.toBe(src);
  });

  test('a small sigma (radius 0) copies the map exactly; a constant map stays constant', () => {
    const src = randomMap(6 * 5, 3);
    expect(Array.from(addon.gaussianBlur(src, 1, 6, 5, 0.1, 0.1))).toEqual(Array.from(src));
    const flat = addon.gaussianBlur(new Float32Array(8 * 8).fill(3.5), 1, 8, 8, 2, 3);
    expect(maxAbsDiff(flat, new Float32Array(64).fill(3.5))).toBeLessThanOrEqual(1e-6);
  });

  test('a point spreads symmetrically, with its mass kept', () => {
    const src = new Float32Array(21 * 21);
    src[10 * 21 + 10] = 1;
    const out = addon.gaussianBlur(src, 1, 21, 21, 2, 2);
    expect(out[10 * 21 + 7]).toBe(out[10 * 21 + 13]);
    expect(out[7 * 21 + 10]).toBe(out[13 * 21 + 10]);
    expect(out.reduce((a, v) => a + v, 0)).toBeCloseTo(1, 5);
  });

  test('argument errors: TypeError for types and counts, RangeError for values and lengths', () => {
    const src = new Float32Array(12);
    const call = (...args: unknown[]) => (addon.gaussianBlur as unknown as (...a: unknown[]) => Float32Array)(...args);
    // By name: the addon's errors come from the main realm, not jest's.
    const throws = (name: 'TypeError' | 'RangeError', pattern: RegExp, ...args: unknown[]) => {
      let caught: unknown;
      try {
        call(...args);
      } catch (e) {
        caught = e;
      }
      expect(caught).toMatchObject({ name, message: expect.stringMatching(pattern) as unknown });
    };
    throws('TypeError', /missing argument sigmaX/, src, 1, 3, 4, 1);
    throws('TypeError', /takes 6 arguments/, src, 1, 3, 4, 1, 1, 1);
    throws('TypeError', /Expected Float32Array for src/, Array.from(src), 1, 3, 4, 1, 1);
    throws('TypeError', /Expected Float32Array for src/, new Float64Array(12), 1, 3, 4, 1, 1);
    throws('TypeError', /Expected number for sigmaY/, src, 1, 3, 4, '1', 1);
    for (const sigma of [0, -1, NaN, Infinity, 1025]) {
      throws('RangeError', /sigmaY must be a number greater than 0 and at most 1024/, src, 1, 3, 4, sigma, 1);
      throws('RangeError', /sigmaX must be/, src, 1, 3, 4, 1, sigma);
    }
    throws('RangeError', /src.length \(12\) must equal planes\*h\*w = 15/, src, 1, 3, 5, 1, 1);
    throws('RangeError', /planes must be a positive integer/, src, 0, 3, 4, 1, 1);
    throws('RangeError', /planes must be a positive integer/, src, 1.5, 3, 4, 1, 1);
    throws('RangeError', /exceeds the limit/, src, 65536, 65536, 65536, 1, 1);
  });
});

describe('sigma from the manifest', () => {
  const input = { width: 32, height: 32 };
  test('sigmaPx at atInputSize, scaled to the model input, then to each axis of the image', () => {
    const spec: MapSmoothingSpec = { kind: 'gaussian', sigmaPx: 4, atInputSize: 224 };
    expect(sigmaAtInput(spec, { width: 224, height: 224 })).toBe(4);
    expect(sigmaAtInput(spec, { width: 448, height: 512 })).toBe(8);
    expect(smoothingSigmas(spec, { width: 224, height: 224 }, { width: 1024, height: 512 })).toEqual({ sigmaX: (4 * 1024) / 224, sigmaY: (4 * 512) / 224 });
    expect(mapSmoothingSpec(3, input)).toEqual({ kind: 'gaussian', sigmaPx: 3, atInputSize: 32 });
    expect(mapSmoothingSpec(0, input)).toBeUndefined();
    // Clamped to the addon's largest sigma.
    expect(smoothingSigmas({ kind: 'gaussian', sigmaPx: 64, atInputSize: 32 }, input, { width: 4096, height: 32 }).sigmaX).toBe(1024);
  });
});

describe('a bundle with mapSmoothing', () => {
  let tmp: ReturnType<typeof tempDir>;
  let plain: string;
  let smooth: string;
  let files: string[];
  const spec: MapSmoothingSpec = { kind: 'gaussian', sigmaPx: 3, atInputSize: 32 };
  // A non-square image of another size than the model input: sigma differs along the axes.
  const image = randomRaw(48, 40, 3, 11);

  /** A tiny bundle in its own sub-folder of tmp. */
  const tiny = (name: string) => {
    mkdirSync(join(tmp.dir, name));
    return writeTinyBundle(join(tmp.dir, name));
  };

  beforeAll(async () => {
    tmp = tempDir('invad-localization-');
    plain = await tiny('plain');
    smooth = await tiny('smooth');
    const m = (await loadBundle(smooth)).manifest;
    await writeManifest(smooth, { ...m, mapSmoothing: spec });
    files = [];
    for (let i = 0; i < 6; i++) {
      const f = join(tmp.dir, `n${i}.png`);
      writeFileSync(f, await pngOf(randomRaw(TINY.inputSize, TINY.inputSize, 3, 200 + i)));
      files.push(f);
    }
  }, 60000);
  afterAll(() => tmp?.cleanup());

  const engines: EngineKind[] = ['native', 'onnxruntime-node'];
  test.each(engines)(
    '%s engine: the map is the resized map blurred; scores and feature maps are unchanged',
    async (engine) => {
      const [a, b] = await Promise.all([Detector.load(plain, { engine }), Detector.load(smooth, { engine })]);
      try {
        const [ra, rb] = await Promise.all([a.score(image), b.score(image)]);
        expect(rb.score).toBe(ra.score);
        expect(Array.from(rb.featureMaps.l2)).toEqual(Array.from(ra.featureMaps.l2));
        const f = TINY.inputSize / TINY.stride;
        const resized = addon.resizeBilinear(ra.featureMaps.l2, 1, f, f, 40, 48);
        // Without mapSmoothing: the bilinear resize, bit for bit, as before.
        expect(Array.from(ra.map)).toEqual(Array.from(resized));
        // With it: sigma 3 px at the 32 px input, x 48/32 along x and 40/32 along y.
        const { sigmaY, sigmaX } = smoothingSigmas(spec, { width: 32, height: 32 }, { width: 48, height: 40 });
        expect([sigmaY, sigmaX]).toEqual([3.75, 4.5]);
        expect(Array.from(rb.map)).toEqual(Array.from(addon.gaussianBlur(resized, 1, 40, 48, sigmaY, sigmaX)));
        expect(maxAbsDiff(rb.map, referenceBlur(resized, 1, 40, 48, sigmaY, sigmaX))).toBeLessThanOrEqual(1e-6);
        expect(maxAbsDiff(rb.map, ra.map)).toBeGreaterThan(0);
        // The blur is a weighted mean: it narrows the map's range.
        expect(Math.max(...rb.map)).toBeLessThan(Math.max(...ra.map));
      } finally {
        await Promise.all([a.dispose(), b.dispose()]);
      }
    },
    60000,
  );

  test('load checks the entry: older bundles have none; a bad one names its field', async () => {
    expect((await loadBundle(plain)).manifest.mapSmoothing).toBeUndefined();
    expect((await loadBundle(smooth)).manifest.mapSmoothing).toEqual(spec);
    const dir = await tiny('bad');
    const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
    const bad = async (mapSmoothing: unknown): Promise<ModelBundleError> => {
      writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ ...m, mapSmoothing }));
      return loadBundle(dir).then(
        () => {
          throw new Error('loaded');
        },
        (e: unknown) => e as ModelBundleError,
      );
    };
    for (const v of [
      { sigmaPx: 4 },
      { kind: 'box', sigmaPx: 4, atInputSize: 224 },
      { kind: 'gaussian', sigmaPx: 0, atInputSize: 224 },
      { kind: 'gaussian', sigmaPx: 65, atInputSize: 224 },
    ]) {
      const e = await bad(v);
      expect(e).toBeInstanceOf(ModelBundleError);
      expect(e.field).toMatch(/^\/mapSmoothing/);
    }
    // 64 px at a 1 px input is 2048 px at the 32 px model input: more than the kernel takes.
    const e = await bad({ kind: 'gaussian', sigmaPx: 64, atInputSize: 1 });
    expect(e.field).toBe('/mapSmoothing/atInputSize');
    expect(e.message).toMatch(/sigma 2048 px/);
  });

  test('calibration takes pixel thresholds on smoothed maps, records the setting, and 0 removes it', async () => {
    const dir = await tiny('cal');
    const base = await calibrateBundle(dir, files, { steps: [TINY.steps] });
    expect((await loadBundle(dir)).manifest.mapSmoothing).toBeUndefined();
    const smoothed = await calibrateBundle(dir, files, { steps: [TINY.steps], mapSmoothing: 3 });
    const m = (await loadBundle(dir)).manifest;
    expect(m.mapSmoothing).toEqual({ kind: 'gaussian', sigmaPx: 3, atInputSize: 32 });
    expect(smoothed.imageThreshold).toBe(base.imageThreshold);
    expect(smoothed.pixelThreshold).not.toBe(base.pixelThreshold);
    // The threshold is the quantile of the smoothed maps' values, sampled every 3 px at the input.
    const det = await Detector.load(dir, { scoreDefinition: 'sp' });
    try {
      const maps = (await det.scoreBatch(files)).map((r) => r.featureMaps.l2);
      const values = calibrationMapValues(addon, m, m.mapSmoothing, maps);
      expect(values[0].length).toBe(Math.ceil((32 - 1) / 3) ** 2);
      const all = Float64Array.from(values.flatMap((v) => Array.from(v))).sort();
      expect(smoothed.pixelThreshold!).toBeGreaterThanOrEqual(all[0]);
      expect(smoothed.pixelThreshold!).toBeLessThanOrEqual(all[all.length - 1]);
      expect(calibrationMapValues(addon, m, undefined, maps)).toEqual(maps);
    } finally {
      await det.dispose();
    }
    const off = await calibrateBundle(dir, files, { steps: [TINY.steps], mapSmoothing: 0 });
    expect((await loadBundle(dir)).manifest.mapSmoothing).toBeUndefined();
    expect(off.pixelThreshold).toBe(base.pixelThreshold);
    await expect(calibrateBundle(dir, files, { steps: [TINY.steps], mapSmoothing: 65 })).rejects.toThrow(/mapSmoothing/);
  }, 120000);
});

describe('feature-statistics files at load (hash, shape, values)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let dir: string;
  let manifest: Manifest;
  const side = TINY.inputSize / TINY.stride;
  const c = TINY.channels;
  const positions = side * side;
  const patches = 5;

  const write = (file: string, data: Float32Array, shape: number[]) => {
    const bytes = encodeNpy(data, shape);
    writeFileSync(join(dir, file), bytes);
    return sha256Bytes(bytes);
  };

  beforeAll(async () => {
    tmp = tempDir('invad-featstats-');
    dir = await writeTinyBundle(tmp.dir);
    const m = (await loadBundle(dir)).manifest;
    const identity = new Float32Array(positions * c * c);
    for (let p = 0; p < positions; p++) for (let i = 0; i < c; i++) identity[p * c * c + i * c + i] = 1;
    manifest = {
      ...m,
      featureStatistics: {
        gaussian: {
          meanFile: 'feature_mean.npy',
          meanSha256: write('feature_mean.npy', randomMap(positions * c, 1), [positions, c]),
          precisionFile: 'feature_precision.npy',
          precisionSha256: write('feature_precision.npy', identity, [positions, c, c]),
          samples: 10,
          regularization: 0.01,
          regularizationRelativeTo: 'mean-variance',
        },
        memoryBank: {
          file: 'patchcore_bank.npy',
          sha256: write('patchcore_bank.npy', randomMap(patches * c, 2), [patches, c]),
          patches,
          sourcePatches: 50,
          projectionDims: 4,
          pooling: 3,
        },
      },
    };
    await writeManifest(dir, manifest);
  });
  afterAll(() => tmp?.cleanup());

  async function loadError(options: { skipHashCheck?: boolean } = {}): Promise<ModelBundleError> {
    return loadBundle(dir, options).then(
      () => {
        throw new Error('loaded');
      },
      (e: unknown) => e as ModelBundleError,
    );
  }

  test('untouched files load', async () => {
    await expect(loadBundle(dir)).resolves.toMatchObject({ manifest: { featureStatistics: manifest.featureStatistics } });
  });

  test.each([
    ['feature_mean.npy', '/featureStatistics/gaussian/meanSha256'],
    ['feature_precision.npy', '/featureStatistics/gaussian/precisionSha256'],
    ['patchcore_bank.npy', '/featureStatistics/memoryBank/sha256'],
  ])('a tampered %s fails its hash, naming the file and field', async (file, field) => {
    const path = join(dir, file);
    const good = readFileSync(path);
    const bad = Buffer.from(good);
    bad[bad.length - 1] ^= 0x01;
    writeFileSync(path, bad);
    try {
      const e = await loadError();
      expect(e).toBeInstanceOf(ModelBundleError);
      expect(e.file).toBe(file);
      expect(e.field).toBe(field);
      expect(e.message).toMatch(/does not match the manifest: sha256/);
      // Detector.load runs the same check.
      await expect(Detector.load(dir)).rejects.toMatchObject({ file, field });
      // Without the hash check the tampered values are still float32 of the right shape: it loads.
      await expect(loadBundle(dir, { skipHashCheck: true })).resolves.toBeDefined();
    } finally {
      writeFileSync(path, good);
    }
  });

  test('a wrong shape, dtype or a non-finite value is refused even when the hash matches', async () => {
    const cases: Array<{ file: string; field: string; data: Float32Array; shape: number[]; message: RegExp; patch: (sha: string) => Manifest }> = [
      {
        file: 'patchcore_bank.npy',
        field: '/featureStatistics/memoryBank/file',
        data: randomMap((patches + 1) * c, 3),
        shape: [patches + 1, c],
        message: /feature statistics file patchcore_bank.npy .* has shape \[6, 6\]; the manifest's features need \[5, 6\]/,
        patch: (sha) => ({
          ...manifest,
          featureStatistics: { ...manifest.featureStatistics, memoryBank: { ...manifest.featureStatistics!.memoryBank!, sha256: sha } },
        }),
      },
      {
        file: 'feature_mean.npy',
        field: '/featureStatistics/gaussian/meanFile',
        data: Float32Array.from(randomMap(positions * c, 4), (v, i) => (i === 7 ? NaN : v)),
        shape: [positions, c],
        message: /non-finite value \(NaN\) at index 7/,
        patch: (sha) => ({
          ...manifest,
          featureStatistics: { ...manifest.featureStatistics, gaussian: { ...manifest.featureStatistics!.gaussian!, meanSha256: sha } },
        }),
      },
    ];
    for (const k of cases) {
      const good = readFileSync(join(dir, k.file));
      try {
        await writeManifest(dir, k.patch(write(k.file, k.data, k.shape)));
        const e = await loadError();
        expect(e.file).toBe(k.file);
        expect(e.field).toBe(k.field);
        expect(e.message).toMatch(k.message);
      } finally {
        writeFileSync(join(dir, k.file), good);
        await writeManifest(dir, manifest);
      }
    }
    // int64 data of the right shape.
    const good = readFileSync(join(dir, 'patchcore_bank.npy'));
    try {
      const bytes = encodeNpy(new BigInt64Array(patches * c), [patches, c]);
      writeFileSync(join(dir, 'patchcore_bank.npy'), bytes);
      await writeManifest(dir, {
        ...manifest,
        featureStatistics: { ...manifest.featureStatistics, memoryBank: { ...manifest.featureStatistics!.memoryBank!, sha256: sha256Bytes(bytes) } },
      });
      expect((await loadError()).message).toMatch(/holds int64 values; it must hold float32/);
    } finally {
      writeFileSync(join(dir, 'patchcore_bank.npy'), good);
      await writeManifest(dir, manifest);
    }
  });
});
