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
 *
 * Anchored (src/linalg/anchored.ts): when the statistics also hold the layer's input x̂ in
 * the partly compressed model, the fit is to what the original computes from x given x̂:
 * A = W·(X + δI)ᵀ·L̂⁻ᵀ with Ĉ + δI = L̂·L̂ᵀ and X = E[x̂·xᵀ] (in the y = W·x orientation;
 * transposed for the rows side), factors undone by L̂ as above. With means removed
 * (`center`), the output mean error W·E[x] − W'·E[x̂] is returned for the bias.
 *
 * The numerics are in src/linalg/whitened-svd.ts; here the statistics are chosen, the SVD
 * cached per layer, ranks picked, and biases and factors read back.
 */
import { centered } from '../linalg/anchored.js';
import type { SyncGemm } from '../linalg/engine.js';
import { isRank } from '../linalg/checks.js';
import type { Matrix } from '../linalg/matrix.js';
import { svdBreakEvenRank } from '../linalg/rank.js';
import { rowScales } from '../linalg/row-weights.js';
import { truncatedSvdSync } from '../linalg/rsvd.js';
import type { SvdResult } from '../linalg/svd.js';
import {
  damped, pairFromSvd, reconstructionError, whitenedMatrix, whitenedPairErrors, type PairStatistics,
} from '../linalg/whitened-svd.js';
import { resolveConstant } from '../graph/constants.js';
import { castFedConstant } from '../graph/layers.js';
import type { Graph } from '../graph/graph.js';
import type { ExternalBytes } from '../onnx/tensor.js';
import { readTensorFloat } from '../onnx/tensor.js';
import { FLOAT_TYPES } from './emit.js';
import type { ChainFactor, Cost, LayerInputStats, PassContext, Skip } from './pass.js';
import { skip } from './pass.js';
import { chooseSvdRank, type RankPolicy, type SvdSpectrum } from './rank-policy.js';

export type { SvdSpectrum };
export { damped, reconstructionError };

/** Largest rank at which an SVD pair of an m×n weight has fewer parameters: r < mn/(m+n). */
export const svdBreakEven = svdBreakEvenRank;

/** Input statistics for whitening (linalg/whitened-svd.ts). */
export type Whitening = PairStatistics;

/**
 * Whitening for a layer from its input statistics, when they exist and fit. With anchor
 * statistics the fit is anchored; `center` (the layer has a bias that can take the mean
 * error) fits the covariances and returns the bias correction.
 */
export function whiteningFor(
  stats: LayerInputStats | undefined, side: Whitening['side'], dim: number, opts: { center?: boolean; outputScale?: Float64Array } = {},
): Whitening | undefined {
  if (!stats || stats.dim !== dim || stats.gram.length !== dim * dim || stats.count === 0) return undefined;
  const an = stats.anchor;
  const weights = opts.outputScale && { outputScale: opts.outputScale };
  if (!an || an.gram.length !== dim * dim || an.cross.length !== dim * dim) return { side, gram: stats.gram, damp: WHITEN_DAMP, ...weights };
  const n = stats.count;
  const means = opts.center && stats.mean?.length === dim && an.mean.length === dim ? { x: stats.mean, xHat: an.mean } : undefined;
  return {
    side, damp: ANCHOR_DAMP, means, ...weights,
    gram: centered(an.gram, n, dim, means?.xHat, means?.xHat),
    cross: centered(an.cross, n, dim, means?.xHat, means?.x),
    reference: centered(stats.gram, n, dim, means?.x, means?.x),
  };
}

/**
 * The output weights of a layer with `outputs` outputs (--output-aware: each output's
 * measured sensitivity, optimize/output-sensitivity.ts) as scales √(h/mean(h) + floor), or
 * undefined when it has none of that length.
 */
export function outputScaleOf(cx: Pick<PassContext, 'outputSensitivity'>, layer: string, outputs: number): Float64Array | undefined {
  const h = cx.outputSensitivity?.get(layer);
  return h && h.length === outputs ? rowScales(h) : undefined;
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

/**
 * Damping of anchored fits (linalg/anchored.ts: Ĉ + δI and X + δI, δ = λ·mean(diag Ĉ)), a
 * pull toward the original weight. Anchored fits follow the calibration inputs more
 * closely than whitening alone, and so overfit them more: on PP-OCRv4 rec (rank ratio 0.5,
 * 8 seeded random calibration inputs, 4 held out) the held-out output rel. L2 was 0.287
 * at λ 0.03, 0.272 at 0.1 and 0.269 at 0.3 (independent fit 0.327).
 */
export const ANCHOR_DAMP = 0.1;

/** Lazily computed, cached SVD of one weight (of L_xᵀ·W or W·L_x when whitened). */
export class SvdCache {
  private full?: SvdResult;
  /** The matrix whose SVD is taken: W, or the whitened W. */
  readonly a: Matrix;
  readonly lx?: Matrix;
  /** Ridge added to the Gram matrix to make it definite (0 when it was). */
  readonly ridge: number;
  readonly outputScale?: Float64Array;
  constructor(readonly w: Matrix, private readonly seed: number, readonly whiten?: Whitening, readonly sync?: SyncGemm) {
    ({ a: this.a, lx: this.lx, ridge: this.ridge, outputScale: this.outputScale } = whitenedMatrix(w, whiten, sync));
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
  const want = policy.kind === 'fixed' && isRank(policy.rank) ? Math.min(policy.rank, cap) : cap;
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
export function svdPairFactors(cache: SvdCache, r: number): { left: Float32Array; right: Float32Array; relError: number; dataError?: number; biasDelta?: Float64Array } {
  const { rows: m, cols: n } = cache.w;
  const f = cache.factors(r);
  const { left, right } = pairFromSvd(f, r, m, n, cache.whiten?.side, cache.lx, cache.outputScale);
  const relError = reconstructionError(cache.w, left, right, r, cache.sync);
  if (!cache.whiten) return { left, right, relError };
  return { left, right, relError, ...whitenedPairErrors(cache.w, cache.whiten, cache.a, f, left, right, r, cache.sync) };
}

/**
 * The values of a constant bias that broadcasts along one output axis of length n: a
 * float constant with n values (dims [..1, n] or [..1, n, 1], i.e. one non-unit dim) or a
 * single value (repeated n times). Undefined when `name` is not such a constant.
 */
export function constantBias(g: Graph, name: string, n: number, external?: ExternalBytes): { values: Float32Array; dims: number[]; dataType: number } | undefined {
  // A bias stored behind a Cast (fp16) is read through it, and its correction written in
  // the type the Cast makes (what the Add computes in).
  const cc = resolveConstant(g, name) ? undefined : castFedConstant(g, name);
  const c = cc?.ref ?? resolveConstant(g, name);
  if (!c || !FLOAT_TYPES.has(c.tensor.dataType ?? 0)) return undefined;
  const dims = c.tensor.dims.map(Number);
  const count = dims.reduce((a, b) => a * b, 1);
  if (count !== n && count !== 1) return undefined;
  if (dims.filter((d) => d !== 1).length > 1) return undefined;
  const v = readTensorFloat(c.tensor, external);
  const dataType = cc?.cast.to ?? c.tensor.dataType!;
  if (count === n) return { values: Float32Array.from(v), dims, dataType };
  return { values: new Float32Array(n).fill(v[0]!), dims: [n], dataType };
}

/**
 * The inverse of an SVD pair (for --stages, merge.ts): the product of its two factors in
 * the original orientation, W [rows, cols] as it enters the product.
 */
export function pairProduct(factors: readonly ChainFactor[], weightInput: number, ext: ExternalBytes | undefined): { w: Float32Array; rows: number; cols: number } | string {
  const [p, q] = factors;
  if (!p || !q || p.dims.length !== 2 || q.dims.length !== 2) return 'an SVD pair needs two 2-D factors';
  // Weight on the right: X·P·Q, so W = P·Q; on the left: Q·(P·X), so W = Q·P.
  const [a, b] = weightInput === 1 ? [p, q] : [q, p];
  const [m, r] = a.dims as [number, number];
  const [r2, n] = b.dims as [number, number];
  if (r !== r2) return `factor shapes [${a.dims}] and [${b.dims}] do not chain`;
  return { w: matmulF32(a.read(ext), b.read(ext), m, r, n), rows: m, cols: n };
}

/** A·B in float64, rounded once to float32. */
function matmulF32(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Float32Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let t = 0; t < k; t++) {
      const x = a[i * k + t]!;
      if (x === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j] += x * b[t * n + j]!;
    }
  }
  return Float32Array.from(out);
}
