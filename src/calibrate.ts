/**
 * Calibration from held-out normal images only: robust statistics of each score
 * part and thresholds at a target false-alarm rate. Nothing here sees an
 * anomalous image, so the result can be deployed as is.
 *
 * Normalization is a robust z-score, (v - median) / (1.4826 * MAD): with the few
 * dozen normals a line usually has, one odd image moves min-max a lot and the
 * median/MAD hardly at all.
 */
import type { CalibrationSpec, PartNormalization, ScoreDefinition } from './bundle/manifest';
import { imageScore, type ScoreComponents } from './score';
import { InvalidArgumentError } from './errors';

/** Linear-interpolated quantile of sorted values (numpy's default method). */
export function quantileSorted(sorted: ArrayLike<number>, q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
}

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

export interface CalibrationInput {
  components: readonly ScoreComponents[];
  /** anomaly maps of the same normals; their values set the pixel threshold */
  maps: readonly Float32Array[];
  definition: ScoreDefinition;
  /** target false-alarm rate on normals, default 0.01 */
  falseAlarmRate?: number;
  /** most map values kept for the pixel quantile (evenly subsampled), default 2,000,000 */
  maxPixels?: number;
}

export function calibrateFromNormals(input: CalibrationInput): CalibrationSpec {
  const n = input.components.length;
  if (n < 2) throw new InvalidArgumentError('components', `calibration needs at least 2 normal images, got ${n}`);
  const far = input.falseAlarmRate ?? 0.01;
  if (!(far > 0 && far < 1)) throw new InvalidArgumentError('falseAlarmRate', `falseAlarmRate must be in (0, 1), got ${far}`);
  const sp = robustNormalization(input.components.map((c) => c.spatialRange));
  const nll = robustNormalization(input.components.map((c) => c.nll));
  const partial: CalibrationSpec = {
    status: 'calibrated',
    method: 'robust-z (median, 1.4826*MAD) on held-out normals; thresholds at the (1 - falseAlarmRate) quantile',
    sp,
    nll,
    imageThreshold: null,
    pixelThreshold: null,
    samples: n,
    falseAlarmRate: far,
  };
  const scores = Float64Array.from(input.components, (c) => imageScore(input.definition, c, partial)).sort();
  const totalPixels = input.maps.reduce((a, m) => a + m.length, 0);
  const stride = Math.max(1, Math.ceil(totalPixels / (input.maxPixels ?? 2_000_000)));
  const pixels: number[] = [];
  for (const m of input.maps) for (let i = 0; i < m.length; i += stride) pixels.push(m[i]);
  const sortedPixels = Float64Array.from(pixels).sort();
  return {
    ...partial,
    imageThreshold: quantileSorted(scores, 1 - far),
    pixelThreshold: sortedPixels.length ? quantileSorted(sortedPixels, 1 - far) : null,
  };
}
