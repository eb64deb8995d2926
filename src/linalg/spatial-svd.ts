/**
 * Spatial SVD of a 2-D conv kernel (Jaderberg et al. 2014, scheme 2): W [T, S, kh, kw]
 * reshaped to M [S·kh, T·kw] with M[s·kh + y, t·kw + x] = W[t, s, y, x] and truncated,
 * M ≈ Aᵀ·B with A [R, S·kh] (a kh×1 conv S→R) and B [R, T·kw] (a 1×kw conv R→T):
 * W'[t, s, y, x] = Σ_r B[r, t·kw + x]·A[r, s·kh + y]. The weight-only fit is Eckart–Young.
 *
 * Data-aware: a patch p [D] (D = S·kh·kw, index i·kw + x with i = s·kh + y, the im2col
 * order of calib/stats.ts) gives y = W·p, and with the quadratic objective
 *   f(Ŵ) = tr(Ŵ·G·Ŵᵀ) − 2·⟨Ŵ, Rm⟩
 * (plain: G = C + δI, Rm = W·G for the patch covariance C; anchored: G = Ĉ + δI,
 * Rm = W·(X + δI)ᵀ, see anchored.ts) the factors are fitted by alternating least squares:
 *  - start: when G ≈ G_I ⊗ G_X (rows i, columns x) the error is Σ_t ‖L_Iᵀ·ΔM_t·L_X‖²_F
 *    (ΔM_t the [S·kh, kw] slice of output t), so the truncated SVD of the two-side
 *    whitened M is optimal for that approximation (given as Cholesky factors);
 *  - B-step: Ŵ = B̃·H_A with H_A [(r, x), D], H_A[(r, x), i·kw + x'] = A[r, i]·δ(x, x'),
 *    so B̃ = Rm·H_Aᵀ·(H_A·G·H_Aᵀ)⁻¹ in closed form (the last factor's refit of refit.ts);
 *  - A-step: the normal equations of A given B, L(A) = Σ_x (Q·H_A·G)[(r, x), i·kw + x] with
 *    Q = B_p·B_pᵀ (B_p [(r, x), t]), solved by conjugate gradients warm-started at the
 *    current A and preconditioned by the Kronecker approximation (exact when G is one),
 *    so each sweep lowers f.
 * The output mean error goes into the bias correction. Pure numerics: no ONNX here.
 */
import { anchoredError, meanEnergy, meanError } from './anchored.js';
import { isRank, notARank } from './checks.js';
import { product, type SyncGemm } from './engine.js';
import { relativeDiff, transpose, type Matrix } from './matrix.js';
import { truncatedSvdSync } from './rsvd.js';
import { singularValues } from './svd.js';
import { solveUpperLeft } from './triangular.js';
import { dot } from './cg.js';
import { aStep, bStep, kroneckerPreconditioner, objectiveOf, patchCovariance, rowBlocks, type AlsStatistics } from './spatial-svd-als.js';

/** A 2-D conv kernel [T, S, kh, kw] (group 1), fp32 as stored. */
export interface SpatialKernel {
  data: Float32Array;
  shape: readonly [number, number, number, number];
}

export interface SpatialSvdOptions extends AlsStatistics {
  gemm?: SyncGemm;
  seed?: number;
  /**
   * Lower Cholesky factors of a Kronecker weighting G_I ⊗ G_X of the patch space: `rows`
   * [S·kh] (or [S], then expanded as L_S ⊗ I_kh), `cols` [kw] (I when absent). The start
   * is then the truncated SVD of the whitened M instead of M.
   */
  whitening?: { rows: Matrix; cols?: Matrix };
  /** ALS sweeps after the start (0: only the closed-form refit of B). Default 4. */
  sweeps?: number;
  /** Conjugate-gradient iterations per A-step. Default 12. */
  cgIters?: number;
}

export interface SpatialSvd {
  /** The rank fitted (requests past min(S·kh, T·kw) are clamped). */
  rank: number;
  /** A as the first conv's weight [R, S, kh, 1]. */
  first: Float32Array;
  /** B as the second conv's weight [T, R, 1, kw]. */
  second: Float32Array;
  /** ‖W − Ŵ‖_F / ‖W‖_F from the fp32 factors. */
  relError: number;
  /** With patch statistics: the relative output error on them (after the bias correction). */
  dataError?: number;
  biasDelta?: Float64Array;
  /** ALS sweeps run. */
  sweeps: number;
  /** f after each B-step (start refit first): non-increasing. */
  objective?: number[];
}

/** M [S·kh, T·kw] of a kernel: M[s·kh + y, t·kw + x] = W[t, s, y, x]. */
export function spatialMatrix(k: SpatialKernel): Matrix {
  const [T, S, kh, kw] = k.shape;
  const I = S * kh;
  const n = T * kw;
  const data = new Float64Array(I * n);
  for (let t = 0; t < T; t++) for (let i = 0; i < I; i++) for (let x = 0; x < kw; x++) data[i * n + t * kw + x] = k.data[(t * I + i) * kw + x]!;
  return { rows: I, cols: n, data };
}

/** Singular values of M (descending) and ‖W‖²_F: what the rank policies read. */
export function spatialSpectrum(k: SpatialKernel): { sigma: Float64Array; total: number } {
  let total = 0;
  for (let i = 0; i < k.data.length; i++) total += k.data[i]! * k.data[i]!;
  return { sigma: singularValues(spatialMatrix(k)), total };
}

/** The kernel [T, S, kh, kw] the two convs compute: W[t, s, y, x] = Σ_r second[t, r, x]·first[r, s, y]. */
export function spatialKernel(first: ArrayLike<number>, second: ArrayLike<number>, T: number, S: number, kh: number, kw: number, R: number): Float32Array {
  const I = S * kh;
  const w = new Float32Array(T * I * kw);
  const acc = new Float64Array(I * kw);
  for (let t = 0; t < T; t++) {
    acc.fill(0);
    for (let r = 0; r < R; r++) {
      for (let x = 0; x < kw; x++) {
        const b = second[(t * R + r) * kw + x]!;
        if (b === 0) continue;
        for (let i = 0; i < I; i++) acc[i * kw + x] += b * first[r * I + i]!;
      }
    }
    for (let j = 0; j < I * kw; j++) w[t * I * kw + j] = acc[j]!;
  }
  return w;
}

/** Rank-R spatial SVD of `kernel`, weight-only or fitted to the patch statistics. */
export function spatialSvd(kernel: SpatialKernel, rank: number, opts: SpatialSvdOptions = {}): SpatialSvd {
  if (!isRank(rank)) throw new RangeError(`spatialSvd: ${notARank(rank)}`);
  const [T, S, kh, kw] = kernel.shape;
  const I = S * kh;
  const D = I * kw;
  const sync = opts.gemm;
  const m = spatialMatrix(kernel);
  // Start: the (whitened) truncated SVD, factors mapped back through the whitening.
  const wh = opts.whitening && { rows: opts.whitening.rows.rows === I ? opts.whitening.rows : kronIdentity(opts.whitening.rows, kh), cols: opts.whitening.cols };
  const target = wh ? whitenSides(m, wh.rows, wh.cols, T, kw) : m;
  const f = truncatedSvdSync(target, Math.min(rank, I, T * kw), { seed: opts.seed ?? 0, gemm: sync });
  const R = f.s.length;
  let a: Matrix = { rows: R, cols: I, data: new Float64Array(R * I) };
  let b: Matrix = { rows: R, cols: T * kw, data: new Float64Array(R * T * kw) };
  for (let r = 0; r < R; r++) {
    const sq = Math.sqrt(f.s[r]!);
    for (let i = 0; i < I; i++) a.data[r * I + i] = f.u.data[i * f.u.cols + r]! * sq;
    for (let j = 0; j < T * kw; j++) b.data[r * T * kw + j] = f.vt.data[r * f.vt.cols + j]! * sq;
  }
  if (wh) {
    // A = (L_I⁻ᵀ·A'ᵀ)ᵀ; B rows (r, t) times L_X⁻¹ on x.
    a = transpose(solveUpperLeft(transpose(wh.rows), transpose(a)));
    if (wh.cols) b = { rows: R, cols: T * kw, data: transpose(solveUpperLeft(transpose(wh.cols), transpose({ rows: R * T, cols: kw, data: b.data }))).data };
  }
  const w: Matrix = { rows: T, cols: D, data: Float64Array.from(kernel.data) };
  const obj = objectiveOf(w, opts);
  let sweeps = 0;
  let objective: number[] | undefined;
  if (obj) {
    objective = [];
    const gRows = rowBlocks(obj.g, I, kw);
    const pre = kroneckerPreconditioner(obj.g, I, kw);
    const maxSweeps = opts.sweeps ?? 4;
    b = bStep(a, obj, gRows, T, kw, objective, sync);
    for (; sweeps < maxSweeps; sweeps++) {
      a = aStep(a, b, obj, gRows, pre, T, kw, opts.cgIters ?? 12, sync);
      const before = objective[objective.length - 1]!;
      b = bStep(a, obj, gRows, T, kw, objective, sync);
      const after = objective[objective.length - 1]!;
      // Stop when a sweep gains less than 1e-7 of the output energy scale.
      if (before - after <= 1e-7 * Math.abs(obj.scale)) { sweeps++; break; }
    }
  }
  balance(a, b, T, kw);
  const first = Float32Array.from(a.data);
  const second = new Float32Array(T * R * kw);
  for (let r = 0; r < R; r++) for (let t = 0; t < T; t++) for (let x = 0; x < kw; x++) second[(t * R + r) * kw + x] = b.data[r * T * kw + t * kw + x]!;
  const approx = spatialKernel(first, second, T, S, kh, kw, R);
  const out: SpatialSvd = { rank: R, first, second, relError: relativeDiff(kernel.data, approx), sweeps, objective };
  if (!obj) return out;
  const wHat: Matrix = { rows: T, cols: D, data: Float64Array.from(approx) };
  return { ...out, ...dataErrors(w, wHat, opts, sync) };
}

/** L ⊗ I_k for lower L [n, n]: index c·k + y. */
function kronIdentity(l: Matrix, k: number): Matrix {
  const n = l.rows;
  const N = n * k;
  const data = new Float64Array(N * N);
  for (let c = 0; c < n; c++) for (let c2 = 0; c2 < n; c2++) {
    const v = l.data[c * n + c2]!;
    if (v !== 0) for (let y = 0; y < k; y++) data[(c * k + y) * N + c2 * k + y] = v;
  }
  return { rows: N, cols: N, data };
}

/** L_Iᵀ·M·(I_T ⊗ L_X) for M [I, T·kw] (L_X = I when absent). */
function whitenSides(m: Matrix, li: Matrix, lx: Matrix | undefined, T: number, kw: number): Matrix {
  const left = product(li, m, { transA: true });
  if (!lx) return left;
  // Rows (i, t) of length kw times L_X.
  const r = product({ rows: m.rows * T, cols: kw, data: left.data }, lx);
  return { rows: m.rows, cols: m.cols, data: r.data };
}

/** Scales A's row r and B's row r to equal norms (the product is unchanged): factors near one scale suit fp16. */
export function balance(a: Matrix, b: Matrix, T: number, kw: number): void {
  const I = a.cols;
  const n = T * kw;
  for (let r = 0; r < a.rows; r++) {
    const na = Math.sqrt(dot(a.data.subarray(r * I, (r + 1) * I), a.data.subarray(r * I, (r + 1) * I)));
    const nb = Math.sqrt(dot(b.data.subarray(r * n, (r + 1) * n), b.data.subarray(r * n, (r + 1) * n)));
    if (!(na > 0) || !(nb > 0)) continue;
    const k = Math.sqrt(nb / na);
    for (let i = 0; i < I; i++) a.data[r * I + i] *= k;
    for (let j = 0; j < n; j++) b.data[r * n + j] /= k;
  }
}

/** Output errors of Ŵ on the statistics and the bias correction. */
export function dataErrors(w: Matrix, wHat: Matrix, opts: SpatialSvdOptions, sync: SyncGemm | undefined): Pick<SpatialSvd, 'dataError' | 'biasDelta'> {
  const D = w.cols;
  if (opts.anchor) {
    const p = opts.anchor;
    const e = anchoredError(w, wHat, p, sync);
    const den = e.den + meanEnergy(w, p.mean);
    return { dataError: den > 0 ? Math.sqrt(e.num / den) : 0, biasDelta: meanError(w, wHat, p.mean, p.meanHat) };
  }
  const st = opts.patches!;
  const c = patchCovariance(st, D);
  const dw: Matrix = { rows: w.rows, cols: D, data: new Float64Array(w.data.length) };
  for (let j = 0; j < dw.data.length; j++) dw.data[j] = w.data[j]! - wHat.data[j]!;
  const quad = (m: Matrix): number => dot(product(m, { rows: D, cols: D, data: c.cov }, {}, sync).data, m.data);
  const num = Math.max(quad(dw), 0);
  // Centered: the error after the bias correction against the uncentered output energy.
  const den = quad(w) + (c.centered ? meanEnergy(w, st.mean!) : 0);
  const out: Pick<SpatialSvd, 'dataError' | 'biasDelta'> = { dataError: den > 0 ? Math.sqrt(num / den) : 0 };
  if (st.mean) out.biasDelta = meanError(w, wHat, st.mean, st.mean);
  return out;
}
