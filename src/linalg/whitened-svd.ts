/**
 * The whitened SVD pair of a weight W [m, n]: W ≈ L·R with L [m, r] and R [r, n] from the
 * truncated SVD U·Σ·Vᵀ of a whitened A, Σ split evenly (Σ_r^½ on each side).
 *
 * Inputs on the rows side (Y = X·W): A = L_xᵀ·W for the input Gram G + δI = L_x·L_xᵀ, and
 * L = L_x⁻ᵀ·U_r·Σ_r^½, R = Σ_r^½·V_rᵀ (SVD-LLM: the error ‖X(W − L·R)‖ is minimised). On the
 * columns side (Y = W·X): A = W·L_x, L = U_r·Σ_r^½, R = Σ_r^½·V_rᵀ·L_x⁻¹. Anchored (`cross`
 * given): A = W·(X + δI)ᵀ·L̂⁻ᵀ in the y = W·x orientation (transposed for the rows side),
 * with Ĉ + δI = L̂·L̂ᵀ (anchored.ts). δ = damp·mean(diag G). Without whitening A = W.
 * Output weights (`outputScale` s, s² = how much the model's outputs move per unit of each
 * output channel, optimize/output-sensitivity.ts): the objective is Σᵢ sᵢ²‖yᵢ − ŷᵢ‖², whose
 * rank-r optimum is the truncated SVD of diag(s)·A with diag(s)⁻¹ undone on the output
 * side of the factors (the row-weighted SVD of row-weights.ts on whichever side the
 * outputs are).
 * Pure numerics: rewrite/svd-pair.ts and tucker2-conv.ts call these.
 */
import { anchoredError, dampingOf, meanEnergy, meanError, plusDiagonal, whitenedTarget } from './anchored.js';
import { choleskyWithRidge } from './cholesky.js';
import { product, runSync, type SyncGemm } from './engine.js';
import { assertFinite, transpose, type Matrix } from './matrix.js';
import { truncate, truncatedSvdSync } from './rsvd.js';
import { svdProgram, type SvdResult } from './svd.js';
import { solveUpperLeft } from './triangular.js';

/** Second moments of the inputs on one side of W. */
export interface PairWhitening {
  /** 'rows': Y = X·W, G is [m, m]; 'cols': Y = W·X, G is [n, n]. */
  side: 'rows' | 'cols';
  /** G = E[x·xᵀ] (Ĉ = E[x̂·x̂ᵀ] when anchored). */
  gram: Float64Array;
  /** λ of the damping; 0 or absent: none (the exact optimum on the statistics). */
  damp?: number;
  /** Anchored fit: X = E[x̂·xᵀ]. */
  cross?: Float64Array;
  /** s per output (W's rows on the 'cols' side, its columns on the 'rows' side): Σᵢ sᵢ²‖yᵢ − ŷᵢ‖² is minimised. */
  outputScale?: Float64Array;
}

/** The statistics with what an anchored fit's reported error and bias correction need. */
export interface PairStatistics extends PairWhitening {
  /**
   * Anchored fit: `gram` is then Ĉ = E[x̂·x̂ᵀ] of the input in the partly compressed model,
   * `cross` X = E[x̂·xᵀ] and `reference` C = E[x·xᵀ] of the original input (for the reported
   * error); all three centered when `means` are given.
   */
  reference?: Float64Array;
  /** E[x] and E[x̂]: the moments are covariances and the fit returns the bias correction. */
  means?: { x: Float64Array; xHat: Float64Array };
}

/** Rows-side whitening of one weight (tucker2-conv.ts: one per group). */
export type ChannelWhitening = Omit<PairWhitening, 'side'>;

/** The matrix whose SVD is taken, and the Cholesky factor that undoes the whitening. */
export interface WhitenedMatrix {
  a: Matrix;
  lx?: Matrix;
  /** Ridge added to the Gram matrix to make it definite (0 when it was). */
  ridge: number;
  /** The output weights A carries (pairFromSvd divides them out again). */
  outputScale?: Float64Array;
}

/** G + λ·mean(diag G)·I: a copy of the Gram matrix, pulled toward isotropy (G itself when λ is 0). */
export function damped(gram: Float64Array, k: number, lambda: number): Float64Array {
  return lambda === 0 ? gram : plusDiagonal(gram, k, dampingOf(gram, k, lambda));
}

/** A for W and its whitening (W itself without one). */
export function whitenedMatrix(w: Matrix, wh: PairWhitening | undefined, sync?: SyncGemm): WhitenedMatrix {
  const t = inputWhitened(w, wh, sync);
  const s = wh?.outputScale;
  if (!s) return t;
  const outputs = wh!.side === 'cols' ? w.rows : w.cols;
  if (s.length !== outputs) throw new Error(`output weights have ${s.length} entries, expected ${outputs}`);
  const a = { rows: t.a.rows, cols: t.a.cols, data: Float64Array.from(t.a.data) };
  // y = W·x (cols side): outputs are A's rows; Y = X·W (rows side): its columns.
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) a.data[i * a.cols + j] *= wh!.side === 'cols' ? s[i]! : s[j]!;
  return { ...t, a, outputScale: s };
}

function inputWhitened(w: Matrix, wh: PairWhitening | undefined, sync?: SyncGemm): WhitenedMatrix {
  if (!wh) return { a: w, ridge: 0 };
  const k = wh.side === 'rows' ? w.rows : w.cols;
  if (wh.gram.length !== k * k) throw new Error(`whitening Gram matrix has ${wh.gram.length} entries, expected ${k}x${k}`);
  if (wh.cross) {
    // y = W·x orientation: W itself on the columns side, Wᵀ on the rows side.
    const t = whitenedTarget(wh.side === 'cols' ? w : transpose(w), wh.gram, wh.cross, wh.damp ?? 0, sync);
    return { a: wh.side === 'cols' ? t.a : transpose(t.a), lx: t.l, ridge: t.ridge };
  }
  const { l, ridge } = choleskyWithRidge({ rows: k, cols: k, data: damped(wh.gram, k, wh.damp ?? 0) }, 1e-6, sync);
  return { a: wh.side === 'rows' ? product(l, w, { transA: true }, sync) : product(w, l, {}, sync), lx: l, ridge };
}

/**
 * L [m, r] and R [r, n] (fp32, row-major) from an SVD of A holding at least r singular
 * values, with the whitening on `side` undone by `lx` and the output weights by `outputScale`.
 */
export function pairFromSvd(
  f: SvdResult, r: number, m: number, n: number, side?: PairWhitening['side'], lx?: Matrix, outputScale?: Float64Array,
): { left: Float32Array; right: Float32Array } {
  let us: Matrix = { rows: m, cols: r, data: new Float64Array(m * r) };
  let sv: Matrix = { rows: r, cols: n, data: new Float64Array(r * n) };
  const ucols = f.u.cols;
  for (let k = 0; k < r; k++) {
    const s = Math.sqrt(f.s[k]!);
    for (let i = 0; i < m; i++) us.data[i * r + k] = f.u.data[i * ucols + k]! * s;
    for (let j = 0; j < n; j++) sv.data[k * n + j] = f.vt.data[k * n + j]! * s;
  }
  // Undo the whitening on the input side: L = L_x⁻ᵀ·U_rΣ^½, or R = Σ^½V_rᵀ·L_x⁻¹.
  if (side === 'rows') us = solveUpperLeft(transpose(lx!), us);
  if (side === 'cols') sv = transpose(solveUpperLeft(transpose(lx!), transpose(sv)));
  if (outputScale && side === 'cols') for (let i = 0; i < m; i++) for (let k = 0; k < r; k++) us.data[i * r + k] /= outputScale[i]!;
  if (outputScale && side === 'rows') for (let k = 0; k < r; k++) for (let j = 0; j < n; j++) sv.data[k * n + j] /= outputScale[j]!;
  return { left: Float32Array.from(us.data), right: Float32Array.from(sv.data) };
}

/** L [m, r] and R [r, n] of the rows-side whitened rank-r pair; truncated SVD seeded with 0. */
export function whitenedSvdFactors(w: Matrix, wh: ChannelWhitening, r: number, sync?: SyncGemm): { left: Float32Array; right: Float32Array } {
  return whitenedFactorsAt(whitenedSvdWork(w, wh, sync), r, sync);
}

/**
 * The rank-independent part of whitenedSvdFactors for one W and whitening, kept for fits
 * at several ranks (tucker2-conv.ts: a layer's rungs): the whitened A with its Cholesky
 * factor, and once a rank needed it, A's full SVD.
 */
export interface WhitenedSvdWork {
  m: number;
  n: number;
  whitened: WhitenedMatrix;
  /** A's full SVD, computed by the first rank whose truncated SVD is exact. */
  full?: SvdResult;
}

/** The whitening of W (rows side) as whitenedSvdFactors does it, before any SVD. */
export function whitenedSvdWork(w: Matrix, wh: ChannelWhitening, sync?: SyncGemm): WhitenedSvdWork {
  return { m: w.rows, n: w.cols, whitened: whitenedMatrix(w, { ...wh, side: 'rows' }, sync) };
}

/**
 * whitenedSvdFactors at rank r from `work`. Where truncatedSvdSync would take the exact
 * SVD and truncate it (exactTruncation), the full SVD is taken once and kept in `work`, so
 * every such rank gets the bytes truncatedSvdSync gives, for one SVD; a smaller rank is
 * randomized (seed 0) as before, its sketch sized by the rank, and not kept.
 */
export function whitenedFactorsAt(work: WhitenedSvdWork, r: number, sync?: SyncGemm): { left: Float32Array; right: Float32Array } {
  const { m, n, whitened: t } = work;
  const k = Math.max(Math.min(r, m, n), 1);
  let f: SvdResult;
  if (Number.isInteger(k) && exactTruncation(m, n, k)) {
    if (!work.full) {
      assertFinite(t.a, 'truncated SVD input');
      work.full = runSync(svdProgram(t.a), sync);
    }
    f = truncate(work.full, k);
  } else {
    f = truncatedSvdSync(t.a, k, { seed: 0, gemm: sync });
  }
  return pairFromSvd(f, r, m, n, 'rows', t.lx);
}

/**
 * Whether truncatedSvdSync (method 'auto', oversampling 10) takes A's exact SVD at rank k:
 * when the smaller side is at most twice the sketch or at most 64 (rsvd.ts; the tests hold
 * this to truncatedSvdSync's bytes).
 */
export function exactTruncation(m: number, n: number, k: number): boolean {
  const small = Math.min(m, n);
  return small <= 2 * Math.min(k + 10, small) || small <= 64;
}

/** ‖W − L·R‖_F / ‖W‖_F, computed directly (not from the spectrum) so wiring bugs show. */
export function reconstructionError(w: Matrix, left: Float32Array, right: Float32Array, r: number, sync?: SyncGemm): number {
  const { rows: m, cols: n } = w;
  const wh = product({ rows: m, cols: r, data: Float64Array.from(left) }, { rows: r, cols: n, data: Float64Array.from(right) }, {}, sync).data;
  let num = 0;
  let den = 0;
  for (let i = 0; i < m * n; i++) {
    const x = w.data[i]!;
    const d = x - wh[i]!;
    num += d * d;
    den += x * x;
  }
  return den === 0 ? 0 : Math.sqrt(num / den);
}

/**
 * The relative output error on the statistics of the pair L·R fitted from the SVD `f` of
 * the whitened A: from the spectrum (‖A‖² minus the energy kept), or for an anchored fit
 * from the factors (relative to the original output's energy, means included), with the
 * bias correction when centered.
 */
export function whitenedPairErrors(
  w: Matrix, wh: PairStatistics, a: Matrix, f: SvdResult, left: Float32Array, right: Float32Array, r: number, sync?: SyncGemm,
): { dataError: number; biasDelta?: Float64Array } {
  if (wh.cross) return anchoredPairErrors(w, wh, left, right, r, sync);
  // Weighted, the spectrum gives the weighted error: the plain one is measured from the factors.
  if (wh.outputScale) {
    const k = wh.side === 'rows' ? w.rows : w.cols;
    const g = damped(wh.gram, k, wh.damp ?? 0);
    return anchoredPairErrors(w, { ...wh, gram: g, cross: g, reference: g }, left, right, r, sync);
  }
  let kept = 0;
  let total = 0;
  for (let i = 0; i < a.data.length; i++) total += a.data[i]! ** 2;
  for (let i = 0; i < Math.min(r, f.s.length); i++) kept += f.s[i]! ** 2;
  return { dataError: total > 0 ? Math.sqrt(Math.max(0, total - kept) / total) : 0 };
}

function anchoredPairErrors(w0: Matrix, wh: PairStatistics, left: Float32Array, right: Float32Array, r: number, sync?: SyncGemm): { dataError: number; biasDelta?: Float64Array } {
  const { rows: m, cols: n } = w0;
  const approx = product({ rows: m, cols: r, data: Float64Array.from(left) }, { rows: r, cols: n, data: Float64Array.from(right) }, {}, sync);
  // y = W·x orientation.
  const [w, what] = wh.side === 'cols' ? [w0, approx] : [transpose(w0), transpose(approx)];
  const e = anchoredError(w, what, { gram: wh.reference ?? wh.gram, gramHat: wh.gram, cross: wh.cross! }, sync);
  const den = e.den + (wh.means ? meanEnergy(w, wh.means.x) : 0);
  return {
    dataError: den > 0 ? Math.sqrt(e.num / den) : 0,
    biasDelta: wh.means ? meanError(w, what, wh.means.x, wh.means.xHat) : undefined,
  };
}
