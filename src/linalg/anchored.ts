/**
 * Anchored least-squares fits of a compressed layer (Zhang et al. 2015, "Accelerating very
 * deep convolutional networks…", asymmetric reconstruction; SVD-LLM's update step).
 *
 * Convention: a layer maps an input vector x ∈ ℝᴰ to y = W·x (W [t, D]). x is the input
 * in the original model, x̂ the input at the same place and sample in the model whose
 * earlier layers are already compressed. With the second moments (any common scale)
 *   C = E[x·xᵀ],  Ĉ = E[x̂·x̂ᵀ],  X = E[x̂·xᵀ]  (X's rows index x̂, its columns x),
 * a replacement Ŵ fed x̂ has the output error
 *   E‖W·x − Ŵ·x̂‖² = tr(W·C·Wᵀ) − 2·tr(Ŵ·X·Wᵀ) + tr(Ŵ·Ĉ·Ŵᵀ).
 * Damping adds δ·‖W − Ŵ‖²_F (pull toward the original weight in the directions x̂ barely
 * excites): Ĉ → Ĉ + δI and X → X + δI, δ = λ·mean(diag Ĉ). With x̂ = x this is exactly the
 * damped whitening of svd-pair.ts; with covariances (means removed) instead of second
 * moments, the optimal bias follows as W·E[x] − Ŵ·E[x̂].
 *
 * Rank r (Ĉ + δI = L·Lᵀ): with Z = Ŵ·L the error is ‖Z − W·(X + δI)ᵀ·L⁻ᵀ‖² + const, so
 * Ŵ = [W·(X + δI)ᵀ·L⁻ᵀ]_r·L⁻¹ (truncated SVD of the whitened target).
 * Pure numerics: no ONNX here.
 */
import { choleskyWithRidge } from './cholesky.js';
import { product, type SyncGemm } from './engine.js';
import { transpose, type Matrix } from './matrix.js';
import { truncatedSvdSync } from './rsvd.js';
import { solveLowerLeft, solveUpperLeft } from './triangular.js';

/** Second moments of a layer's input in the original and the partly compressed model. */
export interface AnchoredMoments {
  /** C = E[x·xᵀ] [D, D]. */
  gram: Float64Array;
  /** Ĉ = E[x̂·x̂ᵀ] [D, D]. */
  gramHat: Float64Array;
  /** X = E[x̂·xᵀ] [D, D]. */
  cross: Float64Array;
}

/** One group's anchored patch moments with the means (centered covariances [D, D], means [D]). */
export interface AnchoredPatch extends AnchoredMoments {
  /** E[x] in the original model. */
  mean: Float64Array;
  /** E[x̂] in the partly compressed model. */
  meanHat: Float64Array;
}

/** δ = λ·mean(diag Ĉ). */
export function dampingOf(gramHat: ArrayLike<number>, d: number, lambda: number): number {
  if (lambda === 0) return 0;
  let tr = 0;
  for (let i = 0; i < d; i++) tr += gramHat[i * d + i]!;
  return (lambda * tr) / d;
}

/** A copy of the D×D matrix a with δ added to its diagonal. */
export function plusDiagonal(a: ArrayLike<number>, d: number, delta: number): Float64Array {
  const out = Float64Array.from(a);
  if (delta !== 0) for (let i = 0; i < d; i++) out[i * d + i] += delta;
  return out;
}

/**
 * Σ/n − a·bᵀ: the covariance from a running sum Σ u·vᵀ over n samples and the means a = E[u],
 * b = E[v]. With a = b = 0 (or absent) the second moment E[u·vᵀ].
 */
export function centered(sum: ArrayLike<number>, n: number, d: number, a?: ArrayLike<number>, b?: ArrayLike<number>): Float64Array {
  const out = new Float64Array(d * d);
  const inv = n > 0 ? 1 / n : 0;
  for (let i = 0; i < d; i++) {
    const ai = a ? a[i]! : 0;
    for (let j = 0; j < d; j++) out[i * d + j] = sum[i * d + j]! * inv - (b ? ai * b[j]! : 0);
  }
  return out;
}

/** The whitened target of a rank-constrained anchored fit. */
export interface WhitenedTarget {
  /** A = W·(X + δI)ᵀ·L⁻ᵀ [t, D]: its truncated SVD A ≈ U·Σ·Vᵀ gives Ŵ = U·Σ·Vᵀ·L⁻¹. */
  a: Matrix;
  /** Lower Cholesky factor of Ĉ + δI (+ a ridge when that is only semidefinite). */
  l: Matrix;
  ridge: number;
}

/** The whitened target for W [t, D] (y = W·x) and the moments Ĉ, X (C is not needed). */
export function whitenedTarget(w: Matrix, gramHat: Float64Array, cross: Float64Array, lambda: number, sync?: SyncGemm): WhitenedTarget {
  const d = w.cols;
  if (gramHat.length !== d * d || cross.length !== d * d) throw new Error(`whitenedTarget: moments are not ${d}x${d}`);
  const delta = dampingOf(gramHat, d, lambda);
  const { l, ridge } = choleskyWithRidge({ rows: d, cols: d, data: plusDiagonal(gramHat, d, delta) }, 1e-6, sync);
  // W·(X + δI)ᵀ [t, D], then ·L⁻ᵀ: (L⁻¹·(X + δI)·Wᵀ)ᵀ.
  const wx = product(w, { rows: d, cols: d, data: plusDiagonal(cross, d, delta) }, { transB: true }, sync);
  const a = transpose(solveLowerLeft(l, transpose(wx), sync));
  return { a, l, ridge };
}

/** Ŵ = [A]_r·L⁻¹ from a whitened target: factors B [t, r] = U_r·Σ_r^½ and G [r, D] = Σ_r^½·V_rᵀ·L⁻¹. */
export function rankFit(target: WhitenedTarget, r: number, seed = 0, sync?: SyncGemm): { b: Matrix; g: Matrix; sigma: Float64Array } {
  const { a, l } = target;
  const f = truncatedSvdSync(a, Math.max(1, Math.min(r, a.rows, a.cols)), { seed, gemm: sync });
  const k = Math.min(r, f.s.length);
  const b: Matrix = { rows: a.rows, cols: k, data: new Float64Array(a.rows * k) };
  const sv: Matrix = { rows: k, cols: a.cols, data: new Float64Array(k * a.cols) };
  for (let c = 0; c < k; c++) {
    const s = Math.sqrt(f.s[c]!);
    for (let i = 0; i < a.rows; i++) b.data[i * k + c] = f.u.data[i * f.u.cols + c]! * s;
    for (let j = 0; j < a.cols; j++) sv.data[c * a.cols + j] = f.vt.data[c * a.cols + j]! * s;
  }
  // G = SV·L⁻¹ = (L⁻ᵀ·SVᵀ)ᵀ.
  const g = transpose(solveUpperLeft(transpose(l), transpose(sv)));
  return { b, g, sigma: f.s };
}

/**
 * The anchored fit through a fixed input map H [q, D] (everything of a chain before its
 * last factor): B [t, q] minimising E‖W·x − B·H·x̂‖² + δ‖W − B·H‖²_F, the normal equations
 * B·H·(Ĉ + δI)·Hᵀ = W·(X + δI)ᵀ·Hᵀ. With x̂ = x and δ = 0 this is the refit of refit.ts.
 */
export function fitThroughInputMap(w: Matrix, h: Matrix, gramHat: Float64Array, cross: Float64Array, lambda: number, sync?: SyncGemm): Matrix {
  const d = w.cols;
  const delta = dampingOf(gramHat, d, lambda);
  const ch = product({ rows: d, cols: d, data: plusDiagonal(gramHat, d, delta) }, h, { transB: true }, sync); // (Ĉ+δI)·Hᵀ [D, q]
  const z = product(h, ch, {}, sync); // H·(Ĉ+δI)·Hᵀ [q, q]
  const xh = product({ rows: d, cols: d, data: plusDiagonal(cross, d, delta) }, h, { transA: true, transB: true }, sync); // (X+δI)ᵀ·Hᵀ [D, q]
  const rhs = product(w, xh, {}, sync); // [t, q]
  return solveSpd(z, rhs, sync);
}

/**
 * The rank-r fit through a fixed input map, from its projected moments: M [t, q] of rank r
 * minimising tr(M·Z·Mᵀ) − 2·tr(M·Rᵀ) with Z = H·(Ĉ + δI)·Hᵀ [q, q] and R = W·(X + δI)ᵀ·Hᵀ
 * [t, q] (reduced-rank regression onto H·x̂). With Z = L·Lᵀ: M = [R·L⁻ᵀ]_r·L⁻¹, returned as
 * B [t, r] = U_r·Σ_r^½ and G [r, q] = Σ_r^½·V_rᵀ·L⁻¹ (M = B·G).
 */
export function reducedRankFromMoments(z: Matrix, r: Matrix, rank: number, seed = 0, sync?: SyncGemm): { b: Matrix; g: Matrix } {
  const { l, ridge } = choleskyWithRidge(z, 1e-8, sync);
  const a = transpose(solveLowerLeft(l, transpose(r), sync));
  const { b, g } = rankFit({ a, l, ridge }, rank, seed, sync);
  return { b, g };
}

/** X = RHS·Z⁻¹ for symmetric positive (semi)definite Z [q, q] (a tiny ridge when singular). */
export function solveSpd(z: Matrix, rhs: Matrix, sync?: SyncGemm): Matrix {
  const { l } = choleskyWithRidge(z, 1e-8, sync);
  // X·Z = RHS ⇔ Z·Xᵀ = RHSᵀ: L·Y = RHSᵀ, Lᵀ·Xᵀ = Y.
  return transpose(solveUpperLeft(transpose(l), solveLowerLeft(l, transpose(rhs), sync)));
}

/**
 * The terms of E‖W·x − Ŵ·x̂‖² for W, Ŵ [t, D]: `num` is the error, `den` = tr(W·C·Wᵀ) the
 * output energy (both on the moments' scale). Computed from the matrices, not a spectrum,
 * so wiring mistakes show.
 */
export function anchoredError(w: Matrix, wHat: Matrix, m: AnchoredMoments, sync?: SyncGemm): { num: number; den: number } {
  const d = w.cols;
  const quad = (a: Matrix, s: Float64Array, b: Matrix): number => {
    // tr(A·S·Bᵀ) = Σ (A·S) ∘ B
    const as = product(a, { rows: d, cols: d, data: s }, {}, sync).data;
    let v = 0;
    for (let i = 0; i < as.length; i++) v += as[i]! * b.data[i]!;
    return v;
  };
  const den = quad(w, m.gram, w);
  const num = den - 2 * quad(wHat, m.cross, w) + quad(wHat, m.gramHat, wHat);
  return { num: Math.max(num, 0), den };
}

/** W·a − Ŵ·b: the output mean error a bias absorbs (a = E[x], b = E[x̂]). */
export function meanError(w: Matrix, wHat: Matrix, a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const out = new Float64Array(w.rows);
  const d = w.cols;
  for (let i = 0; i < w.rows; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += w.data[i * d + j]! * a[j]! - wHat.data[i * d + j]! * b[j]!;
    out[i] = s;
  }
  return out;
}

/** ‖W·a‖²: the output energy of the mean (added to a covariance-based energy for the uncentered one). */
export function meanEnergy(w: Matrix, a: ArrayLike<number>): number {
  const d = w.cols;
  let e = 0;
  for (let i = 0; i < w.rows; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += w.data[i * d + j]! * a[j]!;
    e += s * s;
  }
  return e;
}
