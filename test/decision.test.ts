/**
 * The decision block: the exact binomial interval, the bundle's threshold and the operating
 * points on a test set small enough to count by hand, and its Markdown.
 */
import { calibratePool, poolsOutOfFold } from '../src/fit/calibrate';
import { CALIBRATION_SCORES_FORMAT, CALIBRATION_SCORES_VERSION } from '../src/runtime/bundle/calibration-scores';
import { bundleTarget, decisionRates, describeNormals, type LabelledParts, measureDecisions, poolFromCalibrationScores } from '../src/eval/decision';
import { clopperPearson, inverseRegularizedIncompleteBeta, proportion, regularizedIncompleteBeta } from '../src/eval/metrics/binomial';
import { decisionMarkdown, formatPercent, formatProportion } from '../src/eval/report/decision-text';
import type { DecisionReport } from '../src/eval/report/types';
import { InvalidArgumentError } from '../src/util/errors';

describe('Clopper–Pearson interval', () => {
  // Reference values: scipy.stats.beta.ppf(0.025, x, n - x + 1) and beta.ppf(0.975, x + 1, n - x).
  test.each([
    [0, 20, 0, 0.1684334709830853],
    [3, 20, 0.0320709371854637, 0.37892682654531396],
    [1, 249, 0.00010167277468508229, 0.022171742152323884],
    [5, 249, 0.0065514016597248035, 0.046236043242495424],
    [133, 392, 0.2925094154931082, 0.38851052735910085],
    [50, 100, 0.39832112950330095, 0.601678870496699],
    [20, 20, 0.8315665290169146, 1],
    [3000, 100000, 0.028951357930227933, 0.031076018469193313],
  ])('x = %i of n = %i', (x, n, lower, upper) => {
    const ci = clopperPearson(x, n);
    expect(ci.lower).toBeCloseTo(lower, 12);
    expect(ci.upper).toBeCloseTo(upper, 12);
    // relative accuracy too, for the small bounds
    if (lower > 0) expect(Math.abs(ci.lower / lower - 1)).toBeLessThan(1e-10);
  });

  test('the issue rounds x = 0 and x = 3 of 20 to [0, 0.1684] and [0.0321, 0.3789]', () => {
    const round = (v: number) => Math.round(v * 1e4) / 1e4;
    expect([clopperPearson(0, 20).lower, clopperPearson(0, 20).upper].map(round)).toEqual([0, 0.1684]);
    expect([clopperPearson(3, 20).lower, clopperPearson(3, 20).upper].map(round)).toEqual([0.0321, 0.3789]);
  });

  test('closed forms at the ends: upper(0, n) = 1 - 0.025^(1/n), lower(n, n) = 0.025^(1/n)', () => {
    for (const n of [1, 2, 7, 50, 249, 1000]) {
      expect(clopperPearson(0, n).upper).toBeCloseTo(1 - 0.025 ** (1 / n), 13);
      expect(clopperPearson(n, n).lower).toBeCloseTo(0.025 ** (1 / n), 13);
    }
  });

  test('each bound puts 2.5% in its tail of the binomial distribution', () => {
    const pmf = (k: number, n: number, p: number) => {
      let logC = 0;
      for (let i = 1; i <= k; i++) logC += Math.log((n - k + i) / i);
      return Math.exp(logC + k * Math.log(p) + (n - k) * Math.log1p(-p));
    };
    const tail = (from: number, to: number, n: number, p: number) => {
      let s = 0;
      for (let k = from; k <= to; k++) s += pmf(k, n, p);
      return s;
    };
    for (const [x, n] of [
      [7, 40],
      [1, 249],
      [12, 13],
    ]) {
      const { lower, upper } = clopperPearson(x, n);
      expect(tail(x, n, n, lower)).toBeCloseTo(0.025, 12); // P(X >= x | lower)
      expect(tail(0, x, n, upper)).toBeCloseTo(0.025, 12); // P(X <= x | upper)
    }
  });

  test('symmetric under x -> n - x, and wider at higher confidence', () => {
    const a = clopperPearson(4, 31);
    const b = clopperPearson(27, 31);
    expect(a.lower).toBeCloseTo(1 - b.upper, 13);
    expect(a.upper).toBeCloseTo(1 - b.lower, 13);
    const wide = clopperPearson(4, 31, 0.99);
    expect(wide.lower).toBeLessThan(a.lower);
    expect(wide.upper).toBeGreaterThan(a.upper);
  });

  test('no trials: [0, 1] and a rate of NaN', () => {
    expect(clopperPearson(0, 0)).toEqual({ lower: 0, upper: 1 });
    expect(proportion(0, 0).rate).toBeNaN();
    expect(proportion(3, 20)).toMatchObject({ count: 3, total: 20, rate: 0.15 });
  });

  test('bad counts and confidences are InvalidArgumentErrors naming the argument', () => {
    const arg = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(InvalidArgumentError);
        return (e as InvalidArgumentError).argument;
      }
      throw new Error('did not throw');
    };
    expect(arg(() => clopperPearson(3, 2))).toBe('successes');
    expect(arg(() => clopperPearson(1.5, 4))).toBe('successes');
    expect(arg(() => clopperPearson(-1, 4))).toBe('successes');
    expect(arg(() => clopperPearson(1, Number.NaN))).toBe('trials');
    expect(arg(() => clopperPearson(1, 4, 1))).toBe('confidence');
    expect(arg(() => regularizedIncompleteBeta(0.5, 0, 1))).toBe('a');
    expect(arg(() => inverseRegularizedIncompleteBeta(1.5, 1, 1))).toBe('p');
  });
});

describe('regularized incomplete beta and its inverse', () => {
  test('matches scipy.special.betainc and betaincinv', () => {
    expect(regularizedIncompleteBeta(0.3, 2.5, 3.5)).toBeCloseTo(0.29675298929566646, 13);
    expect(regularizedIncompleteBeta(0.9, 0.5, 0.5)).toBeCloseTo(0.7951672353008665, 13);
    expect(regularizedIncompleteBeta(0.35, 100, 200)).toBeCloseTo(0.7325714649575441, 12);
    expect(regularizedIncompleteBeta(0.1, 1e-3, 5)).toBeCloseTo(0.9994092193102943, 13);
    expect(inverseRegularizedIncompleteBeta(0.2, 0.5, 0.5)).toBeCloseTo(0.09549150281252627, 13);
    expect(inverseRegularizedIncompleteBeta(0.999, 1000, 3)).toBeCloseTo(0.9998096750132276, 13);
    // I_x(1, b) = 1 - (1 - x)^b
    expect(regularizedIncompleteBeta(0.2, 1, 7)).toBeCloseTo(1 - 0.8 ** 7, 14);
  });

  test('the inverse round-trips over shapes and probabilities', () => {
    for (const [a, b] of [
      [0.3, 0.7],
      [1, 1],
      [2, 50],
      [50, 2],
      [400, 900],
      [1, 5000],
    ]) {
      for (const p of [1e-6, 0.025, 0.5, 0.975, 1 - 1e-6]) {
        const x = inverseRegularizedIncompleteBeta(p, a, b);
        expect(regularizedIncompleteBeta(x, a, b)).toBeCloseTo(p, 10);
      }
    }
    expect(inverseRegularizedIncompleteBeta(0, 2, 3)).toBe(0);
    expect(inverseRegularizedIncompleteBeta(1, 2, 3)).toBe(1);
  });
});

describe('measureDecisions on a hand-counted test set', () => {
  const parts = (v: number) => ({ spatialRange: v, nll: 0, latentGaussian: v });
  const item = (v: number, label: string): LabelledParts => ({ components: parts(v), anomalous: label !== 'good', label });
  // 10 good parts, 3 cracks, 2 holes; the sp score is the raw spatial range under the identity.
  const test_: LabelledParts[] = [
    ...[50, 60, 70, 80, 90, 94, 95.5, 97, 98.5, 99.5].map((v) => item(v, 'good')),
    ...[96, 98.2, 150].map((v) => item(v, 'crack')),
    ...[90, 99.2].map((v) => item(v, 'hole')),
  ];
  const identity = { center: 0, scale: 1 };
  // 99 held-out calibration normals scoring 1..99, and 3 out-of-fold ones (latent part only).
  const pool = { heldOut: Array.from({ length: 99 }, (_, i) => parts(i + 1)), outOfFold: [parts(10), parts(20), parts(30)] };
  const rule = { calibrate: calibratePool, poolsOutOfFold };
  const rates = [0.005, 0.01, 0.02, 0.05, 0.1];
  const rows = measureDecisions({
    steps: 3,
    definitions: ['sp', 'nll', 'latent-gaussian'],
    test: test_,
    normalization: { sp: identity, nll: identity, latentGaussian: identity },
    thresholds: { sp: 97.5, nll: null },
    target: { falseAlarmRate: 0.01, method: 'conformal' },
    pool,
    rule,
    rates,
  });
  const sp = rows.find((r) => r.scoreDefinition === 'sp')!;

  test("the bundle's threshold: good above 97.5 are 98.5 and 99.5; caught: crack 98.2 and 150, hole 99.2", () => {
    expect(sp.bundle).toMatchObject({ threshold: 97.5, method: 'conformal', targetFalseAlarmRate: 0.01 });
    expect(sp.bundle!.falseAlarms).toEqual(proportion(2, 10));
    expect(sp.bundle!.recall).toEqual(proportion(3, 5));
    expect(sp.bundle!.recallByType).toEqual([
      { type: 'crack', recall: proportion(2, 3) },
      { type: 'hole', recall: proportion(1, 2) },
    ]);
    expect(sp.bundle!.falseAlarms.lower).toBeCloseTo(clopperPearson(2, 10).lower, 15);
    // no threshold: no bundle decision, but operating points all the same
    expect(rows.find((r) => r.scoreDefinition === 'nll')!.bundle).toBeNull();
  });

  test('operating points: the split-conformal order statistic of 1..99 at each rate, applied to the test set', () => {
    // rank ceil(100 (1 - rate)): 0.5% -> 100 > 99, so the largest (99); 1% -> 99; 2% -> 98; 5% -> 95; 10% -> 90
    const counted = sp.operatingPoints.map((op) => [op.targetFalseAlarmRate, op.outcome!.falseAlarms.count, op.outcome!.recall.count]);
    expect(counted).toEqual([
      [0.005, 1, 2], // > 99: good 99.5; crack 150, hole 99.2
      [0.01, 1, 2],
      [0.02, 2, 3], // > 98: good 98.5, 99.5; crack 98.2, 150, hole 99.2
      [0.05, 4, 4], // > 95: good 95.5, 97, 98.5, 99.5; cracks 96, 98.2, 150, hole 99.2
      [0.1, 5, 4], // > 90: good 94 .. 99.5; the hole at exactly 90 is not above it
    ]);
    // The threshold is the one calibratePool sets, on its own (recomputed) normalization.
    for (const op of sp.operatingPoints)
      expect(op.outcome!.threshold).toBe(calibratePool(3, { ...pool, maps: { l2: [] } }, op.targetFalseAlarmRate).imageThresholds.sp);
    expect(sp.operatingPoints.map((op) => [op.normals, op.normalsNeeded])).toEqual([
      [99, 199],
      [99, 99],
      [99, 49],
      [99, 19],
      [99, 9],
    ]);
    expect(sp.operatingPoints[0].note).toMatch(/99 normals are too few for 0.005/);
    expect(sp.operatingPoints[1].note).toBeUndefined();
    // latent-gaussian pools the out-of-fold normals too
    expect(rows.find((r) => r.scoreDefinition === 'latent-gaussian')!.operatingPoints[0].normals).toBe(102);
  });

  test('best recall on the ROC: no false alarm allowed below 10% of 10 good parts (150 only), one at 10% (150 and 99.2)', () => {
    expect(sp.operatingPoints.map((op) => op.bestRecall)).toEqual([0.2, 0.2, 0.2, 0.2, 0.4]);
  });

  test('without normals or without the rule, the operating points say why they have no threshold', () => {
    const base = {
      steps: 2,
      definitions: ['sp'] as const,
      test: test_,
      normalization: { sp: identity, nll: identity },
      thresholds: {},
      target: { falseAlarmRate: null, method: null },
      rates: [0.01],
    };
    const noPool = measureDecisions({ ...base, rule })[0].operatingPoints[0];
    expect(noPool).toMatchObject({ outcome: null, note: 'no calibration normals at S = 2', normals: 0, bestRecall: 0.2 });
    expect(measureDecisions({ ...base, pool })[0].operatingPoints[0]).toMatchObject({ outcome: null, note: expect.stringMatching(/no calibration rule/) });
    // calibratePool refuses a single held-out normal: the operating point carries the reason
    const tiny = measureDecisions({ ...base, pool: { heldOut: [parts(1)], outOfFold: [] }, rule })[0].operatingPoints[0];
    expect(tiny.note).toMatch(/calibration from the normals failed: .*at least 2/);
  });

  test('the Markdown tables carry the counts, rates and intervals', () => {
    const report: DecisionReport = { rates, normals: describeNormals('bundle'), rows };
    const md = decisionMarkdown(report);
    const pct = (p: { lower: number; upper: number }) => `[${formatPercent(p.lower)}, ${formatPercent(p.upper)}]`;
    expect(md).toContain('| score | S | target rate | method | threshold | false alarms (good) | recall (defective) | crack | hole |');
    expect(md).toContain(
      `| sp | 3 | 1% | conformal | 97.5 | 2/10 = 20% ${pct(clopperPearson(2, 10))} | 3/5 = 60% ${pct(clopperPearson(3, 5))} | 2/3 = 66.7% | 1/2 = 50% |`,
    );
    expect(md).toMatch(/\| sp \| 3 \| 0\.5% \| 99 \(199\) \| [-\d.]+ \| 1\/10 = 10% \[0\.25%, 44\.5%\] \| 2\/5 = 40% \[5\.3%, 85\.3%\] \| 20% \|/);
    expect(md).not.toMatch(/\| nll \| 3 \| 1% \| conformal/); // no bundle threshold for nll
    expect(md).toContain("the bundle's calibration sample (calibration.json)");
  });
});

describe('decision helpers', () => {
  test('formatPercent and formatProportion', () => {
    expect([0, 1 / 249, 0.00010167, 0.022172, 133 / 392, 1, Number.NaN].map(formatPercent)).toEqual(['0%', '0.4%', '0.01%', '2.2%', '33.9%', '100%', '\u2014']);
    expect(formatProportion(proportion(1, 249))).toBe('1/249 = 0.4% [0.01%, 2.2%]');
    expect(formatProportion(proportion(0, 0))).toBe('0/0 = \u2014');
  });

  test("decisionRates adds the bundle's own rate once", () => {
    expect(decisionRates(0.01)).toEqual([0.005, 0.01, 0.02, 0.05]);
    expect(decisionRates(0.03)).toEqual([0.005, 0.01, 0.02, 0.03, 0.05]);
    expect(decisionRates(null, [0.1])).toEqual([0.1]);
  });

  test('poolFromCalibrationScores splits held-out and out-of-fold samples at S', () => {
    const scores = {
      format: CALIBRATION_SCORES_FORMAT,
      version: CALIBRATION_SCORES_VERSION,
      bySteps: [
        {
          steps: 2,
          samples: [
            { source: 'held-out' as const, spatialRange: 1, nll: 2, latentGaussian: 3 },
            { source: 'out-of-fold' as const, spatialRange: 4, nll: 5, latentGaussian: 6 },
            { source: 'held-out' as const, spatialRange: 7, nll: 8 },
          ],
        },
      ],
    };
    expect(poolFromCalibrationScores(scores, 2)).toEqual({
      heldOut: [
        { spatialRange: 1, nll: 2, latentGaussian: 3 },
        { spatialRange: 7, nll: 8 },
      ],
      outOfFold: [{ spatialRange: 4, nll: 5, latentGaussian: 6 }],
    });
    expect(poolFromCalibrationScores(scores, 3)).toBeUndefined();
    expect(poolFromCalibrationScores(undefined, 2)).toBeUndefined();
  });

  test("bundleTarget: the rate, and the rule (older bundles: 'false-alarm-rate'; none while uncalibrated)", () => {
    const cal = { status: 'calibrated' as const, falseAlarmRate: 0.01 };
    expect(bundleTarget({ calibration: { ...cal, imageThresholdMethod: 'f1-max' } } as never)).toEqual({ falseAlarmRate: 0.01, method: 'f1-max' });
    expect(bundleTarget({ calibration: cal } as never)).toEqual({ falseAlarmRate: 0.01, method: 'false-alarm-rate' });
    expect(bundleTarget({ calibration: { status: 'placeholder', falseAlarmRate: null } } as never)).toEqual({ falseAlarmRate: null, method: null });
  });
});
