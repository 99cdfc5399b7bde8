/**
 * The bundle manifest: its TypeScript type, its JSON schema (validated with ajv),
 * and a builder with sane defaults. Bump MANIFEST_VERSION on any breaking change.
 */
import { lazyValidator } from '../../util/lazy-validator';
import type { LinearScheduleSpec } from '../schedule';
import { SCORE_DEFINITIONS, type ScoreDefinition } from '../scores';

export const MANIFEST_FORMAT = 'invad-bundle';
export const MANIFEST_VERSION = 1;

/**
 * The largest model input side, in pixels, that a bundle may declare (checked at load). One
 * image is then at most a 3 x 4096 x 4096 float32 tensor, 192 MiB; a batch of 8 is 1.5 GiB.
 * Larger inputs (a dynamic-size backbone at 16384 x 16384 needs 3 GiB an image) could not be
 * allocated reliably, so they would fail every score() instead of failing once at load.
 */
export const MAX_INPUT_SIDE = 4096;

/** The most values one image's feature map (channels x height x width) may hold: as many as the largest input. */
export const MAX_FEATURE_VALUES = 3 * MAX_INPUT_SIDE * MAX_INPUT_SIDE;

/**
 * Calibration bounds, checked at load: |center| and |threshold| at most this, scale between
 * 1 / CALIBRATION_LIMIT and CALIBRATION_LIMIT. Score parts come from float32 data, so they stay
 * well under 1e45 in magnitude, and (v - center) / scale then stays finite (under 1e76):
 * a scale of 5e-324 or a center of 1.7e308 would make scores infinite or NaN.
 */
export const CALIBRATION_LIMIT = 1e30;

/** How an alpha channel becomes RGB: dropped, or the image flattened on black or white. */
export type AlphaMode = 'drop' | 'flatten-black' | 'flatten-white';
/** sharp's resize kernels. */
export type ResizeKernel = 'nearest' | 'linear' | 'cubic' | 'mitchell' | 'lanczos2' | 'lanczos3';
// The score definitions live in one table (../scores); re-exported for the manifest's users.
export { SCORE_DEFINITIONS, type ScoreDefinition };

export interface InputSpec {
  width: number;
  height: number;
  /** per-channel RGB mean, applied to pixels scaled to [0, 1] */
  mean: [number, number, number];
  std: [number, number, number];
  /** Gray images are always replicated to RGB; this says what happens to alpha. */
  alpha: AlphaMode;
  resizeKernel: ResizeKernel;
}

export interface FeatureSpec {
  channels: number;
  height: number;
  width: number;
}

export interface ModelFileSpec {
  file: string;
  sha256: string;
}

export interface BackboneFileSpec extends ModelFileSpec {
  inputName: string;
  outputName: string;
}

export interface UnetFileSpec extends ModelFileSpec {
  xName: string;
  tName: string;
  outputName: string;
}

/** Normalization of one score part: norm(v) = (v - center) / scale. */
export interface PartNormalization {
  center: number;
  scale: number;
}

/** Calibration of one step count S: score normalizations and thresholds from held-out normals. */
export interface StepCalibration {
  steps: number;
  sp: PartNormalization;
  nll: PartNormalization;
  latentGaussian?: PartNormalization;
  /** normalization of the feature-Gaussian part (issue 17), when the bundle has feature statistics */
  featureGaussian?: PartNormalization;
  /** normalization of the PatchCore part (issue 17), when the bundle has a memory bank */
  patchcore?: PartNormalization;
  /** image threshold of each score definition, at the target false-alarm rate */
  imageThresholds: Partial<Record<ScoreDefinition, number>>;
  /** pixel threshold of each map (on the feature grid), at the target false-alarm rate */
  pixelThresholds: { l2: number; latentGaussian?: number; featureGaussian?: number; patchcore?: number; fused?: number };
}

/**
 * How image thresholds are set from scores: 'conformal', the split-conformal order statistic of the
 * normals' scores (written since issue 14); 'false-alarm-rate', the interpolated (1 - rate)
 * quantile (older bundles); 'f1-max', at the F1 maximum of a labelled validation set.
 */
export type ImageThresholdMethod = 'conformal' | 'false-alarm-rate' | 'f1-max';

export interface CalibrationSpec {
  /** 'placeholder' until a calibration on held-out normals fills this in. */
  status: 'placeholder' | 'calibrated';
  method: string;
  sp: PartNormalization;
  nll: PartNormalization;
  /** normalization of the latent-Gaussian score, when the bundle has its statistics */
  latentGaussian?: PartNormalization;
  /** normalization of the feature-Gaussian part (issue 17) */
  featureGaussian?: PartNormalization;
  /** normalization of the PatchCore part (issue 17) */
  patchcore?: PartNormalization;
  /** image score above which an image is anomalous; null when uncalibrated */
  imageThreshold: number | null;
  /** pixel-map value above which a pixel is anomalous; null when uncalibrated */
  pixelThreshold: number | null;
  /** how many held-out normal images (never trained on) the statistics came from; see also `outOfFold` */
  samples: number;
  /** target false-alarm rate on normals the thresholds were set for */
  falseAlarmRate: number | null;
  /**
   * How the image thresholds were set: by the split-conformal rule at the false-alarm rate on
   * normals, at the interpolated quantile (older bundles), or F1-optimal on a labelled
   * validation set. Absent means 'false-alarm-rate'.
   */
  imageThresholdMethod?: ImageThresholdMethod;
  /**
   * Training normals scored out of fold (a latent Gaussian refitted on the other folds), pooled
   * with the `samples` held-out normals for the latent-Gaussian part only.
   */
  outOfFold?: { folds: number; samples: number };
  /** What the calibration's user should know, such as too few normals for the rate. */
  warnings?: string[];
  /** calibration.json: the raw scores of every calibration normal, hashed like the models */
  scoresFile?: ModelFileSpec;
  /** the labelled validation set behind 'f1-max' thresholds */
  validation?: { normal: number; anomalous: number };
  /** the same per step count S; the fields above repeat the bundle's default S and score definition */
  bySteps?: StepCalibration[];
}

/**
 * A per-position Gaussian fitted to the inverted latents x_T of the training
 * normals at one S (as PaDiM does on features): mean [h*w, C] and precision
 * (inverse of covariance + r*I) [h*w, C, C], float32 .npy files; r is `regularization`, times
 * the position's mean variance trace(cov)/C when `regularizationRelativeTo` is 'mean-variance'.
 */
export interface LatentGaussianSpec {
  steps: number;
  meanFile: string;
  meanSha256: string;
  precisionFile: string;
  precisionSha256: string;
  samples: number;
  /** added to the covariance's diagonal: this, or this times the mean variance (below) */
  regularization: number;
  /** absent in bundles written before the relative default: 'absolute' */
  regularizationRelativeTo?: 'absolute' | 'mean-variance';
}

/**
 * Statistics of the clean backbone features x_0 of the training normals (issue 17), for the
 * `padim` and `patchcore` baselines and the feature map beside the latent one. Written by
 * `invad baseline`.
 */
export interface FeatureStatisticsSpec {
  /** per-position Gaussian of x_0, as the latent Gaussian: mean [h*w, C], precision [h*w, C, C] */
  gaussian?: {
    meanFile: string;
    meanSha256: string;
    precisionFile: string;
    precisionSha256: string;
    samples: number;
    regularization: number;
    regularizationRelativeTo: 'absolute' | 'mean-variance';
  };
  /** PatchCore memory bank [patches, C] of 3x3-average-pooled x_0 patches, a greedy k-center coreset */
  memoryBank?: {
    file: string;
    sha256: string;
    /** patches in the bank */
    patches: number;
    /** training patches it was chosen from */
    sourcePatches: number;
    /** dimensions of the random projection the coreset was chosen on */
    projectionDims: number;
    /** the side of the average pooling applied to x_0 before the search */
    pooling: number;
  };
}

/**
 * Map post-processing (issue 17, item 2): a Gaussian blur of the map after its bilinear resize
 * to the image (src/runtime/map-smoothing.ts). Sigma is `sigmaPx` pixels at an input whose
 * shorter side is `atInputSize` pixels (PaDiM's and PatchCore's 4 px at 224), scaled to the
 * model input's shorter side, then along each axis to the image's own size. Separable, truncated
 * at 4 sigma, scipy's 'reflect' borders. Absent: no smoothing (every bundle before issue 17).
 */
export interface MapSmoothingSpec {
  kind: 'gaussian';
  sigmaPx: number;
  atInputSize: number;
}

export interface Provenance {
  backbone: { name: string; taps: string[] };
  training: Record<string, unknown>;
  createdAt: string;
  createdBy: string;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: typeof MANIFEST_VERSION;
  input: InputSpec;
  features: FeatureSpec;
  schedule: LinearScheduleSpec & { defaultSteps: number };
  score: { definition: ScoreDefinition };
  calibration: CalibrationSpec;
  models: { backbone: BackboneFileSpec; unet: UnetFileSpec };
  latentGaussian?: LatentGaussianSpec[];
  featureStatistics?: FeatureStatisticsSpec;
  mapSmoothing?: MapSmoothingSpec;
  provenance: Provenance;
  /** Numeric precision of the UNet: 'int8' for a QDQ-quantized one (invad quantize, issue 16). Absent: 'fp32'. */
  precision?: ModelPrecision;
  /** How an int8 UNet was quantized: a free-form record written by invad quantize. */
  quantization?: Record<string, unknown>;
}

export type ModelPrecision = 'fp32' | 'int8';

/** The UNet's precision; bundles written before `precision` existed are fp32. */
export function bundlePrecision(m: Pick<Manifest, 'precision'>): ModelPrecision {
  return m.precision ?? 'fp32';
}

const positiveInt = { type: 'integer', minimum: 1, maximum: 65536 } as const;
const finite = { type: 'number' } as const;
const triple = { type: 'array', items: [finite, finite, finite], minItems: 3, maxItems: 3 } as const;
const sha256 = { type: 'string', pattern: '^[0-9a-f]{64}$' } as const;
const fileName = { type: 'string', pattern: '^[A-Za-z0-9._-]+$', minLength: 1, maxLength: 255 } as const;
const tensorName = { type: 'string', minLength: 1, maxLength: 1024 } as const;
const partNorm = {
  type: 'object',
  required: ['center', 'scale'],
  additionalProperties: false,
  properties: { center: finite, scale: { type: 'number', exclusiveMinimum: 0 } },
} as const;

/** The files and fit settings of a per-position Gaussian (the latent's per S, or the features'). */
const gaussianFiles = {
  meanFile: fileName,
  meanSha256: sha256,
  precisionFile: fileName,
  precisionSha256: sha256,
  samples: { type: 'integer', minimum: 2 },
  regularization: { type: 'number', minimum: 0 },
  regularizationRelativeTo: { type: 'string', enum: ['absolute', 'mean-variance'] },
} as const;

export const manifestSchema = {
  type: 'object',
  required: ['format', 'version', 'input', 'features', 'schedule', 'score', 'calibration', 'models', 'provenance'],
  additionalProperties: false,
  properties: {
    format: { type: 'string', const: MANIFEST_FORMAT },
    version: { type: 'integer', const: MANIFEST_VERSION },
    input: {
      type: 'object',
      required: ['width', 'height', 'mean', 'std', 'alpha', 'resizeKernel'],
      additionalProperties: false,
      properties: {
        width: positiveInt,
        height: positiveInt,
        mean: triple,
        std: {
          ...triple,
          items: [
            { type: 'number', exclusiveMinimum: 0 },
            { type: 'number', exclusiveMinimum: 0 },
            { type: 'number', exclusiveMinimum: 0 },
          ],
        },
        alpha: { type: 'string', enum: ['drop', 'flatten-black', 'flatten-white'] },
        resizeKernel: { type: 'string', enum: ['nearest', 'linear', 'cubic', 'mitchell', 'lanczos2', 'lanczos3'] },
      },
    },
    features: {
      type: 'object',
      required: ['channels', 'height', 'width'],
      additionalProperties: false,
      properties: { channels: positiveInt, height: positiveInt, width: positiveInt },
    },
    schedule: {
      type: 'object',
      required: ['kind', 'betaStart', 'betaEnd', 'trainSteps', 'defaultSteps'],
      additionalProperties: false,
      properties: {
        kind: { type: 'string', const: 'linear' },
        betaStart: { type: 'number', exclusiveMinimum: 0, exclusiveMaximum: 1 },
        betaEnd: { type: 'number', exclusiveMinimum: 0, exclusiveMaximum: 1 },
        trainSteps: { type: 'integer', minimum: 2, maximum: 100000 },
        defaultSteps: { type: 'integer', minimum: 1, maximum: 100000 },
      },
    },
    score: {
      type: 'object',
      required: ['definition'],
      additionalProperties: false,
      properties: { definition: { type: 'string', enum: SCORE_DEFINITIONS } },
    },
    calibration: {
      type: 'object',
      required: ['status', 'method', 'sp', 'nll', 'imageThreshold', 'pixelThreshold', 'samples', 'falseAlarmRate'],
      additionalProperties: false,
      properties: {
        status: { type: 'string', enum: ['placeholder', 'calibrated'] },
        method: { type: 'string' },
        sp: partNorm,
        nll: partNorm,
        latentGaussian: partNorm,
        featureGaussian: partNorm,
        patchcore: partNorm,
        imageThreshold: { type: 'number', nullable: true },
        pixelThreshold: { type: 'number', nullable: true },
        samples: { type: 'integer', minimum: 0 },
        falseAlarmRate: { type: 'number', minimum: 0, maximum: 1, nullable: true },
        imageThresholdMethod: { type: 'string', enum: ['conformal', 'false-alarm-rate', 'f1-max'] },
        outOfFold: {
          type: 'object',
          required: ['folds', 'samples'],
          additionalProperties: false,
          properties: { folds: { type: 'integer', minimum: 2 }, samples: { type: 'integer', minimum: 0 } },
        },
        warnings: { type: 'array', maxItems: 1000, items: { type: 'string', maxLength: 4096 } },
        scoresFile: {
          type: 'object',
          required: ['file', 'sha256'],
          additionalProperties: false,
          properties: { file: fileName, sha256 },
        },
        validation: {
          type: 'object',
          required: ['normal', 'anomalous'],
          additionalProperties: false,
          properties: { normal: { type: 'integer', minimum: 1 }, anomalous: { type: 'integer', minimum: 1 } },
        },
        bySteps: {
          type: 'array',
          items: {
            type: 'object',
            required: ['steps', 'sp', 'nll', 'imageThresholds', 'pixelThresholds'],
            additionalProperties: false,
            properties: {
              steps: { type: 'integer', minimum: 1, maximum: 100000 },
              sp: partNorm,
              nll: partNorm,
              latentGaussian: partNorm,
              featureGaussian: partNorm,
              patchcore: partNorm,
              imageThresholds: {
                type: 'object',
                additionalProperties: false,
                properties: Object.fromEntries(SCORE_DEFINITIONS.map((d) => [d, finite])),
              },
              pixelThresholds: {
                type: 'object',
                required: ['l2'],
                additionalProperties: false,
                properties: { l2: finite, latentGaussian: finite, featureGaussian: finite, patchcore: finite, fused: finite },
              },
            },
          },
        },
      },
    },
    models: {
      type: 'object',
      required: ['backbone', 'unet'],
      additionalProperties: false,
      properties: {
        backbone: {
          type: 'object',
          required: ['file', 'sha256', 'inputName', 'outputName'],
          additionalProperties: false,
          properties: { file: fileName, sha256, inputName: tensorName, outputName: tensorName },
        },
        unet: {
          type: 'object',
          required: ['file', 'sha256', 'xName', 'tName', 'outputName'],
          additionalProperties: false,
          properties: { file: fileName, sha256, xName: tensorName, tName: tensorName, outputName: tensorName },
        },
      },
    },
    latentGaussian: {
      type: 'array',
      items: {
        type: 'object',
        required: ['steps', 'meanFile', 'meanSha256', 'precisionFile', 'precisionSha256', 'samples', 'regularization'],
        additionalProperties: false,
        properties: { steps: { type: 'integer', minimum: 1, maximum: 100000 }, ...gaussianFiles },
      },
    },
    featureStatistics: {
      type: 'object',
      required: [],
      additionalProperties: false,
      properties: {
        gaussian: {
          type: 'object',
          required: ['meanFile', 'meanSha256', 'precisionFile', 'precisionSha256', 'samples', 'regularization', 'regularizationRelativeTo'],
          additionalProperties: false,
          properties: gaussianFiles,
        },
        memoryBank: {
          type: 'object',
          required: ['file', 'sha256', 'patches', 'sourcePatches', 'projectionDims', 'pooling'],
          additionalProperties: false,
          properties: {
            file: fileName,
            sha256,
            patches: { type: 'integer', minimum: 1 },
            sourcePatches: { type: 'integer', minimum: 1 },
            projectionDims: { type: 'integer', minimum: 1 },
            pooling: { type: 'integer', minimum: 1, maximum: 15 },
          },
        },
      },
    },
    mapSmoothing: {
      type: 'object',
      required: ['kind', 'sigmaPx', 'atInputSize'],
      additionalProperties: false,
      properties: { kind: { type: 'string', const: 'gaussian' }, sigmaPx: { type: 'number', exclusiveMinimum: 0, maximum: 64 }, atInputSize: positiveInt },
    },
    precision: { type: 'string', enum: ['fp32', 'int8'] },
    quantization: { type: 'object', required: [], additionalProperties: true },
    provenance: {
      type: 'object',
      required: ['backbone', 'training', 'createdAt', 'createdBy'],
      additionalProperties: false,
      properties: {
        backbone: {
          type: 'object',
          required: ['name', 'taps'],
          additionalProperties: false,
          properties: { name: { type: 'string' }, taps: { type: 'array', items: { type: 'string' } } },
        },
        training: { type: 'object', required: [], additionalProperties: true },
        createdAt: { type: 'string', minLength: 1 },
        createdBy: { type: 'string' },
      },
    },
  },
} as const;

/** Checks a value against the manifest schema; `validateManifest.errors` holds the last call's errors. */
export const validateManifest = lazyValidator<Manifest>(manifestSchema, { allErrors: true, strict: true, strictTuples: false });

/** The calibration an uncalibrated bundle carries: identity normalization, no threshold. */
export function placeholderCalibration(): CalibrationSpec {
  return {
    status: 'placeholder',
    method: 'none',
    sp: { center: 0, scale: 1 },
    nll: { center: 0, scale: 1 },
    imageThreshold: null,
    pixelThreshold: null,
    samples: 0,
    falseAlarmRate: null,
  };
}
