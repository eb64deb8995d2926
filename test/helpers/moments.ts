/** Moments of explicit sample rows (n rows of dimension D, row-major), as the statistics collector sums them. */

/** Σ_p a_p·b_pᵀ over n rows of dimension D. */
export function crossSums(a: Float64Array, b: Float64Array, n: number, D: number): Float64Array {
  const out = new Float64Array(D * D);
  for (let p = 0; p < n; p++) for (let i = 0; i < D; i++) for (let k = 0; k < D; k++) out[i * D + k] += a[p * D + i]! * b[p * D + k]!;
  return out;
}

/** The mean row of n rows of dimension D. */
export function rowMean(a: Float64Array, n: number, D: number): Float64Array {
  const m = new Float64Array(D);
  for (let p = 0; p < n; p++) for (let i = 0; i < D; i++) m[i] += a[p * D + i]! / n;
  return m;
}
