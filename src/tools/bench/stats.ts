/** Order statistics for the benchmarks. Percentiles interpolate linearly between order statistics (numpy's default). */
import { quantileSorted } from '../../util/stats';

export interface Summary {
  /** samples */
  n: number;
  mean: number;
  min: number;
  median: number;
  p90: number;
  p99: number;
  max: number;
}

export function summarize(values: readonly number[]): Summary {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    n,
    mean: n ? sum / n : NaN,
    min: n ? sorted[0] : NaN,
    median: quantileSorted(sorted, 0.5),
    p90: quantileSorted(sorted, 0.9),
    p99: quantileSorted(sorted, 0.99),
    max: n ? sorted[n - 1] : NaN,
  };
}

export function median(values: readonly number[]): number {
  return summarize(values).median;
}

/** Parses "60s", "1.5m", "500ms" or a bare number of seconds into milliseconds. */
export function parseDurationMs(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min)?\s*$/i.exec(text);
  if (!m) throw new RangeError(`expected a duration such as 60s, 2m or 500ms, got "${text}"`);
  const v = Number(m[1]);
  const unit = (m[2] ?? 's').toLowerCase();
  return unit === 'ms' ? v : unit === 's' ? v * 1000 : v * 60_000;
}
