/**
 * Bundle-level calibration steps, shared by `invad fit` and `invad calibrate`:
 * fitting the latent-Gaussian statistics on training normals, and setting
 * normalizations and thresholds from held-out normals (and the training normals' out-of-fold
 * latent-Gaussian scores), for each S, stored with the raw scores in calibration.json.
 */
import { loadBundle } from '../runtime/bundle/load';
import { writeLatentGaussian } from '../runtime/bundle/latent';
import type { CalibrationSpec, LatentGaussianSpec, Manifest, StepCalibration } from '../runtime/bundle/manifest';
import {
  CALIBRATION_SCORES_FORMAT,
  CALIBRATION_SCORES_VERSION,
  type CalibrationSample,
  type CalibrationScores,
  type CalibrationSource,
  type StepCalibrationScores,
} from '../runtime/bundle/calibration-scores';
import { writeCalibrationScores, writeManifest } from './write-bundle';
import {
  calibratePool,
  calibrationSpec,
  checkFolds,
  compareSources,
  type LabelledSample,
  type OutOfFoldScores,
  outOfFoldScores,
  requireBothClasses,
  type SampleCounts,
  type SourceComparison,
  withF1Thresholds,
} from './calibrate';
import { Detector } from '../runtime/detector';
import type { ExecutionProvider } from '../runtime/engine/protocol';
import { DEFAULT_REGULARIZATION, fitLatentGaussian } from '../runtime/latent-gaussian';
import type { ScoreComponents } from '../runtime/scores';
import { InvalidArgumentError } from '../util/errors';
import { loadAddon } from '../binding';
import { calibrationMapValues, mapSmoothingSpec, MAX_SMOOTHING_SIGMA } from '../runtime/map-smoothing';
import { numberInRange } from '../util/validate';

export interface BundleStepOptions {
  /** step counts S to prepare; default [2, 3, 4, 5] */
  steps?: number[];
  executionProviders?: ExecutionProvider[];
  onProgress?: (message: string) => void;
}

export const DEFAULT_STEP_RANGE = [2, 3, 4, 5];

/** Fits the per-position Gaussian of x_T on `normals` for each S and records it in the bundle. */
export async function fitBundleLatents(dir: string, normals: readonly string[], options: BundleStepOptions = {}): Promise<LatentGaussianSpec[]> {
  const steps = options.steps ?? DEFAULT_STEP_RANGE;
  const bundle = await loadBundle(dir);
  const { channels, height, width } = bundle.manifest.features;
  // loadBundle just verified the hashes: the Detector need not read the models twice.
  const det = await Detector.load(dir, { executionProviders: options.executionProviders, scoreDefinition: 'sp', verifyHashes: false });
  const specs: LatentGaussianSpec[] = [];
  try {
    for (const s of steps) {
      options.onProgress?.(`latent statistics at S = ${s} from ${normals.length} training images`);
      const latents = await det.latents(normals, s);
      const g = fitLatentGaussian(latents, normals.length, channels, height * width, DEFAULT_REGULARIZATION);
      specs.push(await writeLatentGaussian(dir, s, g, normals.length, DEFAULT_REGULARIZATION));
    }
  } finally {
    await det.dispose();
  }
  const others = (bundle.manifest.latentGaussian ?? []).filter((g) => !steps.includes(g.steps));
  await writeManifest(dir, { ...bundle.manifest, latentGaussian: [...others, ...specs].sort((a, b) => a.steps - b.steps) });
  return specs;
}

export interface CalibrateBundleOptions extends BundleStepOptions {
  /** target false-alarm rate on normals; default 0.01 */
  falseAlarmRate?: number;
  /**
   * A labelled validation set (images not used for training): the image thresholds are then
   * set at its F1 maximum instead of the false-alarm rate. Normalizations and pixel thresholds
   * still come from the normals.
   */
  validation?: LabelledImages;
  /**
   * The training normals the bundle's latent statistics were fitted on. Each is then scored out
   * of fold (see `outOfFold`), and these scores are pooled with the held-out normals for the
   * latent-Gaussian part's normalization and threshold. The UNet is not refitted.
   */
  training?: readonly string[];
  /**
   * Folds for the training normals' out-of-fold scores, or false for none. Default, when
   * `training` is given: 5, or as many as the training normals allow (none below 3 normals).
   * A number needs `training`.
   */
  outOfFold?: number | false;
  /**
   * Pool the new normals with the calibration sample stored in the bundle (calibration.json)
   * instead of replacing it. The stored scores must come from the bundle's current latent
   * statistics; pixel thresholds come from the maps of the normals scored now (no maps are stored).
   */
  append?: boolean;
  /**
   * Map smoothing (issue 17): sigma in pixels at the model input, written to the manifest's
   * `mapSmoothing` (0 removes it); default: the bundle's own. The pixel thresholds are taken on
   * maps smoothed this way (see calibrationMapValues).
   */
  mapSmoothing?: number;
}

export interface LabelledImages {
  normal: readonly string[];
  anomalous: readonly string[];
}

/** The default number of folds for out-of-fold scores. */
export const DEFAULT_OUT_OF_FOLD = 5;

async function scoreLabelled(det: Detector, set: LabelledImages, steps: number, onProgress?: (message: string) => void): Promise<LabelledSample[]> {
  onProgress?.(`scoring the validation set at S = ${steps}: ${set.normal.length} normal, ${set.anomalous.length} anomalous`);
  const [normal, anomalous] = [await det.scoreBatch(set.normal, { steps, allMaps: true }), await det.scoreBatch(set.anomalous, { steps, allMaps: true })];
  return [...normal.map((r) => ({ components: r.components, anomalous: false })), ...anomalous.map((r) => ({ components: r.components, anomalous: true }))];
}

/** The folds to use for `training`, from the options: a number, or undefined for none. */
function resolveFolds(options: CalibrateBundleOptions): number | undefined {
  const { training, outOfFold } = options;
  if (outOfFold === false) return undefined;
  if (outOfFold !== undefined) {
    if (!training)
      throw new InvalidArgumentError('outOfFold', 'out-of-fold scores need the training normals the latent statistics were fitted on (options.training)');
    checkFolds(outOfFold, training.length);
    return outOfFold;
  }
  if (!training) return undefined;
  const folds = Math.min(DEFAULT_OUT_OF_FOLD, training.length);
  // Below 3 training normals no fold leaves 2 to fit on: the default quietly does without.
  return training.length - Math.ceil(training.length / folds) >= 2 ? folds : undefined;
}

function sampleOf(source: CalibrationSource, c: ScoreComponents): CalibrationSample {
  return { source, spatialRange: c.spatialRange, nll: c.nll, ...(c.latentGaussian === undefined ? {} : { latentGaussian: c.latentGaussian }) };
}

function componentsOf(s: CalibrationSample): ScoreComponents {
  return { spatialRange: s.spatialRange, nll: s.nll, ...(s.latentGaussian === undefined ? {} : { latentGaussian: s.latentGaussian }) };
}

type LatentHashes = StepCalibrationScores['latent'];

function modelHashes(m: Manifest): NonNullable<CalibrationScores['models']> {
  return { backboneSha256: m.models.backbone.sha256, unetSha256: m.models.unet.sha256 };
}

function latentHashes(m: Manifest, steps: number): LatentHashes {
  const g = m.latentGaussian?.find((x) => x.steps === steps);
  return g ? { meanSha256: g.meanSha256, precisionSha256: g.precisionSha256 } : undefined;
}

/**
 * The stored calibration sample at each S to append to.
 * @throws InvalidArgumentError (`append`) when the bundle has none, or when its latent-Gaussian
 *   scores came from other latent statistics than the bundle's current ones
 */
function storedSamples(dir: string, m: Manifest, stored: CalibrationScores | undefined, steps: readonly number[]): Map<number, CalibrationSample[]> {
  if (!stored) {
    throw new InvalidArgumentError(
      'append',
      `bundle ${dir} has no stored calibration sample (calibration.json) to append to: it was calibrated by an older invad; calibrate it once without append`,
    );
  }
  const models = modelHashes(m);
  if (stored.models && (stored.models.backboneSha256 !== models.backboneSha256 || stored.models.unetSha256 !== models.unetSha256)) {
    throw new InvalidArgumentError(
      'append',
      'the stored calibration sample was scored with other models than the bundle has now (replaced or quantized since); calibrate without append',
    );
  }
  const out = new Map<number, CalibrationSample[]>();
  for (const s of steps) {
    const entry = stored.bySteps.find((e) => e.steps === s);
    if (!entry) continue;
    const now = latentHashes(m, s);
    const same =
      entry.latent === undefined || now === undefined
        ? entry.latent === now
        : entry.latent.meanSha256 === now.meanSha256 && entry.latent.precisionSha256 === now.precisionSha256;
    if (!same) {
      throw new InvalidArgumentError(
        'append',
        `the stored calibration sample at S = ${s} was scored with ${entry.latent ? 'other' : 'no'} latent statistics than the bundle has now (they were refitted since); calibrate without append`,
      );
    }
    out.set(s, entry.samples);
  }
  return out;
}

/**
 * Scores held-out `normals` at each S and writes the resulting calibration into the bundle: the
 * manifest's `calibration`, and calibration.json with the raw scores of every normal it used.
 * With `training`, the training normals' out-of-fold latent-Gaussian scores are pooled in; with
 * `append`, the stored sample is too. The result's `warnings` say where the normals are too few
 * for the false-alarm rate.
 */
export async function calibrateBundle(dir: string, normals: readonly string[], options: CalibrateBundleOptions = {}): Promise<CalibrationSpec> {
  const bundle = await loadBundle(dir);
  const m = bundle.manifest;
  const steps = [...new Set([...(options.steps ?? DEFAULT_STEP_RANGE), m.schedule.defaultSteps])].sort((a, b) => a - b);
  const far = options.falseAlarmRate ?? 0.01;
  const validation = options.validation;
  // Before any scoring, so bad options fail at once.
  if (validation) requireBothClasses(validation.normal.length, validation.anomalous.length);
  if (options.append && options.training) {
    throw new InvalidArgumentError(
      'append',
      'append pools with the stored sample, which already holds the out-of-fold scores of the training normals; pass training without append',
    );
  }
  const folds = resolveFolds(options);
  const stored = options.append ? storedSamples(dir, m, bundle.calibrationScores, steps) : new Map<number, CalibrationSample[]>();
  const { channels, height, width } = m.features;
  if (options.mapSmoothing !== undefined) numberInRange('mapSmoothing', options.mapSmoothing, 0, MAX_SMOOTHING_SIGMA);
  const smoothing = options.mapSmoothing === undefined ? m.mapSmoothing : mapSmoothingSpec(options.mapSmoothing, m.input);
  const addon = loadAddon();
  // 'sp' needs nothing per S; the latent-Gaussian parts come along wherever the bundle has statistics.
  // loadBundle just verified the hashes: the Detector need not read the models twice.
  const det = await Detector.load(dir, { executionProviders: options.executionProviders, scoreDefinition: 'sp', verifyHashes: false });
  const bySteps: StepCalibration[] = [];
  const counts: SampleCounts[] = [];
  const entries: StepCalibrationScores[] = [];
  try {
    for (const s of steps) {
      const old = stored.get(s) ?? [];
      options.onProgress?.(`calibrating S = ${s} on ${normals.length} held-out normals${old.length ? ` and ${old.length} stored ones` : ''}`);
      const results = await det.scoreBatch(normals, { steps: s, allMaps: true });
      const stats = m.latentGaussian?.find((g) => g.steps === s);
      let oof: OutOfFoldScores | undefined;
      if (folds !== undefined && stats && options.training) {
        options.onProgress?.(`scoring ${options.training.length} training normals out of fold at S = ${s} (${folds} folds)`);
        const latents = await det.latents(options.training, s);
        const regularization = { amount: stats.regularization, relativeTo: stats.regularizationRelativeTo ?? 'absolute' } as const;
        oof = outOfFoldScores(latents, options.training.length, channels, height * width, folds, regularization);
      }
      const samples = [...old, ...results.map((r) => sampleOf('held-out', r.components)), ...(oof?.components ?? []).map((c) => sampleOf('out-of-fold', c))];
      const heldOut = samples.filter((x) => x.source === 'held-out').map(componentsOf);
      const outOfFold = samples.filter((x) => x.source === 'out-of-fold').map(componentsOf);
      const latentMaps = results.every((r) => r.featureMaps.latentGaussian)
        ? [...results.map((r) => r.featureMaps.latentGaussian!), ...(oof?.maps ?? [])]
        : undefined;
      // Pixel thresholds on the maps as the detector will show them: smoothed when the bundle smooths.
      const pixelValues = (maps: readonly Float32Array[]) => calibrationMapValues(addon, m, smoothing, maps);
      const l2Maps = pixelValues(results.map((r) => r.featureMaps.l2));
      const step = calibratePool(s, { heldOut, outOfFold, maps: { l2: l2Maps, ...(latentMaps ? { latentGaussian: pixelValues(latentMaps) } : {}) } }, far);
      bySteps.push(validation ? withF1Thresholds(step, await scoreLabelled(det, validation, s, options.onProgress)) : step);
      counts.push({ steps: s, heldOut: heldOut.length, outOfFold: outOfFold.length });
      const latent = latentHashes(m, s);
      entries.push({ steps: s, ...(latent ? { latent } : {}), samples });
    }
  } finally {
    await det.dispose();
  }
  const main = counts.find((c) => c.steps === m.schedule.defaultSteps)!;
  const oofFolds = folds ?? m.calibration.outOfFold?.folds;
  const scoresFile = await writeCalibrationScores(dir, {
    format: CALIBRATION_SCORES_FORMAT,
    version: CALIBRATION_SCORES_VERSION,
    models: modelHashes(m),
    bySteps: entries,
  });
  const calibration = calibrationSpec(
    bySteps,
    { steps: m.schedule.defaultSteps, definition: m.score.definition, samples: main.heldOut, falseAlarmRate: far },
    validation ? { normal: validation.normal.length, anomalous: validation.anomalous.length } : undefined,
    { counts, scoresFile, ...(main.outOfFold > 0 && oofFolds !== undefined ? { outOfFold: { folds: oofFolds, samples: main.outOfFold } } : {}) },
  );
  const { mapSmoothing: _old, ...rest } = m;
  await writeManifest(dir, { ...rest, calibration, ...(smoothing ? { mapSmoothing: smoothing } : {}) });
  return calibration;
}

/**
 * How close the training normals' out-of-fold scores are to the held-out normals' in a bundle's
 * calibration sample (see compareSources): for each S that has both, the medians of SP, NLL and
 * the latent-Gaussian part, and a two-sample KS statistic with its p-value. Empty when no S has
 * both sources.
 *
 * @throws InvalidArgumentError (`dir`) when the bundle stores no calibration sample
 */
export async function compareBundleSources(dir: string): Promise<SourceComparison[]> {
  const bundle = await loadBundle(dir);
  if (!bundle.calibrationScores) {
    throw new InvalidArgumentError(
      'dir',
      `bundle ${dir} stores no calibration sample (calibration.json): it was calibrated by an older invad; calibrate it with the training normals (invad calibrate --refit-latent) first`,
    );
  }
  return compareSources(bundle.calibrationScores);
}
