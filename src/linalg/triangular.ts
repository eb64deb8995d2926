/**
 * Triangular solves with matrix right-hand sides, row-major friendly (every inner
 * loop runs along a contiguous row).
 */
import { LrError } from '../errors.js';
import { product, type SyncGemm } from './engine.js';
import type { Matrix } from './matrix.js';

/**
 * X = B·R⁻¹ for upper-triangular R (k×k) and B (m×k): the step Q = Y·R⁻¹ of
 * Cholesky-QR. Solves row by row: x·R = b by forward substitution over columns.
 */
export function solveUpperRight(b: Matrix, r: Matrix): Matrix {
  const k = r.cols;
  if (r.rows !== k || b.cols !== k) throw new LrError('numeric', `solveUpperRight: R ${r.rows}x${r.cols}, B ${b.rows}x${b.cols}`);
  const rd = r.data;
  const x = Float64Array.from(b.data);
  const diag = new Float64Array(k);
  for (let j = 0; j < k; j++) {
    const v = rd[j * k + j]!;
    if (v === 0) throw new LrError('numeric', `solveUpperRight: zero pivot at ${j}`);
    diag[j] = 1 / v;
  }
  for (let i = 0; i < b.rows; i++) {
    const o = i * k;
    // x_j = (b_j − Σ_{p<j} x_p R[p,j]) / R[j,j]; done as axpys over rows of R (contiguous).
    for (let p = 0; p < k; p++) {
      const xp = x[o + p]! * diag[p]!;
      x[o + p] = xp;
      if (xp !== 0) {
        const ro = p * k;
        for (let j = p + 1; j < k; j++) x[o + j]! -= xp * rd[ro + j]!;
      }
    }
  }
  return { rows: b.rows, cols: k, data: x };
}

/** Rows per block of the blocked forward substitution; smaller systems go unblocked. */
const BLOCK = 128;

/**
 * X = L⁻¹·B for lower-triangular L (k×k), B (k×n): forward substitution by rows. From
 * 2·BLOCK rows on, blocked: each block of rows first takes the product of L's rows left
 * of it with the rows of X already solved (on `sync`, ORT, or the JS kernel), then is
 * solved on its own; the products are most of the k²·n flops.
 */
export function solveLowerLeft(l: Matrix, b: Matrix, sync?: SyncGemm): Matrix {
  const k = l.rows;
  if (l.cols !== k || b.rows !== k) throw new LrError('numeric', `solveLowerLeft: L ${l.rows}x${l.cols}, B ${b.rows}x${b.cols}`);
  const n = b.cols;
  const ld = l.data;
  const x = Float64Array.from(b.data);
  const step = k < 2 * BLOCK ? k : BLOCK;
  for (let r0 = 0; r0 < k; r0 += step) {
    const r1 = Math.min(k, r0 + step);
    if (r0 > 0) {
      // X[r0:r1] −= L[r0:r1, 0:r0]·X[0:r0]
      const left = new Float64Array((r1 - r0) * r0);
      for (let i = r0; i < r1; i++) left.set(ld.subarray(i * k, i * k + r0), (i - r0) * r0);
      const done: Matrix = { rows: r0, cols: n, data: x.slice(0, r0 * n) };
      const p = product({ rows: r1 - r0, cols: r0, data: left }, done, {}, sync).data;
      for (let i = 0; i < (r1 - r0) * n; i++) x[r0 * n + i]! -= p[i]!;
    }
    for (let i = r0; i < r1; i++) {
      const xo = i * n;
      for (let p = r0; p < i; p++) {
        const f = ld[i * k + p]!;
        if (f !== 0) {
          const po = p * n;
          for (let j = 0; j < n; j++) x[xo + j]! -= f * x[po + j]!;
        }
      }
      const piv = ld[i * k + i]!;
      if (piv === 0) throw new LrError('numeric', `solveLowerLeft: zero pivot at ${i}`);
      const inv = 1 / piv;
      for (let j = 0; j < n; j++) x[xo + j]! *= inv;
    }
  }
  return { rows: k, cols: n, data: x };
}

/** X = U⁻¹·B for upper-triangular U (k×k), B (k×n): back substitution by rows. */
export function solveUpperLeft(u: Matrix, b: Matrix): Matrix {
  const k = u.rows;
  if (u.cols !== k || b.rows !== k) throw new LrError('numeric', `solveUpperLeft: U ${u.rows}x${u.cols}, B ${b.rows}x${b.cols}`);
  const n = b.cols;
  const ud = u.data;
  const x = Float64Array.from(b.data);
  for (let i = k - 1; i >= 0; i--) {
    const xo = i * n;
    for (let p = i + 1; p < k; p++) {
      const f = ud[i * k + p]!;
      if (f !== 0) {
        const po = p * n;
        for (let j = 0; j < n; j++) x[xo + j]! -= f * x[po + j]!;
      }
    }
    const piv = ud[i * k + i]!;
    if (piv === 0) throw new LrError('numeric', `solveUpperLeft: zero pivot at ${i}`);
    const inv = 1 / piv;
    for (let j = 0; j < n; j++) x[xo + j]! *= inv;
  }
  return { rows: k, cols: n, data: x };
}

/**
 * R⁻¹ for upper-triangular R (used to turn Y·R⁻¹ into one engine product). Back
 * substitution by rows on the identity, using that R⁻¹ is upper triangular too: row p
 * of the result is zero left of column p, so each update only touches columns ≥ p
 * (k³/6 multiply-adds instead of the k³/2 of a general solve).
 */
export function invertUpper(r: Matrix): Matrix {
  const k = r.rows;
  if (r.cols !== k) throw new LrError('numeric', `invertUpper: R is ${r.rows}x${r.cols}, not square`);
  const rd = r.data;
  const x = new Float64Array(k * k);
  for (let i = k - 1; i >= 0; i--) {
    const xo = i * k;
    const piv = rd[xo + i]!;
    if (piv === 0) throw new LrError('numeric', `invertUpper: zero pivot at ${i}`);
    x[xo + i] = 1;
    for (let p = i + 1; p < k; p++) {
      const f = rd[xo + p]!;
      if (f === 0) continue;
      const po = p * k;
      for (let j = p; j < k; j++) x[xo + j] -= f * x[po + j]!;
    }
    const inv = 1 / piv;
    for (let j = i; j < k; j++) x[xo + j] *= inv;
  }
  return { rows: k, cols: k, data: x };
}
