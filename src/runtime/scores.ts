/**
 * The score definitions, in one table: which raw parts each image score uses, which feature
 * map goes with it, whether it needs the bundle's latent statistics, and how its normalized
 * parts combine. The manifest schema, Detector, calibration, eval, fit and the CLI all read
 * from {@link SCORES}, so a new definition is a new entry here (and its tests), nothing else.
 */
import type { CalibrationSpec, PartNormalization } from './bundle/manifest';
import { InvalidArgumentError } from '../util/errors';

/** The normalization of each score part (a bundle's calibration, or one S of it). */
export type ScoreNormalization = Pick<CalibrationSpec, 'sp' | 'nll' | 'latentGaussian' | 'featureGaussian' | 'patchcore'>;

/** The raw score parts of one image. */
export interface ScoreComponents {
  /** SP: max(l2) - min(l2) of the latent's channel-norm map */
  spatialRange: number;
  /** 0.5 * sum(x_T^2) + 0.5 * D * log(2 pi), the negative log-likelihood under N(0, I) */
  nll: number;
  /**
   * max over positions of the Mahalanobis distance of x_T under the per-position
   * Gaussian of the training normals' latents; present when the bundle has those statistics
   */
  latentGaussian?: number;
  /**
   * max over positions of the Mahalanobis distance of the clean features x_0 under the
   * per-position Gaussian of the training normals' features (PaDiM's statistics, issue 17);
   * present when the bundle has feature statistics
   */
  featureGaussian?: number;
  /** max over positions of the nearest-neighbour distance of the 3x3-pooled x_0 to the PatchCore memory bank */
  patchcore?: number;
}

/** A raw score part, by its name in {@link ScoreComponents}. */
export type ScorePart = keyof ScoreComponents;

/**
 * A feature map at feature-grid resolution, by its name in a result's `featureMaps` and in the
 * calibration's `pixelThresholds`: the latent's channel norm, or its Mahalanobis distance.
 */
export type FeatureMap = 'l2' | 'latentGaussian' | 'featureGaussian' | 'patchcore' | 'fused';

/** Which feature statistics of the bundle a definition reads (issue 17): the x_0 Gaussian or the PatchCore memory bank. */
export type FeatureStatistic = 'gaussian' | 'memoryBank';

/** What a part is normalized by: its field in the calibration. */
const PART_NORMALIZATION: Readonly<Record<ScorePart, keyof ScoreNormalization>> = {
  spatialRange: 'sp',
  nll: 'nll',
  latentGaussian: 'latentGaussian',
  featureGaussian: 'featureGaussian',
  patchcore: 'patchcore',
};

/** One score definition: an entry of {@link SCORES}. */
export interface ScoreDefinitionSpec {
  /** the raw parts the image score is made of; each is normalized before `combine` */
  readonly parts: readonly ScorePart[];
  /** the feature map shown as the anomaly map and thresholded per pixel */
  readonly map: FeatureMap;
  /** needs the bundle's latent statistics at the S it scores with */
  readonly needsLatent: boolean;
  /** the image score from the normalized parts; only the keys in `parts` are set */
  readonly combine: (normalized: Readonly<Record<ScorePart, number>>) => number;
  /** one line for help texts */
  readonly summary: string;
  /** the bundle's feature statistics it needs (`featureStatistics` in the manifest) */
  readonly features?: readonly FeatureStatistic[];
  /** needs no UNet call: the backbone's features x_0 alone (the baselines) */
  readonly backboneOnly?: boolean;
}

/** Types `combine` over exactly the parts the entry lists. */
function defineScore<P extends ScorePart>(spec: {
  parts: readonly P[];
  map: FeatureMap;
  needsLatent: boolean;
  combine: (normalized: Readonly<Record<P, number>>) => number;
  summary: string;
  features?: readonly FeatureStatistic[];
  backboneOnly?: boolean;
}): ScoreDefinitionSpec {
  return spec;
}

/**
 * Every score definition. The order is the order of `SCORE_DEFINITIONS`, of the calibration's
 * `imageThresholds` and of eval's report rows.
 */
export const SCORES = {
  sp: defineScore({
    parts: ['spatialRange'],
    map: 'l2',
    needsLatent: false,
    combine: (n) => n.spatialRange,
    summary: "norm(SP), the spread of the latent's channel norm over the feature grid",
  }),
  nll: defineScore({
    parts: ['nll'],
    map: 'l2',
    needsLatent: false,
    combine: (n) => n.nll,
    summary: 'norm(NLL), the negative log-likelihood of the latent under N(0, I)',
  }),
  combined: defineScore({
    parts: ['spatialRange', 'nll'],
    map: 'l2',
    needsLatent: false,
    combine: (n) => n.spatialRange + n.nll,
    summary: 'norm(SP) + norm(NLL)',
  }),
  'latent-gaussian': defineScore({
    parts: ['latentGaussian'],
    map: 'latentGaussian',
    needsLatent: true,
    combine: (n) => n.latentGaussian,
    summary: "norm(max Mahalanobis distance of the latent under the training normals' per-position Gaussian)",
  }),
  // Issue 17, item 3: the x_0 Gaussian's map beside the latent one (no extra network call).
  'latent-gaussian-feature-map': defineScore({
    parts: ['latentGaussian'],
    map: 'featureGaussian',
    needsLatent: true,
    features: ['gaussian'],
    combine: (n) => n.latentGaussian,
    summary: "latent-gaussian's image score, with the map of the clean features' per-position Gaussian",
  }),
  'latent-feature-fused': defineScore({
    parts: ['latentGaussian', 'featureGaussian'],
    map: 'fused',
    needsLatent: true,
    features: ['gaussian'],
    combine: (n) => n.latentGaussian + n.featureGaussian,
    summary: 'norm(latent Gaussian) + norm(feature Gaussian), with the sum of the two normalized maps',
  }),
  // Issue 17, item 5: the baselines on the same backbone taps; the backbone alone, no UNet call.
  padim: defineScore({
    parts: ['featureGaussian'],
    map: 'featureGaussian',
    needsLatent: false,
    features: ['gaussian'],
    backboneOnly: true,
    combine: (n) => n.featureGaussian,
    summary: "PaDiM baseline: norm(max Mahalanobis distance of the clean features under the training normals' per-position Gaussian)",
  }),
  patchcore: defineScore({
    parts: ['patchcore'],
    map: 'patchcore',
    needsLatent: false,
    features: ['memoryBank'],
    backboneOnly: true,
    combine: (n) => n.patchcore,
    summary: 'PatchCore baseline: norm(max nearest-neighbour distance of the 3x3-pooled features to the coreset memory bank)',
  }),
} as const satisfies Record<string, ScoreDefinitionSpec>;

/** What the image score is made of: a key of {@link SCORES}. */
export type ScoreDefinition = keyof typeof SCORES;

/** The keys of {@link SCORES}, in table order. */
export const SCORE_DEFINITIONS = Object.freeze(Object.keys(SCORES) as ScoreDefinition[]);

/**
 * The definition a new bundle gets when none is asked for: `withLatent` when `invad fit` fits
 * latent statistics at the default S (the most accurate on magnetic-tile, README), else
 * `withoutLatent`.
 */
export const DEFAULT_SCORE_DEFINITION = { withLatent: 'latent-gaussian', withoutLatent: 'combined' } as const satisfies Record<string, ScoreDefinition>;

const IDENTITY: PartNormalization = { center: 0, scale: 1 };

/** How `part` is normalized under `cal`: its calibration entry, or the identity when the bundle has none (uncalibrated). */
export function partNormalization(part: ScorePart, cal: ScoreNormalization): PartNormalization {
  return cal[PART_NORMALIZATION[part]] ?? IDENTITY;
}

/**
 * The image score of `definition`: each of its parts normalized as (v - center) / scale with
 * `cal`, then combined. A bundle without a normalization for the latent part (uncalibrated)
 * leaves it as is.
 * @throws InvalidArgumentError when a part the definition needs is missing (no latent
 *   statistics at this S)
 */
export function imageScore(definition: ScoreDefinition, parts: ScoreComponents, cal: ScoreNormalization): number {
  const spec: ScoreDefinitionSpec = SCORES[definition];
  const normalized: Partial<Record<ScorePart, number>> = {};
  for (const part of spec.parts) {
    const value = parts[part];
    if (value === undefined) {
      // Only the statistics-based parts are optional in ScoreComponents.
      const what = part === 'latentGaussian' ? "the bundle's latent statistics for this number of steps" : "the bundle's feature statistics (invad baseline)";
      throw new InvalidArgumentError('scoreDefinition', `the ${definition} score needs ${what}`);
    }
    const n = partNormalization(part, cal);
    normalized[part] = (value - n.center) / n.scale;
  }
  // Every part the definition reads was set above.
  return spec.combine(normalized as Record<ScorePart, number>);
}

/** Whether every part `definition` combines is present in `parts` (eval and calibration skip the others). */
export function hasParts(definition: ScoreDefinition, parts: ScoreComponents): boolean {
  return SCORES[definition].parts.every((p) => parts[p] !== undefined);
}
