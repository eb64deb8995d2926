/**
 * CP decomposition by alternating least squares: X ≈ Σ_r a_r ∘ b_r ∘ c_r (∘ d_r …).
 * For a conv kernel reshaped to [T, S, kh·kw] the factors are A [T,R], B [S,R],
 * C [kh·kw, R] (Lebedev et al. 2015); a 4-way [T, S, kh, kw] gives four factors.
 *
 * Plain ALS can run into degenerate solutions: two or more components grow without
 * bound while cancelling each other (the problem has no minimiser when the target's
 * border rank is lower than its rank). Safeguard, in the spirit of Phan et al. 2020
 * (who bound the sensitivity Σ‖component‖²): each least-squares update is
 * Tikhonov-regularised, (H + λI), and whenever a component's norm would exceed
 * `maxNormRatio`·‖X‖ the step is redone with a 10× larger λ. Every component
 * therefore stays bounded, by construction, at the price of a slightly worse fit
 * on degenerate problems; λ relaxes back towards `ridge` on well-behaved steps.
 */
import { LrError } from '../errors.js';
import type { Rng } from '../util/rng.js';
import { createRng } from '../util/rng.js';
import { checkRank } from './checks.js';
import { cholesky, choleskyWithRidge } from './cholesky.js';
import { mm, runAsync, runSync, type GemmEngine, type GemmProgram, type SyncGemm } from './engine.js';
import { gemm } from './gemm.js';
import { asFloat64, assertFinite, type Matrix } from './matrix.js';
import { truncatedSvdProgram } from './rsvd.js';
import { checkTensor, contractRest, khatriRao, sizeOf, tensorNorm, unfold, type Tensor } from './tensor.js';
import { solveLowerLeft, solveUpperLeft } from './triangular.js';

export interface CpAlsOptions {
  /** 'svd' (default): leading singular vectors of each unfolding (random columns pad when R > I_n). */
  init?: 'svd' | 'random';
  /** Random source (random init, SVD sketches, padding); default createRng(seed ?? 0). */
  rng?: Rng;
  seed?: number;
  /** Stop when the relative error changes by less than tol between sweeps (default 1e-7). */
  tol?: number;
  /** Maximum ALS sweeps (default 200). */
  maxIter?: number;
  /** Base Tikhonov ridge λ, relative to the unit diagonal of the normalised Gram (default 1e-9). */
  ridge?: number;
  /** Bound on every component weight, as a multiple of ‖X‖_F (default 10). */
  maxNormRatio?: number;
  onIter?: (info: { iteration: number; relError: number; ridge: number }) => void;
}

export interface CpAlsResult {
  /**
   * One factor per mode (mode n: I_n × R) with unit-norm columns (Kruskal form):
   * X ≈ Σ_r weights[r] · ∘_n factors[n][:, r]. See balancedFactors() to absorb weights.
   */
  factors: Matrix[];
  /** Component weights λ_r ≥ 0 (each ≤ maxNormRatio·‖X‖_F by construction). */
  weights: Float64Array;
  relError: number;
  converged: boolean;
  iterations: number;
  /** The rank actually used (clamped: see cpAlsProgram). */
  rank: number;
}

/**
 * About how many flops `sweeps` ALS sweeps cost on a tensor of `dims` at rank R: each
 * sweep's products with the tensor (one MTTKRP per mode, 2·R·∏dims each) dominate.
 */
export function cpAlsFlops(dims: readonly number[], rank: number, sweeps: number): number {
  return sweeps * dims.length * 2 * rank * dims.reduce((a, b) => a * b, 1);
}

/**
 * CP-ALS as a gemm program. `tensor` must be at least 3-way (3-way: conv-cp; 4- and 5-way:
 * conv-cp4 on 2-D and 3-D kernels; the Khatri–Rao and contraction steps take any order); `rank` a positive integer
 * (LrError 'rank'), clamped to Π_n I_n / max_n I_n (a CP of that rank always fits
 * exactly, so more components cannot help).
 */
/** Π_n I_n / max_n I_n: a CP of a tensor of these dims at this rank always fits it exactly (the generic bound ranks are clamped to). */
export function cpRankBound(dims: readonly number[]): number {
  return sizeOf(dims) / Math.max(...dims);
}

export function* cpAlsProgram(tensor: Tensor, rank: number, opts: CpAlsOptions = {}): GemmProgram<CpAlsResult> {
  checkTensor(tensor, 'cpAls');
  const N = tensor.shape.length;
  if (N < 3) throw new LrError('numeric', `cpAls: expected a tensor of 3 or more ways, got [${tensor.shape.join(', ')}]`);
  assertFinite(tensor.data, 'cpAls tensor');
  const dims = tensor.shape.slice();
  const R = checkRank(rank, cpRankBound(dims), 'cpAls');
  const rng = opts.rng ?? createRng(opts.seed ?? 0);
  const tol = opts.tol ?? 1e-7;
  const maxIter = opts.maxIter ?? 200;
  const baseRidge = opts.ridge ?? 1e-9;
  const maxNormRatio = opts.maxNormRatio ?? 10;

  const x: Tensor = { data: Float64Array.from(tensor.data), shape: dims };
  const xNorm = tensorNorm(x);
  // Mode-n unfoldings: only mode 0 (the data itself) is needed by ALS; the others feed the SVD init.
  const unfoldings = dims.map((_, n) => (n === 0 || (opts.init ?? 'svd') === 'svd' ? unfold(x, n) : null));
  if (xNorm === 0) {
    // Zero tensor: the zero decomposition is exact.
    const factors = dims.map((d) => ({ rows: d, cols: R, data: new Float64Array(d * R) }));
    return { factors, weights: new Float64Array(R), relError: 0, converged: true, iterations: 0, rank: R };
  }

  // Factors kept with unit-norm columns; scale lives in `weights`.
  const factors: Matrix[] = [];
  for (let n = 0; n < N; n++) {
    let f: Matrix;
    if ((opts.init ?? 'svd') === 'svd') {
      const r = Math.min(R, dims[n]!);
      const lead = (yield* truncatedSvdProgram(unfoldings[n]!, r, { rng: rng.fork() })).u;
      f = padColumns(lead, R, rng);
    } else {
      f = padColumns({ rows: dims[n]!, cols: 0, data: new Float64Array(0) }, R, rng);
    }
    factors.push(f);
  }
  let weights: Float64Array = new Float64Array(R).fill(1);
  let lambda = baseRidge;
  let relError = Infinity;
  let converged = false;
  let iterations = 0;
  const bound = maxNormRatio * xNorm;

  const grams = factors.map(gram);
  for (let it = 1; it <= maxIter; it++) {
    let lastM: Matrix | null = null;
    let z: Matrix | null = null; // F_0ᵀ·X_(0), shared by the updates of modes 1..N-1
    for (let n = 0; n < N; n++) {
      let mtt: Matrix; // MTTKRP, I_n × R
      if (n === 0) {
        // X_(0)·KR(F_1, …): the Khatri–Rao block is only (Π_{m≥1} I_m) × R.
        mtt = asFloat64(yield* mm(unfoldings[0]!, khatriRao(factors.slice(1))));
      } else {
        // Contract mode 0 by one product, then the remaining modes elementwise: this
        // avoids the (T·…) × R Khatri–Rao matrix that mode n ≥ 1 would need.
        z ??= asFloat64(yield* mm(factors[0]!, unfoldings[0]!, { transA: true }));
        mtt = contractRest(z, dims, factors, n);
      }
      const h = hadamard(grams.filter((_, m) => m !== n), R);
      // Regularised update; raise λ until every component respects the bound.
      for (let attempt = 0; ; attempt++) {
        const f = solveRidge(mtt, h, lambda);
        const w = columnNorms(f);
        if (Math.max(...w) <= bound || attempt >= 60) {
          normalizeColumns(f, w, rng);
          factors[n] = f;
          grams[n] = gram(f);
          weights = w;
          break;
        }
        lambda = Math.max(lambda * 10, 1e-8);
      }
      lastM = mtt;
    }
    iterations = it;
    const prev = relError;
    relError = fitError(xNorm, lastM!, factors[N - 1]!, hadamard(grams, R), weights);
    // Near an exact fit the Gram identity cancels catastrophically: measure directly.
    if (relError < 1e-4) relError = yield* explicitError(x, xNorm, factors, weights);
    opts.onIter?.({ iteration: it, relError, ridge: lambda });
    lambda = Math.max(baseRidge, lambda / 10);
    if (Math.abs(prev - relError) < tol || relError < 1e-13) {
      converged = true;
      break;
    }
  }
  relError = yield* explicitError(x, xNorm, factors, weights);
  return { factors, weights, relError, converged, iterations, rank: R };
}

/**
 * Factors with the weights absorbed evenly: column r of each of the N factors scaled
 * by weights[r]^(1/N), so X ≈ Σ_r ∘_n F_n[:, r] and no factor is far from unit scale.
 */
export function balancedFactors(res: Pick<CpAlsResult, 'factors' | 'weights'>): Matrix[] {
  const N = res.factors.length;
  const R = res.weights.length;
  return res.factors.map((f) => {
    const out = new Float64Array(f.data.length);
    for (let i = 0; i < f.rows; i++) for (let r = 0; r < R; r++) out[i * R + r] = f.data[i * R + r]! * Math.pow(res.weights[r]!, 1 / N);
    return { rows: f.rows, cols: R, data: out };
  });
}

/** CP-ALS with products on `opts.gemm` (default JS). */
export function cpAlsSync(tensor: Tensor, rank: number, opts: CpAlsOptions & { gemm?: SyncGemm } = {}): CpAlsResult {
  return runSync(cpAlsProgram(tensor, rank, opts), opts.gemm);
}

/** CP-ALS with products on `opts.engine` (default JS). */
export function cpAls(tensor: Tensor, rank: number, opts: CpAlsOptions & { engine?: GemmEngine } = {}): Promise<CpAlsResult> {
  const p = cpAlsProgram(tensor, rank, opts);
  return opts.engine ? runAsync(p, opts.engine) : Promise.resolve(runSync(p));
}

/** FᵀF (R×R). */
function gram(f: Matrix): Float64Array {
  return gemm(f, f, { transA: true }).data as Float64Array;
}

/** Elementwise product of Gram matrices: the normal-equation matrix of the ALS step. */
function hadamard(grams: Float64Array[], R: number): Float64Array {
  const h = new Float64Array(R * R).fill(1);
  for (const g of grams) for (let i = 0; i < h.length; i++) h[i]! *= g[i]!;
  return h;
}

/** F = M·(H + λI)⁻¹ via Cholesky (H is symmetric PSD); the R×R inverse then one product. */
function solveRidge(mtt: Matrix, h: Float64Array, lambda: number): Matrix {
  const R = mtt.cols;
  const hr = Float64Array.from(h);
  for (let i = 0; i < R; i++) hr[i * R + i]! += lambda;
  const hm: Matrix = { rows: R, cols: R, data: hr };
  const l = cholesky(hm) ?? choleskyWithRidge(hm, Math.max(lambda, 1e-12)).l;
  const eye = new Float64Array(R * R);
  for (let i = 0; i < R; i++) eye[i * R + i] = 1;
  const inv = solveUpperLeft(transposeSmall(l), solveLowerLeft(l, { rows: R, cols: R, data: eye }));
  return gemm(mtt, inv);
}

function columnNorms(f: Matrix): Float64Array {
  const R = f.cols;
  const w = new Float64Array(R);
  for (let i = 0; i < f.rows; i++) for (let r = 0; r < R; r++) w[r]! += f.data[i * R + r]! ** 2;
  for (let r = 0; r < R; r++) w[r] = Math.sqrt(w[r]!);
  return w;
}

/** Unit columns; a zero column is replaced by a random unit vector (weight stays 0). */
function normalizeColumns(f: Matrix, w: Float64Array, rng: Rng): void {
  const R = f.cols;
  for (let r = 0; r < R; r++) {
    if (w[r]! > 0) {
      for (let i = 0; i < f.rows; i++) f.data[i * R + r]! /= w[r]!;
    } else {
      let s = 0;
      for (let i = 0; i < f.rows; i++) s += (f.data[i * R + r] = rng.normal()) ** 2;
      s = Math.sqrt(s);
      for (let i = 0; i < f.rows; i++) f.data[i * R + r]! /= s;
    }
  }
}

/** Widens to R columns with random unit columns. */
function padColumns(f: Matrix, R: number, rng: Rng): Matrix {
  const out = new Float64Array(f.rows * R);
  for (let i = 0; i < f.rows; i++) for (let r = 0; r < f.cols; r++) out[i * R + r] = f.data[i * f.cols + r]!;
  const m: Matrix = { rows: f.rows, cols: R, data: out };
  const w = new Float64Array(R);
  for (let r = f.cols; r < R; r++) w[r] = 0; // normalizeColumns fills these with random unit vectors
  for (let r = 0; r < f.cols; r++) w[r] = 1;
  normalizeColumns(m, w, rng);
  return m;
}

/**
 * ‖X − X̂‖/‖X‖ from ‖X‖² − 2⟨X, X̂⟩ + ‖X̂‖², using the MTTKRP of the last updated
 * mode (⟨X, X̂⟩ = Σ_r w_r Σ_i M[i,r]·F[i,r]) and the full Hadamard Gram for ‖X̂‖².
 */
function fitError(xNorm: number, mLast: Matrix, fl: Matrix, hAll: Float64Array, w: Float64Array): number {
  const R = w.length;
  let inner = 0;
  for (let i = 0; i < fl.rows; i++) for (let r = 0; r < R; r++) inner += w[r]! * mLast.data[i * R + r]! * fl.data[i * R + r]!;
  let model = 0;
  for (let a = 0; a < R; a++) for (let b = 0; b < R; b++) model += w[a]! * w[b]! * hAll[a * R + b]!;
  return Math.sqrt(Math.max(0, xNorm * xNorm - 2 * inner + model)) / xNorm;
}

/** Exact ‖X − X̂‖/‖X‖ by reconstructing X̂ = (F_0·diag(w))·KR(F_1..)ᵀ. */
function* explicitError(x: Tensor, xNorm: number, factors: Matrix[], w: Float64Array): GemmProgram<number> {
  const R = w.length;
  const f0 = factors[0]!;
  const scaled = new Float64Array(f0.data.length);
  for (let i = 0; i < f0.rows; i++) for (let r = 0; r < R; r++) scaled[i * R + r] = f0.data[i * R + r]! * w[r]!;
  const kr = khatriRao(factors.slice(1));
  const xh = asFloat64(yield* mm({ rows: f0.rows, cols: R, data: scaled }, kr, { transB: true }));
  let d = 0;
  for (let i = 0; i < xh.data.length; i++) d += (xh.data[i]! - x.data[i]!) ** 2;
  return Math.sqrt(d) / xNorm;
}

function transposeSmall(a: Matrix): Matrix {
  const out = new Float64Array(a.rows * a.cols);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) out[j * a.rows + i] = a.data[i * a.cols + j]!;
  return { rows: a.cols, cols: a.rows, data: out };
}
