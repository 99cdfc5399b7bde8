/** invad baseline (issue 17): PaDiM and PatchCore statistics in a bundle, scored by the same Detector, and the feature map beside the latent one. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Detector } from '../src/runtime/detector';
import { fitBaseline, fitMemoryBank, greedyCoreset } from '../src/fit/baseline';
import { calibrateBundle, fitBundleLatents } from '../src/fit/calibrate-bundle';
import { FeatureExtractor } from '../src/fit/features';
import { loadBundle } from '../src/runtime/bundle/load';
import { avgPoolPositions, memoryBank, nearestDistances } from '../src/runtime/feature-statistics';
import { fitLatentGaussian, mahalanobisMap } from '../src/runtime/latent-gaussian';
import { readNpy } from '../src/util/npy';
import { mulberry32 } from '../src/util/prng';
import { pngOf, randomRaw } from './helpers/images';
import { tempDir, TINY, writeTinyBundle } from './helpers/bundles';

async function normalsDir(dir: string, count: number): Promise<string[]> {
  const out = join(dir, 'normals');
  mkdirSync(out, { recursive: true });
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    const f = join(out, `n${String(i).padStart(2, '0')}.png`);
    writeFileSync(f, await pngOf(randomRaw(TINY.inputSize, TINY.inputSize, 3, 100 + i)));
    files.push(f);
  }
  return files;
}

describe('PatchCore pieces', () => {
  test('3x3 average pooling averages the neighbours inside the grid', () => {
    const x = Float32Array.from({ length: 2 * 3 * 3 }, (_, i) => i);
    const p = avgPoolPositions(x, 2, 3, 3, 3);
    // Centre of channel 0: the mean of 0..8; corner (0,0): mean of 0, 1, 3, 4.
    expect(p[(1 * 3 + 1) * 2]).toBeCloseTo(4, 6);
    expect(p[0]).toBeCloseTo(2, 6);
    expect(p[1]).toBeCloseTo(11, 6);
  });

  test('nearest distances agree with brute force', () => {
    const rand = mulberry32(3);
    const c = 5;
    const bankData = Float32Array.from({ length: 7 * c }, () => rand() - 0.5);
    const q = Float32Array.from({ length: 4 * c }, () => rand() - 0.5);
    const got = nearestDistances(q, 4, memoryBank(bankData, 7, c, 3));
    for (let r = 0; r < 4; r++) {
      let best = Infinity;
      for (let m = 0; m < 7; m++) {
        let d = 0;
        for (let k = 0; k < c; k++) d += (q[r * c + k] - bankData[m * c + k]) ** 2;
        best = Math.min(best, Math.sqrt(d));
      }
      expect(got[r]).toBeCloseTo(best, 5);
    }
  });

  test('greedy k-center picks distinct points, the farthest next', () => {
    // 1-D points: 0, 1, 2, 10; from any start, 0 and 10 are both in the first three picks.
    const pts = Float32Array.from([0, 1, 2, 10]);
    const chosen = greedyCoreset(pts, 4, 1, 3, 5);
    expect(new Set(chosen).size).toBe(3);
    expect(chosen).toContain(3);
    expect(chosen).toContain(0);
  });

  test('the memory bank keeps the coreset share of the pooled patches', () => {
    const rand = mulberry32(9);
    const f = Float32Array.from({ length: 10 * 6 * 4 * 4 }, () => rand());
    const b = fitMemoryBank(f, 10, 6, 4, 4, { fraction: 0.1, projectionDims: 3 });
    expect(b.sourcePatches).toBe(160);
    expect(b.patches).toBe(16);
    expect(b.projectionDims).toBe(3);
    expect(b.bank.length).toBe(16 * 6);
  });
});

describe('invad baseline on a tiny bundle', () => {
  let dir: string;
  let cleanup: () => void;
  let source: string;
  let out: string;
  let files: string[];

  beforeAll(async () => {
    ({ dir, cleanup } = tempDir());
    source = await writeTinyBundle(dir);
    files = await normalsDir(dir, 24);
    // Latent statistics and a calibration, so that the fused definition can run.
    await fitBundleLatents(source, files.slice(0, 16), { steps: [TINY.steps] });
    await calibrateBundle(source, files.slice(16), { steps: [TINY.steps] });
    out = join(dir, 'with-baselines');
    await fitBaseline({ kinds: ['padim', 'patchcore'], normal: join(dir, 'normals'), out, bundle: source, coreset: 0.1, valFraction: 0.25 });
  }, 120000);
  afterAll(() => cleanup());

  test('the statistics and their calibration are in the manifest, and the bundle loads', async () => {
    const b = await loadBundle(out);
    const m = b.manifest;
    expect(m.featureStatistics?.gaussian?.samples).toBe(18);
    expect(m.featureStatistics?.memoryBank).toMatchObject({ pooling: 3, sourcePatches: 18 * 16, patches: Math.round(18 * 16 * 0.1) });
    const entry = m.calibration.bySteps!.find((e) => e.steps === TINY.steps)!;
    expect(entry.featureGaussian?.scale).toBeGreaterThan(0);
    expect(entry.patchcore?.scale).toBeGreaterThan(0);
    for (const d of ['padim', 'patchcore', 'latent-gaussian-feature-map', 'latent-feature-fused'] as const)
      expect(Number.isFinite(entry.imageThresholds[d])).toBe(true);
    expect(Number.isFinite(entry.pixelThresholds.fused)).toBe(true);
    // The source bundle's own definitions are untouched.
    expect(m.score.definition).toBe((await loadBundle(source)).manifest.score.definition);
  });

  test('padim scores the backbone features alone, with the Mahalanobis distance of x_0', async () => {
    const m = (await loadBundle(out)).manifest;
    const det = await Detector.load(out, { scoreDefinition: 'padim' });
    const ex = await FeatureExtractor.open(join(out, 'backbone.onnx'), { input: m.input, features: m.features });
    try {
      const r = await det.score(files[0]);
      expect(r.timings.unetMs).toEqual([]);
      expect(r.map.length).toBe(TINY.inputSize * TINY.inputSize);
      const mean = await readNpy(join(out, 'feature_mean.npy'));
      const precision = await readNpy(join(out, 'feature_precision.npy'));
      const { features } = await ex.extract([files[0]]);
      const g = { positions: mean.shape[0], channels: mean.shape[1], mean: mean.data as Float32Array, precision: precision.data as Float32Array };
      const ref = mahalanobisMap(features, g);
      expect(Array.from(r.featureMaps.featureGaussian!)).toEqual(Array.from(ref));
      const n = m.calibration.featureGaussian!;
      expect(r.score).toBeCloseTo((Math.max(...ref) - n.center) / n.scale, 5);
      // The Gaussian in the bundle is the one fitted on the training split's features.
      expect(g.channels).toBe(TINY.channels);
      expect(fitLatentGaussian).toBeDefined();
    } finally {
      await ex.close();
      await det.dispose();
    }
  });

  test('patchcore scores from the memory bank, without the UNet', async () => {
    const det = await Detector.load(out, { scoreDefinition: 'patchcore' });
    try {
      const r = await det.score(files[20]);
      expect(r.timings.unetMs).toEqual([]);
      expect(r.components.patchcore).toBeGreaterThanOrEqual(0);
      expect(Math.max(...r.featureMaps.patchcore!)).toBeCloseTo(r.components.patchcore!, 6);
      // A training image's patches are near the bank: closer than a fresh random image's.
      const fresh = join(dir, 'fresh.png');
      writeFileSync(fresh, await pngOf(randomRaw(TINY.inputSize, TINY.inputSize, 3, 999)));
      expect((await det.score(fresh)).components.patchcore).toBeGreaterThan(0);
    } finally {
      await det.dispose();
    }
  });

  test('the feature map beside the latent score, and the fused score', async () => {
    const plain = await Detector.load(out, { scoreDefinition: 'latent-gaussian' });
    const side = await Detector.load(out, { scoreDefinition: 'latent-gaussian-feature-map' });
    const fused = await Detector.load(out, { scoreDefinition: 'latent-feature-fused' });
    try {
      const [a, b, c] = await Promise.all([plain.score(files[1]), side.score(files[1]), fused.score(files[1])]);
      // Same image score as latent-gaussian; the map is the feature Gaussian's.
      expect(b.score).toBe(a.score);
      expect(b.featureMaps.featureGaussian).toBeDefined();
      const cal = (await loadBundle(out)).manifest.calibration.bySteps!.find((e) => e.steps === TINY.steps)!;
      const lg = cal.latentGaussian!;
      const fg = cal.featureGaussian!;
      expect(c.score).toBeCloseTo((c.components.latentGaussian! - lg.center) / lg.scale + (c.components.featureGaussian! - fg.center) / fg.scale, 5);
      const fm = c.featureMaps.fused!;
      const i = 3;
      expect(fm[i]).toBeCloseTo((c.featureMaps.latentGaussian![i] - lg.center) / lg.scale + (c.featureMaps.featureGaussian![i] - fg.center) / fg.scale, 4);
    } finally {
      await Promise.all([plain.dispose(), side.dispose(), fused.dispose()]);
    }
  });

  test('existing definitions score the same on the copy with baselines as on the source', async () => {
    const a = await Detector.load(source, { scoreDefinition: 'combined' });
    const b = await Detector.load(out, { scoreDefinition: 'combined' });
    try {
      const [ra, rb] = await Promise.all([a.score(files[2]), b.score(files[2])]);
      expect(rb.score).toBe(ra.score);
      expect(Array.from(rb.map)).toEqual(Array.from(ra.map));
    } finally {
      await Promise.all([a.dispose(), b.dispose()]);
    }
  });
});
