/**
 * calibration.json, the bundle's calibration sample: for each S, the raw score parts of every
 * normal image the calibration was computed from, and where each came from. The manifest names
 * it and holds its sha256 (`calibration.scoresFile`), like the models. It lets a later
 * `invad calibrate --append` pool new normals with the old ones, and lets the training
 * normals' out-of-fold scores be compared with the held-out ones (how close the inversion of
 * training images is to that of unseen ones).
 *
 * Also here: the small-sample warning of the split-conformal threshold rule, which both the
 * calibration (fit) and the runtime (older bundles, Detector.info()) word the same way.
 */
import { lazyValidator } from '../../util/lazy-validator';
import { conformalMinSamples } from '../../util/stats';
import { ModelBundleError } from '../../util/errors';
import type { CalibrationSpec, ImageThresholdMethod } from './manifest';

export const CALIBRATION_SCORES_FILE = 'calibration.json';
export const CALIBRATION_SCORES_FORMAT = 'invad-calibration-scores';
export const CALIBRATION_SCORES_VERSION = 1;

/**
 * Where a calibration normal came from:
 * - `held-out`: never trained on (fit's held-out split, or any folder given to `invad calibrate`);
 *   it calibrates every score part;
 * - `out-of-fold`: a training normal, scored under a latent Gaussian fitted on the other folds;
 *   only its latent-Gaussian part calibrates (the UNet did see it).
 */
export type CalibrationSource = 'held-out' | 'out-of-fold';
export const CALIBRATION_SOURCES: readonly CalibrationSource[] = ['held-out', 'out-of-fold'];

/** The raw score parts of one calibration normal (ScoreComponents), and its source. */
export interface CalibrationSample {
  source: CalibrationSource;
  spatialRange: number;
  nll: number;
  /** present where the bundle has latent statistics at this S */
  latentGaussian?: number;
}

/** The calibration sample at one step count S. */
export interface StepCalibrationScores {
  steps: number;
  /**
   * The latent statistics the latent-Gaussian parts were computed with (their sha256 in the
   * manifest); `--append` refuses to pool with parts from other statistics.
   */
  latent?: { meanSha256: string; precisionSha256: string };
  samples: CalibrationSample[];
}

/** The content of calibration.json. */
export interface CalibrationScores {
  format: typeof CALIBRATION_SCORES_FORMAT;
  version: typeof CALIBRATION_SCORES_VERSION;
  /**
   * The models the scores came from (their sha256 in the manifest); `--append` refuses to pool
   * with scores of other models, such as the fp32 UNet of a bundle quantized since
   */
  models?: { backboneSha256: string; unetSha256: string };
  bySteps: StepCalibrationScores[];
}

/** calibration.json above this size is refused before it is read (about 800,000 normals). */
export const MAX_CALIBRATION_SCORES_BYTES = 64 * 1024 * 1024;

const sha256 = { type: 'string', pattern: '^[0-9a-f]{64}$' } as const;
const finite = { type: 'number' } as const;

export const calibrationScoresSchema = {
  type: 'object',
  required: ['format', 'version', 'bySteps'],
  additionalProperties: false,
  properties: {
    format: { type: 'string', const: CALIBRATION_SCORES_FORMAT },
    version: { type: 'integer', const: CALIBRATION_SCORES_VERSION },
    models: {
      type: 'object',
      required: ['backboneSha256', 'unetSha256'],
      additionalProperties: false,
      properties: { backboneSha256: sha256, unetSha256: sha256 },
    },
    bySteps: {
      type: 'array',
      items: {
        type: 'object',
        required: ['steps', 'samples'],
        additionalProperties: false,
        properties: {
          steps: { type: 'integer', minimum: 1, maximum: 100000 },
          latent: {
            type: 'object',
            required: ['meanSha256', 'precisionSha256'],
            additionalProperties: false,
            properties: { meanSha256: sha256, precisionSha256: sha256 },
          },
          samples: {
            type: 'array',
            items: {
              type: 'object',
              required: ['source', 'spatialRange', 'nll'],
              additionalProperties: false,
              properties: { source: { type: 'string', enum: CALIBRATION_SOURCES }, spatialRange: finite, nll: finite, latentGaussian: finite },
            },
          },
        },
      },
    },
  },
} as const;

const validateScores = lazyValidator<CalibrationScores>(calibrationScoresSchema, { allErrors: true, strict: true });

/** The bytes written to calibration.json (and hashed into the manifest). */
export function encodeCalibrationScores(scores: CalibrationScores): Buffer {
  return Buffer.from(JSON.stringify(scores) + '\n', 'utf8');
}

/**
 * Parses and checks calibration.json's bytes: JSON, the schema, finite numbers (JSON.parse
 * reads 1e400 as Infinity) and one entry per S.
 *
 * @param field - the manifest field that names the file, for the error
 * @throws ModelBundleError naming `file` and `field`
 */
export function decodeCalibrationScores(bytes: Buffer, file: string, field: string): CalibrationScores {
  const fail = (why: string, cause?: unknown): never => {
    throw new ModelBundleError(file, field, `calibration sample ${file} (${field}) ${why}`, cause === undefined ? undefined : { cause });
  };
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (cause) {
    return fail(`is not valid JSON: ${(cause as Error).message}`, cause);
  }
  if (!validateScores(json)) {
    const all = (validateScores.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''}`).join('; ');
    return fail(`is invalid: ${all}`);
  }
  const seen = new Set<number>();
  json.bySteps.forEach((entry, i) => {
    if (seen.has(entry.steps)) fail(`repeats S = ${entry.steps} (/bySteps/${i}/steps); each S may have one entry`);
    seen.add(entry.steps);
    entry.samples.forEach((s, j) => {
      for (const v of [s.spatialRange, s.nll, s.latentGaussian])
        if (v !== undefined && !Number.isFinite(v)) fail(`holds a non-finite score (${v}) at /bySteps/${i}/samples/${j}`);
    });
  });
  return json;
}

/**
 * The warning for a threshold set from too few normals for its false-alarm rate: the
 * split-conformal rule needs n + 1 >= 1/rate, and below that the threshold is the largest of the
 * n scores, whose expected false-alarm rate on new normals is 1/(n + 1).
 *
 * @param what - what the threshold is for, e.g. 'the sp, nll and combined thresholds at S = 2, 3'
 */
export function smallSampleWarning(what: string, n: number, falseAlarmRate: number): string {
  const need = conformalMinSamples(falseAlarmRate);
  const pct = (v: number) => `${+(v * 100).toPrecision(3)}%`;
  return (
    `${what} rest on ${n} normal image${n === 1 ? '' : 's'}, too few for a false-alarm rate of ${pct(falseAlarmRate)}: ` +
    `the split-conformal rule needs n + 1 >= 1/rate, at least ${need} normals. The threshold is the largest of the ${n} scores, ` +
    `which flags about 1 good part in ${n + 1} (${pct(1 / (n + 1))}) instead. Calibrate on at least ${need} normals ` +
    `(invad calibrate --append adds new ones to the stored sample).`
  );
}

/**
 * The calibration's warnings: those it stores, or, for a bundle calibrated before the conformal
 * rule (no `imageThresholdMethod`, or 'false-alarm-rate'), the small-sample warning when its
 * normals were too few for its rate. Empty for an uncalibrated bundle.
 */
export function calibrationWarnings(cal: CalibrationSpec): string[] {
  if (cal.warnings) return [...cal.warnings];
  const legacy = cal.status === 'calibrated' && (cal.imageThresholdMethod ?? 'false-alarm-rate') === 'false-alarm-rate';
  const far = cal.falseAlarmRate;
  if (!legacy || far === null || !(far > 0) || cal.samples >= conformalMinSamples(far)) return [];
  return [smallSampleWarning('The image thresholds (set by an older invad, at an interpolated quantile)', cal.samples, far)];
}

/** How a bundle was calibrated, as Detector.info() reports it. */
export interface CalibrationSummary {
  /** the image threshold rule; null while uncalibrated */
  imageThresholdMethod: ImageThresholdMethod | null;
  /** the target false-alarm rate on normals */
  falseAlarmRate: number | null;
  /** held-out normals (never trained on) */
  samples: number;
  /** training normals scored out of fold, pooled for the latent-Gaussian part; null when none */
  outOfFold: { folds: number; samples: number } | null;
  /** e.g. too few normals for the rate (see calibrationWarnings) */
  warnings: string[];
}

/** The summary of a manifest's calibration for Detector.info(). */
export function calibrationSummary(cal: CalibrationSpec): CalibrationSummary {
  const calibrated = cal.status === 'calibrated';
  return {
    imageThresholdMethod: calibrated ? (cal.imageThresholdMethod ?? 'false-alarm-rate') : null,
    falseAlarmRate: cal.falseAlarmRate,
    samples: cal.samples,
    outOfFold: cal.outOfFold ? { ...cal.outOfFold } : null,
    warnings: calibrationWarnings(cal),
  };
}
