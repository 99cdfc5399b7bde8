/** Turns the inverted latent's statistics into the image score, with the bundle's calibration. */
import type { CalibrationSpec, PartNormalization, ScoreDefinition } from './bundle/manifest';

/** The normalization of each score part (a bundle's calibration, or one S of it). */
export type ScoreNormalization = Pick<CalibrationSpec, 'sp' | 'nll' | 'latentGaussian'>;
import { InvalidArgumentError } from '../util/errors';

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
}

const IDENTITY: PartNormalization = { center: 0, scale: 1 };
const normalize = (v: number, n: PartNormalization) => (v - n.center) / n.scale;

export function imageScore(definition: ScoreDefinition, parts: ScoreComponents, cal: ScoreNormalization): number {
  switch (definition) {
    case 'sp':
      return normalize(parts.spatialRange, cal.sp);
    case 'nll':
      return normalize(parts.nll, cal.nll);
    case 'combined':
      return normalize(parts.spatialRange, cal.sp) + normalize(parts.nll, cal.nll);
    case 'latent-gaussian':
      if (parts.latentGaussian === undefined) {
        throw new InvalidArgumentError('scoreDefinition', 'the latent-gaussian score needs the bundle\'s latent statistics for this number of steps');
      }
      return normalize(parts.latentGaussian, cal.latentGaussian ?? IDENTITY);
  }
}
