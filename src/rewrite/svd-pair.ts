/**
 * The factorization shared by the SVD passes: a weight W [m, n] becomes
 * W ≈ L·R with L = U_r·Σ_r^½ [m, r] and R = Σ_r^½·V_rᵀ [r, n] (Eckart–Young optimal).
 * Splitting Σ evenly keeps both factors at a similar scale, which suits fp16 storage.
 *
 * Data-aware (truncation-aware whitening, SVD-LLM, Wang et al. 2024): with the Gram matrix
 * of the layer's inputs G = L_x·L_xᵀ (Cholesky, ridge when singular), the output error
 * ‖X(W − W')‖_F is ‖L_xᵀ(W − W')‖_F for inputs on the rows side (Y = X·W), so the SVD of
 * A = L_xᵀ·W truncated at r gives the optimum W' = L_x⁻ᵀ·U_r·Σ_r·V_rᵀ. For inputs on the
 * columns side (Y = W·X, e.g. a 1x1 conv) A = W·L_x and W' = U_r·Σ_r·V_rᵀ·L_x⁻¹.
 * Ranks then follow the spectrum of A: the energy kept is output energy, not weight energy.
 */
import type { Matrix } from '../linalg/matrix.js';
import { choleskyWithRidge } from '../linalg/cholesky.js';
import { product, type SyncGemm } from '../linalg/engine.js';
import { truncatedSvdSync } from '../linalg/rsvd.js';
import { solveUpperLeft } from '../linalg/triangular.js';
import { transpose } from '../linalg/matrix.js';
import type { SvdResult } from '../linalg/svd.js';
import type { Cost, LayerInputStats, Skip } from './pass.js';
import { skip } from './pass.js';
import { chooseSvdRank, type RankPolicy } from './rank-policy.js';

export interface SvdSpectrum {
  /** Leading singular values, descending (all of them when `complete`). */
  sigma: Float64Array;
  /** ‖W‖²_F = Σ all σ². */
  total: number;
  complete: boolean;
}

/** Largest rank at which an SVD pair of an m×n weight has fewer parameters: r < mn/(m+n). */
export const svdBreakEven = (m: number, n: number): number => Math.ceil((m * n) / (m + n)) - 1;

/** Input statistics for whitening: the Gram matrix of the inputs on one side of W. */
export interface Whitening {
  /** 'rows': Y = X·W, G is [m, m]; 'cols': Y = W·X, G is [n, n]. */
  side: 'rows' | 'cols';
  gram: Float64Array;
  /** λ of damped(); 0 or absent: the exact optimum on the statistics. */
  damp?: number;
}

/** Whitening for a layer from its input statistics, when they exist and fit. */
export function whiteningFor(stats: LayerInputStats | undefined, side: Whitening['side'], dim: number): Whitening | undefined {
  if (!stats || stats.dim !== dim || stats.gram.length !== dim * dim || stats.count === 0) return undefined;
  return { side, gram: stats.gram, damp: WHITEN_DAMP };
}

/**
 * Default damping of calibration Gram matrices (G + λ·mean(diag G)·I, as GPTQ damps its
 * Hessian). Undamped whitening is optimal on the calibration inputs but divides by their
 * weakest directions; once the layers above are approximated too, the inputs drift into
 * those directions and the errors are amplified. On PP-OCRv4 rec (every layer at rank
 * ratio 0.5, 8 calibration samples, held-out inputs) the SVD layers' output rel. L2 went
 * 0.73 undamped → 0.58 (λ 0.01) → 0.37 (λ 0.1), the whole model's 0.41 → 0.29 (λ 0.03).
 */
export const WHITEN_DAMP = 0.03;

/** G + λ·mean(diag G)·I: a copy of the Gram matrix, pulled toward isotropy. */
export function damped(gram: Float64Array, k: number, lambda: number): Float64Array {
  if (lambda === 0) return gram;
  let tr = 0;
  for (let i = 0; i < k; i++) tr += gram[i * k + i];
  const g = Float64Array.from(gram);
  const add = (lambda * tr) / k;
  for (let i = 0; i < k; i++) g[i * k + i] += add;
  return g;
}

/** Lazily computed, cached SVD of one weight (of L_xᵀ·W or W·L_x when whitened). */
export class SvdCache {
  private full?: SvdResult;
  /** The matrix whose SVD is taken: W, or the whitened W. */
  readonly a: Matrix;
  readonly lx?: Matrix;
  /** Ridge added to the Gram matrix to make it definite (0 when it was). */
  readonly ridge: number = 0;
  constructor(readonly w: Matrix, private readonly seed: number, readonly whiten?: Whitening, readonly sync?: SyncGemm) {
    if (!whiten) {
      this.a = w;
      return;
    }
    const k = whiten.side === 'rows' ? w.rows : w.cols;
    if (whiten.gram.length !== k * k) throw new Error(`whitening Gram matrix has ${whiten.gram.length} entries, expected ${k}x${k}`);
    const { l, ridge } = choleskyWithRidge({ rows: k, cols: k, data: damped(whiten.gram, k, whiten.damp ?? 0) }, 1e-6);
    this.lx = l;
    this.ridge = ridge;
    this.a = whiten.side === 'rows' ? product(l, w, { transA: true }, sync) : product(w, l, {}, sync);
  }

  /** Top-k factorization; exact for moderate sizes, randomized (seeded) for large ones. */
  factors(k: number): SvdResult {
    const kk = Math.min(k, this.w.rows, this.w.cols);
    if (this.full && this.full.s.length >= kk) return this.full;
    const f = truncatedSvdSync(this.a, Math.max(kk, 1), { seed: this.seed, gemm: this.sync });
    this.full = f;
    return f;
  }

  spectrum(k: number): SvdSpectrum {
    const f = this.factors(k);
    let total = 0;
    for (let i = 0; i < this.a.data.length; i++) total += this.a.data[i] * this.a.data[i];
    return { sigma: f.s, total, complete: f.s.length >= Math.min(this.w.rows, this.w.cols) };
  }
}

export function svdPairRank(cache: SvdCache, policy: RankPolicy): number[] | Skip {
  const { rows: m, cols: n } = cache.w;
  const cap = Math.max(1, svdBreakEven(m, n));
  // A fixed rank needs only that many singular values (a large layer then takes the
  // randomized path); other policies look at the spectrum up to break-even.
  const want = policy.kind === 'fixed' && Number.isInteger(policy.rank) && policy.rank >= 1 ? Math.min(policy.rank, cap) : cap;
  const r = chooseSvdRank(policy, cache.spectrum(Math.min(m, n, want)), m, n);
  if (typeof r !== 'number') return r;
  if (r <= 0) return skip('rank 0: the weight has no low-rank structure worth keeping');
  return [r];
}

export function svdPairCost(m: number, n: number, r: number): { before: Cost; after: Cost } {
  return { before: { params: m * n, macsPerPosition: m * n }, after: { params: r * (m + n), macsPerPosition: r * (m + n) } };
}

/**
 * Splits W into L [m, r] and R [r, n] (fp32 row-major) and reports the relative weight
 * error and, when whitened, the relative output error on the calibration statistics.
 */
export function svdPairFactors(cache: SvdCache, r: number): { left: Float32Array; right: Float32Array; relError: number; dataError?: number } {
  const { rows: m, cols: n } = cache.w;
  const f = cache.factors(r);
  let us: Matrix = { rows: m, cols: r, data: new Float64Array(m * r) };
  let sv: Matrix = { rows: r, cols: n, data: new Float64Array(r * n) };
  const ucols = f.u.cols;
  for (let k = 0; k < r; k++) {
    const s = Math.sqrt(f.s[k]);
    for (let i = 0; i < m; i++) us.data[i * r + k] = f.u.data[i * ucols + k] * s;
    for (let j = 0; j < n; j++) sv.data[k * n + j] = f.vt.data[k * n + j] * s;
  }
  // Undo the whitening on the input side: L = L_x⁻ᵀ·U_rΣ^½, or R = Σ^½V_rᵀ·L_x⁻¹.
  if (cache.whiten?.side === 'rows') us = solveUpperLeft(transpose(cache.lx!), us);
  if (cache.whiten?.side === 'cols') sv = transpose(solveUpperLeft(transpose(cache.lx!), transpose(sv)));
  const left = Float32Array.from(us.data);
  const right = Float32Array.from(sv.data);
  const relError = reconstructionError(cache.w, left, right, r, cache.sync);
  if (!cache.whiten) return { left, right, relError };
  let kept = 0;
  let total = 0;
  for (let i = 0; i < cache.a.data.length; i++) total += cache.a.data[i] ** 2;
  for (let i = 0; i < Math.min(r, f.s.length); i++) kept += f.s[i] ** 2;
  return { left, right, relError, dataError: total > 0 ? Math.sqrt(Math.max(0, total - kept) / total) : 0 };
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
