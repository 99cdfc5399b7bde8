/**
 * Calibration from normal images only: robust statistics of each score part and thresholds at a
 * target false-alarm rate. Nothing here sees an anomalous image, so the result can be deployed
 * as is.
 *
 * Normalization is a robust z-score, (v - median) / (1.4826 * MAD): with the few
 * dozen normals a line usually has, one odd image moves min-max a lot and the
 * median/MAD hardly at all.
 *
 * Image thresholds follow the split-conformal rule: the ceil((n + 1)(1 - rate))-th smallest of
 * the n normals' scores, which a new normal part exceeds with probability at most `rate` when it
 * is exchangeable with them. The normals are held-out ones and, for the latent-Gaussian part,
 * also the training normals scored out of fold (a Gaussian refitted without each of them).
 *
 * With a labelled validation set (normal and anomalous images), the image
 * thresholds can instead be set where F1 is highest on it (anomalib's
 * F1-adaptive threshold); the normalizations still come from normals alone.
 */
import {
  type CalibrationSpec,
  type ImageThresholdMethod,
  type ModelFileSpec,
  type PartNormalization,
  SCORE_DEFINITIONS,
  type ScoreDefinition,
  type StepCalibration,
} from '../runtime/bundle/manifest';
import { type CalibrationScores, smallSampleWarning } from '../runtime/bundle/calibration-scores';
import { fitLatentGaussian, mahalanobisMap, type Regularization } from '../runtime/latent-gaussian';
import { InvalidArgumentError } from '../util/errors';
import { conformalRank, conformalThreshold, ksTwoSample, quantileSorted } from '../util/stats';
import { f1Max } from '../eval/metrics';
import { hasParts, imageScore, SCORES, type ScoreComponents, type ScorePart } from '../runtime/scores';

export function robustNormalization(values: readonly number[]): PartNormalization {
  const sorted = Float64Array.from(values).sort();
  const center = quantileSorted(sorted, 0.5);
  const dev = Float64Array.from(values, (v) => Math.abs(v - center)).sort();
  let scale = 1.4826 * quantileSorted(dev, 0.5);
  if (!(scale > 0)) {
    // All normals (nearly) equal: fall back to the standard deviation, then to 1.
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    scale = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length) || 1;
  }
  return { center, scale };
}

/** What calibration needs from scoring one normal image. */
export interface NormalSample {
  components: ScoreComponents;
  featureMaps: { l2: Float32Array; latentGaussian?: Float32Array };
}

/**
 * The normals one S is calibrated from. Held-out normals (never trained on) set every part; the
 * training normals' out-of-fold scores set the latent-Gaussian part along with them. Maps are
 * kept only for the normals scored in this run (calibration.json stores no maps), so the pixel
 * thresholds come from those.
 */
export interface CalibrationPool {
  /** raw parts of held-out normals: scored now, or stored by an earlier calibration (`--append`) */
  heldOut: readonly ScoreComponents[];
  /** raw parts of training normals, each under a latent Gaussian fitted without it */
  outOfFold?: readonly ScoreComponents[];
  /** feature maps for the pixel thresholds: `l2` of held-out normals, `latentGaussian` of held-out and out-of-fold ones */
  maps: { l2: readonly Float32Array[]; latentGaussian?: readonly Float32Array[] };
}

/**
 * The parts that out-of-fold training normals may calibrate. Their latent-Gaussian part comes from
 * a Gaussian that never saw them; SP and NLL come straight from the UNet's inversion, which was
 * trained on them, so those stay with held-out normals only.
 */
const OUT_OF_FOLD_PARTS: readonly ScorePart[] = ['latentGaussian'];

/** Whether a definition's normalization and threshold pool the out-of-fold normals: all its parts may. */
export function poolsOutOfFold(definition: ScoreDefinition): boolean {
  return SCORES[definition].parts.every((p) => OUT_OF_FOLD_PARTS.includes(p));
}

/** The q-quantile of every value of every map (pixel thresholds). */
export function quantileOfMaps(maps: readonly Float32Array[], q: number): number {
  const all = new Float64Array(maps.reduce((a, m) => a + m.length, 0));
  let at = 0;
  for (const m of maps) {
    all.set(m, at);
    at += m.length;
  }
  return quantileSorted(all.sort(), q);
}

function checkFar(far: number): void {
  if (!(far > 0 && far < 1)) throw new InvalidArgumentError('falseAlarmRate', `falseAlarmRate must be in (0, 1), got ${far}`);
}

/**
 * Normalizations and thresholds for one S from a pool of normals. Each image threshold is the
 * split-conformal order statistic of the pool's scores under that definition (the largest score
 * when the pool is too small for the rate: see {@link conformalWarnings}); pixel thresholds are the
 * (1 - falseAlarmRate) quantile of the map values.
 */
export function calibratePool(steps: number, pool: CalibrationPool, falseAlarmRate = 0.01): StepCalibration {
  const heldOut = pool.heldOut;
  const outOfFold = pool.outOfFold ?? [];
  if (heldOut.length < 2) throw new InvalidArgumentError('normals', `calibration needs at least 2 held-out normal images, got ${heldOut.length}`);
  checkFar(falseAlarmRate);
  const hasLatent = [...heldOut, ...outOfFold].every((c) => c.latentGaussian !== undefined);
  if (!hasLatent && outOfFold.length > 0)
    throw new InvalidArgumentError('outOfFold', 'out-of-fold normals calibrate the latent-Gaussian part, but the held-out normals have none at this S');
  const latentPool = [...heldOut, ...outOfFold];
  const latentMaps = pool.maps.latentGaussian ?? [];
  const step: StepCalibration = {
    steps,
    sp: robustNormalization(heldOut.map((c) => c.spatialRange)),
    nll: robustNormalization(heldOut.map((c) => c.nll)),
    ...(hasLatent ? { latentGaussian: robustNormalization(latentPool.map((c) => c.latentGaussian!)) } : {}),
    imageThresholds: {},
    pixelThresholds: { l2: quantileOfMaps(pool.maps.l2, 1 - falseAlarmRate) },
  };
  if (hasLatent && latentMaps.length > 0) step.pixelThresholds.latentGaussian = quantileOfMaps(latentMaps, 1 - falseAlarmRate);
  for (const definition of SCORE_DEFINITIONS) {
    if (SCORES[definition].needsLatent && !hasLatent) continue;
    const sample = poolsOutOfFold(definition) ? latentPool : heldOut;
    // Definitions on feature statistics (issue 17) are calibrated by invad baseline, not here.
    if (SCORES[definition].features !== undefined || !sample.every((c) => hasParts(definition, c))) continue;
    step.imageThresholds[definition] = conformalThreshold(
      sample.map((c) => imageScore(definition, c, step)),
      falseAlarmRate,
    ).threshold;
  }
  return step;
}

/** Normalizations and thresholds for one S from held-out normals scored at that S (see {@link calibratePool}). */
export function calibrateStep(steps: number, normals: readonly NormalSample[], falseAlarmRate = 0.01): StepCalibration {
  const withLatentMaps = normals.every((n) => n.featureMaps.latentGaussian);
  return calibratePool(
    steps,
    {
      heldOut: normals.map((n) => n.components),
      maps: { l2: normals.map((n) => n.featureMaps.l2), ...(withLatentMaps ? { latentGaussian: normals.map((n) => n.featureMaps.latentGaussian!) } : {}) },
    },
    falseAlarmRate,
  );
}

/** How many normals calibrated one S: held-out ones, and training normals scored out of fold. */
export interface SampleCounts {
  steps: number;
  heldOut: number;
  outOfFold: number;
}

function listWords(words: readonly string[]): string {
  return words.length < 2 ? words.join('') : `${words.slice(0, -1).join(', ')} and ${words[words.length - 1]}`;
}

/**
 * The small-sample warnings of conformal thresholds: one for each group of definitions whose
 * threshold rests on the same n normals, too few for the rate (n + 1 < 1/falseAlarmRate), with
 * the S values where that holds. Empty when every threshold carries the guarantee.
 */
export function conformalWarnings(bySteps: readonly StepCalibration[], counts: readonly SampleCounts[], falseAlarmRate: number): string[] {
  const groups = new Map<string, { definitions: ScoreDefinition[]; n: number; steps: number[] }>();
  for (const step of bySteps) {
    const c = counts.find((x) => x.steps === step.steps);
    if (!c) throw new InvalidArgumentError('counts', `no sample counts for S = ${step.steps}`);
    const byN = new Map<number, ScoreDefinition[]>();
    for (const definition of SCORE_DEFINITIONS) {
      if (step.imageThresholds[definition] === undefined) continue;
      const n = c.heldOut + (poolsOutOfFold(definition) ? c.outOfFold : 0);
      if (conformalRank(n, falseAlarmRate) <= n) continue;
      byN.set(n, [...(byN.get(n) ?? []), definition]);
    }
    for (const [n, definitions] of byN) {
      const key = `${n} ${definitions.join(',')}`;
      const group = groups.get(key) ?? { definitions, n, steps: [] };
      group.steps.push(step.steps);
      groups.set(key, group);
    }
  }
  return [...groups.values()].map((g) =>
    smallSampleWarning(`The ${listWords(g.definitions)} threshold${g.definitions.length > 1 ? 's' : ''} at S = ${g.steps.join(', ')}`, g.n, falseAlarmRate),
  );
}

/** SP and NLL of one latent x_T [channels, positions], by the engines' formulas (finishSamples), in float64. */
function latentParts(x: Float32Array, channels: number, positions: number): { spatialRange: number; nll: number } {
  let min = Infinity;
  let max = -Infinity;
  let sumSq = 0;
  for (let p = 0; p < positions; p++) {
    let acc = 0;
    for (let ch = 0; ch < channels; ch++) acc += x[ch * positions + p] ** 2;
    const norm = Math.sqrt(acc);
    min = Math.min(min, norm);
    max = Math.max(max, norm);
    sumSq += acc;
  }
  return { spatialRange: max - min, nll: 0.5 * sumSq + 0.5 * channels * positions * Math.log(2 * Math.PI) };
}

/** The score parts and Mahalanobis maps of training normals scored out of fold. */
export interface OutOfFoldScores {
  components: ScoreComponents[];
  /** each normal's Mahalanobis map [positions] under its fold's Gaussian */
  maps: Float32Array[];
}

/**
 * Checks a fold count for n training normals: at least 2 folds, at most n, and every Gaussian
 * fitted on at least 2 normals (n - ceil(n / folds) >= 2).
 *
 * @throws InvalidArgumentError (`outOfFold`)
 */
export function checkFolds(folds: number, n: number): void {
  if (!Number.isInteger(folds) || folds < 2)
    throw new InvalidArgumentError('outOfFold', `outOfFold must be an integer number of folds >= 2 (or false), got ${folds}`);
  if (folds > n) throw new InvalidArgumentError('outOfFold', `${folds} folds need at least ${folds} training normals, got ${n}`);
  if (n - Math.ceil(n / folds) < 2)
    throw new InvalidArgumentError(
      'outOfFold',
      `${n} training normals in ${folds} folds leave ${n - Math.ceil(n / folds)} to fit a Gaussian on; it needs at least 2`,
    );
}

/**
 * Out-of-fold latent-Gaussian scores of training normals: normal i falls in fold i mod `folds`,
 * and each fold is scored under a per-position Gaussian fitted (with `regularization`) on the
 * other folds' latents, so no normal is scored by a Gaussian that saw it. Such a Gaussian has
 * (folds - 1)/folds of the data the bundle's has, so these scores run, if anything, a little
 * high: the pooled threshold errs towards fewer false alarms.
 *
 * @param latents - the training normals' x_T, [n, channels, positions] (NCHW)
 * @throws InvalidArgumentError for a bad fold count (see {@link checkFolds}) or latent size
 */
export function outOfFoldScores(
  latents: Float32Array,
  n: number,
  channels: number,
  positions: number,
  folds: number,
  regularization: Regularization,
): OutOfFoldScores {
  checkFolds(folds, n);
  const per = channels * positions;
  if (latents.length !== n * per) throw new InvalidArgumentError('latents', `expected ${n * per} values for ${n} latents, got ${latents.length}`);
  const components: ScoreComponents[] = new Array<ScoreComponents>(n);
  const maps: Float32Array[] = new Array<Float32Array>(n);
  for (let f = 0; f < folds; f++) {
    const inFold = (i: number) => i % folds === f;
    const rest = Array.from({ length: n }, (_, i) => i).filter((i) => !inFold(i));
    const train = new Float32Array(rest.length * per);
    rest.forEach((i, j) => train.set(latents.subarray(i * per, (i + 1) * per), j * per));
    const g = fitLatentGaussian(train, rest.length, channels, positions, regularization);
    for (let i = f; i < n; i += folds) {
      const x = latents.subarray(i * per, (i + 1) * per);
      const map = mahalanobisMap(x, g);
      maps[i] = map;
      components[i] = { ...latentParts(x, channels, positions), latentGaussian: map.reduce((a, v) => Math.max(a, v), -Infinity) };
    }
  }
  return { components, maps };
}

/** The medians and two-sample Kolmogorov–Smirnov test of one score part, out-of-fold against held-out. */
export interface PartComparison {
  heldOut: { n: number; median: number };
  outOfFold: { n: number; median: number };
  /** sup |F_outOfFold - F_heldOut| */
  ks: number;
  /** asymptotic p-value of the KS statistic; small means the two samples differ */
  pValue: number;
}

/** {@link compareSources} at one S. */
export interface SourceComparison {
  steps: number;
  /**
   * SP and NLL measure the UNet's inversion alone; the latent-Gaussian part adds the fold
   * Gaussians (fitted on fewer normals than the held-out normals' one)
   */
  parts: Partial<Record<ScorePart, PartComparison>>;
}

/**
 * How close the training normals' scores (out of fold) are to those of held-out normals, for
 * each S of a calibration sample that has both: the median of each raw part, and a two-sample
 * KS statistic with its p-value. Close distributions support pooling the out-of-fold scores;
 * a training sample that scores clearly lower means the UNet inverts its training images more
 * easily than unseen ones, and the pooled threshold would be too low.
 */
export function compareSources(scores: CalibrationScores): SourceComparison[] {
  const out: SourceComparison[] = [];
  for (const entry of scores.bySteps) {
    const held = entry.samples.filter((s) => s.source === 'held-out');
    const oof = entry.samples.filter((s) => s.source === 'out-of-fold');
    if (held.length === 0 || oof.length === 0) continue;
    const parts: SourceComparison['parts'] = {};
    for (const part of ['spatialRange', 'nll', 'latentGaussian'] as const) {
      const a = oof.flatMap((s) => (s[part] === undefined ? [] : [s[part]]));
      const b = held.flatMap((s) => (s[part] === undefined ? [] : [s[part]]));
      if (a.length === 0 || b.length === 0) continue;
      const median = (v: number[]) => quantileSorted(Float64Array.from(v).sort(), 0.5);
      const ks = ksTwoSample(a, b);
      parts[part] = { heldOut: { n: b.length, median: median(b) }, outOfFold: { n: a.length, median: median(a) }, ks: ks.statistic, pValue: ks.pValue };
    }
    out.push({ steps: entry.steps, parts });
  }
  return out;
}

/** @throws InvalidArgumentError unless the validation set has normal and anomalous images */
export function requireBothClasses(normal: number, anomalous: number): void {
  if (normal === 0 || anomalous === 0) {
    throw new InvalidArgumentError(
      'validation',
      `an F1-optimal threshold needs normal and anomalous validation images, got ${normal} normal and ${anomalous} anomalous`,
    );
  }
}

/** What the F1-optimal threshold needs from scoring one labelled validation image. */
export interface LabelledSample {
  components: ScoreComponents;
  anomalous: boolean;
}

/**
 * Replaces each image threshold of `step` by the one with the highest F1 on the labelled
 * `samples`. F1-max picks t for `score >= t`; the detector flags `score > threshold`, so the
 * threshold lands halfway between t and the next lower validation score.
 */
export function withF1Thresholds(step: StepCalibration, samples: readonly LabelledSample[]): StepCalibration {
  const anomalous = samples.filter((s) => s.anomalous).length;
  requireBothClasses(samples.length - anomalous, anomalous);
  const labels = samples.map((s) => s.anomalous);
  const imageThresholds: StepCalibration['imageThresholds'] = {};
  for (const definition of SCORE_DEFINITIONS) {
    if (step.imageThresholds[definition] === undefined) continue;
    const scores = samples.map((s) => imageScore(definition, s.components, step));
    const t = f1Max(scores, labels).threshold;
    const below = scores.reduce((a, v) => (v < t && v > a ? v : a), -Infinity);
    imageThresholds[definition] = Number.isFinite(below) ? (t + below) / 2 : t - Math.max(1e-6, Math.abs(t) * 1e-6);
  }
  return { ...step, imageThresholds };
}

/** What a calibration was computed from, beyond the held-out count: recorded in the manifest. */
export interface CalibrationRecord {
  /** training normals scored out of fold, and in how many folds */
  outOfFold?: { folds: number; samples: number };
  /** per S, how many normals set the thresholds; default `samples` held-out (and `outOfFold.samples`) at every S */
  counts?: readonly SampleCounts[];
  /** calibration.json, as written by writeCalibrationScores */
  scoresFile?: ModelFileSpec;
}

const CONFORMAL_METHOD =
  'robust z-score (median, 1.4826*MAD) per part on held-out normals, the latent-Gaussian part also on training normals scored out of fold; ' +
  'image thresholds by the split-conformal rule, the ceil((n + 1)(1 - falseAlarmRate))-th smallest of the n normal scores (the largest when n + 1 < 1/falseAlarmRate, with a warning); ' +
  'pixel thresholds at the (1 - falseAlarmRate) quantile of normal map values';
const F1_METHOD =
  'robust z-score (median, 1.4826*MAD) per part on held-out normals, the latent-Gaussian part also on training normals scored out of fold; ' +
  'image thresholds at the F1 maximum on a labelled validation set; pixel thresholds at the (1 - falseAlarmRate) quantile of normal map values';

/**
 * The bundle's calibration: every S, with the default S and definition repeated at the top, the
 * threshold rule (`conformal`, or `f1-max` with a validation set), where the normals came from
 * and the small-sample warnings.
 */
export function calibrationSpec(
  bySteps: StepCalibration[],
  defaults: { steps: number; definition: ScoreDefinition; samples: number; falseAlarmRate: number },
  validation?: { normal: number; anomalous: number },
  record: CalibrationRecord = {},
): CalibrationSpec {
  const thresholds: ImageThresholdMethod = validation ? 'f1-max' : 'conformal';
  const main = bySteps.find((s) => s.steps === defaults.steps);
  if (!main) throw new InvalidArgumentError('steps', `no calibration for the default S = ${defaults.steps}`);
  const counts = record.counts ?? bySteps.map((s) => ({ steps: s.steps, heldOut: defaults.samples, outOfFold: record.outOfFold?.samples ?? 0 }));
  // F1-max thresholds make no false-alarm promise, so the conformal warnings do not apply.
  const warnings = validation ? [] : conformalWarnings(bySteps, counts, defaults.falseAlarmRate);
  return {
    status: 'calibrated',
    method: validation ? F1_METHOD : CONFORMAL_METHOD,
    sp: main.sp,
    nll: main.nll,
    ...(main.latentGaussian ? { latentGaussian: main.latentGaussian } : {}),
    imageThreshold: main.imageThresholds[defaults.definition] ?? null,
    pixelThreshold: main.pixelThresholds[SCORES[defaults.definition].map] ?? null,
    samples: defaults.samples,
    falseAlarmRate: defaults.falseAlarmRate,
    imageThresholdMethod: thresholds,
    ...(validation ? { validation } : {}),
    ...(record.outOfFold ? { outOfFold: { ...record.outOfFold } } : {}),
    warnings,
    ...(record.scoresFile ? { scoresFile: { ...record.scoresFile } } : {}),
    bySteps,
  };
}
