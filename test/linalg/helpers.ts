/** Test-only helpers: random matrices with prescribed spectra, naive reference products. */
import { gemm } from '../../src/linalg/gemm.js';
import { householderQr } from '../../src/linalg/qr.js';
import { randomNormal, scaleCols, type Matrix } from '../../src/linalg/matrix.js';
import { svd } from '../../src/linalg/svd.js';
import { solveUpperLeft } from '../../src/linalg/triangular.js';
import type { Rng } from '../../src/util/rng.js';

/** Random m×k matrix with orthonormal columns. */
export function randomOrthonormal(m: number, k: number, rng: Rng): Matrix {
  return householderQr(randomNormal(m, k, rng.normal)).q;
}

/** U·diag(s)·Vᵀ with random orthonormal U (m×k) and V (n×k), k = s.length. */
export function withSpectrum(m: number, n: number, s: number[], rng: Rng): Matrix {
  const u = randomOrthonormal(m, s.length, rng);
  const v = randomOrthonormal(n, s.length, rng);
  return gemm(scaleCols(u, s), v, { transB: true });
}

export function naiveProduct(a: number[][], b: number[][]): number[][] {
  return a.map((row) => b[0]!.map((_, j) => row.reduce((acc, x, p) => acc + x * b[p]![j]!, 0)));
}

export function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - b[i]!) ** 2;
    n += b[i]! ** 2;
  }
  return Math.sqrt(d) / Math.sqrt(n || 1);
}

/** A reconstructed from a thin SVD. */
export function reconstruct(res: { u: Matrix; s: Float64Array; vt: Matrix }): Matrix {
  return gemm(scaleCols(res.u, res.s), res.vt);
}

/**
 * min ‖T − A·B‖ over B of rank r (A full column rank), by another route than the library's
 * fits: least squares by Householder QR (B₀ = R⁻¹·Qᵀ·T), then B₀ projected onto the top r
 * right singular vectors of the fitted values A·B₀.
 */
export function reducedRankLs(a: Matrix, t: Matrix, r: number): Matrix {
  const { q, r: rr } = householderQr(a);
  const b0 = solveUpperLeft(rr, gemm(q, t, { transA: true }));
  const v = svd(gemm(a, b0)).vt;
  const vr: Matrix = { rows: r, cols: t.cols, data: v.data.slice(0, r * t.cols) };
  return gemm(gemm(b0, vr, { transB: true }), vr);
}
