/**
 * Pixel AUROC and pixel AP over any number of pixels in bounded memory.
 *
 * {@link PixelMetricsAccumulator} keeps two histograms, of anomalous and of normal pixels, over
 * `bins` equal-width bins of a fixed `range` (default 2^16 bins, 1 MiB). ROC and PR are then those
 * of the binned scores: **pixels in the same bin count as tied** (they cross every threshold
 * together), and thresholds sit on the bin edges `range[0] + k * (range[1] - range[0]) / bins`.
 * That is the only approximation:
 * - it is exact when all values are quantized to the bins (at most one distinct value per bin,
 *   e.g. maps stored as 8- or 16-bit integers with `bins` = number of levels): the histogram then
 *   holds the same threshold counts as sorting, and the result is bit-identical to
 *   {@link pixelAurocExact} / {@link pixelAveragePrecisionExact};
 * - otherwise `errorBounds()` gives a guaranteed bound on |histogram - exact|, computed from the
 *   histogram alone. AUROC: sum over bins of pos_b * neg_b / (2 * P * N). For continuous maps of
 *   1e6 pixels with 2^16 bins the difference measured in the tests is below 1e-5 (tolerance 1e-4).
 *
 * Values outside `range` are clamped into the end bins and counted in `outOfRange`; they stay
 * correctly ordered against in-range values but tie with each other.
 *
 * The exact functions sort every pixel (8 bytes each) and are meant for tests and small sets.
 */
import { InvalidArgumentError } from '../../util/errors';
import { intInRange, invalidArgument, plainObject } from '../../util/validate';
import { averagePrecisionFromCounts, requirePositives } from './pr';
import { aurocFromCounts, countsFromScores, requireBothClasses, rocFromCounts, type RocCurve, type ThresholdCounts } from './roc';

/** Options of {@link PixelMetricsAccumulator}. */
export interface PixelMetricsOptions {
  /** [min, max] of the anomaly-map values, e.g. from calibration or a first pass. Required. */
  range: readonly [number, number];
  /** Number of equal-width bins, 1 to 2^24. Default 65536 (2^16). */
  bins?: number;
}

/** Guaranteed bounds on |histogram metric - exact metric|. */
export interface PixelErrorBounds {
  auroc: number;
  averagePrecision: number;
}

/** @internal Validates a [min, max] range. */
export function checkRange(name: string, range: unknown): [number, number] {
  if (
    !Array.isArray(range) ||
    range.length !== 2 ||
    typeof range[0] !== 'number' ||
    typeof range[1] !== 'number' ||
    !Number.isFinite(range[0]) ||
    !Number.isFinite(range[1]) ||
    !(range[0] < range[1])
  ) {
    throw invalidArgument(name, 'a [min, max] pair of finite numbers with min < max', range);
  }
  return [range[0], range[1]];
}

/**
 * @internal Threshold counts of two histograms, highest bin first, skipping empty bins. The
 * threshold of bin b is its lower edge.
 */
export function countsFromHistograms(pos: Float64Array, neg: Float64Array, lo: number, hi: number): ThresholdCounts {
  const bins = pos.length;
  let used = 0;
  for (let b = 0; b < bins; b++) if (pos[b] + neg[b] > 0) used++;
  const thresholds = new Float64Array(used);
  const tps = new Float64Array(used);
  const fps = new Float64Array(used);
  const width = (hi - lo) / bins;
  let k = 0;
  let tp = 0;
  let fp = 0;
  for (let b = bins - 1; b >= 0; b--) {
    if (pos[b] + neg[b] === 0) continue;
    tp += pos[b];
    fp += neg[b];
    thresholds[k] = lo + b * width;
    tps[k] = tp;
    fps[k] = fp;
    k++;
  }
  return { thresholds, tps, fps };
}

/**
 * Streaming pixel AUROC and AP. Add each image's anomaly map and ground-truth mask, then read the
 * metrics; `add` may continue afterwards. Memory: 16 bytes per bin, whatever the pixel count.
 */
export class PixelMetricsAccumulator {
  readonly bins: number;
  readonly range: readonly [number, number];
  private readonly pos: Float64Array;
  private readonly neg: Float64Array;
  private nPos = 0;
  private nNeg = 0;
  private nOut = 0;

  constructor(options: PixelMetricsOptions) {
    const o = plainObject('options', options);
    this.range = checkRange('options.range', o.range);
    this.bins = o.bins === undefined ? 65536 : intInRange('options.bins', o.bins, 1, 2 ** 24);
    this.pos = new Float64Array(this.bins);
    this.neg = new Float64Array(this.bins);
  }

  /** Anomalous pixels added so far. */
  get positives(): number {
    return this.nPos;
  }

  /** Normal pixels added so far. */
  get negatives(): number {
    return this.nNeg;
  }

  /** Pixels whose value fell outside `range` and was clamped into an end bin. */
  get outOfRange(): number {
    return this.nOut;
  }

  /**
   * Adds one image (or any chunk of pixels).
   *
   * @param map anomaly scores, higher = more anomalous
   * @param mask same length; nonzero = anomalous (0/1 and 0/255 masks both work)
   * @throws InvalidArgumentError on a length mismatch or a NaN score; the accumulator is then
   *   unchanged
   */
  add(map: ArrayLike<number>, mask: ArrayLike<number>): void {
    if (map == null || typeof map.length !== 'number') throw invalidArgument('map', 'a Float32Array', map);
    if (mask == null || typeof mask.length !== 'number') throw invalidArgument('mask', 'a Uint8Array', mask);
    const n = map.length;
    if (mask.length !== n) {
      throw new InvalidArgumentError('mask', `Expected mask of the map's length (${n}) but received length ${mask.length}`);
    }
    const { pos, neg, bins } = this;
    const lo = this.range[0];
    const hi = this.range[1];
    const scale = bins / (hi - lo);
    const last = bins - 1;
    let nPos = 0;
    let out = 0;
    for (let i = 0; i < n; i++) {
      const v = map[i];
      const x = (v - lo) * scale;
      let b: number;
      if (x >= 0 && x < bins) b = x | 0;
      else if (x >= bins) {
        b = last;
        if (v > hi) out++;
      } else if (x < 0) {
        b = 0;
        out++;
      } else {
        this.undo(map, mask, i);
        throw invalidArgument(`map[${i}]`, 'a number (not NaN)', v);
      }
      if (mask[i] !== 0) {
        pos[b]++;
        nPos++;
      } else neg[b]++;
    }
    this.nPos += nPos;
    this.nNeg += n - nPos;
    this.nOut += out;
  }

  /** Removes the first `end` pixels of a chunk that `add` rejected. */
  private undo(map: ArrayLike<number>, mask: ArrayLike<number>, end: number): void {
    const lo = this.range[0];
    const scale = this.bins / (this.range[1] - lo);
    for (let i = 0; i < end; i++) {
      const x = (map[i] - lo) * scale;
      const b = x >= 0 && x < this.bins ? x | 0 : x >= this.bins ? this.bins - 1 : 0;
      if (mask[i] !== 0) this.pos[b]--;
      else this.neg[b]--;
    }
  }

  private counts(): ThresholdCounts {
    return countsFromHistograms(this.pos, this.neg, this.range[0], this.range[1]);
  }

  /** Pixel AUROC of the binned scores. @throws InvalidArgumentError unless both classes were added */
  auroc(): number {
    const c = this.counts();
    requireBothClasses(c, 'masks');
    return aurocFromCounts(c);
  }

  /** Pixel AP of the binned scores. @throws InvalidArgumentError unless an anomalous pixel was added */
  averagePrecision(): number {
    const c = this.counts();
    requirePositives(c, 'masks');
    return averagePrecisionFromCounts(c);
  }

  /** Pixel ROC curve on the bin edges (thresholds = lower edge of each non-empty bin). */
  rocCurve(): RocCurve {
    const c = this.counts();
    requireBothClasses(c, 'masks');
    return rocFromCounts(c);
  }

  /**
   * Guaranteed bounds on |binned metric - exact metric| (exact = sorting all added pixels).
   *
   * Within bin b (with pos_b anomalous and neg_b normal pixels) the exact ROC curve stays inside
   * the rectangle between the bin's two corner points, while the binned curve takes its diagonal:
   * the AUROC error is at most sum_b pos_b * neg_b / (2 P N). For AP, each anomalous pixel of bin b
   * has an exact precision between (T0 + 1) / (T0 + 1 + F1) and T1 / (T1 + F0), where (T0, F0) and
   * (T1, F1) are the cumulative counts before and after the bin; the bound sums
   * pos_b / P * (largest distance from the binned precision T1 / (T1 + F1) to that interval).
   * AP also depends on ties within one class (tied anomalous pixels share one precision), so its
   * bound counts those too. Both are worst cases from the counts alone: they cannot see that a
   * bin's values are all equal, in which case both metrics are exact anyway.
   */
  errorBounds(): PixelErrorBounds {
    const P = this.nPos;
    const N = this.nNeg;
    let rocSum = 0;
    let apSum = 0;
    let t0 = 0;
    let f0 = 0;
    for (let b = this.bins - 1; b >= 0; b--) {
      const p = this.pos[b];
      const q = this.neg[b];
      if (p + q === 0) continue;
      const t1 = t0 + p;
      const f1 = f0 + q;
      rocSum += p * q;
      if (p > 0) {
        const binned = t1 / (t1 + f1);
        const lowest = (t0 + 1) / (t0 + 1 + f1);
        const highest = t1 / (t1 + f0);
        apSum += p * Math.max(binned - lowest, highest - binned);
      }
      t0 = t1;
      f0 = f1;
    }
    return {
      auroc: P > 0 && N > 0 ? rocSum / (2 * P * N) : 0,
      averagePrecision: P > 0 ? apSum / P : 0,
    };
  }
}

/** Splits images' pixels by their masks into two score arrays. */
function splitPixels(maps: ReadonlyArray<ArrayLike<number>>, masks: ReadonlyArray<ArrayLike<number>>): { positives: Float64Array; negatives: Float64Array } {
  // (as unknown: Array.isArray would narrow a readonly array to any[])
  if (!Array.isArray(maps as unknown)) throw invalidArgument('maps', 'an array of anomaly maps', maps);
  if (!Array.isArray(masks as unknown)) throw invalidArgument('masks', 'an array of masks', masks);
  if (maps.length !== masks.length) {
    throw new InvalidArgumentError('masks', `Expected ${maps.length} masks (one per map) but received ${masks.length}`);
  }
  let p = 0;
  let total = 0;
  for (let k = 0; k < maps.length; k++) {
    const map = maps[k];
    const mask = masks[k];
    if (map == null || typeof map.length !== 'number') throw invalidArgument(`maps[${k}]`, 'a Float32Array', map);
    if (mask == null || mask.length !== map.length) {
      throw new InvalidArgumentError(`masks[${k}]`, `Expected masks[${k}] to have the length of maps[${k}] (${map.length})`);
    }
    for (let i = 0; i < map.length; i++) {
      const v = map[i];
      if (typeof v !== 'number' || Number.isNaN(v)) throw invalidArgument(`maps[${k}][${i}]`, 'a number (not NaN)', v);
      if (mask[i] !== 0) p++;
    }
    total += map.length;
  }
  const positives = new Float64Array(p);
  const negatives = new Float64Array(total - p);
  let ip = 0;
  let ineg = 0;
  for (let k = 0; k < maps.length; k++) {
    const map = maps[k];
    const mask = masks[k];
    for (let i = 0; i < map.length; i++) {
      if (mask[i] !== 0) positives[ip++] = map[i];
      else negatives[ineg++] = map[i];
    }
  }
  return { positives, negatives };
}

/**
 * Exact pixel AUROC by sorting every pixel (anomalib's pixel AUROC, sklearn's `roc_auc_score` on
 * the flattened maps). Memory 8 bytes per pixel plus the sort: for tests and small sets.
 *
 * @param maps anomaly maps; `masks[k]` has the length of `maps[k]`, nonzero = anomalous
 * @throws InvalidArgumentError on a count or length mismatch, a NaN value, or a single class
 */
export function pixelAurocExact(maps: ReadonlyArray<ArrayLike<number>>, masks: ReadonlyArray<ArrayLike<number>>): number {
  const { positives, negatives } = splitPixels(maps, masks);
  const c = countsFromScores(positives, negatives);
  requireBothClasses(c, 'masks');
  return aurocFromCounts(c);
}

/**
 * Exact pixel AP by sorting every pixel (sklearn's `average_precision_score` on the flattened
 * maps). As {@link pixelAurocExact}, but needs only one anomalous pixel.
 */
export function pixelAveragePrecisionExact(maps: ReadonlyArray<ArrayLike<number>>, masks: ReadonlyArray<ArrayLike<number>>): number {
  const { positives, negatives } = splitPixels(maps, masks);
  const c = countsFromScores(positives, negatives);
  requirePositives(c, 'masks');
  return averagePrecisionFromCounts(c);
}
