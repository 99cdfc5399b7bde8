/**
 * The interpolating quantile invad uses for calibration, drift and the benchmarks. (eval's
 * per-image latency percentiles are nearest-rank on purpose: each is a real image's time.)
 */

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

/**
 * The split-conformal rank: the ceil((n + 1)(1 - alpha))-th smallest of n calibration scores
 * (1-based) is a threshold that the score of a new, exchangeable sample exceeds with probability
 * at most alpha. Returns n + 1 when no order statistic of n scores gives that guarantee
 * (n + 1 < 1/alpha). Computed as (n + 1) - floor((n + 1) alpha), with a relative guard of 1e-12
 * against rounding (100 * 0.01 must count as 1, not 0.99999...).
 */
export function conformalRank(n: number, alpha: number): number {
  return n + 1 - Math.floor((n + 1) * alpha * (1 + 1e-12));
}

/** The fewest calibration scores for which {@link conformalRank} is at most n: ceil(1/alpha) - 1. */
export function conformalMinSamples(alpha: number): number {
  let n = Math.max(1, Math.ceil(1 / alpha) - 1);
  // Settle the rounding at the boundary with the rank itself, so the two always agree.
  while (conformalRank(n, alpha) > n) n++;
  while (n > 1 && conformalRank(n - 1, alpha) <= n - 1) n--;
  return n;
}

/** A two-sample Kolmogorov–Smirnov test: D = sup |F_a - F_b| and its asymptotic p-value. */
export interface KsResult {
  statistic: number;
  pValue: number;
}

/**
 * The two-sample Kolmogorov–Smirnov statistic of `a` and `b` (ties handled: both empirical CDFs
 * step past a shared value together) and its p-value from the asymptotic Kolmogorov
 * distribution with Stephens' small-sample correction, lambda = (e + 0.12 + 0.11/e) D with
 * e = sqrt(n m / (n + m)) (Numerical Recipes' kstwo). NaN for both when a sample is empty.
 */
export function ksTwoSample(a: ArrayLike<number>, b: ArrayLike<number>): KsResult {
  const n = a.length;
  const m = b.length;
  if (n === 0 || m === 0) return { statistic: NaN, pValue: NaN };
  const x = Float64Array.from(a).sort();
  const y = Float64Array.from(b).sort();
  let i = 0;
  let j = 0;
  let d = 0;
  while (i < n && j < m) {
    const v = Math.min(x[i], y[j]);
    while (i < n && x[i] === v) i++;
    while (j < m && y[j] === v) j++;
    d = Math.max(d, Math.abs(i / n - j / m));
  }
  const e = Math.sqrt((n * m) / (n + m));
  return { statistic: d, pValue: kolmogorovQ((e + 0.12 + 0.11 / e) * d) };
}

/** P(K > z) for the Kolmogorov distribution, by the series that converges fast on each side of 1.18. */
function kolmogorovQ(z: number): number {
  if (!(z > 0)) return 1;
  if (z < 1.18) {
    // P(K <= z) = sqrt(2 pi)/z sum_{odd j} exp(-j^2 pi^2 / (8 z^2)); sqrt(-log y) = (pi / sqrt(8)) / z.
    const y = Math.exp(-(Math.PI * Math.PI) / 8 / (z * z));
    const cdf = (4 / Math.sqrt(Math.PI)) * Math.sqrt(-Math.log(y)) * (y + y ** 9 + y ** 25 + y ** 49);
    return Math.min(1, Math.max(0, 1 - cdf));
  }
  const x = Math.exp(-2 * z * z);
  return Math.min(1, Math.max(0, 2 * (x - x ** 4 + x ** 9)));
}

/** A threshold from calibration scores by the split-conformal rule, and whether it carries the guarantee. */
export interface ConformalThreshold {
  threshold: number;
  /** the 1-based rank of the order statistic used */
  rank: number;
  /** false when n + 1 < 1/alpha: no order statistic guarantees alpha, and the largest score was used */
  sufficient: boolean;
}

/**
 * The split-conformal threshold of `scores` (any order) at false-alarm rate `alpha`: the
 * {@link conformalRank}-th smallest. A new score exchangeable with them exceeds it with
 * probability at most alpha. When the scores are too few for alpha, it is the largest of them
 * (rank n, `sufficient` false), whose expected exceedance rate is 1/(n + 1). NaN for no scores.
 */
export function conformalThreshold(scores: ArrayLike<number>, alpha: number): ConformalThreshold {
  const sorted = Float64Array.from(scores).sort();
  const n = sorted.length;
  const rank = conformalRank(n, alpha);
  const sufficient = rank <= n;
  const used = Math.min(rank, n);
  return { threshold: n === 0 ? NaN : sorted[used - 1], rank: used, sufficient };
}
