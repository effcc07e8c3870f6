/** Small statistics helpers for the benchmarks: order statistics over samples, and formatting. */

/** Milliseconds on a monotonic clock (the one every bench measurement uses). */
export function now(): number {
  return performance.now();
}

/**
 * The `p`-th percentile (0..100) of `samples` by linear interpolation between closest ranks.
 * Returns NaN for no samples.
 */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = (Math.min(100, Math.max(0, p)) / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = sorted[lo] ?? NaN;
  const b = sorted[hi] ?? NaN;
  return a + (b - a) * (rank - lo);
}

/** The median of `samples` (NaN for none). */
export function median(samples: readonly number[]): number {
  return percentile(samples, 50);
}

/** p50 and p99 of a set of samples, with their count. */
export interface Summary {
  readonly n: number;
  readonly p50: number;
  readonly p99: number;
}

/** Summarizes `samples` as p50 / p99. */
export function summarize(samples: readonly number[]): Summary {
  return { n: samples.length, p50: percentile(samples, 50), p99: percentile(samples, 99) };
}

/** A number in at most 3 significant digits (plain integers for large values). */
export function fmt(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return 'n/a';
  const abs = Math.abs(value);
  if (Number.isInteger(value) || abs >= 1000) return Math.round(value).toLocaleString('en-US');
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  return value.toFixed(3);
}
