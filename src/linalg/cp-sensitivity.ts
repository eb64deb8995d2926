/**
 * Sensitivity of a CP decomposition (Phan et al. 2020, "Stable low-rank tensor
 * decomposition for compression of convolutional neural network", ECCV): how much the
 * reconstruction X̂ = Σ_r ∘_n F_n[:, r] moves when every factor entry is perturbed by
 * i.i.d. noise of variance σ², per unit σ²:
 *
 *   ss = lim E‖X̂(θ) − X̂(θ + δ)‖² / σ² = Σ_n I_n · Σ_r Π_{m≠n} ‖F_m[:, r]‖²
 *      = Σ_n I_n · tr(⊛_{m≠n} F_mᵀF_m)
 *
 * (a perturbation δF_n of mode n moves X̂ by δF_n·KR(F_m, m ≠ n)ᵀ, of expected squared
 * norm σ²·I_n·‖KR(F_m, m ≠ n)‖²_F; for a 3-way [[A, B, C]] of size I×J×K this is
 * K·tr(AᵀA ⊛ BᵀB) + J·tr(AᵀA ⊛ CᵀC) + I·tr(BᵀB ⊛ CᵀC)).
 *
 * ss has units of ‖X̂‖^(2(N−1)/N), so it is judged relative to the CP's own norm: the
 * `ratio` divides it by (Σ_n I_n)·R^(1/N)·‖X̂‖^(2(N−1)/N), the largest ss of a CP whose R
 * rank-one terms are mutually orthogonal (no cancellation) with balanced scaling (each
 * factor column of norm λ_r^(1/N)): then Σ_r λ_r² = ‖X̂‖² and, by the power-mean
 * inequality, Σ_r λ_r^(2(N−1)/N) ≤ R^(1/N)·‖X̂‖^(2(N−1)/N). A ratio well above 1 means
 * rank-one terms much larger than X̂ cancel each other: the degenerate CP of Phan et al.
 *
 * The second half is the refit under a sensitivity bound: ALS on
 * ‖X − X̂‖² + μ·ss, whose mode-n update is a ridge with a per-component weight
 * (ss is quadratic in each factor's columns: Σ_r d_{n,r}·‖F_n[:, r]‖² + terms without F_n,
 * d_{n,r} = Σ_{k≠n} I_k·Π_{m∉{k,n}} ‖F_m[:, r]‖²), with the smallest μ of a geometric
 * ladder (refined by bisection) whose fit has ratio ≤ the bound: the penalised form of the
 * paper's minimal-sensitivity problem (min ss subject to the approximation error), which
 * keeps as much of the fit as the bound allows.
 */
import { cholesky, choleskyWithRidge } from './cholesky.js';
import { product, type SyncGemm } from './engine.js';
import { gemm } from './gemm.js';
import type { Matrix } from './matrix.js';
import { solveLowerLeft, solveUpperLeft } from './triangular.js';
import { khatriRao, tensorNorm, unfold, type Tensor } from './tensor.js';
import { cpAlsFlops, type CpAlsResult } from './cp-als.js';

export interface CpSensitivity {
  /** ss = Σ_n I_n·Σ_r Π_{m≠n} ‖F_m[:, r]‖² (Phan et al. 2020). */
  ss: number;
  /** ‖X̂‖_F of the CP itself. */
  norm: number;
  /** ss / ((Σ_n I_n)·R^(1/N)·‖X̂‖^(2(N−1)/N)): at most 1 for orthogonal, balanced terms. */
  ratio: number;
}

/**
 * Ratio above which a CP counts as degenerate and is refitted: 2 means its rank-one terms
 * are larger than any non-cancelling CP of the same norm allows by that factor in ss. For
 * the classic two-term degeneracy c‖X̂‖·(a∘b∘c − a'∘b'∘c') (3-way) the ratio is about
 * 1.59·c^(4/3), so 2 is crossed when the cancelling terms exceed ~1.2‖X̂‖ each; fits of
 * well-separated terms stay below 1 (orthogonal) or near it.
 */
export const SENSITIVITY_LIMIT = 2;

/** Column squared norms of each factor: [n][r]. */
function columnSquares(factors: readonly Matrix[]): Float64Array[] {
  return factors.map((f) => {
    const R = f.cols;
    const out = new Float64Array(R);
    for (let i = 0; i < f.rows; i++) for (let r = 0; r < R; r++) out[r]! += f.data[i * R + r]! ** 2;
    return out;
  });
}

/** FᵀF (R×R). */
function gram(f: Matrix): Float64Array {
  return gemm(f, f, { transA: true }).data as Float64Array;
}

/** ‖Σ_r ∘_n F_n[:, r]‖_F from the Hadamard product of the factors' Grams. */
export function cpNorm(factors: readonly Matrix[]): number {
  const R = factors[0]!.cols;
  const h = new Float64Array(R * R).fill(1);
  for (const f of factors) {
    const g = gram(f);
    for (let i = 0; i < h.length; i++) h[i]! *= g[i]!;
  }
  let s = 0;
  for (let i = 0; i < h.length; i++) s += h[i]!;
  return Math.sqrt(Math.max(0, s));
}

/** ss of the CP Σ_r ∘_n F_n[:, r] (factors I_n × R, scale in the columns). */
export function cpSs(factors: readonly Matrix[]): number {
  const sq = columnSquares(factors);
  const R = factors[0]!.cols;
  let ss = 0;
  factors.forEach((f, n) => {
    let t = 0;
    for (let r = 0; r < R; r++) {
      let p = 1;
      for (let m = 0; m < factors.length; m++) if (m !== n) p *= sq[m]![r]!;
      t += p;
    }
    ss += f.rows * t;
  });
  return ss;
}

/** The reference ss of (Σ_n I_n)·R^(1/N)·norm^(2(N−1)/N) (see the file's comment). */
export function ssReference(dims: readonly number[], R: number, norm: number): number {
  const N = dims.length;
  const sum = dims.reduce((a, b) => a + b, 0);
  return sum * Math.pow(R, 1 / N) * Math.pow(norm, (2 * (N - 1)) / N);
}

/** ss, the CP's norm and the ratio of ss to the reference at that norm. */
export function cpSensitivity(factors: readonly Matrix[]): CpSensitivity {
  const ss = cpSs(factors);
  const norm = cpNorm(factors);
  const ref = ssReference(factors.map((f) => f.rows), factors[0]!.cols, norm);
  return { ss, norm, ratio: ref > 0 ? ss / ref : ss > 0 ? Infinity : 0 };
}

/**
 * Each rank-one term rescaled so its N columns have equal norms (product kept): for given
 * terms this is the scaling that (up to the mode sizes' weights) minimises ss. Zero terms stay zero.
 */
export function balanceColumns(factors: readonly Matrix[]): Matrix[] {
  const sq = columnSquares(factors);
  const N = factors.length;
  const R = factors[0]!.cols;
  const k = factors.map(() => new Float64Array(R));
  for (let r = 0; r < R; r++) {
    const norms = sq.map((s) => Math.sqrt(s[r]!));
    if (norms.some((x) => x === 0)) { for (let n = 0; n < N; n++) k[n]![r] = norms[n] === 0 ? 1 : 0; continue; }
    const g = Math.exp(norms.reduce((a, x) => a + Math.log(x), 0) / N);
    for (let n = 0; n < N; n++) k[n]![r] = g / norms[n]!;
  }
  return factors.map((f, n) => {
    const out = new Float64Array(f.data.length);
    for (let i = 0; i < f.rows; i++) for (let r = 0; r < R; r++) out[i * R + r] = f.data[i * R + r]! * k[n]![r]!;
    return { rows: f.rows, cols: R, data: out };
  });
}

export interface StableCpOptions {
  /** Largest acceptable ratio (default SENSITIVITY_LIMIT). */
  limit?: number;
  /** ALS sweeps per penalty (default 20) and relative tolerance on the objective (default 1e-7). */
  maxIter?: number;
  tol?: number;
  /**
   * Sweeps the whole refit may spend over all penalties (default 100, twice the passes' ALS
   * budget: a refit makes a layer's fit 2–3x slower (PP-OCRv4 det, 24x96x3x3: CP rank 45
   * 0.41 → 0.91 s, rank 160 4.1 → 11.5 s), where 50 sweeps left the bisection no budget
   * and cost up to 0.016 more weight error).
   */
  maxSweeps?: number;
  /** Bisection steps refining the penalty between the last that missed the bound and the first that met it (default 2). */
  refine?: number;
  /** Where the MTTKRP products run (default the JS kernel). */
  gemm?: SyncGemm;
}

export interface StableCp {
  /** Balanced factors I_n × R: X̂ = Σ_r ∘_n F_n[:, r]. */
  factors: Matrix[];
  /** ‖X − X̂‖_F / ‖X‖_F. */
  relError: number;
  sensitivity: CpSensitivity;
  /** The penalty μ·‖X‖²-relative weight κ used (0: the start already met the bound). */
  kappa: number;
  /** False when no penalty of the ladder met the bound (the least sensitive fit found is returned). */
  bounded: boolean;
}

/** Sweeps a refit under the sensitivity bound may spend over all penalties (StableCpOptions.maxSweeps). */
export const STABLE_MAX_SWEEPS = 100;

/** About how many flops a CP fit costs: `sweeps` ALS sweeps, then at most a refit's (stableCp, default budget). */
export function stableCpFlops(dims: readonly number[], rank: number, sweeps: number): number {
  return cpAlsFlops(dims, rank, sweeps + STABLE_MAX_SWEEPS);
}

/** Penalties tried, as κ: μ = κ·‖X‖² / ssReference(dims, R, ‖X‖). */
const KAPPAS = [1e-3, 1e-2, 1e-1, 1, 10];

/**
 * The CP of `x` (3- or 4-way) nearest to it under ratio ≤ limit, started from `start`
 * (any scaling; e.g. a degenerate ALS fit): the smallest penalty that meets the bound.
 */
export function stableCp(x: Tensor, start: readonly Matrix[], opts: StableCpOptions = {}): StableCp {
  const limit = opts.limit ?? SENSITIVITY_LIMIT;
  const dims = x.shape;
  const R = start[0]!.cols;
  const xNorm = tensorNorm(x);
  const unfoldings = dims.map((_, n) => unfold({ data: Float64Array.from(x.data), shape: dims }, n));
  const s0 = balanceColumns(start);
  const e0 = relErrorOf(x, xNorm, s0);
  const sens0 = cpSensitivity(s0);
  if (sens0.ratio <= limit || xNorm === 0) return { factors: s0, relError: e0, sensitivity: sens0, kappa: 0, bounded: true };
  const unit = (xNorm * xNorm) / ssReference(dims, R, xNorm);
  let budget = opts.maxSweeps ?? STABLE_MAX_SWEEPS;
  const run = (kappa: number, from: readonly Matrix[]) => {
    const sweeps = Math.max(1, Math.min(opts.maxIter ?? 20, budget));
    const a = penalisedAls(x, xNorm, unfoldings, from, kappa * unit, sweeps, opts.tol ?? 1e-7, opts.gemm);
    budget -= a.sweeps;
    return { factors: a.factors, relError: relErrorOf(x, xNorm, a.factors), sensitivity: cpSensitivity(a.factors), kappa };
  };
  let fail = 0;
  let pass: ReturnType<typeof run> | undefined;
  let least: ReturnType<typeof run> = { factors: s0, relError: e0, sensitivity: sens0, kappa: 0 };
  let from: readonly Matrix[] = s0;
  for (const kappa of KAPPAS) {
    if (budget <= 0) break;
    const r = run(kappa, from);
    if (r.sensitivity.ratio < least.sensitivity.ratio) least = r;
    if (r.sensitivity.ratio <= limit) { pass = r; break; }
    fail = kappa;
    from = r.factors;
  }
  if (!pass) return { ...least, bounded: false };
  // Refine: the smallest penalty (geometric bisection) that still meets the bound keeps the most fit.
  let lo = fail;
  let hi = pass.kappa;
  for (let i = 0; i < (opts.refine ?? 2) && lo > 0 && budget > 0; i++) {
    const mid = Math.sqrt(lo * hi);
    const r = run(mid, pass.factors);
    if (r.sensitivity.ratio <= limit) {
      if (r.relError <= pass.relError) pass = r;
      hi = mid;
    } else lo = mid;
  }
  return { ...pass, bounded: true };
}

/** ALS sweeps on ‖X − X̂‖² + μ·ss from `start`, terms rebalanced after each sweep. */
function penalisedAls(
  x: Tensor, xNorm: number, unfoldings: Matrix[], start: readonly Matrix[], mu: number, maxIter: number, tol: number, sync: SyncGemm | undefined,
): { factors: Matrix[]; sweeps: number } {
  const dims = x.shape;
  const N = dims.length;
  const R = start[0]!.cols;
  let f: Matrix[] = start.map((m) => ({ rows: m.rows, cols: R, data: Float64Array.from(m.data) }));
  let prev = Infinity;
  let sweeps = 0;
  for (let it = 0; it < maxIter; it++) {
    sweeps++;
    for (let n = 0; n < N; n++) {
      const others = f.filter((_, m) => m !== n);
      const mtt = product(unfoldings[n]!, khatriRao(others), {}, sync);
      const h = new Float64Array(R * R).fill(1);
      for (const o of others) {
        const g = gram(o);
        for (let i = 0; i < h.length; i++) h[i]! *= g[i]!;
      }
      const sq = columnSquares(f);
      let trace = 0;
      for (let r = 0; r < R; r++) trace += h[r * R + r]!;
      for (let r = 0; r < R; r++) {
        // d_{n,r} = Σ_{k≠n} I_k·Π_{m∉{k,n}} ‖F_m[:, r]‖²
        let d = 0;
        for (let k = 0; k < N; k++) {
          if (k === n) continue;
          let p = dims[k]!;
          for (let m = 0; m < N; m++) if (m !== k && m !== n) p *= sq[m]![r]!;
          d += p;
        }
        h[r * R + r]! += mu * d + 1e-12 * (trace / R + 1e-300);
      }
      f[n] = solveRight(mtt, h, R);
    }
    f = balanceColumns(f);
    const obj = relErrorOf(x, xNorm, f) ** 2 * xNorm * xNorm + mu * cpSs(f);
    if (Math.abs(prev - obj) <= tol * Math.max(obj, 1e-300)) break;
    prev = obj;
  }
  return { factors: f, sweeps };
}

/** M·H⁻¹ for symmetric positive definite H (R×R). */
function solveRight(m: Matrix, h: Float64Array, R: number): Matrix {
  const hm: Matrix = { rows: R, cols: R, data: h };
  const l = cholesky(hm) ?? choleskyWithRidge(hm, 1e-12).l;
  // H·Fᵀ = Mᵀ: L·Z = Mᵀ, Lᵀ·Fᵀ = Z.
  const mt: Matrix = { rows: R, cols: m.rows, data: new Float64Array(R * m.rows) };
  for (let i = 0; i < m.rows; i++) for (let r = 0; r < R; r++) mt.data[r * m.rows + i] = m.data[i * R + r]!;
  const lt: Matrix = { rows: R, cols: R, data: new Float64Array(R * R) };
  for (let i = 0; i < R; i++) for (let j = 0; j < R; j++) lt.data[j * R + i] = l.data[i * R + j]!;
  const ft = solveUpperLeft(lt, solveLowerLeft(l, mt));
  const out = new Float64Array(m.rows * R);
  for (let r = 0; r < R; r++) for (let i = 0; i < m.rows; i++) out[i * R + r] = ft.data[r * m.rows + i]!;
  return { rows: m.rows, cols: R, data: out };
}

/** ‖X − Σ_r ∘_n F_n[:, r]‖_F / ‖X‖_F, reconstructed explicitly. */
export function relErrorOf(x: Tensor, xNorm: number, factors: readonly Matrix[]): number {
  const xh = gemm(factors[0]!, khatriRao(factors.slice(1) as Matrix[]), { transB: true }).data;
  let d = 0;
  for (let i = 0; i < xh.length; i++) d += (xh[i]! - x.data[i]!) ** 2;
  return xNorm === 0 ? Math.sqrt(d) : Math.sqrt(d) / xNorm;
}

/** What the refit under the sensitivity bound changed (ratios and errors in the fitted coordinates). */
export interface Stabilized {
  ratioBefore: number;
  ratioAfter: number;
  errorBefore: number;
  errorAfter: number;
  /** False when no penalty met the bound or the refit did not lower the ratio: the fit is degenerate and must not be shipped (degenerateReason). */
  bounded: boolean;
  /** The bound (SENSITIVITY_LIMIT unless asked otherwise). */
  limit: number;
}

/** Why a fit refitted under the bound cannot be shipped (its terms still cancel), or undefined when it can. */
export function degenerateReason(rank: number, st: Stabilized | undefined): string | undefined {
  if (!st || st.bounded) return undefined;
  return `degenerate CP at rank ${rank}: sensitivity ratio ${st.ratioAfter.toFixed(2)} > ${st.limit} even after the refit under the sensitivity bound (its rank-one terms cancel)`;
}

/** The report of a layer whose groups are separate CPs: an unbounded group's (the worst), else the most degenerate group's. */
export function worstStabilized(list: readonly Stabilized[]): Stabilized | undefined {
  if (list.length === 0) return undefined;
  const unbounded = list.filter((s) => !s.bounded);
  const pool = unbounded.length > 0 ? unbounded : list;
  return pool.reduce((a, b) => (b.ratioBefore > a.ratioBefore ? b : a));
}

/**
 * A CP-ALS fit of `x` refitted under the sensitivity bound when its ratio (balanced) is
 * above SENSITIVITY_LIMIT, in Kruskal form again (unit columns, weights = the product of
 * the column norms, signs in the columns); undefined when the fit is not degenerate. When
 * the refit does not lower the ratio, the ALS fit is returned with `bounded: false`, as when
 * no penalty met the bound: such a fit is declined by the passes (degenerateReason).
 * `opts` reaches stableCp (its `limit` also decides what counts as degenerate).
 */
export function stabilizeAls(x: Tensor, als: CpAlsResult, gemm?: SyncGemm, opts: StableCpOptions = {}): { fit: CpAlsResult; report: Stabilized } | undefined {
  const R = als.rank;
  const N = als.factors.length;
  const scaled = als.factors.map((f) => {
    const out = new Float64Array(f.data.length);
    // CP-ALS weights are ≥ 0 (signs live in the columns).
    for (let i = 0; i < f.rows; i++) for (let r = 0; r < R; r++) out[i * R + r] = f.data[i * R + r]! * Math.pow(als.weights[r]!, 1 / N);
    return { rows: f.rows, cols: R, data: out };
  });
  const before = cpSensitivity(balanceColumns(scaled));
  const limit = opts.limit ?? SENSITIVITY_LIMIT;
  if (!(before.ratio > limit)) return undefined;
  const st = stableCp(x, scaled, { ...opts, gemm });
  if (!(st.sensitivity.ratio < before.ratio)) {
    return { fit: als, report: { ratioBefore: before.ratio, ratioAfter: before.ratio, errorBefore: als.relError, errorAfter: als.relError, bounded: false, limit } };
  }
  const weights = new Float64Array(R).fill(1);
  const factors = st.factors.map((f) => {
    const out = Float64Array.from(f.data);
    for (let r = 0; r < R; r++) {
      let n2 = 0;
      for (let i = 0; i < f.rows; i++) n2 += out[i * R + r]! ** 2;
      const n = Math.sqrt(n2);
      weights[r]! *= n;
      if (n > 0) for (let i = 0; i < f.rows; i++) out[i * R + r]! /= n;
    }
    return { rows: f.rows, cols: R, data: out };
  });
  return {
    fit: { ...als, factors, weights, relError: st.relError },
    report: { ratioBefore: before.ratio, ratioAfter: st.sensitivity.ratio, errorBefore: als.relError, errorAfter: st.relError, bounded: st.bounded, limit },
  };
}

/** Sensitivity of a chain's CP from its weights: each factor [rows, R] as stored, or [R, rows] when `transposed`. */
export function chainFactorsSensitivity(R: number, parts: readonly { data: ArrayLike<number>; rows: number; transposed?: boolean }[]): CpSensitivity {
  return cpSensitivity(parts.map(({ data, rows, transposed }) => {
    const out = new Float64Array(rows * R);
    for (let i = 0; i < rows; i++) for (let r = 0; r < R; r++) out[i * R + r] = transposed ? data[r * rows + i]! : data[i * R + r]!;
    return { rows, cols: R, data: out };
  }));
}
