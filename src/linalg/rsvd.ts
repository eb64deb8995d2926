/**
 * Truncated SVD: the randomized range finder of Halko, Martinsson & Tropp (2011,
 * Alg. 4.4 + 5.1) with oversampling, power iterations and re-orthonormalisation
 * after every product, or the exact SVD when the matrix is small.
 *
 * All heavy work is matrix products (yielded to the engine) in A's own dtype, so a
 * Float32 weight runs at ORT's fp32 speed. Orthonormalisation is CholeskyQR: in fp64,
 * except that on an fp32 engine the fp32 blocks stay fp32 while they are well
 * conditioned (fp64 copies and fp64 products there cost as much as the big products);
 * the small SVD is fp64. Seeded: same input, options and seed → same output.
 */
import { LrError } from '../errors.js';
import type { Rng } from '../util/rng.js';
import { createRng } from '../util/rng.js';
import { checkRank } from './checks.js';
import { mm, runAsync, runSync, type GemmEngine, type GemmProgram, type SyncGemm } from './engine.js';
import { allFinite, asFloat32, asFloat64, assertFinite, sliceCols, transpose, type Matrix } from './matrix.js';
import { cholQrBasis, cholQrRowsF32, choleskyQr2 } from './qr.js';
import { svdFlops, svdProgram, type SvdResult } from './svd.js';

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
  const k = checkRank(rank, Math.min(a.rows, a.cols), 'truncated SVD');
  const { l, exact } = truncatedPath(a.rows, a.cols, k, opts);
  if (exact) {
    assertFinite(a, 'truncated SVD input');
    return truncate(yield* svdProgram(a), k);
  }
  // The randomized path checks A through its first product instead (see there).
  if (opts.start) assertFinite(opts.start, 'truncated SVD start');
  return yield* randomizedSvdProgram(a, k, l, powerItersOf(opts), opts.rng ?? createRng(opts.seed ?? 0), opts.start);
}

const powerItersOf = (opts: TruncatedSvdOptions): number => opts.powerIters ?? 2;

/** The sketch width l at rank k ≤ min(m, n), and whether the full SVD is taken instead (small or nearly full-rank matrices). */
function truncatedPath(m: number, n: number, k: number, opts: TruncatedSvdOptions): { l: number; exact: boolean } {
  const small = Math.min(m, n);
  const l = Math.min(k + (opts.oversample ?? 10), small);
  return { l, exact: opts.method === 'exact' || (opts.method !== 'randomized' && (small <= 2 * l || small <= 64)) };
}

/**
 * About how many flops truncatedSvdProgram spends on an m×n matrix at `rank` (default
 * oversampling and power iterations): svdFlops where it takes the exact path, else the
 * randomized one's products with A (2·m·n·l each, 2q + 2 of them) and its QRs and small SVD.
 */
export function truncatedSvdFlops(m: number, n: number, rank: number): number {
  const { l, exact } = truncatedPath(m, n, Math.min(rank, m, n), {});
  if (exact) return svdFlops(m, n);
  const q = powerItersOf({});
  return (2 * q + 2) * 2 * m * n * l + (2 * q + 3) * 4 * (m + n) * l * l + svdFlops(l, n);
}

/** Synchronous truncated SVD (products on `opts.gemm`, default JS). */
export function truncatedSvdSync(a: Matrix, rank: number, opts: TruncatedSvdOptions & { gemm?: SyncGemm } = {}): SvdResult {
  return runSync(truncatedSvdProgram(a, rank, opts), opts.gemm);
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

/*
 * The sketches are kept transposed, as wide l×m / l×n blocks with orthonormal rows:
 * every big product is then (wide block)·A or (wide block)·Aᵀ, which ORT/MLAS runs
 * 20–30% faster than A·(tall block) or Aᵀ·(tall block) on this machine (the pure-JS
 * kernel does not mind), and A is never copied or transposed. The maths is HMT's:
 * Qᵀ here is their Q transposed.
 */
function* randomizedSvdProgram(a: Matrix, k: number, l: number, q: number, rng: Rng, start?: Matrix): GemmProgram<SvdResult> {
  const f32 = a.data instanceof Float32Array;
  const work = (x: Matrix): Matrix => (f32 ? asFloat32(x) : asFloat64(x)); // operand dtype for products with A
  const n = a.cols;
  // Ω (n×l) drawn row by row as always (same seed, same test matrix), used as Ωᵀ.
  const omega: Matrix = { rows: n, cols: l, data: f32 ? new Float32Array(n * l) : new Float64Array(n * l) };
  for (let i = 0; i < omega.data.length; i++) omega.data[i] = rng.normal();
  const omegaT = transpose(omega);
  if (start) {
    if (start.rows !== a.rows) throw new LrError('numeric', `truncated SVD: start has ${start.rows} rows, matrix has ${a.rows}`);
    // Leading rows of Ωᵀ = startᵀ·A, scaled like the Gaussian rows (norm √n) so Y stays well conditioned.
    const c = Math.min(start.cols, l);
    const zt = yield* mm(work(c === start.cols ? start : sliceCols(start, 0, c)), a, { transA: true }); // c×n
    for (let j = 0; j < c; j++) {
      let nrm = 0;
      for (let i = 0; i < n; i++) nrm += zt.data[j * n + i]! ** 2;
      const f = nrm > 0 ? Math.sqrt(n / nrm) : 0;
      if (f > 0) for (let i = 0; i < n; i++) omegaT.data[j * n + i] = zt.data[j * n + i]! * f;
    }
  }

  // Intermediate bases only need to be well conditioned (one CholeskyQR pass);
  // the final one must be orthonormal (two passes).
  const yt = yield* mm(omegaT, a, { transB: true }); // l×m = (A·Ω)ᵀ
  // Every entry of A meets a nonzero Gaussian in A·Ω, so a NaN/Inf in A always shows
  // up in Y: checking the l×m product spares a scan of the (much larger) input.
  if (!allFinite(yt)) {
    assertFinite(a, 'truncated SVD input'); // names the entry
    throw new LrError('numeric', 'truncated SVD: A·Ω overflowed (entries too large for the working precision)');
  }
  let qt = yield* rowBasis(yt, q === 0); // Qᵀ: rows span range(A·Ω)
  for (let it = 0; it < q; it++) {
    const zt = yield* rowBasis(yield* mm(work(qt), a), false); // l×n = (Aᵀ·Q)ᵀ
    qt = yield* rowBasis(yield* mm(work(zt), a, { transB: true }), it === q - 1); // l×m = (A·Z)ᵀ
  }
  // B = Qᵀ·A (l×n). Its SVD via Bᵀ = Q₂·R (CholeskyQR2 on B's rows) and the SVD of
  // the small l×l R: B = Rᵀ·Q₂ᵀ = (V_R)·Σ·(Q₂·U_R)ᵀ.
  const b = yield* mm(work(qt), a);
  const q2t = yield* rowBasis(b, true); // Q₂ᵀ
  // Finishing products in the bases' own dtype: fp32 bases (fp32 engine) stay fp32.
  const like = (x: Matrix, ref: Matrix): Matrix => (ref.data instanceof Float32Array ? asFloat32(x) : asFloat64(x));
  const r = asFloat64(yield* mm(q2t, like(b, q2t), { transB: true })); // l×l, R = Q₂ᵀ·Bᵀ
  const small = yield* svdProgram(r);
  const ur = sliceCols(small.u, 0, k);
  const vr = sliceCols(transpose(small.vt), 0, k);
  const u = asFloat64(yield* mm(qt, like(vr, qt), { transA: true })); // m×k = Q·V_R
  const vt = asFloat64(yield* mm(like(ur, q2t), q2t, { transA: true })); // k×n = U_Rᵀ·Q₂ᵀ
  return { u, s: small.s.slice(0, k), vt };
}

/**
 * Orthonormal rows spanning the row space of a wide sketch W (l×p). A Float32 W only
 * arrives from an engine that multiplies fp32 natively (ORT); then CholeskyQR stays
 * fp32 unless W is too ill-conditioned for it (see cholQrRowsF32). Otherwise, and as
 * the fallback, the fp64 column routines run on Wᵀ (one CholeskyQR pass for
 * intermediate bases, CholeskyQR2 with its shifted and Householder fallbacks for final
 * ones); the two transposes of an l×p block are cheap next to either.
 */
function* rowBasis(w: Matrix, final: boolean): GemmProgram<Matrix> {
  if (w.data instanceof Float32Array) {
    const q = yield* cholQrRowsF32(w, final ? 2 : 1);
    if (q) return q;
  }
  return transpose(yield* (final ? choleskyQr2 : cholQrBasis)(transpose(w)));
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
