/**
 * Calibration on more normals, honestly (issue 14, section 2): the split-conformal threshold and
 * its small-sample warning, out-of-fold latent-Gaussian scores of the training normals pooled
 * with the held-out ones, --append pooling, and calibration.json (hashed, checked at load, absent
 * from older bundles).
 */
import { copyFileSync, cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Detector } from '../src';
import { loadBundle } from '../src/runtime/bundle/load';
import { calibrationWarnings, smallSampleWarning } from '../src/runtime/bundle/calibration-scores';
import type { CalibrationSpec } from '../src/runtime/bundle/manifest';
import { fitLatentGaussian, mahalanobisMap, type Regularization } from '../src/runtime/latent-gaussian';
import { imageScore, type ScoreComponents } from '../src/runtime/scores';
import { calibratePool, calibrationSpec, checkFolds, compareSources, conformalWarnings, outOfFoldScores } from '../src/fit/calibrate';
import { calibrateBundle, compareBundleSources, fitBundleLatents } from '../src/fit/calibrate-bundle';
import { calibrateCommand } from '../src/tools/cli/commands/calibrate';
import { fitCommand } from '../src/tools/cli/commands/fit';
import { fit } from '../src/fit/fit';
import { conformalMinSamples, conformalRank, conformalThreshold, ksTwoSample } from '../src/util/stats';
import { mulberry32 } from '../src/util/prng';
import { sha256Bytes } from '../src/runtime/bundle/hash';
import { editManifest, tempDir, writeTinyBundle } from './helpers/bundles';
import { pngOf, randomRaw } from './helpers/images';

describe('the split-conformal threshold', () => {
  test('its rank, ceil((n + 1)(1 - alpha)), on hand-worked cases', () => {
    // n = 99, alpha = 1%: ceil(100 * 0.99) = 99, the largest score (100 * 0.01 must count as 1).
    expect(conformalRank(99, 0.01)).toBe(99);
    expect(conformalRank(199, 0.01)).toBe(198); // ceil(200 * 0.99) = 198
    expect(conformalRank(100, 0.1)).toBe(91); // ceil(101 * 0.9) = ceil(90.9)
    expect(conformalRank(19, 0.05)).toBe(19); // ceil(20 * 0.95) = 19
    expect(conformalRank(49, 0.1)).toBe(45); // ceil(50 * 0.9) = 45
    // Too few: n + 1 < 1/alpha leaves no order statistic of n.
    expect(conformalRank(21, 0.01)).toBe(22); // the 21 held-out normals
    expect(conformalRank(18, 0.05)).toBe(19);
  });

  test('the normals a rate needs: ceil(1/alpha) - 1', () => {
    expect(conformalMinSamples(0.01)).toBe(99);
    expect(conformalMinSamples(0.05)).toBe(19);
    expect(conformalMinSamples(0.1)).toBe(9);
    expect(conformalMinSamples(0.03)).toBe(33); // 34 * 0.03 = 1.02, 33 * 0.03 = 0.99
    expect(conformalMinSamples(0.005)).toBe(199);
    for (const alpha of [0.01, 0.05, 0.03, 0.005, 0.2]) {
      const n = conformalMinSamples(alpha);
      expect(conformalRank(n, alpha)).toBeLessThanOrEqual(n);
      expect(conformalRank(n - 1, alpha)).toBeGreaterThan(n - 1);
    }
  });

  test('the threshold: that order statistic, or the largest score, flagged as insufficient', () => {
    const scores = [5, 1, 4, 2, 3]; // n = 5
    expect(conformalThreshold(scores, 0.2)).toEqual({ threshold: 5, rank: 5, sufficient: true }); // ceil(6 * 0.8) = 5
    expect(conformalThreshold(scores, 0.1)).toEqual({ threshold: 5, rank: 5, sufficient: false }); // 6 < 10
    const twenty = Array.from({ length: 20 }, (_, i) => 20 - i);
    expect(conformalThreshold(twenty, 0.1)).toEqual({ threshold: 19, rank: 19, sufficient: true }); // ceil(21 * 0.9) = 19
  });

  test('its guarantee holds, and not by a wide margin: a new normal exceeds it at the rate alpha', () => {
    // n = 49 uniform scores, alpha = 0.1: rank 45, and P(new > 45th of 49) = (50 - 45) / 50 = 0.1
    // exactly. An off-by-one rank would give 0.08 or 0.12, some 9 standard errors away.
    const rand = mulberry32(11);
    const trials = 20000;
    let exceed = 0;
    for (let t = 0; t < trials; t++) {
      const { threshold } = conformalThreshold(Array.from({ length: 49 }, rand), 0.1);
      if (rand() > threshold) exceed++;
    }
    expect(Math.abs(exceed / trials - 0.1)).toBeLessThan(0.0065); // 3 standard errors
  });

  test('the small-sample warning says how many normals the rate needs and what the rate is instead', () => {
    const w = smallSampleWarning('The sp threshold at S = 3', 21, 0.01);
    expect(w).toContain('21 normal images');
    expect(w).toContain('false-alarm rate of 1%');
    expect(w).toContain('at least 99 normals');
    expect(w).toContain('1 good part in 22 (4.55%)');
  });
});

describe('two-sample Kolmogorov-Smirnov', () => {
  test('the statistic on hand-worked samples, ties included', () => {
    expect(ksTwoSample([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]).statistic).toBe(1);
    expect(ksTwoSample([1, 2, 3], [3, 2, 1])).toEqual({ statistic: 0, pValue: 1 });
    // F_a - F_b after 1: 1/2 - 0; after 2: 1 - 1/2 (the tie steps both): sup is 1/2.
    expect(ksTwoSample([1, 2], [2, 3]).statistic).toBe(0.5);
    expect(ksTwoSample([], [1]).statistic).toBeNaN();
  });

  test('the p-value: Kolmogorov with Stephens correction', () => {
    // n = m = 100, D = 0.2: e = sqrt(50), lambda = (e + 0.12 + 0.11/e) 0.2 = 1.4413,
    // Q = 2 (x - x^4 + x^9) with x = exp(-2 lambda^2).
    const a = Array.from({ length: 100 }, (_, i) => i);
    const b = a.map((v) => v + 20);
    const { statistic, pValue } = ksTwoSample(a, b);
    expect(statistic).toBeCloseTo(0.2, 12);
    const lambda = (Math.sqrt(50) + 0.12 + 0.11 / Math.sqrt(50)) * 0.2;
    const x = Math.exp(-2 * lambda * lambda);
    expect(pValue).toBeCloseTo(2 * (x - x ** 4 + x ** 9), 10);
    expect(pValue).toBeGreaterThan(0.02);
    expect(pValue).toBeLessThan(0.04);
    // Smaller D, larger p-value, up to 1.
    expect(
      ksTwoSample(
        a,
        a.map((v) => v + 5),
      ).pValue,
    ).toBeGreaterThan(0.9);
  });
});

/** Normal latents [n, c, positions] from a seeded Box-Muller, with sample `outlier` moved far off. */
function latentsWithOutlier(n: number, c: number, positions: number, outlier: number, seed = 3): Float32Array {
  const rand = mulberry32(seed);
  const out = new Float32Array(n * c * positions).map(() => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()));
  for (let k = 0; k < c * positions; k++) out[outlier * c * positions + k] += 8;
  return out;
}

describe('out-of-fold latent-Gaussian scores', () => {
  const NONE: Regularization = { amount: 0, relativeTo: 'absolute' };

  test('each training normal is scored by a Gaussian fitted without its fold', () => {
    const [n, c, positions, folds] = [12, 2, 3, 4];
    const latents = latentsWithOutlier(n, c, positions, 5);
    const per = c * positions;
    const oof = outOfFoldScores(latents, n, c, positions, folds, NONE);
    expect(oof.components).toHaveLength(n);
    for (let i = 0; i < n; i++) {
      // The same fit, by hand, on the normals of the other folds only.
      const others = Array.from({ length: n }, (_, j) => j).filter((j) => j % folds !== i % folds);
      const train = new Float32Array(others.length * per);
      others.forEach((j, k) => train.set(latents.subarray(j * per, (j + 1) * per), k * per));
      const map = mahalanobisMap(latents.subarray(i * per, (i + 1) * per), fitLatentGaussian(train, others.length, c, positions, NONE));
      expect(oof.maps[i]).toEqual(map);
      expect(oof.components[i].latentGaussian).toBe(Math.max(...map));
    }
  });

  test('a planted outlier stands out out of fold, and hides in a Gaussian that saw it', () => {
    const [n, c, positions, outlier] = [10, 2, 1, 7];
    const latents = latentsWithOutlier(n, c, positions, outlier);
    const inSample = mahalanobisMap(latents.subarray(outlier * c, (outlier + 1) * c), fitLatentGaussian(latents, n, c, positions, NONE))[0];
    // A point inside the fit is at most (n - 1)/sqrt(n) = 2.85 away.
    expect(inSample).toBeLessThan((n - 1) / Math.sqrt(n));
    const oof = outOfFoldScores(latents, n, c, positions, 5, NONE);
    expect(oof.components[outlier].latentGaussian).toBeGreaterThan(10);
    const others = oof.components.filter((_, i) => i !== outlier).map((x) => x.latentGaussian!);
    expect(Math.max(...others)).toBeLessThan(oof.components[outlier].latentGaussian!);
  });

  test('SP and NLL of each latent, by the engines formulas', () => {
    // One latent, 2 channels x 2 positions: norms 5 and 0, sum of squares 25.
    const oof = outOfFoldScores(Float32Array.from([3, 0, 4, 0, 1, 1, 1, 1, 2, 2, 2, 2, 0, 1, 0, 1]), 4, 2, 2, 2, { amount: 0.1, relativeTo: 'absolute' });
    expect(oof.components[0].spatialRange).toBe(5);
    expect(oof.components[0].nll).toBeCloseTo(12.5 + 2 * Math.log(2 * Math.PI), 12);
  });

  test('fit and its CLI take the fold count, and refuse fewer than 2 before any work', async () => {
    await expect(fit({ normal: 'normals', out: 'model', backbone: 'mobilenetv2-int8', outOfFold: 1 })).rejects.toMatchObject({ argument: 'outOfFold' });
    expect(fitCommand().options.map((o) => o.long)).toEqual(expect.arrayContaining(['--out-of-fold', '--no-out-of-fold']));
  });

  test('fold counts: at least 2, at most n, and every fit on at least 2 normals', () => {
    expect(() => checkFolds(1, 10)).toThrow(expect.objectContaining({ argument: 'outOfFold' }));
    expect(() => checkFolds(2.5, 10)).toThrow(expect.objectContaining({ argument: 'outOfFold' }));
    expect(() => checkFolds(6, 5)).toThrow(/at least 6 training normals/);
    expect(() => checkFolds(2, 3)).toThrow(/leave 1 to fit/); // folds of 2 and 1: fitting on 1
    expect(() => checkFolds(3, 3)).not.toThrow();
    expect(() => checkFolds(5, 4)).toThrow();
  });
});

describe('pooling', () => {
  const parts = (spatialRange: number, nll: number, latentGaussian: number): ScoreComponents => ({ spatialRange, nll, latentGaussian });
  const maps = (k: number) => ({
    l2: Array.from({ length: k }, () => Float32Array.of(1, 2)),
    latentGaussian: Array.from({ length: k }, () => Float32Array.of(1, 2)),
  });

  test('out-of-fold normals set the latent-Gaussian part only; SP and NLL stay with the held-out ones', () => {
    const heldOut = Array.from({ length: 9 }, (_, i) => parts(1 + i, 100 + i, 10 + i));
    // Training normals with absurd SP and NLL (the UNet saw them) and latent scores like the held-out ones.
    const outOfFold = Array.from({ length: 90 }, (_, i) => parts(1e6, 1e9, 10 + (i % 9) + 0.5));
    const alone = calibratePool(3, { heldOut, maps: maps(9) }, 0.01);
    const pooled = calibratePool(3, { heldOut, outOfFold, maps: maps(9) }, 0.01);
    expect(pooled.sp).toEqual(alone.sp);
    expect(pooled.nll).toEqual(alone.nll);
    expect(pooled.imageThresholds.sp).toBe(alone.imageThresholds.sp);
    expect(pooled.imageThresholds.combined).toBe(alone.imageThresholds.combined);
    expect(pooled.latentGaussian).not.toEqual(alone.latentGaussian);
    // 99 pooled normals at 1%: the 99th smallest, the largest of the pool, now under the pooled normalization.
    const all = [...heldOut, ...outOfFold].map((x) => imageScore('latent-gaussian', x, pooled));
    expect(pooled.imageThresholds['latent-gaussian']).toBe(conformalThreshold(all, 0.01).threshold);
  });

  test('the warnings: one per group of definitions on the same too-small n, saying what each needs', () => {
    const heldOut = Array.from({ length: 21 }, (_, i) => parts(1 + i, 100 + i, 10 + i));
    const outOfFold = Array.from({ length: 189 }, (_, i) => parts(1, 1, 10 + (i % 21)));
    const steps = [2, 3].map((s) => calibratePool(s, { heldOut, outOfFold, maps: maps(21) }, 0.01));
    const counts = steps.map((s) => ({ steps: s.steps, heldOut: 21, outOfFold: 189 }));
    const warnings = conformalWarnings(steps, counts, 0.01);
    expect(warnings).toHaveLength(1); // latent-gaussian rests on 210 >= 99
    expect(warnings[0]).toMatch(/^The sp, nll and combined thresholds at S = 2, 3 rest on 21 normal images/);
    expect(warnings[0]).toContain('at least 99 normals');
    // At 0.1% the pooled 210 fall short too, at their own n.
    const strict = conformalWarnings(steps, counts, 0.001);
    expect(strict).toHaveLength(2);
    // (Other definitions made of the latent-Gaussian part alone join this group.)
    expect(strict[1]).toMatch(/^The latent-gaussian\b.* at S = 2, 3 rest on 210 normal images/);
    expect(strict[1]).toContain('at least 999 normals');
    // The manifest records the rule, the sources and the warnings.
    const spec = calibrationSpec(steps, { steps: 3, definition: 'latent-gaussian', samples: 21, falseAlarmRate: 0.01 }, undefined, {
      outOfFold: { folds: 5, samples: 189 },
    });
    expect(spec).toMatchObject({ imageThresholdMethod: 'conformal', outOfFold: { folds: 5, samples: 189 }, warnings });
    // F1-max thresholds promise no rate: no conformal warnings.
    expect(calibrationSpec(steps, { steps: 3, definition: 'sp', samples: 21, falseAlarmRate: 0.01 }, { normal: 3, anomalous: 3 }).warnings).toEqual([]);
  });

  test('older calibrations: the small-sample warning is derived from their samples and rate', () => {
    const legacy = {
      status: 'calibrated',
      method: 'x',
      sp: { center: 0, scale: 1 },
      nll: { center: 0, scale: 1 },
      imageThreshold: 1,
      pixelThreshold: 1,
      samples: 21,
      falseAlarmRate: 0.01,
    } satisfies CalibrationSpec;
    expect(calibrationWarnings(legacy)).toEqual([expect.stringContaining('at least 99 normals')]);
    expect(calibrationWarnings({ ...legacy, samples: 150 })).toEqual([]);
    expect(calibrationWarnings({ ...legacy, imageThresholdMethod: 'f1-max' })).toEqual([]);
    expect(calibrationWarnings({ ...legacy, status: 'placeholder' })).toEqual([]);
  });
});

describe('a tiny bundle calibrated with out-of-fold scores, appended to, and checked at load', () => {
  let tmp: ReturnType<typeof tempDir>;
  let bundle: string;
  let train: string[];
  let held: string[];
  let more: string[];
  const OUTLIER = 7;

  const images = async (dir: string, count: number, seed: number) => {
    mkdirSync(dir, { recursive: true });
    const files: string[] = [];
    for (let i = 0; i < count; i++) {
      const file = join(dir, `${String(i).padStart(2, '0')}.png`);
      writeFileSync(file, await pngOf(randomRaw(32, 32, 3, seed + i)));
      files.push(file);
    }
    return files;
  };
  const manifestOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  const scoresOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'calibration.json'), 'utf8'));

  beforeAll(async () => {
    tmp = tempDir('invad-calibration-');
    bundle = await writeTinyBundle(tmp.dir);
    train = await images(join(tmp.dir, 'train'), 20, 100);
    // The planted outlier: a flat white image among noise.
    const white = randomRaw(32, 32, 3, 0);
    white.data.fill(255);
    writeFileSync(train[OUTLIER], await pngOf(white));
    held = await images(join(tmp.dir, 'held'), 6, 200);
    more = await images(join(tmp.dir, 'more'), 5, 300);
    await fitBundleLatents(bundle, train, { steps: [3] });
    await calibrateBundle(bundle, held, { steps: [3], training: train });
  });
  afterAll(() => tmp?.cleanup());

  const copyBundle = (name: string) => {
    const copy = join(tmp.dir, name);
    cpSync(bundle, copy, { recursive: true });
    return copy;
  };

  test('the manifest records the rule, both sources and the warnings; calibration.json holds every score', async () => {
    const cal = manifestOf(bundle).calibration;
    expect(cal).toMatchObject({
      imageThresholdMethod: 'conformal',
      samples: 6,
      outOfFold: { folds: 5, samples: 20 },
      scoresFile: { file: 'calibration.json' },
    });
    expect(cal.scoresFile.sha256).toBe(sha256Bytes(readFileSync(join(bundle, 'calibration.json'))));
    const [entry] = scoresOf(bundle).bySteps;
    expect(entry.steps).toBe(3);
    expect(entry.samples.map((s: { source: string }) => s.source)).toEqual([...Array(6).fill('held-out'), ...Array(20).fill('out-of-fold')]);
    // 6 held-out normals for sp/nll/combined, 26 pooled for latent-gaussian: both too few for 1%.
    expect(cal.warnings).toHaveLength(2);
    expect(cal.warnings[0]).toMatch(/^The sp, nll and combined thresholds at S = 3 rest on 6 normal images.*at least 99 normals/);
    expect(cal.warnings[1]).toMatch(/^The latent-gaussian\b.* at S = 3 rest on 26 normal images/);
    const det = await Detector.load(bundle);
    try {
      expect(det.info().calibration).toEqual({
        imageThresholdMethod: 'conformal',
        falseAlarmRate: 0.01,
        samples: 6,
        outOfFold: { folds: 5, samples: 20 },
        warnings: cal.warnings,
      });
    } finally {
      await det.dispose();
    }
  });

  test('the planted outlier scores higher out of fold than under the Gaussian that saw it', async () => {
    const samples = scoresOf(bundle).bySteps[0].samples;
    const det = await Detector.load(bundle, { scoreDefinition: 'latent-gaussian' });
    try {
      const [outlier, typical] = await det.scoreBatch([train[OUTLIER], train[0]]);
      const oof = samples[6 + OUTLIER];
      expect(oof.latentGaussian).toBeGreaterThan(2 * outlier.components.latentGaussian!);
      // SP and NLL of the out-of-fold samples come from the latents, as the engine computes them.
      expect(samples[6].spatialRange).toBeCloseTo(typical.components.spatialRange, 4);
      expect(samples[6].nll / typical.components.nll).toBeCloseTo(1, 6);
    } finally {
      await det.dispose();
    }
  });

  test('the measurement hook: medians and KS of each part, out of fold against held out', async () => {
    const [at3] = await compareBundleSources(bundle);
    expect(at3.steps).toBe(3);
    for (const part of ['spatialRange', 'nll', 'latentGaussian'] as const) {
      const p = at3.parts[part]!;
      expect(p.heldOut.n).toBe(6);
      expect(p.outOfFold.n).toBe(20);
      expect(p.ks).toBeGreaterThanOrEqual(0);
      expect(p.ks).toBeLessThanOrEqual(1);
      expect(p.pValue).toBeGreaterThanOrEqual(0);
    }
    // By hand on a sample whose answer is known: identical sources, D = 0.
    const same = {
      format: 'invad-calibration-scores',
      version: 1,
      bySteps: [
        {
          steps: 2,
          samples: [1, 2, 3].flatMap((v) => [
            { source: 'held-out', spatialRange: v, nll: v },
            { source: 'out-of-fold', spatialRange: v, nll: v },
          ]),
        },
      ],
    } as const;
    const [cmp] = compareSources({ ...same, bySteps: same.bySteps.map((e) => ({ ...e, samples: [...e.samples] })) });
    expect(cmp.parts.spatialRange).toEqual({ heldOut: { n: 3, median: 2 }, outOfFold: { n: 3, median: 2 }, ks: 0, pValue: 1 });
    expect(cmp.parts.latentGaussian).toBeUndefined();
  });

  test('--append pools the new normals with the stored sample', async () => {
    const copy = copyBundle('appended');
    const before = scoresOf(copy).bySteps[0].samples;
    const cal = await calibrateBundle(copy, more, { steps: [3], append: true });
    const after = scoresOf(copy).bySteps[0].samples;
    expect(after.slice(0, before.length)).toEqual(before);
    expect(after.slice(before.length).map((s: { source: string }) => s.source)).toEqual(Array(5).fill('held-out'));
    expect(cal).toMatchObject({ samples: 11, outOfFold: { folds: 5, samples: 20 } });
    // Recomputed from the pooled raw scores, under the pooled normalization.
    const step = cal.bySteps![0];
    const heldOut = after.filter((s: { source: string }) => s.source === 'held-out');
    expect(step.imageThresholds.sp).toBe(
      conformalThreshold(
        heldOut.map((s: ScoreComponents) => imageScore('sp', s, step)),
        0.01,
      ).threshold,
    );
    expect(step.imageThresholds['latent-gaussian']).toBe(
      conformalThreshold(
        after.map((s: ScoreComponents) => imageScore('latent-gaussian', s, step)),
        0.01,
      ).threshold,
    );
    expect(cal.warnings![0]).toContain('rest on 11 normal images');
    // Without --append the sample is replaced: the new normals only.
    const replaced = await calibrateBundle(copy, more, { steps: [3] });
    expect(replaced.samples).toBe(5);
    expect(replaced.outOfFold).toBeUndefined();
    expect(scoresOf(copy).bySteps[0].samples).toHaveLength(5);
  });

  test('--append refuses what it cannot pool honestly', async () => {
    const copy = copyBundle('append-refusals');
    await expect(calibrateBundle(copy, more, { steps: [3], append: true, training: train })).rejects.toMatchObject({ argument: 'append' });
    await expect(calibrateBundle(copy, more, { steps: [3], outOfFold: 3 })).rejects.toMatchObject({ argument: 'outOfFold' });
    // Refitted latent statistics: the stored latent-Gaussian scores no longer apply.
    await fitBundleLatents(copy, train.slice(0, 10), { steps: [3] });
    await expect(calibrateBundle(copy, more, { steps: [3], append: true })).rejects.toMatchObject({
      argument: 'append',
      message: expect.stringContaining('refitted'),
    });
    // Other models (an int8 UNet, say): the stored scores are not theirs.
    const requantized = copyBundle('append-other-unet');
    const scores = JSON.parse(readFileSync(join(requantized, 'calibration.json'), 'utf8'));
    expect(scores.models.unetSha256).toBe(manifestOf(requantized).models.unet.sha256);
    scores.models.unetSha256 = 'e'.repeat(64);
    const bytes = Buffer.from(JSON.stringify(scores));
    writeFileSync(join(requantized, 'calibration.json'), bytes);
    editManifest(requantized, (m) => (m.calibration.scoresFile.sha256 = sha256Bytes(bytes)));
    await expect(calibrateBundle(requantized, more, { steps: [3], append: true })).rejects.toMatchObject({
      argument: 'append',
      message: expect.stringContaining('other models'),
    });
    // A bundle calibrated before calibration.json has nothing to append to.
    const legacy = copyBundle('append-legacy');
    editManifest(legacy, (m) => delete m.calibration.scoresFile);
    rmSync(join(legacy, 'calibration.json'));
    await expect(calibrateBundle(legacy, more, { steps: [3], append: true })).rejects.toMatchObject({
      argument: 'append',
      message: expect.stringContaining('no stored calibration sample'),
    });
  });

  test('calibration.json is hashed: a tampered or missing file is rejected at load, unless hashes are skipped', async () => {
    const copy = copyBundle('tampered');
    const path = join(copy, 'calibration.json');
    const original = readFileSync(path, 'utf8');
    writeFileSync(path, original.replace(/"spatialRange":([0-9.e-]+)/, '"spatialRange":0.5'));
    await expect(loadBundle(copy)).rejects.toMatchObject({ code: 'ERR_INVAD_MODEL_BUNDLE', file: 'calibration.json', field: '/calibration/scoresFile/sha256' });
    await expect(Detector.load(copy)).rejects.toMatchObject({ file: 'calibration.json' });
    await expect(loadBundle(copy, { skipHashCheck: true })).resolves.toHaveProperty('calibrationScores');
    // Content checks hold even without hashes: an unknown source, a repeated S.
    writeFileSync(path, original.replace('"held-out"', '"borrowed"'));
    await expect(loadBundle(copy, { skipHashCheck: true })).rejects.toMatchObject({ file: 'calibration.json', message: expect.stringContaining('invalid') });
    const doubled = JSON.parse(original);
    doubled.bySteps.push(doubled.bySteps[0]);
    writeFileSync(path, JSON.stringify(doubled));
    await expect(loadBundle(copy, { skipHashCheck: true })).rejects.toMatchObject({ message: expect.stringContaining('repeats S = 3') });
    rmSync(path);
    await expect(loadBundle(copy)).rejects.toMatchObject({ file: 'calibration.json', field: '/calibration/scoresFile/file' });
    // It may not pose as the manifest or a model.
    copyFileSync(join(bundle, 'calibration.json'), path);
    editManifest(copy, (m) => (m.calibration.scoresFile.file = 'unet.onnx'));
    await expect(loadBundle(copy)).rejects.toMatchObject({ field: '/calibration/scoresFile/file' });
  });

  test('older bundles (no calibration.json, no rule, no warnings) still load, with the warning derived', async () => {
    const legacy = copyBundle('legacy');
    editManifest(legacy, (m) => {
      for (const key of ['scoresFile', 'warnings', 'outOfFold', 'imageThresholdMethod']) delete m.calibration[key];
    });
    rmSync(join(legacy, 'calibration.json'));
    const loaded = await loadBundle(legacy);
    expect(loaded.calibrationScores).toBeUndefined();
    const det = await Detector.load(legacy);
    try {
      const info = det.info().calibration;
      expect(info).toMatchObject({ imageThresholdMethod: 'false-alarm-rate', samples: 6, outOfFold: null });
      expect(info.warnings).toEqual([expect.stringContaining('set by an older invad')]);
      expect((await det.score(held[0])).threshold).not.toBeNull();
    } finally {
      await det.dispose();
    }
    await expect(compareBundleSources(legacy)).rejects.toMatchObject({ argument: 'dir' });
  });

  test('invad calibrate: --append, --compare-sources, and flags refused before the bundle changes', async () => {
    const copy = copyBundle('cli');
    const run = async (args: string[]) => {
      const out: string[] = [];
      const err: string[] = [];
      const stdout = jest.spyOn(process.stdout, 'write').mockImplementation((s) => (out.push(String(s)), true));
      const stderr = jest.spyOn(process.stderr, 'write').mockImplementation((s) => (err.push(String(s)), true));
      try {
        await calibrateCommand().exitOverride().parseAsync(args, { from: 'user' });
      } finally {
        stdout.mockRestore();
        stderr.mockRestore();
      }
      return { out: out.join(''), err: err.join('') };
    };
    const appended = await run([...more, '--model', copy, '--steps', '3', '--append', '--compare-sources']);
    const line = JSON.parse(appended.out);
    expect(line).toMatchObject({ samples: 11, outOfFold: { folds: 5, samples: 20 }, imageThresholdMethod: 'conformal', falseAlarmRate: 0.01 });
    expect(line.sources[0].parts.latentGaussian.heldOut.n).toBe(11);
    expect(appended.err).toContain('warning: The sp, nll and combined thresholds at S = 3 rest on 11 normal images');
    const compared = JSON.parse((await run(['--model', copy, '--compare-sources'])).out);
    expect(compared.sources).toEqual(line.sources);
    const manifest = readFileSync(join(copy, 'manifest.json'), 'utf8');
    await expect(run([...more, '--model', copy, '--out-of-fold', '3'])).rejects.toThrow(/--refit-latent/);
    await expect(run([...more, '--model', copy, '--append', '--refit-latent', join(tmp.dir, 'train')])).rejects.toThrow(/--append/);
    await expect(run(['--model', copy])).rejects.toThrow(/normal images/);
    expect(readFileSync(join(copy, 'manifest.json'), 'utf8')).toBe(manifest);
  });
});
