/** The one quantile definition invad uses (calibration, eval and benchmarks). */

/**
 * The q-quantile (0..1) of ascending-sorted values, interpolating linearly between order
 * statistics (numpy's default method); NaN when empty.
 */
export function quantileSorted(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const pos = (n - 1) * Math.min(1, Math.max(0, q));
  const lo = Math.floor(pos);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}
