/**
 * The `latent-gaussian` score: a Gaussian per feature-grid position, fitted to
 * the inverted latents x_T of the training normals (full covariance plus
 * regularization * I, as PaDiM does on features). A test position is scored by
 * its Mahalanobis distance; the image score is the largest distance.
 *
 * PaDiM adds 0.01 * I to the covariance of features of about unit variance. The
 * latents are far smaller: x_T is the UNet's last eps, and a model cannot guess
 * the noise of nearly clean features at t = 0, so its outputs shrink (a per-channel
 * variance of about 0.025 on magnetic-tile). An absolute 0.01 is then 40% of the
 * variance and drowns the covariance's structure, so by default the amount is taken
 * relative to each position's mean variance, trace(cov) / C: PaDiM's rule, made
 * independent of the latent's scale.
 */
import { InvalidArgumentError } from '../util/errors';

export interface LatentGaussian {
  channels: number;
  positions: number;
  /** positions x channels */
  mean: Float32Array;
  /** positions x channels x channels, the inverse of (covariance + regularization * I) */
  precision: Float32Array;
}

/** What is added to each covariance's diagonal: `amount`, times the mean variance when relative. */
export interface Regularization {
  amount: number;
  relativeTo: 'absolute' | 'mean-variance';
}

/** PaDiM's 0.01, relative to the latent's scale (see above). */
export const DEFAULT_REGULARIZATION: Regularization = { amount: 0.01, relativeTo: 'mean-variance' };

/** In-place inverse of a symmetric positive-definite matrix by Cholesky, float64. */
function invertSpd(a: Float64Array, c: number): void {
  const l = new Float64Array(c * c);
  for (let i = 0; i < c; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = a[i * c + j];
      for (let k = 0; k < j; k++) sum -= l[i * c + k] * l[j * c + k];
      if (i === j) {
        if (!(sum > 0)) throw new InvalidArgumentError('latents', 'covariance is not positive definite; raise the regularization');
        l[i * c + i] = Math.sqrt(sum);
      } else {
        l[i * c + j] = sum / l[j * c + j];
      }
    }
  }
  // inv(L) by forward substitution, then inv(A) = inv(L)^T inv(L).
  const li = new Float64Array(c * c);
  for (let i = 0; i < c; i++) {
    li[i * c + i] = 1 / l[i * c + i];
    for (let j = 0; j < i; j++) {
      let sum = 0;
      for (let k = j; k < i; k++) sum -= l[i * c + k] * li[k * c + j];
      li[i * c + j] = sum / l[i * c + i];
    }
  }
  for (let i = 0; i < c; i++)
    for (let j = 0; j <= i; j++) {
      let sum = 0;
      for (let k = i; k < c; k++) sum += li[k * c + i] * li[k * c + j];
      a[i * c + j] = sum;
      a[j * c + i] = sum;
    }
}

/** Fits the per-position Gaussians to latents [n, c, h, w] (NCHW, as the pipeline holds them). */
export function fitLatentGaussian(
  latents: Float32Array,
  n: number,
  c: number,
  positions: number,
  regularization: Regularization = DEFAULT_REGULARIZATION,
): LatentGaussian {
  if (!(regularization.amount >= 0 && Number.isFinite(regularization.amount)))
    throw new InvalidArgumentError('regularization', `the regularization amount must be a finite number >= 0, got ${regularization.amount}`);
  if (n < 2) throw new InvalidArgumentError('latents', `fitting a Gaussian needs at least 2 samples, got ${n}`);
  if (latents.length !== n * c * positions) throw new InvalidArgumentError('latents', `expected ${n * c * positions} values, got ${latents.length}`);
  const mean = new Float32Array(positions * c);
  const precision = new Float32Array(positions * c * c);
  const v = new Float64Array(n * c);
  const cov = new Float64Array(c * c);
  for (let p = 0; p < positions; p++) {
    // Gather this position's vectors, centred.
    for (let ch = 0; ch < c; ch++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += latents[(i * c + ch) * positions + p];
      const mu = s / n;
      mean[p * c + ch] = mu;
      for (let i = 0; i < n; i++) v[i * c + ch] = latents[(i * c + ch) * positions + p] - mu;
    }
    cov.fill(0);
    for (let i = 0; i < n; i++) {
      const row = i * c;
      for (let a = 0; a < c; a++) {
        const va = v[row + a];
        for (let b = 0; b <= a; b++) cov[a * c + b] += va * v[row + b];
      }
    }
    let trace = 0;
    for (let a = 0; a < c; a++) trace += cov[a * c + a] / (n - 1);
    const added = regularization.relativeTo === 'mean-variance' ? regularization.amount * (trace / c) : regularization.amount;
    for (let a = 0; a < c; a++)
      for (let b = 0; b <= a; b++) {
        const val = cov[a * c + b] / (n - 1) + (a === b ? added : 0);
        cov[a * c + b] = val;
        cov[b * c + a] = val;
      }
    invertSpd(cov, c);
    precision.set(cov, p * c * c);
  }
  return { channels: c, positions, mean, precision };
}

/** Mahalanobis distance at each position of one sample x [c, positions]. */
export function mahalanobisMap(x: Float32Array, g: LatentGaussian): Float32Array {
  const { channels: c, positions } = g;
  const out = new Float32Array(positions);
  const d = new Float64Array(c);
  for (let p = 0; p < positions; p++) {
    for (let ch = 0; ch < c; ch++) d[ch] = x[ch * positions + p] - g.mean[p * c + ch];
    const base = p * c * c;
    let acc = 0;
    for (let a = 0; a < c; a++) {
      let row = 0;
      const r = base + a * c;
      for (let b = 0; b < c; b++) row += g.precision[r + b] * d[b];
      acc += d[a] * row;
    }
    out[p] = Math.sqrt(Math.max(0, acc));
  }
  return out;
}
