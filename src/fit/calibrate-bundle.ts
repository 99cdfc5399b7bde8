/**
 * Bundle-level calibration steps, shared by `invad fit` and `invad calibrate`:
 * fitting the latent-Gaussian statistics on training normals, and setting
 * normalizations and thresholds from held-out normals, for each S.
 */
import { loadBundle } from '../runtime/bundle/load';
import { writeLatentGaussian } from '../runtime/bundle/latent';
import type { CalibrationSpec, LatentGaussianSpec } from '../runtime/bundle/manifest';
import { writeManifest } from './write-bundle';
import { calibrateStep, calibrationSpec, type LabelledSample, requireBothClasses, withF1Thresholds } from './calibrate';
import { Detector } from '../runtime/detector';
import type { ExecutionProvider } from '../runtime/engine/protocol';
import { DEFAULT_REGULARIZATION, fitLatentGaussian } from '../runtime/latent-gaussian';

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
  const det = await Detector.load(dir, { executionProviders: options.executionProviders, scoreDefinition: 'sp' });
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
}

export interface LabelledImages {
  normal: readonly string[];
  anomalous: readonly string[];
}

async function scoreLabelled(det: Detector, set: LabelledImages, steps: number, onProgress?: (message: string) => void): Promise<LabelledSample[]> {
  onProgress?.(`scoring the validation set at S = ${steps}: ${set.normal.length} normal, ${set.anomalous.length} anomalous`);
  const [normal, anomalous] = [await det.scoreBatch(set.normal, { steps, allMaps: true }), await det.scoreBatch(set.anomalous, { steps, allMaps: true })];
  return [...normal.map((r) => ({ components: r.components, anomalous: false })), ...anomalous.map((r) => ({ components: r.components, anomalous: true }))];
}

/** Scores held-out `normals` at each S and writes the resulting calibration into the bundle. */
export async function calibrateBundle(dir: string, normals: readonly string[], options: CalibrateBundleOptions = {}): Promise<CalibrationSpec> {
  const bundle = await loadBundle(dir);
  const m = bundle.manifest;
  const steps = [...new Set([...(options.steps ?? DEFAULT_STEP_RANGE), m.schedule.defaultSteps])].sort((a, b) => a - b);
  const far = options.falseAlarmRate ?? 0.01;
  const validation = options.validation;
  // Before any scoring, so a bad set fails at once.
  if (validation) requireBothClasses(validation.normal.length, validation.anomalous.length);
  // 'sp' needs nothing per S; the latent-Gaussian parts come along wherever the bundle has statistics.
  const det = await Detector.load(dir, { executionProviders: options.executionProviders, scoreDefinition: 'sp' });
  const bySteps = [];
  try {
    for (const s of steps) {
      options.onProgress?.(`calibrating S = ${s} on ${normals.length} held-out normals`);
      const step = calibrateStep(s, await det.scoreBatch(normals, { steps: s, allMaps: true }), far);
      bySteps.push(validation ? withF1Thresholds(step, await scoreLabelled(det, validation, s, options.onProgress)) : step);
    }
  } finally {
    await det.dispose();
  }
  const calibration = calibrationSpec(
    bySteps,
    { steps: m.schedule.defaultSteps, definition: m.score.definition, samples: normals.length, falseAlarmRate: far },
    validation ? { normal: validation.normal.length, anomalous: validation.anomalous.length } : undefined,
  );
  await writeManifest(dir, { ...m, calibration });
  return calibration;
}
