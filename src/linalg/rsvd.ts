/**
 * Truncated SVD: the randomized range finder of Halko, Martinsson & Tropp (2011,
 * Alg. 4.4 + 5.1) with oversampling, power iterations and re-orthonormalisation
 * after every product, or the exact SVD when the matrix is small.
 *
 * All heavy work is matrix products (yielded to the engine) in A's own dtype, so a
 * Float32 weight runs at ORT's fp32 speed; orthonormalisation (CholeskyQR2) and the
 * small SVDs run in fp64. Seeded: same input, options and seed → same output.
 */
import { LrError } from '../errors.js';
import type { Rng } from '../util/rng.js';
import { createRng } from '../util/rng.js';
import { checkRank } from './checks.js';
import { mm, runAsync, runSync, type GemmEngine, type GemmProgram } from './engine.js';
import { asFloat32, asFloat64, assertFinite, sliceCols, transpose, type Matrix } from './matrix.js';
import { cholQrBasis, choleskyQr2 } from './qr.js';
import { svd, type SvdResult } from './svd.js';

export interface TruncatedSvdOptions {
  /** Extra sample columns beyond the rank (HMT's p; default 10). */
  oversample?: number;
  /** Power (subspace) iterations q (default 2): sharpens slowly decaying spectra. */
  powerIters?: number;
  /** Random source for the test matrix; default createRng(seed). */
  rng?: Rng;
  /** Seed used when no rng is given (default 0). */
  seed?: number;
  /** 'auto' (default) uses the exact SVD when the matrix is small relative to the rank. */
  method?: 'auto' | 'exact' | 'randomized';
  /**
   * Warm start: an m×c guess of the leading left singular subspace (e.g. the previous
   * iterate in HOOI). The sketch starts from Aᵀ·start (completed with random columns),
   * so iterative callers keep refining one subspace instead of restarting at random.
   */
  start?: Matrix;
}

export interface AsyncSvdOptions extends TruncatedSvdOptions {
  /** Where products run (default: synchronous JS). */
  engine?: GemmEngine;
}

/**
 * Rank-`rank` truncated SVD as a gemm program (see engine.ts). `rank` must be a
 * positive integer (LrError 'rank'); ranks above min(m, n) are clamped, so the
 * result may have fewer than `rank` components (check s.length).
 */
export function* truncatedSvdProgram(a: Matrix, rank: number, opts: TruncatedSvdOptions = {}): GemmProgram<SvdResult> {
  assertFinite(a, 'truncated SVD input');
  const k = checkRank(rank, Math.min(a.rows, a.cols), 'truncated SVD');
  const l = Math.min(k + (opts.oversample ?? 10), Math.min(a.rows, a.cols));
  const small = Math.min(a.rows, a.cols);
  const exact = opts.method === 'exact' || (opts.method !== 'randomized' && (small <= 2 * l || small <= 64));
  if (exact) return truncate(svd(a), k);
  return yield* randomizedSvdProgram(a, k, l, opts.powerIters ?? 2, opts.rng ?? createRng(opts.seed ?? 0), opts.start);
}

/** Synchronous truncated SVD (JS products). */
export function truncatedSvdSync(a: Matrix, rank: number, opts: TruncatedSvdOptions = {}): SvdResult {
  return runSync(truncatedSvdProgram(a, rank, opts));
}

/** Truncated SVD with products on `opts.engine` (e.g. createOrtGemmEngine()). */
export function truncatedSvd(a: Matrix, rank: number, opts: AsyncSvdOptions = {}): Promise<SvdResult> {
  const program = truncatedSvdProgram(a, rank, opts);
  return opts.engine ? runAsync(program, opts.engine) : Promise.resolve(runSync(program));
}

/** Always the randomized path (still clamps the rank). */
export function randomizedSvd(a: Matrix, rank: number, opts: AsyncSvdOptions = {}): Promise<SvdResult> {
  return truncatedSvd(a, rank, { ...opts, method: 'randomized' });
}

export function randomizedSvdSync(a: Matrix, rank: number, opts: TruncatedSvdOptions = {}): SvdResult {
  return truncatedSvdSync(a, rank, { ...opts, method: 'randomized' });
}

function* randomizedSvdProgram(a: Matrix, k: number, l: number, q: number, rng: Rng, start?: Matrix): GemmProgram<SvdResult> {
  const f32 = a.data instanceof Float32Array;
  const work = (x: Matrix): Matrix => (f32 ? asFloat32(x) : asFloat64(x)); // operand dtype for products with A
  const omega: Matrix = { rows: a.cols, cols: l, data: f32 ? new Float32Array(a.cols * l) : new Float64Array(a.cols * l) };
  for (let i = 0; i < omega.data.length; i++) omega.data[i] = rng.normal();
  if (start) {
    if (start.rows !== a.rows) throw new LrError('numeric', `truncated SVD: start has ${start.rows} rows, matrix has ${a.rows}`);
    // Leading columns of Ω = Aᵀ·start, scaled like the Gaussian columns (norm √n) so Y stays well conditioned.
    const c = Math.min(start.cols, l);
    const z = yield* mm(a, work(c === start.cols ? start : sliceCols(start, 0, c)), { transA: true }); // n×c
    for (let j = 0; j < c; j++) {
      let nrm = 0;
      for (let i = 0; i < a.cols; i++) nrm += z.data[i * c + j]! ** 2;
      const f = nrm > 0 ? Math.sqrt(a.cols / nrm) : 0;
      if (f > 0) for (let i = 0; i < a.cols; i++) omega.data[i * l + j] = z.data[i * c + j]! * f;
    }
  }

  // Intermediate bases only need to be well conditioned (one CholeskyQR pass);
  // the final one must be orthonormal (CholeskyQR2).
  let qm = yield* (q === 0 ? choleskyQr2 : cholQrBasis)(yield* mm(a, omega)); // m×l basis of range(A·Ω)
  for (let it = 0; it < q; it++) {
    const z = yield* cholQrBasis(yield* mm(a, work(qm), { transA: true })); // n×l
    qm = yield* (it === q - 1 ? choleskyQr2 : cholQrBasis)(yield* mm(a, work(z)));
  }
  // B = Qᵀ·A (l×n). Its SVD via Bᵀ = Q₂·R (CholeskyQR2 again, products on the engine)
  // and the SVD of the small l×l R: B = Rᵀ·Q₂ᵀ = (V_R)·Σ·(Q₂·U_R)ᵀ.
  const bt = asFloat64(yield* mm(a, work(qm), { transA: true })); // n×l: Aᵀ·Q = Bᵀ
  const q2 = yield* choleskyQr2(bt);
  const r = asFloat64(yield* mm(q2, bt, { transA: true })); // l×l, R = Q₂ᵀ·Bᵀ
  const small = svd(r);
  const ur = sliceCols(small.u, 0, k);
  const vr = sliceCols(transpose(small.vt), 0, k);
  const u = asFloat64(yield* mm(qm, vr)); // m×k
  const vt = asFloat64(yield* mm(ur, q2, { transA: true, transB: true })); // k×n
  return { u, s: small.s.slice(0, k), vt };
}

/** Keeps the leading k components of a thin SVD. */
export function truncate(res: SvdResult, k: number): SvdResult {
  if (res.s.length <= k) return res;
  return {
    u: sliceCols(res.u, 0, k),
    s: res.s.slice(0, k),
    vt: { rows: k, cols: res.vt.cols, data: res.vt.data.slice(0, k * res.vt.cols) },
  };
}
