/**
 * ROC curve and AUROC, as scikit-learn's `roc_curve(drop_intermediate=False)` and
 * `roc_auc_score` (anomalib's image AUROC).
 *
 * The private core works on {@link ThresholdCounts}: cumulative positive and negative counts at
 * each distinct threshold, highest first (sklearn's `_binary_clf_curve`). The exact path builds
 * them by sorting; the pixel and PRO histograms build them from bins. The same area functions then
 * run on either, so a histogram whose bins hold exactly the distinct values gives bit-identical
 * results.
 */
import { InvalidArgumentError } from '../../util/errors';
import { invalidArgument } from '../../util/validate';

/** A ROC curve, from (0, 0) at threshold +Infinity to (1, 1) at the lowest score. */
export interface RocCurve {
  /** False-positive rate at each threshold: negatives with score >= threshold / all negatives. */
  fpr: Float64Array;
  /** True-positive rate at each threshold: positives with score >= threshold / all positives. */
  tpr: Float64Array;
  /** Decreasing; `thresholds[0]` is +Infinity, then each distinct score. */
  thresholds: Float64Array;
}

/**
 * @internal Cumulative counts at each distinct threshold, highest first: `tps[i]` and `fps[i]`
 * count the positives and negatives whose score is >= `thresholds[i]`. Every entry adds at least
 * one sample, so `tps[i] + fps[i] > 0`. Not re-exported from the package.
 */
export interface ThresholdCounts {
  thresholds: Float64Array;
  tps: Float64Array;
  fps: Float64Array;
}

/** @internal Total positives and negatives of a curve. */
export function totals(c: ThresholdCounts): { positives: number; negatives: number } {
  const n = c.tps.length;
  return { positives: n === 0 ? 0 : c.tps[n - 1], negatives: n === 0 ? 0 : c.fps[n - 1] };
}

/**
 * @internal Validates scores and labels and splits the scores by class. Scores must be finite;
 * labels 0, 1, false or true.
 */
export function splitByLabel(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>): { positives: Float64Array; negatives: Float64Array } {
  if (scores == null || typeof scores.length !== 'number') throw invalidArgument('scores', 'an array of numbers', scores);
  if (labels == null || typeof labels.length !== 'number') throw invalidArgument('labels', 'an array of 0/1 labels', labels);
  const n = scores.length;
  if (labels.length !== n) {
    throw new InvalidArgumentError('labels', `Expected labels to have the length of scores (${n}) but received length ${labels.length}`);
  }
  if (n === 0) throw new InvalidArgumentError('scores', 'Expected at least one score but received an empty array');
  let p = 0;
  for (let i = 0; i < n; i++) {
    const s = scores[i];
    if (typeof s !== 'number' || !Number.isFinite(s)) throw invalidArgument(`scores[${i}]`, 'a finite number', s);
    const l = labels[i];
    if (l === 1 || l === true) p++;
    else if (l !== 0 && l !== false) throw invalidArgument(`labels[${i}]`, '0, 1, false or true', l);
  }
  const positives = new Float64Array(p);
  const negatives = new Float64Array(n - p);
  let ip = 0;
  let ineg = 0;
  for (let i = 0; i < n; i++) {
    const l = labels[i];
    if (l === 1 || l === true) positives[ip++] = scores[i];
    else negatives[ineg++] = scores[i];
  }
  return { positives, negatives };
}

/**
 * @internal Threshold counts of two score sets, each sorted ascending (sorting is done here when
 * `sorted` is false, in place). Equal scores form one threshold whatever their class, so tied
 * samples move together (sklearn's tie rule). -0 and +0 are one value.
 */
export function countsFromScores(positives: Float64Array, negatives: Float64Array, sorted = false): ThresholdCounts {
  if (!sorted) {
    positives.sort();
    negatives.sort();
  }
  const cap = positives.length + negatives.length;
  const thresholds = new Float64Array(cap);
  const tps = new Float64Array(cap);
  const fps = new Float64Array(cap);
  let i = positives.length - 1;
  let j = negatives.length - 1;
  let k = 0;
  let tp = 0;
  let fp = 0;
  while (i >= 0 || j >= 0) {
    const t = i < 0 ? negatives[j] : j < 0 ? positives[i] : Math.max(positives[i], negatives[j]);
    while (i >= 0 && positives[i] === t) {
      tp++;
      i--;
    }
    while (j >= 0 && negatives[j] === t) {
      fp++;
      j--;
    }
    thresholds[k] = t;
    tps[k] = tp;
    fps[k] = fp;
    k++;
  }
  if (k === cap) return { thresholds, tps, fps };
  return { thresholds: thresholds.slice(0, k), tps: tps.slice(0, k), fps: fps.slice(0, k) };
}

/** @internal Throws unless both classes are present. */
export function requireBothClasses(c: ThresholdCounts, argument: string): void {
  const { positives, negatives } = totals(c);
  if (positives === 0 || negatives === 0) {
    throw new InvalidArgumentError(
      argument,
      `Expected both classes in ${argument} but received only ${positives === 0 ? 'negatives' : 'positives'}; ` + 'ROC is undefined with one class',
    );
  }
}

/** @internal The ROC curve of threshold counts (both classes present). */
export function rocFromCounts(c: ThresholdCounts): RocCurve {
  const n = c.tps.length;
  const { positives, negatives } = totals(c);
  const fpr = new Float64Array(n + 1);
  const tpr = new Float64Array(n + 1);
  const thresholds = new Float64Array(n + 1);
  thresholds[0] = Infinity;
  for (let i = 0; i < n; i++) {
    fpr[i + 1] = c.fps[i] / negatives;
    tpr[i + 1] = c.tps[i] / positives;
    thresholds[i + 1] = c.thresholds[i];
  }
  return { fpr, tpr, thresholds };
}

/**
 * @internal Trapezoid area under the ROC curve of threshold counts (both classes present). Sums
 * integer products, so it is exact until the counts pass 2^26 per class, then rounds to double.
 * Equals the Mann-Whitney U statistic / (P * N) with ties counted 1/2.
 */
export function aurocFromCounts(c: ThresholdCounts): number {
  const { tps, fps } = c;
  const { positives, negatives } = totals(c);
  let twiceArea = 0;
  let tp0 = 0;
  let fp0 = 0;
  for (let i = 0; i < tps.length; i++) {
    const tp = tps[i];
    const fp = fps[i];
    twiceArea += (fp - fp0) * (tp + tp0);
    tp0 = tp;
    fp0 = fp;
  }
  return twiceArea / (2 * positives * negatives);
}

/**
 * ROC curve of binary scores, exactly as scikit-learn's
 * `roc_curve(labels, scores, drop_intermediate=False)`: one point per distinct score, plus the
 * starting point (0, 0) at threshold +Infinity. A sample is predicted positive when
 * `score >= threshold`. Samples with equal scores move together, so a tie between classes gives a
 * diagonal segment.
 *
 * @param scores finite numbers, higher = more anomalous
 * @param labels 1/true = anomalous (positive), 0/false = normal; both classes must be present
 * @throws InvalidArgumentError on a length mismatch, an empty input, a non-finite score, a label
 *   other than 0/1/false/true, or a single class
 */
export function rocCurve(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>): RocCurve {
  const { positives, negatives } = splitByLabel(scores, labels);
  const c = countsFromScores(positives, negatives);
  requireBothClasses(c, 'labels');
  return rocFromCounts(c);
}

/**
 * Area under the ROC curve by the trapezoid rule, as scikit-learn's `roc_auc_score`: the
 * probability that a random positive scores above a random negative, ties counting 1/2.
 *
 * @throws InvalidArgumentError as {@link rocCurve}
 */
export function auroc(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>): number {
  const { positives, negatives } = splitByLabel(scores, labels);
  const c = countsFromScores(positives, negatives);
  requireBothClasses(c, 'labels');
  return aurocFromCounts(c);
}
