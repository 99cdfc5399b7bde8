/** Writes latent-Gaussian statistics into a bundle folder and returns the manifest entry. */
import { join } from 'node:path';
import type { LatentGaussian, Regularization } from '../latent-gaussian';
import { encodeNpy } from '../../util/npy';
import { sha256Bytes } from './hash';
import type { LatentGaussianSpec } from './manifest';
import { writeFile } from 'node:fs/promises';

export async function writeLatentGaussian(dir: string, steps: number, g: LatentGaussian, samples: number, regularization: Regularization): Promise<LatentGaussianSpec> {
  const mean = encodeNpy(g.mean, [g.positions, g.channels]);
  const precision = encodeNpy(g.precision, [g.positions, g.channels, g.channels]);
  const meanFile = `latent_mean_s${steps}.npy`;
  const precisionFile = `latent_precision_s${steps}.npy`;
  await Promise.all([writeFile(join(dir, meanFile), mean), writeFile(join(dir, precisionFile), precision)]);
  return { steps, meanFile, meanSha256: sha256Bytes(mean), precisionFile, precisionSha256: sha256Bytes(precision), samples, regularization: regularization.amount, regularizationRelativeTo: regularization.relativeTo };
}
