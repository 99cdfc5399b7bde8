/**
 * invad eval on a tiny synthetic MVTec-layout dataset: textured "good" parts and
 * parts with a dark blob (with its ground-truth mask), scored by a synthetic
 * bundle whose backbone answers to local contrast.
 */
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { Detector } from '../src';
import { writeBundle } from '../src/fit/write-bundle';
import { calibratePool, poolsOutOfFold, withF1Thresholds } from '../src/fit/calibrate';
import { calibrateBundle, fitBundleLatents } from '../src/fit/calibrate-bundle';
import { loadLabelledImages } from '../src/eval/dataset';
import { evaluate } from '../src/eval/evaluate';
import { labelledItems, measureLabelledDecisions } from '../src/eval/decision';
import { fitLatentGaussian, mahalanobisMap } from '../src/runtime/latent-gaussian';
import { convBackbone, linearUnet } from '../src/fit/onnx/synthetic';
import { mulberry32 } from '../src/util/prng';
import type { EvalReport } from '../src/eval/report/types';
import { tempDir } from './helpers/bundles';

const SIZE = 64;
const STRIDE = 8;
const C = 8;

function part(seed: number, blob: boolean): { px: Buffer; mask: Buffer } {
  const rand = mulberry32(seed);
  const px = Buffer.alloc(SIZE * SIZE);
  const mask = Buffer.alloc(SIZE * SIZE);
  const [cx, cy] = [16 + rand() * 32, 16 + rand() * 32];
  for (let y = 0; y < SIZE; y++)
    for (let x = 0; x < SIZE; x++) {
      let v = 128 + 20 * Math.sin(x / 3) + 12 * (rand() - 0.5);
      if (blob && (x - cx) ** 2 + (y - cy) ** 2 < 25) {
        v = 20;
        mask[y * SIZE + x] = 255;
      }
      px[y * SIZE + x] = Math.round(v);
    }
  return { px, mask };
}

const png = (data: Buffer, f: string) =>
  sharp(data, { raw: { width: SIZE, height: SIZE, channels: 1 } })
    .png()
    .toFile(f);

let tmp: ReturnType<typeof tempDir>;
let dataset: string;
let bundle: string;
let normals: string[];

beforeAll(async () => {
  tmp = tempDir('invad-eval-');
  dataset = join(tmp.dir, 'ds');
  for (const d of ['train/good', 'test/good', 'test/blob', 'ground_truth/blob']) mkdirSync(join(dataset, d), { recursive: true });
  normals = [];
  for (let i = 0; i < 30; i++) {
    const f = join(dataset, 'train/good', `${i}.png`);
    await png(part(i, false).px, f);
    normals.push(f);
  }
  for (let i = 0; i < 8; i++) await png(part(100 + i, false).px, join(dataset, 'test/good', `${i}.png`));
  for (let i = 0; i < 6; i++) {
    const p = part(200 + i, true);
    await png(p.px, join(dataset, 'test/blob', `${i}.png`));
    await png(p.mask, join(dataset, 'ground_truth/blob', `${i}_mask.png`));
  }
  // A high-pass backbone (zero-mean kernels) and eps = 0.5*x: contrast drives the score.
  const rand = mulberry32(1);
  const k = STRIDE * STRIDE * 3;
  const w = new Float32Array(C * k).map(() => rand() - 0.5);
  for (let c = 0; c < C; c++) {
    const mean = w.subarray(c * k, (c + 1) * k).reduce((a, b) => a + b, 0) / k;
    for (let i = 0; i < k; i++) w[c * k + i] -= mean;
  }
  const side = SIZE / STRIDE;
  bundle = join(tmp.dir, 'model');
  await writeBundle(bundle, {
    input: { width: SIZE, height: SIZE, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
    features: { channels: C, height: side, width: side },
    defaultSteps: 3,
    backbone: { bytes: convBackbone({ height: SIZE, width: SIZE, channels: C, stride: STRIDE, weights: w, bias: new Float32Array(C) }), name: 'test-highpass' },
    unet: { bytes: linearUnet({ channels: C, height: side, width: side, k: 0.5, m: 0 }) },
  });
  await fitBundleLatents(bundle, normals.slice(0, 24), { steps: [2, 3] });
  await calibrateBundle(bundle, normals.slice(24), { steps: [2, 3] });
});
afterAll(() => tmp.cleanup());

test('latent-Gaussian statistics: mean, precision and Mahalanobis distance', () => {
  // Two channels, one position; samples (1,0), (-1,0), (0,2), (0,-2): mean 0, covariance diag(2/3, 8/3).
  const lat = Float32Array.from([1, 0, -1, 0, 0, 2, 0, -2]); // n=4, c=2, positions=1 (NCHW)
  const g = fitLatentGaussian(lat, 4, 2, 1, { amount: 0, relativeTo: 'absolute' });
  expect([...g.mean]).toEqual([0, 0]);
  expect(g.precision[0]).toBeCloseTo(1.5, 5);
  expect(g.precision[3]).toBeCloseTo(3 / 8, 5);
  expect(Math.abs(g.precision[1])).toBeLessThan(1e-6);
  expect(mahalanobisMap(Float32Array.from([1, 2]), g)[0]).toBeCloseTo(Math.sqrt(1.5 + 4 * (3 / 8)), 5);
});

test('latent-Gaussian regularization: absolute, or relative to the mean variance', () => {
  const lat = Float32Array.from([1, 0, -1, 0, 0, 2, 0, -2]); // covariance diag(2/3, 8/3), mean variance 5/3
  const abs = fitLatentGaussian(lat, 4, 2, 1, { amount: 0.5, relativeTo: 'absolute' });
  expect(abs.precision[0]).toBeCloseTo(1 / (2 / 3 + 0.5), 5);
  // relative: 0.5 * 5/3 = 5/6 on the diagonal
  const rel = fitLatentGaussian(lat, 4, 2, 1, { amount: 0.5, relativeTo: 'mean-variance' });
  expect(rel.precision[0]).toBeCloseTo(2 / 3, 5);
  expect(rel.precision[3]).toBeCloseTo(2 / 7, 5);
  // the same data at 1/10 the scale gets the same distances (scale-free), unlike an absolute amount
  const small = fitLatentGaussian(
    lat.map((v) => v / 10),
    4,
    2,
    1,
    { amount: 0.5, relativeTo: 'mean-variance' },
  );
  expect(mahalanobisMap(Float32Array.from([0.1, 0.2]), small)[0]).toBeCloseTo(mahalanobisMap(Float32Array.from([1, 2]), rel)[0], 4);
  expect(() => fitLatentGaussian(lat, 4, 2, 1, { amount: Number.NaN, relativeTo: 'absolute' })).toThrow(/regularization/);
});

test('the bundle carries latent statistics and per-S calibration', async () => {
  const m = JSON.parse(readFileSync(join(bundle, 'manifest.json'), 'utf8'));
  expect(m.latentGaussian.map((g: { steps: number }) => g.steps)).toEqual([2, 3]);
  expect(m.latentGaussian[0]).toMatchObject({ regularization: 0.01, regularizationRelativeTo: 'mean-variance' });
  expect(m.calibration.bySteps.map((s: { steps: number }) => s.steps)).toEqual([2, 3]);
  expect(m.calibration.status).toBe('calibrated');
  const det = await Detector.load(bundle, { scoreDefinition: 'latent-gaussian', steps: 2 });
  try {
    const r = await det.score(join(dataset, 'test/blob/0.png'));
    expect(r.components.latentGaussian).toBeGreaterThan(0);
    expect(r.featureMaps.latentGaussian).toHaveLength(64);
    expect(r.threshold).not.toBeNull();
    await expect(det.score(join(dataset, 'test/blob/0.png'), { steps: 5 })).rejects.toMatchObject({ argument: 'options.steps' });
  } finally {
    await det.dispose();
  }
  // The Mahalanobis map costs time: other definitions skip it unless asked for every map.
  const sp = await Detector.load(bundle, { scoreDefinition: 'sp', steps: 2 });
  try {
    const file = join(dataset, 'test/blob/0.png');
    expect((await sp.score(file)).components.latentGaussian).toBeUndefined();
    expect((await sp.score(file, { allMaps: true })).featureMaps.latentGaussian).toHaveLength(64);
  } finally {
    await sp.dispose();
  }
});

test('eval reports metrics per definition, S and defect type, and writes the report', async () => {
  const out = join(tmp.dir, 'report');
  const report = await evaluate({ dataset, model: bundle, steps: [2, 3], out, latencySamples: 3, gallery: 2 });
  const defs = [...new Set(report.rows.map((r) => r.scoreDefinition))].sort();
  expect(defs).toEqual(['combined', 'latent-gaussian', 'nll', 'sp']);
  expect(report.rows).toHaveLength(4 * 2 * 2); // definitions x S x (all, blob)
  for (const r of report.rows) {
    for (const v of Object.values(r.metrics)) expect(v === null || (v >= 0 && v <= 1)).toBe(true);
  }
  const sp = report.rows.find((r) => r.scoreDefinition === 'sp' && r.steps === 3 && r.subset === 'all')!.metrics;
  expect(sp.imageAuroc).toBeGreaterThan(0.9); // the blob is easy for a contrast backbone
  expect(sp.pixelAuroc).toBeGreaterThan(0.8);
  expect(report.latency.map((l) => l.batchSize)).toEqual([1, 8, 1, 8]);
  expect(existsSync(join(out, 'report.html'))).toBe(true);
  const json = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as EvalReport;
  expect(json.rows).toHaveLength(report.rows.length);
});

test("eval measures the bundle's thresholds on the test set, as the detector flags, and the operating points", async () => {
  const report = await evaluate({
    dataset,
    model: bundle,
    steps: [3],
    imageOnly: true,
    latencySamples: 1,
    gallery: 0,
    calibrationRule: { calibrate: calibratePool, poolsOutOfFold },
  });
  const d = report.decisions!;
  expect(d.normals.source).toBe('bundle'); // calibrateBundle stored calibration.json
  expect(d.rates).toEqual([0.005, 0.01, 0.02, 0.05]);
  expect(d.rows.map((r) => r.scoreDefinition).sort()).toEqual(['combined', 'latent-gaussian', 'nll', 'sp']);
  const m = JSON.parse(readFileSync(join(bundle, 'manifest.json'), 'utf8'));
  const images = await loadLabelledImages(dataset);
  for (const row of d.rows) {
    const b = row.bundle!;
    expect(b).toMatchObject({
      method: 'conformal',
      targetFalseAlarmRate: 0.01,
      threshold: m.calibration.bySteps.find((s: { steps: number }) => s.steps === 3).imageThresholds[row.scoreDefinition],
    });
    expect([b.falseAlarms.total, b.recall.total, b.recallByType.map((t) => t.type)]).toEqual([8, 6, ['blob']]);
    // The bundle's own calibration sample at its own rate gives back its own threshold.
    const own = row.operatingPoints.find((op) => op.targetFalseAlarmRate === 0.01)!;
    expect(own.outcome!.threshold).toBeCloseTo(b.threshold, 9);
    expect(own.normals).toBe(6); // the 6 held-out normals: too few for 1%, so the largest score
    expect(own.note).toMatch(/too few/);
    // Detector.isAnomalous agrees with the counts
    const det = await Detector.load(bundle, { scoreDefinition: row.scoreDefinition as 'sp', steps: 3 });
    try {
      const flagged = async (files: string[]) => (await det.scoreBatch(files)).filter((r) => r.isAnomalous).length;
      expect([b.falseAlarms.count, b.recall.count]).toEqual([await flagged(images.normal), await flagged(images.anomalous)]);
    } finally {
      await det.dispose();
    }
  }
  // Without the rule, the operating points say so and keep the ROC's best recall.
  const bare = await evaluate({ dataset, model: bundle, steps: [3], imageOnly: true, latencySamples: 1, gallery: 0 });
  expect(bare.decisions!.normals.description).toMatch(/no calibration rule/);
  expect(bare.decisions!.rows[0].operatingPoints[0]).toMatchObject({ outcome: null, bestRecall: expect.any(Number) });
});

test('the reconstruction ablation scores the same model by reconstruction error', async () => {
  const report = await evaluate({ dataset, model: bundle, mode: 'reconstruction', tStart: 0.2, reconSteps: 5, latencySamples: 2, imageOnly: true });
  expect(report.rows.map((r) => r.scoreDefinition)).toEqual(['reconstruction', 'reconstruction']);
  expect(report.settings).toMatchObject({ mode: 'reconstruction', tStart: 0.2, reconSteps: 5 });
  expect(report.decisions).toBeUndefined(); // no calibrated threshold to measure
});

describe('F1-optimal image threshold from a labelled validation set', () => {
  const identity = { center: 0, scale: 1 };
  const step = { steps: 2, sp: identity, nll: identity, imageThresholds: { sp: 99 }, pixelThresholds: { l2: 1 } };
  const sample = (spatialRange: number, anomalous: boolean) => ({ components: { spatialRange, nll: 0 }, anomalous });

  test('picks the F1 maximum and puts the threshold below it, for score > threshold', () => {
    // normal 1, 2, 3; anomalous 2.5, 4. score >= 2.5 flags {2.5, 3, 4}: P 2/3, R 1, F1 0.8, the best.
    // The next lower score is 2, so the threshold is 2.25; the other definitions are left out.
    const samples = [sample(1, false), sample(2, false), sample(3, false), sample(2.5, true), sample(4, true)];
    expect(withF1Thresholds(step, samples).imageThresholds).toEqual({ sp: 2.25 });
  });

  test('needs both classes', () => {
    expect(() => withF1Thresholds(step, [sample(1, false), sample(2, false)])).toThrow(/1 normal|2 normal/);
  });

  test('invad calibrate --validation: thresholds at the F1 maximum, recorded in the manifest', async () => {
    const copy = join(tmp.dir, 'model-f1');
    cpSync(bundle, copy, { recursive: true });
    const validation = await loadLabelledImages(dataset);
    expect([validation.normal.length, validation.anomalous.length]).toEqual([8, 6]);
    const cal = await calibrateBundle(copy, normals.slice(24), { steps: [2, 3], validation });
    expect(cal.imageThresholdMethod).toBe('f1-max');
    expect(cal.validation).toEqual({ normal: 8, anomalous: 6 });
    const m = JSON.parse(readFileSync(join(copy, 'manifest.json'), 'utf8'));
    expect(m.calibration.imageThresholdMethod).toBe('f1-max');
    // The blob is easy, so on the validation set the F1-max threshold separates the classes exactly.
    const det = await Detector.load(copy, { scoreDefinition: 'sp', steps: 3 });
    try {
      const normal = await det.scoreBatch(validation.normal);
      const anomalous = await det.scoreBatch(validation.anomalous);
      expect(normal.filter((r) => r.isAnomalous)).toHaveLength(0);
      expect(anomalous.filter((r) => !r.isAnomalous)).toHaveLength(0);
    } finally {
      await det.dispose();
    }
    await expect(calibrateBundle(copy, normals.slice(24), { steps: [2], validation: { normal: validation.normal, anomalous: [] } })).rejects.toMatchObject({
      argument: 'validation',
    });
  });

  test('invad calibrate --validation --false-alarm-rate 0.03: the trade-off on the labelled images', async () => {
    const copy = join(tmp.dir, 'model-f1-tradeoff');
    cpSync(bundle, copy, { recursive: true });
    const validation = await loadLabelledImages(dataset);
    await calibrateBundle(copy, normals.slice(24), { steps: [2, 3], validation, falseAlarmRate: 0.03 });
    const d = await measureLabelledDecisions(copy, labelledItems(validation), { steps: [3], rule: { calibrate: calibratePool, poolsOutOfFold } });
    expect(d.rates).toEqual([0.005, 0.01, 0.02, 0.03, 0.05]); // the bundle's own rate joins the defaults
    const sp = d.rows.find((r) => r.scoreDefinition === 'sp')!;
    // F1-max on these very images separates the easy blobs exactly (as the test above checks with the detector)
    expect(sp.bundle).toMatchObject({ method: 'f1-max', targetFalseAlarmRate: 0.03, falseAlarms: { count: 0, total: 8 }, recall: { count: 6, total: 6 } });
    expect(sp.bundle!.recallByType.map((t) => t.type)).toEqual(['blob']); // the defect type is the folder
    // the operating points come from the 6 stored normals, not from the F1-max thresholds
    const at3 = sp.operatingPoints.find((op) => op.targetFalseAlarmRate === 0.03)!;
    expect(at3.normals).toBe(6);
    expect(at3.outcome!.threshold).not.toBe(sp.bundle!.threshold);
  });
});
