/**
 * The decision, measured: what a line controller acting on `isAnomalous` would see. For each score
 * definition and S, the bundle's own threshold applied to a labelled test set (observed
 * false-alarm rate with its exact interval, recall overall and per defect type, the rate it was
 * calibrated for), and the operating points: for a few target false-alarm rates, the threshold
 * calibration from normals sets, and what it really gives on the test set.
 *
 * The operating points' thresholds come from the same rule as the bundle's calibration, fit's
 * `calibratePool`. fit sits above eval in the layout (ARCHITECTURE.md), so the caller hands the
 * rule in as a {@link CalibrationRule}; the CLI does.
 */
import { basename, dirname } from 'node:path';
import type { CalibrationScores } from '../runtime/bundle/calibration-scores';
import type { ImageThresholdMethod, Manifest, StepCalibration } from '../runtime/bundle/manifest';
import { calibrationAt, imageThresholdAt } from '../runtime/calibration';
import { Detector } from '../runtime/detector';
import { loadBundle } from '../runtime/bundle/load';
import type { ExecutionProvider } from '../runtime/engine/protocol';
import { imageScore, SCORE_DEFINITIONS, SCORES, type ScoreComponents, type ScoreDefinition, type ScoreNormalization } from '../runtime/scores';
import { InvadError } from '../util/errors';
import { conformalMinSamples, conformalRank } from '../util/stats';
import { proportion, rocCurve } from './metrics';
import type { DecisionOutcome, DecisionReport, DecisionRow, OperatingPoint } from './report/types';

/** The target false-alarm rates of the operating points, unless asked otherwise. */
export const OPERATING_RATES: readonly number[] = Object.freeze([0.005, 0.01, 0.02, 0.05]);

/** Normal images' raw score parts at one S, as calibration pools them. */
export interface NormalPool {
  /** never trained on: they calibrate every part */
  heldOut: readonly ScoreComponents[];
  /** training normals scored out of fold: they calibrate the latent-Gaussian part only */
  outOfFold: readonly ScoreComponents[];
}

/**
 * The threshold rule, from fit (`invad/fit` is above eval in the layout, so it is passed in):
 * `calibrate` is fit's `calibratePool` and `poolsOutOfFold` fit's function of the same name.
 * The pools handed to `calibrate` carry no maps (the pixel thresholds are not used here).
 */
export interface CalibrationRule {
  calibrate: (
    steps: number,
    pool: { heldOut: readonly ScoreComponents[]; outOfFold?: readonly ScoreComponents[]; maps: { l2: readonly Float32Array[] } },
    falseAlarmRate: number,
  ) => StepCalibration;
  poolsOutOfFold: (definition: ScoreDefinition) => boolean;
}

/** One labelled test image's raw score parts. */
export interface LabelledParts {
  components: ScoreComponents;
  anomalous: boolean;
  /** 'good' or the defect type */
  label: string;
}

/** What {@link measureDecisions} needs at one S. */
export interface DecisionInput {
  steps: number;
  /** the definitions to measure; each needs its parts in every test image's components */
  definitions: readonly ScoreDefinition[];
  test: readonly LabelledParts[];
  /** the bundle's normalization at S: the test scores and the ROC are on this scale */
  normalization: ScoreNormalization;
  /** the bundle's threshold of each definition at S; null or missing: none */
  thresholds: Partial<Record<ScoreDefinition, number | null>>;
  /** the bundle's target false-alarm rate and threshold rule */
  target: { falseAlarmRate: number | null; method: ImageThresholdMethod | null };
  /** the calibration normals at S; none: the operating points carry no threshold */
  pool?: NormalPool;
  rule?: CalibrationRule;
  /** target false-alarm rates; default {@link OPERATING_RATES} */
  rates?: readonly number[];
}

/** Flags `score > threshold`, as Detector does, and counts per class and defect type. */
function outcomeOf(scores: readonly number[], threshold: number, test: readonly LabelledParts[]): DecisionOutcome {
  let goodFlagged = 0;
  let good = 0;
  const byType = new Map<string, { flagged: number; total: number }>();
  test.forEach((t, i) => {
    const flagged = scores[i] > threshold;
    if (!t.anomalous) {
      good++;
      if (flagged) goodFlagged++;
      return;
    }
    const c = byType.get(t.label) ?? { flagged: 0, total: 0 };
    c.total++;
    if (flagged) c.flagged++;
    byType.set(t.label, c);
  });
  const types = [...byType.keys()].sort();
  const caught = types.reduce((a, k) => a + byType.get(k)!.flagged, 0);
  return {
    threshold,
    falseAlarms: proportion(goodFlagged, good),
    recall: proportion(caught, test.length - good),
    recallByType: types.map((type) => ({ type, recall: proportion(byType.get(type)!.flagged, byType.get(type)!.total) })),
  };
}

/** The highest ROC recall at an observed false-alarm rate at most each rate; NaN without both classes. */
function bestRecalls(scores: readonly number[], test: readonly LabelledParts[], rates: readonly number[]): number[] {
  const good = test.filter((t) => !t.anomalous).length;
  if (good === 0 || good === test.length) return rates.map(() => NaN);
  const roc = rocCurve(
    scores,
    test.map((t) => t.anomalous),
  );
  return rates.map((rate) => {
    let best = 0;
    // fpr is k / good; compare counts so that 2/200 counts as 1%, rounding aside.
    for (let i = 0; i < roc.fpr.length; i++) if (Math.round(roc.fpr[i] * good) <= rate * good * (1 + 1e-12)) best = Math.max(best, roc.tpr[i]);
    return best;
  });
}

/** The calibration of the pool at each rate, or why there is none. */
function calibrationsAt(input: DecisionInput, rates: readonly number[]): Array<StepCalibration | string> {
  const { pool, rule, steps } = input;
  if (!rule) return rates.map(() => 'no calibration rule was given (calibratePool and poolsOutOfFold from invad/fit)');
  if (!pool) return rates.map(() => `no calibration normals at S = ${steps}`);
  return rates.map((rate) => {
    try {
      return rule.calibrate(steps, { heldOut: pool.heldOut, outOfFold: pool.outOfFold, maps: { l2: [] } }, rate);
    } catch (e) {
      // A pool calibration refuses (too few held-out normals, say) costs the operating points only.
      if (e instanceof InvadError) return `calibration from the normals failed: ${e.message}`;
      throw e;
    }
  });
}

/**
 * The decision at one S, for each definition: the bundle's threshold on the test set, and an
 * operating point per target rate. An operating point's threshold comes from calibrating the
 * pool at that rate with the rule (normalizations included), and the test images are scored
 * under that calibration; with the bundle's own calibration sample this reproduces its
 * thresholds at its own rate.
 *
 * @throws InvalidArgumentError when a test image lacks a part a definition needs
 */
export function measureDecisions(input: DecisionInput): DecisionRow[] {
  const rates = [...(input.rates ?? OPERATING_RATES)];
  const { test, pool, rule } = input;
  const calibrations = calibrationsAt(input, rates);
  return input.definitions.map((definition) => {
    const scores = test.map((t) => imageScore(definition, t.components, input.normalization));
    const threshold = input.thresholds[definition];
    const bundle =
      threshold === null || threshold === undefined
        ? null
        : { ...outcomeOf(scores, threshold, test), method: input.target.method, targetFalseAlarmRate: input.target.falseAlarmRate };
    const best = bestRecalls(scores, test, rates);
    const n = pool ? pool.heldOut.length + (rule?.poolsOutOfFold(definition) ? pool.outOfFold.length : 0) : 0;
    const operatingPoints = rates.map((rate, k): OperatingPoint => {
      const cal = calibrations[k];
      const base = { targetFalseAlarmRate: rate, normals: n, normalsNeeded: conformalMinSamples(rate), bestRecall: best[k] };
      if (typeof cal === 'string') return { ...base, outcome: null, note: cal };
      const t = cal.imageThresholds[definition];
      if (t === undefined) return { ...base, outcome: null, note: `the calibration normals have no ${definition} score at S = ${input.steps}` };
      const opScores = test.map((x) => imageScore(definition, x.components, cal));
      const small = conformalRank(n, rate) > n;
      return {
        ...base,
        outcome: outcomeOf(opScores, t, test),
        ...(small ? { note: `${n} normals are too few for ${rate}: the threshold is their largest score (expected rate about 1/${n + 1})` } : {}),
      };
    });
    return { scoreDefinition: definition, steps: input.steps, bundle, operatingPoints };
  });
}

/** The pool of a bundle's calibration sample (calibration.json) at S; undefined when it has none there. */
export function poolFromCalibrationScores(scores: CalibrationScores | undefined, steps: number): NormalPool | undefined {
  const entry = scores?.bySteps.find((e) => e.steps === steps);
  if (!entry) return undefined;
  const parts = (source: string) =>
    entry.samples
      .filter((s) => s.source === source)
      .map((s): ScoreComponents => ({
        spatialRange: s.spatialRange,
        nll: s.nll,
        ...(s.latentGaussian === undefined ? {} : { latentGaussian: s.latentGaussian }),
      }));
  return { heldOut: parts('held-out'), outOfFold: parts('out-of-fold') };
}

/** The target rates to measure: `rates` (default {@link OPERATING_RATES}) and the bundle's own, ascending, once each. */
export function decisionRates(bundleRate: number | null, rates: readonly number[] = OPERATING_RATES): number[] {
  const all = bundleRate !== null && bundleRate > 0 && bundleRate < 1 ? [...rates, bundleRate] : [...rates];
  return [...new Set(all)].sort((a, b) => a - b);
}

/** Where the calibration normals come from, in words, for {@link DecisionReport.normals}. */
export function describeNormals(source: DecisionReport['normals']['source'], count = 0, rule = true): DecisionReport['normals'] {
  const noRule = rule ? '' : '; no calibration rule was given (calibratePool and poolsOutOfFold from invad/fit), so the operating points carry no threshold';
  const description =
    source === 'bundle'
      ? "the bundle's calibration sample (calibration.json): the normals its own thresholds were set from"
      : source === 'folder'
        ? `${count} normal image${count === 1 ? '' : 's'} given as calibration normals (--calibration-normals), scored at each S`
        : 'none: the bundle stores no calibration sample (calibration.json, written by invad fit and calibrate since issue 14) and no calibration normals were given (--calibration-normals); the operating points show only the best recall on the test ROC';
  return { source, description: description + noRule };
}

/** Options of {@link measureLabelledDecisions}. */
export interface LabelledDecisionOptions {
  /** step counts S; default those the bundle's calibration has, else its default S */
  steps?: readonly number[];
  rule?: CalibrationRule;
  /** target rates; default {@link OPERATING_RATES} and the bundle's own */
  rates?: readonly number[];
  executionProviders?: ExecutionProvider[];
  onProgress?: (message: string) => void;
}

/**
 * Labelled images as {@link measureLabelledDecisions} takes them, from the normal and anomalous
 * lists of a folder in the MVTec AD test/ layout: an anomalous image's defect type is its folder.
 */
export function labelledItems(set: { normal: readonly string[]; anomalous: readonly string[] }): Array<{ file: string; anomalous: boolean; label: string }> {
  return [
    ...set.normal.map((file) => ({ file, anomalous: false, label: 'good' })),
    ...set.anomalous.map((file) => ({ file, anomalous: true, label: basename(dirname(file)) })),
  ];
}

/** The bundle's target false-alarm rate and threshold rule, for {@link DecisionInput.target}. */
export function bundleTarget(m: Pick<Manifest, 'calibration'>): DecisionInput['target'] {
  const cal = m.calibration;
  return { falseAlarmRate: cal.falseAlarmRate, method: cal.status === 'calibrated' ? (cal.imageThresholdMethod ?? 'false-alarm-rate') : null };
}

/**
 * The decision block of a bundle on labelled images (e.g. `invad calibrate --validation`): scores
 * them at each S and measures every definition the bundle can score there, with the operating
 * points calibrated from its stored calibration sample.
 *
 * @param items - the images, each labelled 'good' or with its defect type (as eval's TestItem)
 */
export async function measureLabelledDecisions(
  model: string,
  items: readonly { file: string; anomalous: boolean; label: string }[],
  options: LabelledDecisionOptions = {},
): Promise<DecisionReport> {
  const bundle = await loadBundle(model);
  const m = bundle.manifest;
  const stepsList = [...(options.steps ?? m.calibration.bySteps?.map((s) => s.steps) ?? [m.schedule.defaultSteps])];
  const rates = decisionRates(m.calibration.falseAlarmRate, options.rates);
  // loadBundle just verified the hashes: the Detector need not read the models twice.
  const det = await Detector.load(model, { executionProviders: options.executionProviders, scoreDefinition: 'sp', verifyHashes: false });
  const rows: DecisionRow[] = [];
  try {
    for (const steps of stepsList) {
      options.onProgress?.(`measuring the decision at S = ${steps} on ${items.length} labelled images`);
      const results = await det.scoreBatch(
        items.map((i) => i.file),
        { steps, allMaps: true },
      );
      const test = results.map((r, i): LabelledParts => ({ components: r.components, anomalous: items[i].anomalous, label: items[i].label }));
      // Every definition whose parts the bundle scored at this S.
      const definitions = SCORE_DEFINITIONS.filter((d) => SCORES[d].parts.every((p) => test.every((t) => t.components[p] !== undefined)));
      rows.push(
        ...measureDecisions({
          steps,
          definitions,
          test,
          normalization: calibrationAt(m.calibration, steps) ?? m.calibration,
          thresholds: Object.fromEntries(definitions.map((d) => [d, imageThresholdAt(m, steps, d)])),
          target: bundleTarget(m),
          pool: poolFromCalibrationScores(bundle.calibrationScores, steps),
          rule: options.rule,
          rates,
        }),
      );
    }
  } finally {
    await det.dispose();
  }
  return { rates, normals: describeNormals(bundle.calibrationScores ? 'bundle' : 'none', 0, options.rule !== undefined), rows };
}
