/**
 * Maps from the clean backbone features x_0 (issue 17): the per-position Gaussian of the
 * training normals' features (PaDiM's statistics, on invad's own feature grid) and PatchCore's
 * nearest-neighbour distance to a coreset memory bank of 3x3-average-pooled patches. Neither
 * needs a network call beyond the backbone that invad runs anyway.
 */
import { type LatentGaussian, mahalanobisMap } from './latent-gaussian';
import type { PartNormalization } from './bundle/manifest';

/** The statistics the engine worker holds for a bundle with `featureStatistics`. */
export interface FeatureStatistics {
  gaussian?: LatentGaussian;
  memoryBank?: MemoryBank;
}

export interface MemoryBank {
  /** patches x channels, row-major */
  patches: Float32Array;
  count: number;
  channels: number;
  /** squared norm of each patch */
  norms: Float32Array;
  /** side of the average pooling applied to x_0 before the search */
  pooling: number;
}

/** A memory bank from its [count, channels] array. */
export function memoryBank(patches: Float32Array, count: number, channels: number, pooling: number): MemoryBank {
  const norms = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    let s = 0;
    for (let c = 0; c < channels; c++) s += patches[i * channels + c] ** 2;
    norms[i] = s;
  }
  return { patches, count, channels, norms, pooling };
}

/**
 * k x k average pooling of one sample x [c, h, w] with stride 1 and a k/2 border, averaging the
 * positions inside the grid (PyTorch's count_include_pad=False); returns [h*w, c], position-major.
 */
export function avgPoolPositions(x: Float32Array, c: number, h: number, w: number, k: number): Float32Array {
  const r = Math.floor(k / 2);
  const plane = h * w;
  const out = new Float32Array(plane * c);
  for (let i = 0; i < h; i++) {
    const i0 = Math.max(0, i - r);
    const i1 = Math.min(h - 1, i + r);
    for (let j = 0; j < w; j++) {
      const j0 = Math.max(0, j - r);
      const j1 = Math.min(w - 1, j + r);
      const inv = 1 / ((i1 - i0 + 1) * (j1 - j0 + 1));
      const o = (i * w + j) * c;
      for (let ch = 0; ch < c; ch++) {
        const base = ch * plane;
        let s = 0;
        for (let y = i0; y <= i1; y++) for (let xx = j0; xx <= j1; xx++) s += x[base + y * w + xx];
        out[o + ch] = s * inv;
      }
    }
  }
  return out;
}

/**
 * Euclidean distance of each query row [rows, c] to its nearest bank patch, by
 * |q|^2 + |m|^2 - 2 q.m (the MatMul form), in float64 accumulators.
 */
export function nearestDistances(queries: Float32Array, rows: number, bank: MemoryBank): Float32Array {
  const { channels: c, count, patches, norms } = bank;
  const out = new Float32Array(rows);
  const q = new Float64Array(c);
  for (let r = 0; r < rows; r++) {
    let qn = 0;
    for (let ch = 0; ch < c; ch++) {
      q[ch] = queries[r * c + ch];
      qn += q[ch] * q[ch];
    }
    let best = Infinity;
    for (let m = 0; m < count; m++) {
      const base = m * c;
      let dot = 0;
      for (let ch = 0; ch < c; ch++) dot += q[ch] * patches[base + ch];
      const d = qn + norms[m] - 2 * dot;
      if (d < best) best = d;
    }
    out[r] = Math.sqrt(Math.max(0, best));
  }
  return out;
}

/** PatchCore's map of one sample x_0 [c, h, w]: each position's pooled patch's distance to the bank. */
export function patchcoreMap(x: Float32Array, c: number, h: number, w: number, bank: MemoryBank): Float32Array {
  return nearestDistances(avgPoolPositions(x, c, h, w, bank.pooling), h * w, bank);
}

/** The feature Gaussian's map of one sample x_0 [c, h*w]: the Mahalanobis distance per position. */
export function featureGaussianMap(x: Float32Array, g: LatentGaussian): Float32Array {
  return mahalanobisMap(x, g);
}

/** The fused map: the latent and the feature Gaussian maps, each normalized as its image part is, summed. */
export function fusedMap(latent: Float32Array, feature: Float32Array, norm: { latent: PartNormalization; feature: PartNormalization }): Float32Array {
  const out = new Float32Array(latent.length);
  for (let i = 0; i < out.length; i++) out[i] = (latent[i] - norm.latent.center) / norm.latent.scale + (feature[i] - norm.feature.center) / norm.feature.scale;
  return out;
}

/** The largest value of a map (-Infinity when empty). */
export function mapMax(map: Float32Array): number {
  let m = -Infinity;
  for (let i = 0; i < map.length; i++) if (map[i] > m) m = map[i];
  return m;
}
