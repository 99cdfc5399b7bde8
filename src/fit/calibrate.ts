/**
 * Calibration from held-out normal images only: robust statistics of each score
 * part and thresholds at a target false-alarm rate. Nothing here sees an
 * anomalous image, so the result can be deployed as is.
 *
 * Normalization is a robust z-score, (v - median) / (1.4826 * MAD): with the few
 * dozen normals a line usually has, one odd image moves min-max a lot and the
 * median/MAD hardly at all.
 *
 * With a labelled validation set (normal and anomalous images), the image
 * thresholds can instead be set where F1 is highest on it (anomalib's
 * F1-adaptive threshold); the normalizations still come from normals alone.
 */
import { type CalibrationSpec, type ImageThresholdMethod, type PartNormalization, SCORE_DEFINITIONS, type ScoreDefinition, type StepCalibration } from '../runtime/bundle/manifest';
import { InvalidArgumentError } from '../util/errors';
import { quantileSorted } from '../util/stats';
import { f1Max } from '../eval/metrics';
import { imageScore, SCORES, type ScoreComponents } from '../runtime/scores';

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

function quantileOf(values: Iterable<number>, q: number): number {
  return quantileSorted(Float64Array.from(values).sort(), q);
}

function checkFar(far: number): void {
  if (!(far > 0 && far < 1)) throw new InvalidArgumentError('falseAlarmRate', `falseAlarmRate must be in (0, 1), got ${far}`);
}

/** Normalizations and thresholds for one S from the normals scored at that S. */
export function calibrateStep(steps: number, normals: readonly NormalSample[], falseAlarmRate = 0.01): StepCalibration {
  if (normals.length < 2) throw new InvalidArgumentError('normals', `calibration needs at least 2 normal images, got ${normals.length}`);
  checkFar(falseAlarmRate);
  const q = 1 - falseAlarmRate;
  const hasLatent = normals.every((n) => n.components.latentGaussian !== undefined && n.featureMaps.latentGaussian);
  const step: StepCalibration = {
    steps,
    sp: robustNormalization(normals.map((n) => n.components.spatialRange)),
    nll: robustNormalization(normals.map((n) => n.components.nll)),
    ...(hasLatent ? { latentGaussian: robustNormalization(normals.map((n) => n.components.latentGaussian!)) } : {}),
    imageThresholds: {},
    pixelThresholds: { l2: quantileOf(normals.flatMap((n) => [...n.featureMaps.l2]), q) },
  };
  if (hasLatent) step.pixelThresholds.latentGaussian = quantileOf(normals.flatMap((n) => [...n.featureMaps.latentGaussian!]), q);
  for (const definition of SCORE_DEFINITIONS) {
    if (SCORES[definition].needsLatent && !hasLatent) continue;
    step.imageThresholds[definition] = quantileOf(normals.map((n) => imageScore(definition, n.components, step)), q);
  }
  return step;
}

/** @throws InvalidArgumentError unless the validation set has normal and anomalous images */
export function requireBothClasses(normal: number, anomalous: number): void {
  if (normal === 0 || anomalous === 0) {
    throw new InvalidArgumentError('validation', `an F1-optimal threshold needs normal and anomalous validation images, got ${normal} normal and ${anomalous} anomalous`);
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

/** The bundle's calibration: every S, with the default S and definition repeated at the top. */
export function calibrationSpec(
  bySteps: StepCalibration[],
  defaults: { steps: number; definition: ScoreDefinition; samples: number; falseAlarmRate: number },
  validation?: { normal: number; anomalous: number },
): CalibrationSpec {
  const thresholds: ImageThresholdMethod = validation ? 'f1-max' : 'false-alarm-rate';
  const main = bySteps.find((s) => s.steps === defaults.steps);
  if (!main) throw new InvalidArgumentError('steps', `no calibration for the default S = ${defaults.steps}`);
  return {
    status: 'calibrated',
    method: validation
      ? 'robust z-score (median, 1.4826*MAD) per part on held-out normals; image thresholds at the F1 maximum on a labelled validation set; pixel thresholds at the (1 - falseAlarmRate) quantile of normal values'
      : 'robust z-score (median, 1.4826*MAD) per part on held-out normals; thresholds at the (1 - falseAlarmRate) quantile of normal scores',
    sp: main.sp,
    nll: main.nll,
    ...(main.latentGaussian ? { latentGaussian: main.latentGaussian } : {}),
    imageThreshold: main.imageThresholds[defaults.definition] ?? null,
    pixelThreshold: main.pixelThresholds[SCORES[defaults.definition].map] ?? null,
    samples: defaults.samples,
    falseAlarmRate: defaults.falseAlarmRate,
    imageThresholdMethod: thresholds,
    ...(validation ? { validation } : {}),
    bySteps,
  };
}
