/** The latent-Gaussian statistics files of a bundle: writing them, and checking them at load. */
import { join } from 'node:path';
import type { LatentGaussian, Regularization } from '../latent-gaussian';
import { ModelBundleError } from '../../util/errors';
import { decodeNpy, encodeNpy, type NpyArray } from '../../util/npy';
import { sha256Bytes } from './hash';
import type { LatentGaussianSpec } from './manifest';
import { writeFile } from 'node:fs/promises';

/** Writes latent-Gaussian statistics into a bundle folder and returns the manifest entry. */
export async function writeLatentGaussian(
  dir: string,
  steps: number,
  g: LatentGaussian,
  samples: number,
  regularization: Regularization,
): Promise<LatentGaussianSpec> {
  const mean = encodeNpy(g.mean, [g.positions, g.channels]);
  const precision = encodeNpy(g.precision, [g.positions, g.channels, g.channels]);
  const meanFile = `latent_mean_s${steps}.npy`;
  const precisionFile = `latent_precision_s${steps}.npy`;
  await Promise.all([writeFile(join(dir, meanFile), mean), writeFile(join(dir, precisionFile), precision)]);
  return {
    steps,
    meanFile,
    meanSha256: sha256Bytes(mean),
    precisionFile,
    precisionSha256: sha256Bytes(precision),
    samples,
    regularization: regularization.amount,
    regularizationRelativeTo: regularization.relativeTo,
  };
}

/**
 * Checks one statistics file's bytes: a float32 .npy of exactly `shape` (mean [h*w, C],
 * precision [h*w, C, C]) whose values are all finite. A wrong count or shape made the
 * Mahalanobis map read past or short of the matrix and score NaN; int64 data failed every call.
 *
 * @param field - the manifest field that names the file, for the error
 * @param what - what the file is, for the error (the feature statistics reuse this check)
 * @throws ModelBundleError naming `file` and `field`
 */
export function checkLatentArray(bytes: Buffer, file: string, field: string, shape: readonly number[], what = 'latent statistics file'): void {
  const fail = (why: string, cause?: unknown): never => {
    throw new ModelBundleError(file, field, `${what} ${file} (${field}) ${why}`, cause === undefined ? undefined : { cause });
  };
  let array: NpyArray;
  try {
    array = decodeNpy(bytes, file);
  } catch (cause) {
    return fail(`is not a readable .npy file: ${(cause as Error).message}`, cause);
  }
  const { dtype, shape: got, data } = array;
  if (dtype !== '<f4') fail(`holds ${dtype === '<i8' ? 'int64' : dtype} values; it must hold float32`);
  const fmt = (d: readonly number[]) => `[${d.join(', ')}]`;
  if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
    fail(`has shape ${fmt(got)}; the manifest's features need ${fmt(shape)}`);
  }
  const values = data as Float32Array;
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) fail(`holds a non-finite value (${values[i]}) at index ${i}`);
  }
}
