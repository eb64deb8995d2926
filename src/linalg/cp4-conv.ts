/**
 * Rank-R 4-way CP of a 2-D conv kernel W [T, S, kh, kw], fitted by ALS (cp-als.ts;
 * Lebedev et al. 2015, the 4-way variant), as the weights of a
 * 1x1 → depthwise kh×1 → depthwise 1×kw → 1x1 chain:
 *   W[t, s, y, x] ≈ Σ_r A[t, r]·B[s, r]·Y[y, r]·X[x, r]
 * with first = Bᵀ [R, S], rows = Yᵀ [R, kh], cols = Xᵀ [R, kw], last = A [T, R]. Each
 * rank-one term's weight λ_r is spread evenly over its four factors (λ^¼ each, after the
 * columns are normalised) so no factor is far from unit scale (fp16).
 * A data-aware last factor is fitted by the caller (last-factor.ts, through cp4Prefix).
 * A degenerate ALS fit (sensitivity ratio above SENSITIVITY_LIMIT) is refitted under the
 * sensitivity bound first, as in cp-conv.ts (a refit that misses the bound is reported, and
 * the passes decline that rank).
 */
import type { Rng } from '../util/rng.js';
import { isRank, notARank } from './checks.js';
import { cpAlsSync } from './cp-als.js';
import { chainFactorsSensitivity, stabilizeAls, type CpSensitivity, type Stabilized } from './cp-sensitivity.js';
import type { SyncGemm } from './engine.js';
import { chainMap } from './cp-data-als.js';
import { relativeDiff, type Matrix } from './matrix.js';

export interface Cp4ConvOptions {
  rng?: Rng;
  gemm?: SyncGemm;
  maxIter?: number;
  tol?: number;
  /** false: no refit under the sensitivity bound (a rough fit for searches; the passes never ship one). */
  stable?: boolean;
}

export interface Cp4Conv {
  /** The rank fitted (clamped past T·S·kh·kw / max(T, S, kh, kw), where a CP is exact). */
  rank: number;
  first: Float32Array;
  rows: Float32Array;
  cols: Float32Array;
  last: Float32Array;
  /** ‖W − Ŵ‖_F / ‖W‖_F from the fp32 chain weights (not finite when the fit failed). */
  relError: number;
  /** The ALS's own relative error; not finite: the fit failed, no factors. */
  alsError: number;
  converged: boolean;
  iterations: number;
  /** Sensitivity of the chain's CP (cp-sensitivity.ts; A = last, B = firstᵀ, Y = rowsᵀ, X = colsᵀ). */
  sensitivity?: CpSensitivity;
  /** Present when the ALS fit was degenerate and refitted under the sensitivity bound; `bounded: false` (still degenerate): the passes decline it. */
  stabilized?: Stabilized;
}

/** The 4-way CP of `kernel` ([T, S, kh, kw], fp32 as stored) at rank `rank`. */
export function cp4Conv(kernel: { data: Float32Array; shape: readonly [number, number, number, number] }, rank: number, opts: Cp4ConvOptions = {}): Cp4Conv {
  if (!isRank(rank)) throw new RangeError(`cp4Conv: ${notARank(rank)}`);
  const [T, S, kh, kw] = kernel.shape;
  const x = { data: Float64Array.from(kernel.data), shape: [T, S, kh, kw] };
  const als = cpAlsSync(x, rank, { rng: opts.rng, maxIter: opts.maxIter, tol: opts.tol, gemm: opts.gemm });
  const R = als.rank;
  const empty = new Float32Array(0);
  if (!Number.isFinite(als.relError)) {
    return { rank: R, first: empty, rows: empty, cols: empty, last: empty, relError: NaN, alsError: als.relError, converged: false, iterations: als.iterations };
  }
  // A degenerate fit is refitted under the sensitivity bound (cp-sensitivity.ts).
  const stab = opts.stable === false ? undefined : stabilizeAls(x, als, opts.gemm);
  const fit = stab?.fit ?? als;
  const [fa, fb, fy, fx] = fit.factors as [Matrix, Matrix, Matrix, Matrix];
  const first = new Float32Array(R * S);
  const rows = new Float32Array(R * kh);
  const cols = new Float32Array(R * kw);
  const last = new Float32Array(T * R);
  for (let r = 0; r < R; r++) {
    const norms = [fa, fb, fy, fx].map((f) => colNorm(f, r));
    const lambda = fit.weights[r]!;
    const scale = Math.sqrt(Math.sqrt(Math.abs(lambda * norms.reduce((p, q) => p * q, 1))));
    const sign = lambda < 0 ? -1 : 1;
    const k = norms.map((n) => (n === 0 ? 0 : scale / n));
    for (let i = 0; i < T; i++) last[i * R + r] = sign * fa.data[i * R + r]! * k[0]!;
    for (let i = 0; i < S; i++) first[r * S + i] = fb.data[i * R + r]! * k[1]!;
    for (let i = 0; i < kh; i++) rows[r * kh + i] = fy.data[i * R + r]! * k[2]!;
    for (let i = 0; i < kw; i++) cols[r * kw + i] = fx.data[i * R + r]! * k[3]!;
  }
  return {
    rank: R, first, rows, cols, last, relError: cp4Error(kernel.data, first, rows, cols, last, T, S, kh, kw, R), alsError: fit.relError, converged: fit.converged, iterations: fit.iterations,
    sensitivity: cp4Sensitivity(first, rows, cols, last, T, S, kh, kw, R), stabilized: stab?.report,
  };
}

/** Sensitivity of the chain's 4-way CP: A = last [T, R], B = firstᵀ, Y = rowsᵀ, X = colsᵀ. */
export function cp4Sensitivity(first: ArrayLike<number>, rows: ArrayLike<number>, cols: ArrayLike<number>, last: ArrayLike<number>, T: number, S: number, kh: number, kw: number, R: number): CpSensitivity {
  return chainFactorsSensitivity(R, [{ data: last, rows: T }, { data: first, rows: S, transposed: true }, { data: rows, rows: kh, transposed: true }, { data: cols, rows: kw, transposed: true }]);
}

/** ‖W − Ŵ‖_F / ‖W‖_F of the chain's (fp32) factors. */
export function cp4Error(w: ArrayLike<number>, first: ArrayLike<number>, rows: ArrayLike<number>, cols: ArrayLike<number>, last: ArrayLike<number>, T: number, S: number, kh: number, kw: number, R: number): number {
  return relativeDiff(w, cp4Kernel(first, rows, cols, last, T, S, kh, kw, R));
}

/** The chain before its last 1x1 as a map on patches, H [R, S·kh·kw]: H[r, (s, y, x)] = first[r, s]·rows[r, y]·cols[r, x]. */
export function cp4Prefix(first: ArrayLike<number>, rows: ArrayLike<number>, cols: ArrayLike<number>, S: number, kh: number, kw: number, R: number): Matrix {
  return chainMap([first, rows, cols], R, [S, kh, kw]);
}

/** The kernel [T, S, kh, kw] the chain computes: Σ_r last[t, r]·first[r, s]·rows[r, y]·cols[r, x] (the inverse for --stages). */
export function cp4Kernel(first: ArrayLike<number>, rows: ArrayLike<number>, cols: ArrayLike<number>, last: ArrayLike<number>, T: number, S: number, kh: number, kw: number, R: number): Float32Array {
  const D = S * kh * kw;
  const h = cp4Prefix(first, rows, cols, S, kh, kw, R).data;
  const w = new Float64Array(T * D);
  for (let t = 0; t < T; t++) for (let r = 0; r < R; r++) {
    const a = last[t * R + r]!;
    if (a === 0) continue;
    for (let i = 0; i < D; i++) w[t * D + i] += a * h[r * D + i]!;
  }
  return Float32Array.from(w);
}

function colNorm(f: Matrix, c: number): number {
  let s = 0;
  for (let i = 0; i < f.rows; i++) s += f.data[i * f.cols + c]! ** 2;
  return Math.sqrt(s);
}
