/**
 * PatchCore's memory bank (issue 17): every training patch of the 3x3-average-pooled features,
 * reduced by a greedy k-center coreset chosen on a random Gaussian projection of the patches.
 */
import { avgPoolPositions } from '../../runtime/feature-statistics';
import { InvalidArgumentError } from '../../util/errors';
import { mulberry32 } from '../../util/prng';

/** Every pooled patch of features [n, c, h, w]: [n*h*w, c], sample-major then position-major. */
export function pooledPatches(features: Float32Array, n: number, c: number, h: number, w: number, pooling: number): Float32Array {
  const d = c * h * w;
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) out.set(avgPoolPositions(features.subarray(i * d, (i + 1) * d), c, h, w, pooling), i * d);
  return out;
}

function gaussian(rand: () => number): number {
  const r = Math.sqrt(-2 * Math.log(1 - rand()));
  return r * Math.cos(2 * Math.PI * rand());
}

/** rows x c -> rows x dims by a seeded Gaussian matrix scaled by 1/sqrt(dims) (Johnson-Lindenstrauss). */
export function randomProjection(patches: Float32Array, rows: number, c: number, dims: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  const matrix = new Float32Array(c * dims);
  const s = 1 / Math.sqrt(dims);
  for (let i = 0; i < matrix.length; i++) matrix[i] = gaussian(rand) * s;
  const out = new Float32Array(rows * dims);
  for (let r = 0; r < rows; r++) {
    const o = r * dims;
    for (let ch = 0; ch < c; ch++) {
      const v = patches[r * c + ch];
      if (v === 0) continue;
      const mrow = ch * dims;
      for (let k = 0; k < dims; k++) out[o + k] += v * matrix[mrow + k];
    }
  }
  return out;
}

/**
 * Greedy k-center selection of `count` rows of `points` [rows, dims]: start at a seeded random
 * row, then repeatedly add the row farthest from those chosen. Returns the chosen row indices.
 */
export function greedyCoreset(points: Float32Array, rows: number, dims: number, count: number, seed: number): number[] {
  if (!(Number.isInteger(count) && count >= 1 && count <= rows))
    throw new InvalidArgumentError('coreset', `the coreset must hold 1 to ${rows} patches, got ${count}`);
  const minDist = new Float64Array(rows).fill(Infinity);
  const chosen: number[] = [];
  let next = Math.floor(mulberry32(seed)() * rows);
  for (let k = 0; k < count; k++) {
    chosen.push(next);
    const base = next * dims;
    let far = -1;
    let farDist = -Infinity;
    for (let r = 0; r < rows; r++) {
      const o = r * dims;
      let d = 0;
      for (let j = 0; j < dims; j++) {
        const diff = points[o + j] - points[base + j];
        d += diff * diff;
      }
      if (d < minDist[r]) minDist[r] = d;
      if (minDist[r] > farDist) {
        farDist = minDist[r];
        far = r;
      }
    }
    next = far;
  }
  return chosen;
}

export interface MemoryBankOptions {
  /** share of the training patches kept; default 0.01 */
  fraction?: number;
  /** random projection dimensions for the coreset search; default 128 (none when the features have fewer channels) */
  projectionDims?: number;
  /** average pooling side; default 3 */
  pooling?: number;
  seed?: number;
}

export interface FittedMemoryBank {
  /** [patches, c] */
  bank: Float32Array;
  patches: number;
  sourcePatches: number;
  projectionDims: number;
  pooling: number;
}

/** The memory bank of training features [n, c, h, w]. */
export function fitMemoryBank(features: Float32Array, n: number, c: number, h: number, w: number, options: MemoryBankOptions = {}): FittedMemoryBank {
  const fraction = options.fraction ?? 0.01;
  if (!(fraction > 0 && fraction <= 1)) throw new InvalidArgumentError('coreset', `the coreset fraction must be in (0, 1], got ${fraction}`);
  const pooling = options.pooling ?? 3;
  const seed = options.seed ?? 0;
  const rows = n * h * w;
  const patches = pooledPatches(features, n, c, h, w, pooling);
  const count = Math.max(1, Math.min(rows, Math.round(rows * fraction)));
  const dims = Math.min(c, options.projectionDims ?? 128);
  const projected = dims < c ? randomProjection(patches, rows, c, dims, seed + 1) : patches;
  const chosen = count === rows ? Array.from({ length: rows }, (_, i) => i) : greedyCoreset(projected, rows, dims, count, seed);
  const bank = new Float32Array(count * c);
  chosen.forEach((r, k) => bank.set(patches.subarray(r * c, (r + 1) * c), k * c));
  return { bank, patches: count, sourcePatches: rows, projectionDims: dims, pooling };
}
