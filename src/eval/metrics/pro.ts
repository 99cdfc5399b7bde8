/**
 * AUPRO: area under the per-region-overlap curve up to a false-positive rate, as in the MVTec AD
 * evaluation script and anomalib's `AUPRO`.
 *
 * For a threshold t (a pixel is predicted anomalous when its value >= t):
 * - PRO(t) = mean over every ground-truth region R of every image of |R ∩ {map >= t}| / |R|, the
 *   regions being the 8-connected components of the masks (see `components.ts`);
 * - FPR(t) = normal pixels with value >= t / all normal pixels, over all images.
 * The curve runs from (0, 0) at t = +Infinity to (1, 1); AUPRO integrates PRO over FPR from 0 to
 * `maxFpr` by the trapezoid rule, interpolating the curve at exactly `maxFpr`, and divides by
 * `maxFpr`, so a perfect detector scores 1.
 *
 * PRO needs, per threshold, only the sum over regions of |R ∩ {map >= t}| / |R|. So each pixel of
 * region R adds the weight 1 / |R| at its value, and normal pixels add a count: two histograms of
 * `bins` entries whatever the number of images or regions.
 *
 * **Precision.** With `range` [min, max] and B bins (default 10,000), thresholds sit on the grid
 * min + k * (max - min) / B: pixels in the same bin count as tied. The curve points are the exact
 * curve's points at those thresholds, joined by straight segments; between two grid thresholds the
 * exact curve stays inside the rectangle the two points span. `auproErrorBound()` sums those
 * rectangles (half of each, whole for the one cut at `maxFpr`) into a guaranteed bound on
 * |binned AUPRO - exact AUPRO|. Values outside the range clamp into the end bins (`outOfRange`).
 * Without `range` the accumulator is exact: it keeps every pixel's value (8 bytes per normal pixel,
 * 16 per anomalous one) and sorts them when asked, which suits tests and small sets.
 */
import { InvalidArgumentError } from '../../util/errors';
import { intInRange, invalidArgument, numberInRange, plainObject } from '../../util/validate';
import { connectedComponents } from './components';
import { checkRange } from './pixel';

/** Options of {@link ProAccumulator}. */
export interface ProAccumulatorOptions {
  /**
   * Number of equal-width bins over `range`, 1 to 2^24; default 10,000. Only with `range`.
   */
  bins?: number;
  /**
   * [min, max] of the anomaly-map values (from calibration or a first pass). Given: streaming
   * histogram, memory 24 bytes per bin. Omitted: exact mode, memory per pixel.
   */
  range?: readonly [number, number];
}

/** The PRO curve, by decreasing threshold. */
export interface ProCurve {
  /** Increasing from 0 to 1. */
  fpr: Float64Array;
  /** Mean per-region overlap at each threshold; increasing from 0 to 1. */
  pro: Float64Array;
  /** Decreasing; `thresholds[0]` is +Infinity. In histogram mode, the lower edges of the bins. */
  thresholds: Float64Array;
}

/** Cumulative sums at each distinct threshold, highest first. */
interface ProCounts {
  thresholds: Float64Array;
  /** Normal pixels with value >= threshold. */
  fps: Float64Array;
  /** Sum over regions of the fraction of the region with value >= threshold. */
  overlap: Float64Array;
}

/** A Float64Array that grows by doubling. */
class Growable {
  data = new Float64Array(256);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) {
      const grown = new Float64Array(this.data.length * 2);
      grown.set(this.data);
      this.data = grown;
    }
    this.data[this.length++] = v;
  }
  view(): Float64Array {
    return this.data.subarray(0, this.length);
  }
}

/** The curve of cumulative sums, starting at (0, 0) on +Infinity. */
function curveFromCounts(c: ProCounts, negatives: number, regions: number): ProCurve {
  const n = c.fps.length;
  const fpr = new Float64Array(n + 1);
  const pro = new Float64Array(n + 1);
  const thresholds = new Float64Array(n + 1);
  thresholds[0] = Infinity;
  for (let i = 0; i < n; i++) {
    fpr[i + 1] = c.fps[i] / negatives;
    // The overlap sum reaches `regions` only up to rounding; PRO cannot exceed 1.
    pro[i + 1] = Math.min(1, c.overlap[i] / regions);
    thresholds[i + 1] = c.thresholds[i];
  }
  return { fpr, pro, thresholds };
}

/** Normalized trapezoid area of a curve from fpr 0 to maxFpr, the curve cut at exactly maxFpr. */
function areaToFpr(curve: ProCurve, maxFpr: number): number {
  const { fpr, pro } = curve;
  let area = 0;
  for (let i = 1; i < fpr.length; i++) {
    const x0 = fpr[i - 1];
    const x1 = fpr[i];
    if (x0 >= maxFpr) break;
    if (x1 <= maxFpr) {
      area += ((x1 - x0) * (pro[i - 1] + pro[i])) / 2;
    } else {
      const y = pro[i - 1] + ((pro[i] - pro[i - 1]) * (maxFpr - x0)) / (x1 - x0);
      area += ((maxFpr - x0) * (pro[i - 1] + y)) / 2;
      break;
    }
  }
  return area / maxFpr;
}

/** Worst-case |area - exact area| when each segment hides an unknown monotone curve. */
function segmentBound(curve: ProCurve, maxFpr: number): number {
  const { fpr, pro } = curve;
  let bound = 0;
  for (let i = 1; i < fpr.length; i++) {
    const x0 = fpr[i - 1];
    const x1 = fpr[i];
    if (x0 >= maxFpr) break;
    const h = pro[i] - pro[i - 1];
    bound += x1 <= maxFpr ? ((x1 - x0) * h) / 2 : (maxFpr - x0) * h;
  }
  return bound / maxFpr;
}

/**
 * Streaming AUPRO. Add each image's anomaly map and ground-truth mask, then read `aupro()`;
 * `add` may continue afterwards.
 *
 * @example
 * const acc = new ProAccumulator({ range: [0, 1] });
 * for (const { map, mask } of images) acc.add(map, mask, width, height);
 * acc.aupro(); // normalized area up to FPR 0.3
 */
export class ProAccumulator {
  /** 'histogram' with a range, 'exact' without. */
  readonly mode: 'histogram' | 'exact';
  readonly bins: number;
  readonly range: readonly [number, number] | undefined;
  private readonly negHist: Float64Array;
  private readonly overlapHist: Float64Array;
  private readonly posHist: Float64Array;
  private readonly negValues = new Growable();
  private readonly posValues = new Growable();
  private readonly posWeights = new Growable();
  private nRegions = 0;
  private nNeg = 0;
  private nOut = 0;

  constructor(options: ProAccumulatorOptions = {}) {
    const o = plainObject('options', options);
    if (o.range === undefined) {
      if (o.bins !== undefined) throw invalidArgument('options.bins', 'no bins without options.range', o.bins);
      this.mode = 'exact';
      this.bins = 0;
      this.range = undefined;
    } else {
      this.mode = 'histogram';
      this.range = checkRange('options.range', o.range);
      this.bins = o.bins === undefined ? 10000 : intInRange('options.bins', o.bins, 1, 2 ** 24);
    }
    this.negHist = new Float64Array(this.bins);
    this.overlapHist = new Float64Array(this.bins);
    this.posHist = new Float64Array(this.bins);
  }

  /** Ground-truth regions (8-connected components) added so far. */
  get regions(): number {
    return this.nRegions;
  }

  /** Normal pixels added so far. */
  get negatives(): number {
    return this.nNeg;
  }

  /** Pixels whose value fell outside `range` and was clamped into an end bin (histogram mode). */
  get outOfRange(): number {
    return this.nOut;
  }

  /**
   * Adds one image.
   *
   * @param map anomaly scores, row-major, `width * height` entries
   * @param mask ground truth, same layout; nonzero = anomalous (0/1 and 0/255 both work)
   * @throws InvalidArgumentError on a bad size, a length mismatch or a NaN value; the accumulator
   *   is then unchanged
   */
  add(map: Float32Array | ArrayLike<number>, mask: Uint8Array, width: number, height: number): void {
    const { labels, count } = connectedComponents(mask, width, height);
    if (map == null || typeof map.length !== 'number') throw invalidArgument('map', 'a Float32Array', map);
    if (map.length !== labels.length) {
      throw new InvalidArgumentError('map', `Expected map of length width * height (${labels.length}) but received length ${map.length}`);
    }
    for (let i = 0; i < map.length; i++) {
      if (Number.isNaN(map[i])) throw invalidArgument(`map[${i}]`, 'a number (not NaN)', map[i]);
    }
    const size = new Float64Array(count + 1);
    for (let i = 0; i < labels.length; i++) size[labels[i]]++;
    const weight = new Float64Array(count + 1);
    for (let r = 1; r <= count; r++) weight[r] = 1 / size[r];
    this.nRegions += count;
    this.nNeg += size[0];
    if (this.mode === 'exact') {
      for (let i = 0; i < labels.length; i++) {
        const l = labels[i];
        if (l === 0) this.negValues.push(map[i]);
        else {
          this.posValues.push(map[i]);
          this.posWeights.push(weight[l]);
        }
      }
      return;
    }
    const { bins, negHist, overlapHist, posHist } = this;
    const [lo, hi] = this.range as readonly [number, number];
    const scale = bins / (hi - lo);
    let out = 0;
    for (let i = 0; i < labels.length; i++) {
      const v = map[i];
      const x = (v - lo) * scale;
      let b: number;
      if (x >= 0 && x < bins) b = x | 0;
      else if (x >= bins) {
        b = bins - 1;
        if (v > hi) out++;
      } else {
        b = 0;
        out++;
      }
      const l = labels[i];
      if (l === 0) negHist[b]++;
      else {
        overlapHist[b] += weight[l];
        posHist[b]++;
      }
    }
    this.nOut += out;
  }

  private counts(): ProCounts {
    return this.mode === 'exact' ? this.exactCounts() : this.histogramCounts();
  }

  private histogramCounts(): ProCounts {
    const { bins, negHist, overlapHist, posHist } = this;
    const [lo, hi] = this.range as readonly [number, number];
    let used = 0;
    for (let b = 0; b < bins; b++) if (negHist[b] + posHist[b] > 0) used++;
    const thresholds = new Float64Array(used);
    const fps = new Float64Array(used);
    const overlap = new Float64Array(used);
    const width = (hi - lo) / bins;
    let k = 0;
    let fp = 0;
    let ov = 0;
    for (let b = bins - 1; b >= 0; b--) {
      if (negHist[b] + posHist[b] === 0) continue;
      fp += negHist[b];
      ov += overlapHist[b];
      thresholds[k] = lo + b * width;
      fps[k] = fp;
      overlap[k] = ov;
      k++;
    }
    return { thresholds, fps, overlap };
  }

  private exactCounts(): ProCounts {
    const neg = this.negValues.view().slice().sort();
    const pv = this.posValues.view();
    const pw = this.posWeights.view();
    const order = new Uint32Array(pv.length);
    for (let i = 0; i < order.length; i++) order[i] = i;
    order.sort((a, b) => pv[a] - pv[b]);
    const cap = neg.length + pv.length;
    const thresholds = new Float64Array(cap);
    const fps = new Float64Array(cap);
    const overlap = new Float64Array(cap);
    let i = pv.length - 1;
    let j = neg.length - 1;
    let k = 0;
    let fp = 0;
    let ov = 0;
    while (i >= 0 || j >= 0) {
      const t = i < 0 ? neg[j] : j < 0 ? pv[order[i]] : Math.max(pv[order[i]], neg[j]);
      while (i >= 0 && pv[order[i]] === t) ov += pw[order[i--]];
      while (j >= 0 && neg[j] === t) {
        fp++;
        j--;
      }
      thresholds[k] = t;
      fps[k] = fp;
      overlap[k] = ov;
      k++;
    }
    return { thresholds: thresholds.slice(0, k), fps: fps.slice(0, k), overlap: overlap.slice(0, k) };
  }

  private requireData(): void {
    if (this.nRegions === 0) {
      throw new InvalidArgumentError('mask', 'Expected at least one anomalous region in the masks added; PRO is undefined');
    }
    if (this.nNeg === 0) {
      throw new InvalidArgumentError('mask', 'Expected at least one normal pixel in the masks added; FPR is undefined');
    }
  }

  /**
   * The PRO curve over every threshold (exact mode) or every non-empty bin (histogram mode).
   * @throws InvalidArgumentError unless at least one region and one normal pixel were added
   */
  curve(): ProCurve {
    this.requireData();
    return curveFromCounts(this.counts(), this.nNeg, this.nRegions);
  }

  /**
   * AUPRO: trapezoid area under PRO(FPR) from FPR 0 to `maxFpr`, the curve interpolated at
   * exactly `maxFpr`, divided by `maxFpr` (1 for a perfect detector).
   *
   * @param maxFpr integration limit in (0, 1]; default 0.3 as MVTec AD and anomalib
   * @throws InvalidArgumentError on a bad `maxFpr`, or as {@link curve}
   */
  aupro(maxFpr = 0.3): number {
    checkMaxFpr(maxFpr);
    return areaToFpr(this.curve(), maxFpr);
  }

  /**
   * A guaranteed bound on |aupro(maxFpr) - exact AUPRO| due to binning; 0 in exact mode. See the
   * module comment.
   */
  auproErrorBound(maxFpr = 0.3): number {
    checkMaxFpr(maxFpr);
    if (this.mode === 'exact') return 0;
    return segmentBound(this.curve(), maxFpr);
  }
}

function checkMaxFpr(maxFpr: number): void {
  numberInRange('maxFpr', maxFpr, Number.MIN_VALUE, 1);
}
