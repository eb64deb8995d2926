/** Kernels on which CP-ALS degenerates (test/linalg/cp-sensitivity.test.ts, test/passes/cp-degenerate-decline.test.ts). */
import type { Rng } from '../../src/util/rng.js';

/** A random unit vector of length n. */
export function unit(rng: Rng, n: number): Float64Array {
  const v = Float64Array.from({ length: n }, () => rng.normal());
  const s = Math.hypot(...v);
  return v.map((x) => x / s);
}

/**
 * a∘b∘c' + a∘b'∘c + a'∘b∘c: rank 3 but border rank 2, the classic tensor on which rank-2
 * CP-ALS degenerates (two nearly collinear rank-one terms with large opposite weights
 * approach it, none reaches it).
 */
export function borderRank2(rng: Rng, T: number, S: number, K: number): Float32Array {
  const [a, a2, b, b2, c, c2] = [unit(rng, T), unit(rng, T), unit(rng, S), unit(rng, S), unit(rng, K), unit(rng, K)];
  const x = new Float32Array(T * S * K);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let k = 0; k < K; k++) {
    x[(t * S + s) * K + k] = a[t]! * b[s]! * c2[k]! + a[t]! * b2[s]! * c[k]! + a2[t]! * b[s]! * c[k]!;
  }
  return x;
}

