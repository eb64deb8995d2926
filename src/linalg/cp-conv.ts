/**
 * Rank-R CP of a conv kernel reshaped to [T, S, K] (K = ∏k), fitted by ALS (cp-als.ts;
 * Lebedev et al. 2015), as the weights of a 1x1 → depthwise → 1x1 chain:
 * W[t, s, k] ≈ Σ_r A[t, r]·B[s, r]·C[k, r] with first = Bᵀ [R, S], depth = Cᵀ [R, K],
 * last = A [T, R]. Each rank-one term's scale λ_r is spread evenly over its three factors
 * (λ^⅓ each) so no factor is far from unit scale (fp16).
 *
 * Data-aware: with a Kronecker whitening Σ ≈ (L_S·L_Sᵀ) ⊗ (L_K·L_Kᵀ) of the patch second
 * moment, the output error is Σ_t ‖L_Sᵀ·ΔW_t·L_K‖²_F, so ALS runs on W'_t = L_Sᵀ·W_t·L_K and
 * the factors map back as B = L_S⁻ᵀ·B', C = L_K⁻ᵀ·C'. Then the last factor is refitted on
 * the full patch moments (refit.ts; mean error into the bias correction) or, anchored,
 * fitted through the fixed first two convs H: A = W·(X + δI)ᵀ·Hᵀ·(H·(Ĉ + δI)·Hᵀ)⁻¹, and
 * all three factors are refined on that same objective by ALS sweeps (cp-data-als.ts; the
 * Kronecker whitening only approximates the patch covariance: bench:cp-als measured 7–24%
 * lower data error on PP-OCRv4 det) as far as their work bound allows.
 */
import type { Rng } from '../util/rng.js';
import { isRank, notARank } from './checks.js';
import { anchoredError, fitThroughInputMap, meanEnergy, meanError, type AnchoredPatch } from './anchored.js';
import { cpAlsSync } from './cp-als.js';
import { chainInput, cpDataSweepCount } from './cp-data-als.js';
import { refineCpNdOnData } from './cpn-conv.js';
import { product, type SyncGemm } from './engine.js';
import { transpose, type Matrix } from './matrix.js';
import { refitLastFactor } from './refit.js';
import { solveUpperLeft } from './triangular.js';
import { chainFactorsSensitivity, stabilizeAls, type CpSensitivity, type Stabilized } from './cp-sensitivity.js';

export interface CpConvOptions {
  rng?: Rng;
  gemm?: SyncGemm;
  /** ALS sweeps and tolerance (cp-als.ts defaults when absent). */
  maxIter?: number;
  tol?: number;
  /** Lower Cholesky factors of a Kronecker whitening (L_K = I when absent): the data-aware fit. */
  whitening?: { ls: Matrix; lk?: Matrix };
  /** Patch second moment [D·D] (D = S·K) and mean [D]: the last factor is refitted on them. */
  patches?: { gram: Float64Array; mean?: Float64Array };
  /** Anchored patch moments and their damping: the last factor is fitted through them (before `patches`). */
  anchor?: { patch: AnchoredPatch; damp: number };
  /** false: no refit under the sensitivity bound and no data sweeps (a rough fit for searches; the passes never ship one). */
  stable?: boolean;
  /** With statistics: sweeps refining all three factors on the data (cp-data-als.ts); default cpDataSweepCount. */
  dataSweeps?: number;
}

export interface CpConv {
  /** The rank fitted (a request past T·S·K / max(T, S, K), where a CP is exact, is clamped). */
  rank: number;
  first: Float32Array;
  depth: Float32Array;
  last: Float32Array;
  /** ‖W − Ŵ‖_F / ‖W‖_F from the fp32 chain weights (not finite when the factors are not). */
  relError: number;
  /** The ALS's own relative error (in whitened coordinates when whitened); not finite: the fit failed, no factors. */
  alsError: number;
  converged: boolean;
  iterations: number;
  /** With patch statistics: the relative output error on them. */
  dataError?: number;
  /** Its denominator (the original output energy on the statistics): how groups' data errors combine. */
  dataDen?: number;
  biasDelta?: Float64Array;
  /** Sensitivity of the shipped chain (cp-sensitivity.ts; factors A = last, B = firstᵀ, C = depthᵀ). */
  sensitivity?: CpSensitivity;
  /** Present when the ALS fit was degenerate and refitted under the sensitivity bound; `bounded: false` (still degenerate): the passes decline it. */
  stabilized?: Stabilized;
  /** Sweeps that refined all three factors on the statistics (kept ones). */
  dataSweeps?: number;
}

/** CP of `kernel` ([T, S, K], fp32 as stored) at rank `rank`. */
export function cpConv(kernel: { data: Float32Array; shape: readonly [number, number, number] }, rank: number, opts: CpConvOptions = {}): CpConv {
  if (!isRank(rank)) throw new RangeError(`cpConv: ${notARank(rank)}`);
  const [T, S, K] = kernel.shape;
  const wd = Float64Array.from(kernel.data);
  const wh = opts.whitening;
  const target = wh ? whitenKernel(wd, T, S, K, wh.ls, wh.lk) : wd;
  const als = cpAlsSync({ data: target, shape: [T, S, K] }, rank, { rng: opts.rng, maxIter: opts.maxIter, tol: opts.tol, gemm: opts.gemm });
  const failed: CpConv = { rank: als.rank, first: new Float32Array(0), depth: new Float32Array(0), last: new Float32Array(0), relError: NaN, alsError: als.relError, converged: false, iterations: als.iterations };
  if (!Number.isFinite(als.relError)) return failed;
  // A degenerate fit (cancelling terms far larger than the kernel) is refitted under the
  // sensitivity bound, in the coordinates the ALS fitted (cp-sensitivity.ts).
  const stab = opts.stable === false ? undefined : stabilizeAls({ data: target, shape: [T, S, K] }, als, opts.gemm);
  const fit = stab?.fit ?? als;
  const R = fit.rank;
  const fa = fit.factors[0]!; // A [T, R]
  // B [S, R], C [K, R]; fitted in whitened coordinates, mapped back by L⁻ᵀ.
  const fb = wh ? solveUpperLeft(transpose(wh.ls), fit.factors[1]!) : fit.factors[1]!;
  const fc = wh?.lk ? solveUpperLeft(transpose(wh.lk), fit.factors[2]!) : fit.factors[2]!;
  const lambda: Float64Array | undefined = fit.weights;
  const first = new Float32Array(R * S); // Bᵀ [R, S]
  const depth = new Float32Array(R * K); // Cᵀ [R, K]
  const last = new Float32Array(T * R); // A [T, R]
  for (let r = 0; r < R; r++) {
    const na = colNorm(fa.data, T, R, r);
    const nb = colNorm(fb.data, S, R, r);
    const nc = colNorm(fc.data, K, R, r);
    const scale = Math.cbrt(Math.abs((lambda ? lambda[r]! : 1) * na * nb * nc));
    const sign = lambda && lambda[r]! < 0 ? -1 : 1;
    const ka = na === 0 ? 0 : (sign * scale) / na;
    const kb = nb === 0 ? 0 : scale / nb;
    const kc = nc === 0 ? 0 : scale / nc;
    for (let i = 0; i < T; i++) last[i * R + r] = fa.data[i * R + r]! * ka;
    for (let i = 0; i < S; i++) first[r * S + i] = fb.data[i * R + r]! * kb;
    for (let i = 0; i < K; i++) depth[r * K + i] = fc.data[i * R + r]! * kc;
  }
  const base: CpConv = {
    rank: R, first, depth, last, relError: cpError(kernel.data, T, S, K, first, depth, last, R), alsError: fit.relError, converged: fit.converged, iterations: fit.iterations,
    sensitivity: chainSensitivity(first, depth, last, T, S, K, R), stabilized: stab?.report,
  };
  if (!Number.isFinite(base.relError) || (!opts.patches && !opts.anchor)) return base;
  const D = S * K;
  const w: Matrix = { rows: T, cols: D, data: wd };
  const refined = refineOnData(base, w, T, S, K, opts);
  const { first: f1, depth: d1 } = refined;
  // H [R, D]: the chain before its last 1x1, H[r, c·K + k] = depth[r, k]·first[r, c].
  const hm = chainInput(f1, d1, R, S, K);
  const sweeps = refined.sweeps > 0 ? { dataSweeps: refined.sweeps } : {};
  if (opts.anchor) {
    const p = opts.anchor.patch;
    const refit = Float32Array.from(fitThroughInputMap(w, hm, p.gramHat, p.cross, opts.anchor.damp, opts.gemm).data);
    const wHat = product({ rows: T, cols: R, data: Float64Array.from(refit) }, hm, {}, opts.gemm);
    const e = anchoredError(w, wHat, p, opts.gemm);
    const den = e.den + meanEnergy(w, p.mean);
    return {
      ...base, ...sweeps, first: f1, depth: d1, last: refit, relError: cpError(kernel.data, T, S, K, f1, d1, refit, R), sensitivity: chainSensitivity(f1, d1, refit, T, S, K, R),
      dataError: den > 0 ? Math.sqrt(e.num / den) : 0, dataDen: den, biasDelta: meanError(w, wHat, p.mean, p.meanHat),
    };
  }
  const rf = refitLastFactor(w, hm, opts.patches!.gram, opts.patches!.mean, opts.gemm);
  const refit = Float32Array.from(rf.b);
  return {
    ...base, ...sweeps, first: f1, depth: d1, last: refit, relError: cpError(kernel.data, T, S, K, f1, d1, refit, R), sensitivity: chainSensitivity(f1, d1, refit, T, S, K, R),
    dataError: rf.dataError, dataDen: rf.den, biasDelta: rf.biasDelta,
  };
}

/**
 * The first two factors refined with the last on the data objective (cpn-conv.ts's
 * refinement with one kernel axis of K): the objective the last factor's fit minimises
 * (anchored: through X̂ to the original's outputs, damped; else the patch second moment).
 */
function refineOnData(base: CpConv, w: Matrix, T: number, S: number, K: number, opts: CpConvOptions): { first: Float32Array; depth: Float32Array; sweeps: number } {
  const sweeps = opts.stable === false ? 0 : opts.dataSweeps ?? cpDataSweepCount(T, S, K, base.rank);
  const stats = opts.anchor ? { anchor: opts.anchor } : { patches: opts.patches };
  const r = refineCpNdOnData({ ...base, spatial: [base.depth] }, w, [K], stats, { sweeps, gemm: opts.gemm });
  return { first: r.first, depth: r.spatial[0]!, sweeps: r.sweeps };
}

/** W'_t = L_Sᵀ·W_t·L_K for each output t (W_t the [S, K] slice; L_K = I when absent). */
export function whitenKernel(w: ArrayLike<number>, T: number, S: number, K: number, ls: Matrix, lk?: Matrix): Float64Array {
  const out = new Float64Array(T * S * K);
  const tmp = new Float64Array(S * K);
  const L = ls.data;
  for (let t = 0; t < T; t++) {
    const off = t * S * K;
    // tmp = L_Sᵀ·W_t: tmp[i, k] = Σ_{c ≥ i} L_S[c, i]·W_t[c, k] (L_S lower triangular).
    tmp.fill(0);
    for (let c = 0; c < S; c++) {
      for (let i = 0; i <= c; i++) {
        const l = L[c * S + i]!;
        if (l === 0) continue;
        for (let k = 0; k < K; k++) tmp[i * K + k] += l * w[off + c * K + k]!;
      }
    }
    if (!lk) { out.set(tmp, off); continue; }
    // out = tmp·L_K: out[i, k'] = Σ_{k ≥ k'} tmp[i, k]·L_K[k, k'].
    for (let i = 0; i < S; i++) for (let k = 0; k < K; k++) {
      const v = tmp[i * K + k]!;
      if (v === 0) continue;
      for (let k2 = 0; k2 <= k; k2++) out[off + i * K + k2] += v * lk.data[k * K + k2]!;
    }
  }
  return out;
}

function colNorm(d: ArrayLike<number>, rows: number, cols: number, c: number): number {
  let s = 0;
  for (let i = 0; i < rows; i++) s += d[i * cols + c]! * d[i * cols + c]!;
  return Math.sqrt(s);
}

/** ‖W − Σ_r a_r∘b_r∘c_r‖_F / ‖W‖_F from the stored (fp32) chain weights. */
export function cpError(w: Float32Array, T: number, S: number, K: number, first: Float32Array, depth: Float32Array, last: Float32Array, R: number): number {
  let num = 0;
  let den = 0;
  const bc = new Float64Array(R * S * K); // (b_r ⊗ c_r)[s, k]
  for (let r = 0; r < R; r++) for (let s = 0; s < S; s++) for (let k = 0; k < K; k++) bc[(r * S + s) * K + k] = first[r * S + s]! * depth[r * K + k]!;
  const row = new Float64Array(S * K);
  for (let t = 0; t < T; t++) {
    row.fill(0);
    for (let r = 0; r < R; r++) {
      const a = last[t * R + r]!;
      if (a === 0) continue;
      const off = r * S * K;
      for (let i = 0; i < S * K; i++) row[i] += a * bc[off + i]!;
    }
    for (let i = 0; i < S * K; i++) {
      const x = w[t * S * K + i]!;
      const d = x - row[i]!;
      num += d * d;
      den += x * x;
    }
  }
  return den === 0 ? 0 : Math.sqrt(num / den);
}

/** Sensitivity of the chain's CP: A = last [T, R], B = firstᵀ [S, R], C = depthᵀ [K, R]. */
export function chainSensitivity(first: Float32Array, depth: Float32Array, last: Float32Array, T: number, S: number, K: number, R: number): CpSensitivity {
  return chainFactorsSensitivity(R, [{ data: last, rows: T }, { data: first, rows: S, transposed: true }, { data: depth, rows: K, transposed: true }]);
}
