/**
 * Drift alarms (issue 14, section 3): the KS test on known values, the drift statistics, the
 * monitor's alarm with its hysteresis and its false-alarm count, and a Detector end to end on
 * the demo bundle with a brightness shift.
 *
 * The 10,000 unshifted parts go straight to a DriftMonitor as scores drawn from the calibration
 * distribution (scoring 10,000 images would take minutes); the Detector run is smaller and
 * checks that the same monitor sits where the scores are made.
 */
import { join } from 'node:path';
import { Detector, InvalidArgumentError, loadBundle } from '../src';
import { texture, writeDemoBundle } from '../scripts/demo';
import { calibrateStep, calibrationSpec } from '../src/fit/calibrate';
import { writeCalibrationScores, writeManifest } from '../src/fit';
import { CALIBRATION_SCORES_FORMAT, CALIBRATION_SCORES_VERSION, type CalibrationScores } from '../src/runtime/bundle/calibration-scores';
import { type CalibrationSpec, placeholderCalibration } from '../src/runtime/bundle/manifest';
import { type DriftEvent, DriftMonitor, type DriftReport, type DriftSetup, driftReference, driftStatistics, formatDrift } from '../src/runtime/drift';
import { imageScore } from '../src/runtime/scores';
import { mulberry32 } from '../src/util/prng';
import { conformalThreshold, ksTwoSample } from '../src/util/stats';
import { tempDir } from './helpers/bundles';

/** Standard normal draws (Box–Muller), deterministic. */
function normals(seed: number): () => number {
  const rand = mulberry32(seed);
  return () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

const asc = (v: ArrayLike<number>) => Float64Array.from(v).sort();

function calibrated(overrides: Partial<CalibrationSpec> = {}): CalibrationSpec {
  return {
    ...placeholderCalibration(),
    status: 'calibrated',
    method: 'test',
    samples: 500,
    falseAlarmRate: 0.01,
    imageThresholdMethod: 'conformal',
    ...overrides,
  };
}

/** A monitor over `reference` (scores) with the conformal 1% threshold, as Detector builds one. */
function monitorFor(reference: Float64Array, options: { window?: number; alpha?: number; onDrift?: (e: DriftEvent) => unknown } = {}) {
  const threshold = conformalThreshold(reference, 0.01).threshold;
  const setup: DriftSetup = {
    manifest: { calibration: calibrated() },
    calibrationScores: undefined,
    steps: 3,
    definition: 'combined',
    threshold,
    thresholdOverridden: false,
  };
  const monitor = new DriftMonitor(
    setup,
    { source: 'calibration.json', scores: asc(reference) },
    { window: options.window ?? 1000, alpha: options.alpha ?? 0.001, onDrift: options.onDrift as never },
  );
  return { monitor, threshold, feed: (score: number) => monitor.record(score, score > threshold) };
}

describe('ksTwoSample: known values', () => {
  // D and the p-value from scipy 1.17: scipy.stats.ks_2samp(a, b).statistic, and
  // scipy.special.kolmogorov((e + 0.12 + 0.11 / e) * D) with e = sqrt(n m / (n + m)).
  const shifted = (shift: number) => Array.from({ length: 80 }, (_, i) => i / 80 + shift);
  const a100 = Array.from({ length: 100 }, (_, i) => i / 100);
  const cases: Array<[string, number[], number[], number, number]> = [
    ['disjoint samples (large-z series)', [1, 2, 3, 4, 5], [6, 7, 8, 9, 10], 1, 0.003781354059370101],
    [
      'interleaved samples (small-z series)',
      [0.1, 0.4, 0.7, 1.3, 2.0, 2.2, 3.1],
      [0.3, 0.5, 0.9, 1.1, 1.6, 2.5, 2.9, 3.3, 4.0],
      0.30158730158730157,
      0.7899150799221177,
    ],
    ['ties within and across samples', [1, 2, 2, 3, 3, 3], [2, 2, 3, 4, 5], 0.4, 0.6520793727149006],
    ['100 vs 80, shift 0.10', a100, shifted(0.1), 0.11, 0.6299481602774344],
    ['100 vs 80, shift 0.15', a100, shifted(0.15), 0.16, 0.18686584589634322],
    ['100 vs 80, shift 0.20', a100, shifted(0.2), 0.21, 0.03374155936651019],
    ['100 vs 80, shift 0.30', a100, shifted(0.3), 0.31, 0.00027397870868768056],
  ];
  test.each(cases)('%s', (_name, a, b, d, p) => {
    const r = ksTwoSample(a, b);
    expect(r.statistic).toBeCloseTo(d, 12);
    expect(Math.abs(r.pValue - p) / p).toBeLessThan(1e-6);
    // symmetric in its samples, and blind to their order
    expect(ksTwoSample([...b].reverse(), a)).toEqual(r);
  });

  test('an empty sample gives NaN', () => {
    expect(ksTwoSample([], [1, 2])).toEqual({ statistic: NaN, pValue: NaN });
  });

  test('the p-value is calibrated: about alpha of same-distribution pairs fall below alpha', () => {
    // 400 independent pairs (a fresh 100-normal reference, a fresh 1000-part window) at alpha = 0.05:
    // 20 expected, binomial sd 4.4. A p-value off by a factor of 2 either way lands outside [8, 34].
    const draw = normals(11);
    let below = 0;
    for (let trial = 0; trial < 400; trial++) {
      const ref = Array.from({ length: 100 }, draw);
      const win = Array.from({ length: 1000 }, draw);
      if (ksTwoSample(win, ref).pValue < 0.05) below++;
    }
    expect(below).toBeGreaterThanOrEqual(8);
    expect(below).toBeLessThanOrEqual(34);
  });
});

describe('driftStatistics', () => {
  const reference = asc(Array.from({ length: 99 }, (_, i) => i + 1)); // 1..99
  test('cuts the calibration normals at the threshold and compares quantiles of passed scores', () => {
    const s = driftStatistics(asc([10, 20, 30, 40, 50]), reference, 49.5);
    expect(s.passing).toBe(49);
    // linear interpolation between order statistics, as util/stats quantileSorted
    const expected = [
      [0.5, 30, 25],
      [0.9, 46, 44.2],
      [0.99, 49.6, 48.52],
    ];
    s.quantiles.forEach((q, i) => {
      expect(q.q).toBe(expected[i][0]);
      expect(q.window).toBeCloseTo(expected[i][1], 9);
      expect(q.calibration).toBeCloseTo(expected[i][2], 9);
    });
    // fewer than 20 passed parts: no KS yet, and it says why
    expect(s.ks).toBeNull();
    expect(s.ksNote).toMatch(/5 passed parts.*starts at 20/);
    // a new normal exceeds the 49th of 99 normals with probability (99 - 49 + 1) / 100
    expect(s.calibration).toBeCloseTo(0.51, 12);
  });

  test('a window like the passing normals estimates the calibration rate; one crowding the threshold estimates more', () => {
    const t = 94.5; // 94 of 99 pass: calibration rate 6 / 100
    const passing = reference.subarray(0, 94);
    const same = driftStatistics(asc(passing), reference, t);
    expect(same.calibration).toBeCloseTo(0.06, 12);
    expect(same.estimated).toBeCloseTo(0.06, 12);
    expect(same.ks?.statistic).toBe(0);
    expect(same.ks?.pValue).toBe(1);
    const crowded = driftStatistics(asc(passing.map((v) => Math.min(t, v + 10))), reference, t);
    // band (75.4, 94.5]: 19 of the normals, 29 of the 94 window parts; rho g = (6 / 19)(29 / 94)
    expect(crowded.estimated).toBeCloseTo(174 / (1786 + 174), 12);
    // the largest gap: the 10 normals below 11, which the window no longer has
    expect(crowded.ks!.statistic).toBeCloseTo(10 / 94, 12);
  });

  test('without a threshold nothing is cut and there are no false-alarm rates', () => {
    const s = driftStatistics(asc(reference.subarray(0, 40)), reference, null);
    expect(s.passing).toBe(99);
    expect(s.calibration).toBeNull();
    expect(s.estimated).toBeNull();
    expect(s.ks).not.toBeNull();
  });

  test('too few passing normals: no KS, with the reason', () => {
    const s = driftStatistics(asc(Array.from({ length: 30 }, (_, i) => i / 30)), asc([0.1, 0.2, 0.3, 5]), 1);
    expect(s.ks).toBeNull();
    expect(s.ksNote).toMatch(/only 3 calibration normals pass.*at least 10/);
  });
});

describe('DriftMonitor', () => {
  test('stays quiet over 10,000 parts from the calibration distribution: the false alarms are consistent with alpha', () => {
    const draw = normals(2024);
    const { monitor, threshold, feed } = monitorFor(Float64Array.from({ length: 500 }, draw));
    let below = 0;
    let passed = 0;
    for (let i = 0; i < 10_000; i++) {
      const score = draw();
      feed(score);
      if (score > threshold) continue;
      // the monitor checks at every 100th passed part; read that check's p-value
      if (++passed % 100 === 0 && monitor.report().alarm.lastCheck!.pValue < 0.001) below++;
    }
    const r = monitor.report();
    // one check per 100 passed parts (about 9,900 of 10,000 pass the 1% threshold)
    expect(r.alarm.checkEvery).toBe(100);
    expect(r.alarm.checks).toBeGreaterThanOrEqual(97);
    expect(r.alarm.checks).toBeLessThanOrEqual(100);
    // At alpha = 0.001, ~99 checks expect at most 0.1 below alpha; the windows overlap, so one
    // excursion may span a few checks, and the hysteresis makes it one alarm. Two alarms would
    // be a 1-in-200 event even for independent checks.
    expect(below).toBeLessThanOrEqual(3);
    expect(r.alarm.fired).toBeLessThanOrEqual(1);
    expect(r.window).toEqual({ capacity: 1000, size: 1000, passedParts: passed });
    // the flag rate of these normals is near the 1% the threshold was set for
    expect(r.falseAlarm.flagged.rate!).toBeLessThan(0.03);
    expect(r.falseAlarm.estimated!).toBeLessThan(0.03);
  });

  test('fires once on a shift, re-arms when it is gone, fires again on the next (hysteresis)', () => {
    const draw = normals(7);
    const events: DriftEvent[] = [];
    const { monitor, feed } = monitorFor(Float64Array.from({ length: 500 }, draw), { onDrift: (e) => events.push(e) });
    const run = (n: number, shift: number) => {
      for (let i = 0; i < n; i++) feed(draw() + shift);
    };
    run(2000, 0);
    expect(events).toHaveLength(0);
    run(2000, 0.5);
    expect(events).toHaveLength(1);
    expect(monitor.report().status).toBe('alarm');
    expect(events[0].pValue).toBeLessThan(0.001);
    expect(events[0].report.status).toBe('alarm');
    expect(events[0].report.falseAlarm.estimated!).toBeGreaterThan(events[0].report.falseAlarm.calibration!);
    run(3000, 0);
    expect(monitor.report().status).toBe('monitoring');
    expect(events).toHaveLength(1);
    run(2000, 0.5);
    expect(events).toHaveLength(2);
    expect(monitor.report().alarm.fired).toBe(2);
  });

  test('a callback that throws or rejects becomes a process warning, never an error of the caller', async () => {
    // A spy rather than a 'warning' listener: jest gives each test file its own process object.
    const emitWarning = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      for (const onDrift of [
        () => {
          throw new Error('boom');
        },
        () => Promise.reject(new Error('later boom')),
      ]) {
        const draw = normals(3);
        const { feed } = monitorFor(Float64Array.from({ length: 200 }, draw), { window: 50, onDrift });
        expect(() => {
          for (let i = 0; i < 300; i++) feed(draw() + 2);
        }).not.toThrow();
      }
      await new Promise((r) => setImmediate(r));
      expect(emitWarning.mock.calls.map(([message, options]) => [message, (options as { code?: string }).code])).toEqual([
        [expect.stringMatching(/onDrift callback failed.*: boom/), 'INVAD_DRIFT_CALLBACK'],
        [expect.stringMatching(/onDrift callback failed.*: later boom/), 'INVAD_DRIFT_CALLBACK'],
      ]);
    } finally {
      emitWarning.mockRestore();
    }
  });

  test('a manifest-only reference: the flag rate against the target, no KS and no alarm, and why', () => {
    const setup: DriftSetup = {
      manifest: { calibration: calibrated({ samples: 21 }) },
      calibrationScores: undefined,
      steps: 3,
      definition: 'combined',
      threshold: 1,
      thresholdOverridden: false,
    };
    const reference = driftReference(setup);
    if (!('source' in reference) || reference.source !== 'manifest') throw new Error('expected a manifest reference');
    const events: DriftEvent[] = [];
    const monitor = new DriftMonitor(setup, reference, { window: 20, alpha: 0.5, onDrift: (e) => void events.push(e) });
    for (let i = 0; i < 100; i++) monitor.record(i % 10 === 0 ? 2 : 10, i % 10 === 0);
    const r = monitor.report();
    expect(r).toMatchObject({
      status: 'monitoring',
      reference: { source: 'manifest', normals: 21 },
      ks: null,
      ksNote: expect.stringMatching(/no KS test and no alarm: .*no calibration.json/),
    });
    // the last 20 decisions hold 2 flagged parts
    expect(r.falseAlarm).toEqual({ target: 0.01, calibration: null, estimated: null, flagged: { parts: 20, flagged: 2, rate: 0.1 } });
    expect(r.quantiles.every((q) => q.calibration === null && q.window === 10)).toBe(true);
    expect(r.alarm.checks).toBe(0);
    expect(events).toHaveLength(0);
    expect(formatDrift(r)).toMatch(/against the manifest \(21 normals, no scores\)/);
  });
});

describe('driftReference', () => {
  const scores: CalibrationScores = {
    format: CALIBRATION_SCORES_FORMAT,
    version: CALIBRATION_SCORES_VERSION,
    bySteps: [
      {
        steps: 3,
        samples: [
          { source: 'held-out', spatialRange: 2, nll: 10 },
          { source: 'held-out', spatialRange: 4, nll: 30 },
          { source: 'out-of-fold', spatialRange: 100, nll: 100 },
        ],
      },
    ],
  };
  const setup = (o: Partial<DriftSetup>): DriftSetup => ({
    manifest: { calibration: calibrated({ sp: { center: 2, scale: 2 }, nll: { center: 10, scale: 10 }, samples: 2 }) },
    calibrationScores: scores,
    steps: 3,
    definition: 'combined',
    threshold: 5,
    thresholdOverridden: false,
    ...o,
  });

  test("scores calibration.json's held-out normals as the detector would, leaving out the out-of-fold ones", () => {
    const r = driftReference(setup({}));
    expect(r).toEqual({ source: 'calibration.json', scores: Float64Array.from([0, 3]) });
    const cal = setup({}).manifest.calibration;
    expect(imageScore('combined', { spatialRange: 4, nll: 30 }, cal)).toBe(3);
  });

  test('falls back to the manifest, and says why', () => {
    expect(driftReference(setup({ calibrationScores: undefined }))).toEqual({
      source: 'manifest',
      normals: 2,
      note: expect.stringMatching(/no calibration.json/),
    });
    expect(driftReference(setup({ steps: 5 }))).toEqual({ source: 'manifest', normals: 2, note: expect.stringMatching(/no normals scored at S = 5/) });
    expect(driftReference(setup({ definition: 'latent-gaussian' }))).toEqual({
      source: 'manifest',
      normals: 2,
      note: expect.stringMatching(/no held-out normals with the parts of the latent-gaussian score/),
    });
  });

  test('unavailable without a calibration, or with neither normals nor a threshold', () => {
    expect(driftReference(setup({ manifest: { calibration: placeholderCalibration() } }))).toEqual({ unavailable: expect.stringMatching(/not calibrated/) });
    expect(driftReference(setup({ calibrationScores: undefined, threshold: null }))).toEqual({
      unavailable: expect.stringMatching(/no image threshold at S = 3/),
    });
  });
});

describe('Detector drift, end to end on the demo bundle', () => {
  const SIDE = 64;
  const gray = (px: Buffer) => ({ data: px, width: SIDE, height: SIDE, channels: 1 as const });
  // Brightness +10% as a gain: the demo backbone's kernels are zero-mean, so an added offset
  // would not reach the scores at all; a gain scales the texture's contrast with it.
  const brighter = (px: Buffer) => Buffer.from(px.map((v) => Math.min(255, Math.round(v * 1.1))));
  let t: ReturnType<typeof tempDir>;
  let model: string;

  beforeAll(async () => {
    t = tempDir('invad-drift-');
    model = join(t.dir, 'model');
    await writeDemoBundle(model);
    // Calibrate on 200 normals and store their scores in calibration.json, as invad calibrate does.
    const det = await Detector.load(model, { steps: 3 });
    try {
      expect(det.info().drift).toEqual({ status: 'unavailable', steps: 3, reason: expect.stringMatching(/not calibrated/) });
      const fit = await det.scoreBatch(Array.from({ length: 200 }, (_, i) => gray(texture(1000 + i, false))));
      const scoresFile = await writeCalibrationScores(model, {
        format: CALIBRATION_SCORES_FORMAT,
        version: CALIBRATION_SCORES_VERSION,
        bySteps: [{ steps: 3, samples: fit.map((r) => ({ source: 'held-out' as const, ...r.components })) }],
      });
      const calibration = calibrationSpec([calibrateStep(3, fit)], { steps: 3, definition: 'combined', samples: fit.length, falseAlarmRate: 0.01 }, undefined, {
        scoresFile,
      });
      await writeManifest(model, { ...(await loadBundle(model)).manifest, calibration });
    } finally {
      await det.dispose();
    }
  });
  afterAll(() => t?.cleanup());

  test('quiet on unshifted normals, fires once on brightness +10%', async () => {
    const events: DriftEvent[] = [];
    const det = await Detector.load(model, { driftWindow: 100, onDrift: (e) => void events.push(e) });
    try {
      await det.scoreBatch(Array.from({ length: 300 }, (_, i) => gray(texture(30000 + i, false))));
      const quiet = det.info().drift as DriftReport;
      expect(quiet).toMatchObject({
        status: 'monitoring',
        steps: 3,
        scoreDefinition: 'combined',
        reference: { source: 'calibration.json', normals: 200 },
        window: { capacity: 100, size: 100 },
      });
      expect(quiet.alarm.checks).toBeGreaterThan(20);
      expect(quiet.ks!.pValue).toBeGreaterThan(0.001);
      expect(events).toHaveLength(0);

      await det.scoreBatch(Array.from({ length: 200 }, (_, i) => gray(brighter(texture(40000 + i, false)))));
      const shifted = det.info().drift as DriftReport;
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ steps: 3, alpha: 0.001 });
      expect(shifted.status).toBe('alarm');
      expect(shifted.ks!.pValue).toBeLessThan(0.001);
      // the passed parts' median moved up, and the window's false-alarm estimate with it
      expect(shifted.quantiles[0].window!).toBeGreaterThan(quiet.quantiles[0].window!);
      expect(shifted.falseAlarm.estimated!).toBeGreaterThan(shifted.falseAlarm.calibration!);
      expect(formatDrift(shifted)).toMatch(/DRIFT ALARM/);
    } finally {
      await det.dispose();
    }
  });

  test('driftWindow 0 turns it off; bad drift options are argument errors', async () => {
    const det = await Detector.load(model, { driftWindow: 0 });
    try {
      await det.score(gray(texture(1, false)));
      expect(det.info().drift).toEqual({ status: 'disabled', reason: expect.any(String) });
    } finally {
      await det.dispose();
    }
    for (const bad of [{ driftWindow: 5 }, { driftWindow: 1.5 }, { driftAlpha: 0 }, { driftAlpha: 1 }, { onDrift: 'no' }]) {
      await expect(Detector.load(model, bad as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    }
  });
});
