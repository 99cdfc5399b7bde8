/**
 * Evaluation metrics, one per file, matching scikit-learn / anomalib / the MVTec AD script:
 *
 * - `rocCurve`, `auroc` (roc.ts): image AUROC, sklearn `roc_curve(drop_intermediate=False)` and
 *   `roc_auc_score` (ties count 1/2).
 * - `precisionRecallCurve`, `averagePrecision`, `f1Max` (pr.ts): sklearn's PR curve and
 *   `average_precision_score`, anomalib's F1-max and its threshold.
 * - `connectedComponents` (components.ts): 8-connected regions, as `scipy.ndimage.label` with a
 *   3x3 structure.
 * - `ProAccumulator` (pro.ts): AUPRO up to a false-positive rate (default 0.3), streaming over
 *   images with a histogram, or exact for small sets.
 * - `PixelMetricsAccumulator`, `pixelAurocExact`, `pixelAveragePrecisionExact` (pixel.ts): pixel
 *   AUROC and AP in bounded memory (histogram, bound on the error), and exact references.
 * - `clopperPearson`, `proportion` (binomial.ts): exact binomial intervals for observed rates
 *   (false alarms, recall), through the regularized incomplete beta function and its inverse.
 *
 * Every function validates its input and throws `InvalidArgumentError`
 * (`ERR_INVAD_INVALID_ARGUMENT`) naming the argument at fault.
 */
export { auroc, rocCurve } from './roc';
export type { RocCurve } from './roc';
export { averagePrecision, f1Max, precisionRecallCurve } from './pr';
export type { F1Max, PrecisionRecallCurve } from './pr';
export { connectedComponents } from './components';
export type { Components } from './components';
export { ProAccumulator } from './pro';
export type { ProAccumulatorOptions, ProCurve } from './pro';
export { PixelMetricsAccumulator, pixelAurocExact, pixelAveragePrecisionExact } from './pixel';
export type { PixelErrorBounds, PixelMetricsOptions } from './pixel';
export { clopperPearson, inverseRegularizedIncompleteBeta, proportion, regularizedIncompleteBeta } from './binomial';
export type { Proportion, ProportionInterval } from './binomial';
