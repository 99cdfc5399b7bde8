/**
 * Precision-recall curve, average precision and F1-max, as scikit-learn's
 * `precision_recall_curve` and `average_precision_score` and anomalib's `F1Max`.
 *
 * Pure cores over {@link ThresholdCounts} (see `roc.ts`), shared with the pixel histogram.
 */
import { InvalidArgumentError } from '../../util/errors';
import { countsFromScores, splitByLabel, totals, type ThresholdCounts } from './roc';

/** A precision-recall curve in scikit-learn's layout. */
export interface PrecisionRecallCurve {
  /** `precision[i]` at `thresholds[i]`; one more entry than thresholds: the final 1. */
  precision: Float64Array;
  /** `recall[i]` at `thresholds[i]`; decreasing; the final entry is 0. */
  recall: Float64Array;
  /** Each distinct score, increasing. A sample is predicted positive when score >= threshold. */
  thresholds: Float64Array;
}

/** The best F1 over all thresholds and the threshold that reaches it. */
export interface F1Max {
  f1: number;
  /** Predict anomalous when score >= threshold. The lowest such threshold when several tie. */
  threshold: number;
}

/** @internal Throws unless at least one positive is present (recall is undefined otherwise). */
export function requirePositives(c: ThresholdCounts, argument: string): void {
  if (totals(c).positives === 0) {
    throw new InvalidArgumentError(argument, `Expected at least one positive in ${argument} but received only negatives; recall is undefined`);
  }
}

/** @internal The PR curve of threshold counts, in sklearn's (increasing-threshold) order. */
export function prFromCounts(c: ThresholdCounts): PrecisionRecallCurve {
  const n = c.tps.length;
  const { positives } = totals(c);
  const precision = new Float64Array(n + 1);
  const recall = new Float64Array(n + 1);
  const thresholds = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const k = n - 1 - i; // counts are highest threshold first
    const tp = c.tps[k];
    precision[i] = tp / (tp + c.fps[k]);
    recall[i] = tp / positives;
    thresholds[i] = c.thresholds[k];
  }
  precision[n] = 1;
  recall[n] = 0;
  return { precision, recall, thresholds };
}

/**
 * @internal Average precision of threshold counts: sum over thresholds of
 * (R_n - R_{n-1}) * P_n, each tied group one step (sklearn's definition, no interpolation).
 */
export function averagePrecisionFromCounts(c: ThresholdCounts): number {
  const { tps, fps } = c;
  const { positives } = totals(c);
  let sum = 0;
  let tp0 = 0;
  for (let i = 0; i < tps.length; i++) {
    const tp = tps[i];
    if (tp > tp0) sum += (tp - tp0) * (tp / (tp + fps[i]));
    tp0 = tp;
  }
  return sum / positives;
}

/**
 * @internal F1-max of threshold counts. F1 = 2PR / (P + R) = 2 TP / (TP + FP + #positives),
 * the second form being free of the 0/0 case and of intermediate rounding.
 */
export function f1MaxFromCounts(c: ThresholdCounts): F1Max {
  const { tps, fps } = c;
  const { positives } = totals(c);
  let best = -1;
  let threshold = NaN;
  // Lowest threshold first, keeping the first maximum, as anomalib's argmax over the curve.
  for (let i = tps.length - 1; i >= 0; i--) {
    const f1 = (2 * tps[i]) / (tps[i] + fps[i] + positives);
    if (f1 > best) {
      best = f1;
      threshold = c.thresholds[i];
    }
  }
  return { f1: best, threshold };
}

function counts(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>): ThresholdCounts {
  const { positives, negatives } = splitByLabel(scores, labels);
  const c = countsFromScores(positives, negatives);
  requirePositives(c, 'labels');
  return c;
}

/**
 * Precision-recall curve, as scikit-learn's `precision_recall_curve(labels, scores)` (1.1+, with
 * every threshold kept): thresholds increase; `precision` and `recall` have one more entry, the
 * final point (precision 1, recall 0).
 *
 * @param scores finite numbers, higher = more anomalous
 * @param labels 1/true = anomalous, 0/false = normal; at least one positive (all positives is fine)
 * @throws InvalidArgumentError on a length mismatch, an empty input, a non-finite score, a bad
 *   label, or no positive
 */
export function precisionRecallCurve(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>): PrecisionRecallCurve {
  return prFromCounts(counts(scores, labels));
}

/**
 * Average precision, as scikit-learn's `average_precision_score`: sum of (R_n - R_{n-1}) * P_n
 * over the thresholds, tied scores forming one step (not the interpolated 11-point AP).
 *
 * @throws InvalidArgumentError as {@link precisionRecallCurve}
 */
export function averagePrecision(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>): number {
  return averagePrecisionFromCounts(counts(scores, labels));
}

/**
 * F1-max, as anomalib's `F1Max`: the largest 2PR / (P + R) over the points of the
 * precision-recall curve, and its threshold (predict anomalous when score >= threshold). anomalib
 * uses that threshold as its F1-adaptive threshold.
 *
 * @throws InvalidArgumentError as {@link precisionRecallCurve}
 */
export function f1Max(scores: ArrayLike<number>, labels: ArrayLike<number | boolean>): F1Max {
  return f1MaxFromCounts(counts(scores, labels));
}
