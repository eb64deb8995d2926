/**
 * Cholesky factorisation A = L·Lᵀ of a symmetric positive definite matrix, plus a
 * ridge fallback for Gram matrices that are only semidefinite (XᵀX of rank-deficient
 * calibration data, ALS normal equations).
 */
import { LrError } from '../errors.js';
import { product, type SyncGemm } from './engine.js';
import { assertFinite, type Matrix } from './matrix.js';

/** Columns per block of the blocked factorisation; smaller matrices go unblocked. */
const BLOCK = 128;

/**
 * Lower-triangular L with A = L·Lᵀ, or null when A is not (numerically) positive definite.
 * From 2·BLOCK rows on it runs blocked (right-looking): each diagonal block unblocked, the
 * panel below by substitution, and the trailing update A₂₂ −= L₂₁·L₂₁ᵀ as one product on
 * `sync` (ORT) or the JS kernel; the update is n³/3 of the n³/3 + O(n²·BLOCK) flops, which
 * the dot-product loops ran at a fraction of a GEMM's speed (a 2880² Cholesky of anchored
 * Tucker-2 took seconds per fit).
 */
export function cholesky(a: Matrix, sync?: SyncGemm): Matrix | null {
  const n = a.rows;
  if (a.cols !== n) throw new LrError('numeric', `cholesky: matrix is ${a.rows}x${a.cols}, not square`);
  assertFinite(a, 'cholesky input');
  const w = Float64Array.from(a.data);
  const step = n < 2 * BLOCK ? n : BLOCK;
  for (let k = 0; k < n; k += step) {
    const b = Math.min(step, n - k);
    // The diagonal block, its earlier columns already subtracted by the trailing updates.
    for (let j = k; j < k + b; j++) {
      const jo = j * n;
      let s = w[jo + j]!;
      for (let p = k; p < j; p++) s -= w[jo + p]! * w[jo + p]!;
      // Non-positive pivot means A is not PD in floating point: report, do not sqrt(NaN).
      if (!(s > 0)) return null;
      const ljj = Math.sqrt(s);
      w[jo + j] = ljj;
      const inv = 1 / ljj;
      // Within the block only; the panel below is solved next.
      const iEnd = step === n ? n : k + b;
      for (let i = j + 1; i < iEnd; i++) {
        const io = i * n;
        let t = w[io + j]!;
        for (let p = k; p < j; p++) t -= w[io + p]! * w[jo + p]!;
        w[io + j] = t * inv;
      }
    }
    const m = n - k - b;
    if (step === n || m === 0) continue;
    // Panel L₂₁ = A₂₁·L₁₁⁻ᵀ, row by row (forward substitution), kept aside for the update.
    const l21 = new Float64Array(m * b);
    for (let i = 0; i < m; i++) {
      const io = (k + b + i) * n;
      for (let j = 0; j < b; j++) {
        const jo = (k + j) * n;
        let t = w[io + k + j]!;
        for (let p = 0; p < j; p++) t -= l21[i * b + p]! * w[jo + k + p]!;
        const v = t / w[jo + k + j]!;
        l21[i * b + j] = v;
        w[io + k + j] = v;
      }
    }
    const l: Matrix = { rows: m, cols: b, data: l21 };
    const upd = product(l, l, { transB: true }, sync).data;
    for (let i = 0; i < m; i++) {
      const io = (k + b + i) * n + k + b;
      for (let j = 0; j <= i; j++) w[io + j]! -= upd[i * m + j]!;
    }
  }
  for (let i = 0; i < n; i++) w.fill(0, i * n + i + 1, (i + 1) * n);
  return { rows: n, cols: n, data: w };
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
export function choleskyWithRidge(a: Matrix, relRidge = 1e-10, sync?: SyncGemm): RidgeCholesky {
  const first = cholesky(a, sync);
  if (first) return { l: first, ridge: 0 };
  const n = a.rows;
  let trace = 0;
  for (let i = 0; i < n; i++) trace += a.data[i * n + i]!;
  if (!(trace > 0)) throw new LrError('numeric', 'choleskyWithRidge: matrix has non-positive trace, no ridge can make it definite');
  let ridge = Math.max(relRidge, 1e-15) * (trace / n);
  for (let attempt = 0; attempt < 20; attempt++, ridge *= 10) {
    const shifted = Float64Array.from(a.data);
    for (let i = 0; i < n; i++) shifted[i * n + i]! += ridge;
    const l = cholesky({ rows: n, cols: n, data: shifted }, sync);
    if (l) return { l, ridge };
  }
  throw new LrError('numeric', 'choleskyWithRidge: matrix is not positive semidefinite (ridge did not help)');
}
