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
  return refitLastFactorGiven(w, h, gram, outputEnergy(w, gram, sync), mean, sync);
}

/*
 * The output energy tr(W·Σ·Wᵀ) does not depend on the chain, and at a conv's sizes (t·D² with
 * D = s·K up to 4608) it costs as much as the rest of the refit: fits of one layer at several
 * ranks (tucker2-conv.ts) compute it once and pass it in.
 */
/** tr(W·Σ·Wᵀ) for W [t, D] and Σ [D, D] (refitLastFactor's `den`). */
export function outputEnergy(w: Matrix, gram: Float64Array, sync?: SyncGemm): number {
  const ws = product(w, { rows: w.cols, cols: w.cols, data: gram }, {}, sync);
  let s = 0;
  for (let i = 0; i < w.data.length; i++) s += ws.data[i]! * w.data[i]!;
  return s;
}

/** refitLastFactor(w, h, gram, mean) with den = outputEnergy(w, gram) given. */
export function refitLastFactorGiven(w: Matrix, h: Matrix, gram: Float64Array, den: number, mean?: Float64Array, sync?: SyncGemm): Refit {
  const D = w.cols;
  const sigma: Matrix = { rows: D, cols: D, data: gram };
  const sh = product(sigma, h, { transB: true }, sync); // Σ·Hᵀ [D, r]
  const m = product(h, sh, {}, sync); // H·Σ·Hᵀ [r, r]
  const rhs = product(w, sh, {}, sync); // W·Σ·Hᵀ [t, r]
  const { l } = choleskyWithRidge(m, 1e-8, sync);
  // B·M = rhs  ⇔  M·Bᵀ = rhsᵀ (M symmetric): L·Z = rhsᵀ, Lᵀ·Bᵀ = Z.
  const b = transpose(solveUpperLeft(transpose(l), solveLowerLeft(l, transpose(rhs), sync)));
  // tr(ΔW·Σ·ΔWᵀ) = tr(W·Σ·Wᵀ) − 2·⟨B, W·Σ·Hᵀ⟩ + ⟨B·(H·Σ·Hᵀ), B⟩.
  const bm = product(b, m, {}, sync);
  let cross = 0;
  let quad = 0;
  for (let i = 0; i < b.data.length; i++) {
    cross += b.data[i]! * rhs.data[i]!;
    quad += bm.data[i]! * b.data[i]!;
  }
  const num = Math.max(0, den - 2 * cross + quad);
  const out: Refit = { b: Float64Array.from(b.data), dataError: den > 0 ? Math.sqrt(num / den) : 0, num, den };
  if (mean) {
    // ΔW·μ = W·μ − B·(H·μ).
    const r = h.rows;
    const hm = new Float64Array(r);
    for (let c = 0; c < r; c++) {
      let v = 0;
      for (let d = 0; d < D; d++) v += h.data[c * D + d]! * mean[d]!;
      hm[c] = v;
    }
    const delta = new Float64Array(w.rows);
    for (let t = 0; t < w.rows; t++) {
      let v = 0;
      for (let d = 0; d < D; d++) v += w.data[t * D + d]! * mean[d]!;
      for (let c = 0; c < r; c++) v -= b.data[t * r + c]! * hm[c]!;
      delta[t] = v;
    }
    out.biasDelta = delta;
  }
  return out;
}
