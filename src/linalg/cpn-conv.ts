/**
 * Rank-R CP of a conv kernel W [T, S, k1, …, kn] with every spatial axis a mode of its own
 * (the (n+2)-way CP; Lebedev et al. 2015 for n = 2), fitted by ALS (cp-als.ts), as the
 * weights of a chain 1x1 → depthwise along axis 1 → … → depthwise along axis n → 1x1:
 *   W[t, s, y1…yn] ≈ Σ_r A[t, r]·B[s, r]·Y1[y1, r]·…·Yn[yn, r]
 * with first = Bᵀ [R, S], spatial[i] = Y_iᵀ [R, k_i], last = A [T, R]; each term's weight
 * spread evenly over its n + 2 factors. With one axis it is conv-cp's 3-way chain; a 2-D
 * kernel goes through cp4-conv.ts (the chain conv-cp4 wrote before 1-D/3-D: same numbers).
 */
import type { Rng } from '../util/rng.js';
import { isRank, notARank } from './checks.js';
import { cpAlsSync } from './cp-als.js';
import { cp4Conv, cp4Kernel, cp4Sensitivity } from './cp4-conv.js';
import { balanceChain, chainDataSweeps, chainMap, chainObjective, CP_DATA_CG_ITERATIONS } from './cp-data-als.js';
import { chainFactorsSensitivity, SENSITIVITY_LIMIT, stabilizeAls, type CpSensitivity, type Stabilized } from './cp-sensitivity.js';
import type { SyncGemm } from './engine.js';
import type { LastFactorStats } from './last-factor.js';
import type { Matrix } from './matrix.js';

export interface CpNdConv {
  rank: number;
  /** [R, S]. */
  first: Float32Array;
  /** Per spatial axis: [R, k_i]. */
  spatial: Float32Array[];
  /** [T, R]. */
  last: Float32Array;
  relError: number;
  alsError: number;
  converged: boolean;
  iterations: number;
  sensitivity?: CpSensitivity;
  stabilized?: Stabilized;
}

/** The (n+2)-way CP of `kernel` ([T, S, k1, …, kn], fp32 as stored) at rank `rank`. */
export function cpNdConv(kernel: { data: Float32Array; shape: readonly number[] }, rank: number, opts: { rng?: Rng; gemm?: SyncGemm; maxIter?: number; tol?: number; stable?: boolean } = {}): CpNdConv {
  if (!isRank(rank)) throw new RangeError(`cpNdConv: ${notARank(rank)}`);
  const [T, S, ...ks] = kernel.shape as number[];
  if (ks.length === 2) {
    const f = cp4Conv({ data: kernel.data, shape: kernel.shape as [number, number, number, number] }, rank, opts);
    const { rows, cols, ...rest } = f;
    return { ...rest, spatial: [rows, cols] };
  }
  const x = { data: Float64Array.from(kernel.data), shape: [T!, S!, ...ks] };
  const als = cpAlsSync(x, rank, { rng: opts.rng, maxIter: opts.maxIter, tol: opts.tol, gemm: opts.gemm });
  const R = als.rank;
  if (!Number.isFinite(als.relError)) {
    const empty = new Float32Array(0);
    return { rank: R, first: empty, spatial: ks.map(() => empty), last: empty, relError: NaN, alsError: als.relError, converged: false, iterations: als.iterations };
  }
  // A degenerate fit is refitted under the sensitivity bound (cp-sensitivity.ts).
  const stab = opts.stable === false ? undefined : stabilizeAls(x, als, opts.gemm);
  const fit = stab?.fit ?? als;
  const fs = fit.factors as Matrix[];
  const N = fs.length;
  const first = new Float32Array(R * S!);
  const spatial = ks.map((k) => new Float32Array(R * k));
  const last = new Float32Array(T! * R);
  for (let r = 0; r < R; r++) {
    const norms = fs.map((f) => colNorm(f, r));
    const lambda = fit.weights[r]!;
    const scale = Math.abs(lambda * norms.reduce((p, q) => p * q, 1)) ** (1 / N);
    const sign = lambda < 0 ? -1 : 1;
    const k = norms.map((n) => (n === 0 ? 0 : scale / n));
    for (let i = 0; i < T!; i++) last[i * R + r] = sign * fs[0]!.data[i * R + r]! * k[0]!;
    for (let i = 0; i < S!; i++) first[r * S! + i] = fs[1]!.data[i * R + r]! * k[1]!;
    ks.forEach((ka, a) => { for (let i = 0; i < ka; i++) spatial[a]![r * ka + i] = fs[a + 2]!.data[i * R + r]! * k[a + 2]!; });
  }
  return {
    rank: R, first, spatial, last, relError: cpNdError(kernel.data, first, spatial, last, T!, S!, ks, R), alsError: fit.relError, converged: fit.converged, iterations: fit.iterations,
    sensitivity: cpNdSensitivity(first, spatial, last, T!, S!, ks, R), stabilized: stab?.report,
  };
}

/**
 * The chain's input-side factors (first, then each axis's) refined with its last on the
 * data objective its last factor is fitted on (`stats`: anchored or plain patch moments;
 * cp-data-als.ts), up to `sweeps` sweeps; the 3-way chain (cp-conv.ts) is the one-axis case. A sweep
 * whose CP is more degenerate than 1.1× the larger of SENSITIVITY_LIMIT and the start's
 * sensitivity ratio is not kept. `w` is the kernel [T, S·K]; returns the factors as the
 * chain ships them (terms balanced, fp32) and how many sweeps were kept (the caller fits
 * the last factor on them).
 */
export function refineCpNdOnData(f: Pick<CpNdConv, 'rank' | 'first' | 'spatial' | 'sensitivity'>, w: Matrix, ks: readonly number[], stats: LastFactorStats, o: { sweeps: number; gemm?: SyncGemm }): { first: Float32Array; spatial: Float32Array[]; sweeps: number } {
  const R = f.rank;
  const T = w.rows;
  const S = f.first.length / R;
  const dims = [S, ...ks];
  const unchanged = { first: f.first, spatial: f.spatial, sweeps: 0 };
  if (o.sweeps <= 0 || R === 0) return unchanged;
  const { obj, lastFit } = chainObjective(w, R, stats, o.gemm);
  const modes = [Float64Array.from(f.first), ...f.spatial.map((v) => Float64Array.from(v))];
  const start = { modes, last: Float64Array.from(lastFit(cpNdPrefix(f.first, f.spatial, S, ks, R)).data) };
  const limit = 1.1 * Math.max(SENSITIVITY_LIMIT, f.sensitivity?.ratio ?? 0);
  const accept = (c: { modes: Float64Array[]; last: Float64Array }): boolean => cpNdSensitivity(c.modes[0]!, c.modes.slice(1), c.last, T, S, ks, R).ratio <= limit;
  const out = chainDataSweeps(start, T, dims, obj, lastFit, { sweeps: o.sweeps, cgIterations: CP_DATA_CG_ITERATIONS, gemm: o.gemm, accept });
  if (out.sweeps === 0) return unchanged;
  balanceChain(out.factors, T, dims);
  const [first, ...spatial] = out.factors.modes.map((v) => Float32Array.from(v));
  return { first: first!, spatial, sweeps: out.sweeps };
}

/** Sensitivity of the chain's CP: A = last [T, R], B = firstᵀ, Y_i = spatial[i]ᵀ. */
export function cpNdSensitivity(first: ArrayLike<number>, spatial: readonly ArrayLike<number>[], last: ArrayLike<number>, T: number, S: number, ks: readonly number[], R: number): CpSensitivity {
  if (ks.length === 2) return cp4Sensitivity(first, spatial[0]!, spatial[1]!, last, T, S, ks[0]!, ks[1]!, R);
  return chainFactorsSensitivity(R, [{ data: last, rows: T }, { data: first, rows: S, transposed: true }, ...spatial.map((d, i) => ({ data: d, rows: ks[i]!, transposed: true }))]);
}

/** ‖W − Ŵ‖_F / ‖W‖_F of the chain's (fp32) factors. */
export function cpNdError(w: ArrayLike<number>, first: ArrayLike<number>, spatial: readonly ArrayLike<number>[], last: ArrayLike<number>, T: number, S: number, ks: readonly number[], R: number): number {
  const got = cpNdKernel(first, spatial, last, T, S, ks, R);
  let num = 0;
  let den = 0;
  for (let i = 0; i < w.length; i++) {
    num += (w[i]! - got[i]!) ** 2;
    den += w[i]! ** 2;
  }
  return den === 0 ? 0 : Math.sqrt(num / den);
}

/** The chain before its last 1x1 as a map on patches, H [R, S·K]: H[r, (s, y1…yn)] = first[r, s]·Π spatial[i][r, y_i]. */
export function cpNdPrefix(first: ArrayLike<number>, spatial: readonly ArrayLike<number>[], S: number, ks: readonly number[], R: number): Matrix {
  return chainMap([first, ...spatial], R, [S, ...ks]);
}

/** The kernel [T, S, k…] the chain computes (the inverse for --stages). */
export function cpNdKernel(first: ArrayLike<number>, spatial: readonly ArrayLike<number>[], last: ArrayLike<number>, T: number, S: number, ks: readonly number[], R: number): Float32Array {
  if (ks.length === 2) return cp4Kernel(first, spatial[0]!, spatial[1]!, last, T, S, ks[0]!, ks[1]!, R);
  const h = cpNdPrefix(first, spatial, S, ks, R);
  const D = h.cols;
  const w = new Float64Array(T * D);
  for (let t = 0; t < T; t++) for (let r = 0; r < R; r++) {
    const a = last[t * R + r]!;
    if (a === 0) continue;
    for (let i = 0; i < D; i++) w[t * D + i] += a * h.data[r * D + i]!;
  }
  return Float32Array.from(w);
}

function colNorm(f: Matrix, c: number): number {
  let s = 0;
  for (let i = 0; i < f.rows; i++) s += f.data[i * f.cols + c]! ** 2;
  return Math.sqrt(s);
}
