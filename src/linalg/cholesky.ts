/**
 * Cholesky factorisation A = L·Lᵀ of a symmetric positive definite matrix, plus a
 * ridge fallback for Gram matrices that are only semidefinite (XᵀX of rank-deficient
 * calibration data, ALS normal equations).
 */
import { LrError } from '../errors.js';
import { assertFinite, type Matrix } from './matrix.js';

/** Lower-triangular L with A = L·Lᵀ, or null when A is not (numerically) positive definite. */
export function cholesky(a: Matrix): Matrix | null {
  const n = a.rows;
  if (a.cols !== n) throw new LrError('numeric', `cholesky: matrix is ${a.rows}x${a.cols}, not square`);
  assertFinite(a, 'cholesky input');
  const l = new Float64Array(n * n);
  const ad = a.data;
  for (let j = 0; j < n; j++) {
    const jo = j * n;
    let s = ad[jo + j]!;
    for (let p = 0; p < j; p++) s -= l[jo + p]! * l[jo + p]!;
    // Non-positive pivot means A is not PD in floating point: report, do not sqrt(NaN).
    if (!(s > 0)) return null;
    const ljj = Math.sqrt(s);
    l[jo + j] = ljj;
    const inv = 1 / ljj;
    for (let i = j + 1; i < n; i++) {
      const io = i * n;
      let t = ad[io + j]!;
      for (let p = 0; p < j; p++) t -= l[io + p]! * l[jo + p]!;
      l[io + j] = t * inv;
    }
  }
  return { rows: n, cols: n, data: l };
}

export interface RidgeCholesky {
  /** Lower-triangular factor of A + ridge·I. */
  l: Matrix;
  /** The ridge actually added (0 when A itself was positive definite). */
  ridge: number;
}

/**
 * Cholesky of A + λI with the smallest λ from the sequence 0, λ0, 10λ0, … that
 * succeeds; λ0 = relRidge · mean(diag A) (so the ridge is scale-free).
 * Throws LrError('numeric') if A has a non-positive trace (e.g. the zero matrix).
 */
export function choleskyWithRidge(a: Matrix, relRidge = 1e-10): RidgeCholesky {
  const first = cholesky(a);
  if (first) return { l: first, ridge: 0 };
  const n = a.rows;
  let trace = 0;
  for (let i = 0; i < n; i++) trace += a.data[i * n + i]!;
  if (!(trace > 0)) throw new LrError('numeric', 'choleskyWithRidge: matrix has non-positive trace, no ridge can make it definite');
  let ridge = Math.max(relRidge, 1e-15) * (trace / n);
  for (let attempt = 0; attempt < 20; attempt++, ridge *= 10) {
    const shifted = Float64Array.from(a.data);
    for (let i = 0; i < n; i++) shifted[i * n + i]! += ridge;
    const l = cholesky({ rows: n, cols: n, data: shifted });
    if (l) return { l, ridge };
  }
  throw new LrError('numeric', 'choleskyWithRidge: matrix is not positive semidefinite (ridge did not help)');
}
