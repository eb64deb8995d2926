/**
 * Row weights for a row-weighted low-rank fit: minimising Σᵢ wᵢ‖eᵢ − êᵢ‖² over rank-r Ê
 * is the truncated SVD of diag(√w)·E, unscaled after (passes/gather-svd.ts, with lookup
 * counts from src/calib/index-counts.ts). Rows with no weight get a floor (a fraction of
 * the mean), so they stay approximated and the unscaling divides by nothing small.
 */

/** Default floor: a row never looked up weighs 1% of an average row. */
export const ROW_WEIGHT_FLOOR = 0.01;

/**
 * √wᵢ per row with wᵢ = cᵢ/mean(c) + floor (an average row weighs about 1, an unused one
 * `floor`). Undefined when the counts are empty, all zero or not finite.
 */
export function rowScales(counts: ArrayLike<number>, floor = ROW_WEIGHT_FLOOR): Float64Array | undefined {
  let total = 0;
  for (let i = 0; i < counts.length; i++) total += counts[i]!;
  if (!(total > 0) || !Number.isFinite(total) || counts.length === 0) return undefined;
  const mean = total / counts.length;
  return Float64Array.from({ length: counts.length }, (_, i) => Math.sqrt(Math.max(0, counts[i]!) / mean + floor));
}
