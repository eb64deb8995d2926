/**
 * Closed-form least-squares refit of a chain's last factor on calibration statistics.
 * A conv chain computes y = B·(H·p) for an input patch p, where H [r, D] is everything
 * before the last 1x1 (first 1x1 and core, or first 1x1 and depthwise) and B [T, r] the
 * last 1x1; the original is y = W·p. With the patch second moment Σ = E[p·pᵀ] the error
 * E‖(W − B·H)·p‖² is minimised by B = W·Σ·Hᵀ·(H·Σ·Hᵀ)⁻¹ (normal equations; a small ridge
 * keeps H·Σ·Hᵀ definite). The remaining mean error (W − B·H)·μ goes into the bias.
 */
import { choleskyWithRidge } from './cholesky.js';
import { product, type SyncGemm } from './engine.js';
import { transpose, type Matrix } from './matrix.js';
import { solveLowerLeft, solveUpperLeft } from './triangular.js';

/** Per-group patch second moments [g][D·D] and means [g][D], D = (S/g)·K (patch index c·K + k). */
export interface PatchMoments { gram: Float64Array[]; mean?: Float64Array[] }

export interface Refit {
  /** New last factor [t, r]. */
  b: Float64Array;
  /** Bias correction [t] from the patch mean, when a mean is given. */
  biasDelta?: Float64Array;
  /** Relative output error on the statistics: tr(ΔWΣΔWᵀ) / tr(WΣWᵀ), square-rooted. */
  dataError: number;
  /** The two traces, to combine errors over groups. */
  num: number;
  den: number;
}

/**
 * @param w   original weight as [t, D] (D = patch length, index c·K + kernel offset)
 * @param h   the chain before its last factor as [r, D]
 * @param gram Σ p·pᵀ over the calibration patches [D, D] (any positive scale)
 * @param mean E[p] [D] (optional): enables the bias correction
 */
export function refitLastFactor(w: Matrix, h: Matrix, gram: Float64Array, mean?: Float64Array, sync?: SyncGemm): Refit {
  const D = w.cols;
  const sigma: Matrix = { rows: D, cols: D, data: gram };
  const sh = product(sigma, h, { transB: true }, sync); // Σ·Hᵀ [D, r]
  const m = product(h, sh, {}, sync); // H·Σ·Hᵀ [r, r]
  const rhs = product(w, sh, {}, sync); // W·Σ·Hᵀ [t, r]
  const { l } = choleskyWithRidge(m, 1e-8);
  // B·M = rhs  ⇔  M·Bᵀ = rhsᵀ (M symmetric): L·Z = rhsᵀ, Lᵀ·Bᵀ = Z.
  const bt = solveUpperLeft(transpose(l), solveLowerLeft(l, transpose(rhs)));
  const b = transpose(bt);
  // ΔW = W − B·H; errors measured under Σ.
  const bh = product(b, h, {}, sync);
  const dw: Matrix = { rows: w.rows, cols: D, data: new Float64Array(w.rows * D) };
  for (let i = 0; i < dw.data.length; i++) dw.data[i] = w.data[i] - bh.data[i];
  const num = traceQuad(dw, sigma, sync);
  const den = traceQuad(w, sigma, sync);
  const out: Refit = { b: Float64Array.from(b.data), dataError: den > 0 ? Math.sqrt(Math.max(num, 0) / den) : 0, num, den };
  if (mean) {
    const delta = new Float64Array(w.rows);
    for (let t = 0; t < w.rows; t++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += dw.data[t * D + d] * mean[d];
      delta[t] = s;
    }
    out.biasDelta = delta;
  }
  return out;
}

/** tr(A·Σ·Aᵀ) = Σ_rows aᵀ·Σ·a. */
function traceQuad(a: Matrix, sigma: Matrix, sync: SyncGemm | undefined): number {
  const as = product(a, sigma, {}, sync);
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += as.data[i] * a.data[i];
  return s;
}
