/**
 * A CP conv chain's three factors refined on the data objective (issue 18: every factor
 * fitted on the patch statistics, Kalle et al. 2025), not only its last one.
 *
 * The chain computes Ŵ·p with Ŵ = A·H, H[r, c·K + k] = F[r, c]·Dp[r, k] (F the first 1x1
 * [R, S], Dp the depthwise [R, K], A the last 1x1 [T, R]). cp-conv.ts fits F and Dp by
 * CP-ALS on the Kronecker-whitened kernel (the patch covariance approximated by a
 * Kronecker product) and A exactly on the full patch moments. The objective here is the
 * exact one, f(Ŵ) = tr(Ŵ·Ĉ·Ŵᵀ) − 2·⟨Ŵ, Y⟩ (Ĉ the patch second moment the chain sees,
 * Y = W·Xᵀ the target's cross moment; the plain data-aware fit has Ĉ = X = Σ), and each
 * sweep minimises it in F, then Dp, then A:
 *   F-step:  Σ_k [AᵀA·H·Ĉ]_(r,(c,k))·Dp[r, k] = Σ_k [Aᵀ·Y]_(r,(c,k))·Dp[r, k]   (linear in F),
 *   Dp-step: the same contracted over c with F,
 * both by conjugate gradients (the systems are (R·S)² and (R·K)²: too large to form) with
 * their diagonal as preconditioner; A by the caller's exact last-factor fit. Every step
 * lowers f, so f never rises; a sweep the caller rejects (`accept`) ends the refinement
 * with the factors before it.
 */
import { conjugateGradient } from './cg.js';
import { product, type SyncGemm } from './engine.js';
import type { Matrix } from './matrix.js';

/** f(Ŵ) = tr(Ŵ·Ĉ·Ŵᵀ) − 2·⟨Ŵ, Y⟩: Ĉ [D, D], Y [T, D]. */
export interface PatchQuadratic { cHat: Matrix; y: Matrix }

export interface CpChainFactors {
  /** F [R, S] */
  first: Float64Array;
  /** Dp [R, K] */
  depth: Float64Array;
  /** A [T, R] */
  last: Float64Array;
}

export interface CpDataAlsOptions {
  sweeps: number;
  /** CG iterations per factor step (each starts from the current factor). */
  cgIterations: number;
  gemm?: SyncGemm;
  /** A sweep's factors are kept only when this says so (e.g. a sensitivity bound). */
  accept?: (f: CpChainFactors) => boolean;
  /** After each kept sweep, with its objective value. */
  onSweep?: (f: CpChainFactors, objective: number) => void;
}

/** H [R, S·K]: H[r, c·K + k] = F[r, c]·Dp[r, k]. */
export function chainInput(first: ArrayLike<number>, depth: ArrayLike<number>, R: number, S: number, K: number): Matrix {
  const h = new Float64Array(R * S * K);
  for (let r = 0; r < R; r++) for (let c = 0; c < S; c++) {
    const v = first[r * S + c]!;
    if (v === 0) continue;
    for (let k = 0; k < K; k++) h[r * S * K + c * K + k] = v * depth[r * K + k]!;
  }
  return { rows: R, cols: S * K, data: h };
}

/** Q [R, S·K] contracted with the other factor: over k with Dp (→ [R, S], onFirst) or over c with F (→ [R, K]). */
function contract(q: Matrix, other: ArrayLike<number>, R: number, S: number, K: number, onFirst: boolean): Float64Array {
  const out = new Float64Array(R * (onFirst ? S : K));
  for (let r = 0; r < R; r++) for (let c = 0; c < S; c++) for (let k = 0; k < K; k++) {
    const v = q.data[r * S * K + c * K + k]!;
    if (onFirst) out[r * S + c] += v * other[r * K + k]!;
    else out[r * K + k] += v * other[r * S + c]!;
  }
  return out;
}

/** f for the chain A·H. */
export function patchObjectiveValue(a: Matrix, h: Matrix, obj: PatchQuadratic, sync?: SyncGemm): number {
  const wHat = product(a, h, {}, sync);
  const wc = product(wHat, obj.cHat, {}, sync);
  let f = 0;
  for (let i = 0; i < wHat.data.length; i++) f += wHat.data[i]! * (wc.data[i]! - 2 * obj.y.data[i]!);
  return f;
}

/** What both factor steps of a sweep need of the fixed last factor A: AᵀA [R, R] and Aᵀ·Y [R, D]. */
export interface LastFactorTerms { ata: Matrix; aty: Matrix }

export function lastFactorTerms(a: Matrix, obj: PatchQuadratic, sync?: SyncGemm): LastFactorTerms {
  return { ata: product(a, a, { transA: true }, sync), aty: product(a, obj.y, { transA: true }, sync) };
}

/** F (onFirst) or Dp minimising f with the other two fixed (A through its terms), by preconditioned CG from its current value. */
export function factorStep(onFirst: boolean, f: CpChainFactors, terms: LastFactorTerms, obj: PatchQuadratic, S: number, K: number, o: Pick<CpDataAlsOptions, 'cgIterations' | 'gemm'>): Float64Array {
  const { ata, aty } = terms;
  const R = ata.rows;
  const D = S * K;
  const other = onFirst ? f.depth : f.first;
  const op = (x: Float64Array): Float64Array => {
    const h = onFirst ? chainInput(x, f.depth, R, S, K) : chainInput(f.first, x, R, S, K);
    return contract(product(ata, product(h, obj.cHat, {}, o.gemm), {}, o.gemm), other, R, S, K, onFirst);
  };
  const rhs = contract(aty, other, R, S, K, onFirst);
  // The diagonal: (AᵀA)[r, r]·Σ over the other factor's index pairs of Ĉ, e.g. for F[r, c]
  // Σ_{k,k'} Dp[r, k]·Dp[r, k']·Ĉ[(c, k), (c, k')].
  const diag = new Float64Array(rhs.length);
  const c = obj.cHat.data;
  for (let r = 0; r < R; r++) {
    const n = ata.data[r * R + r]!;
    if (onFirst) {
      for (let s = 0; s < S; s++) {
        let v = 0;
        for (let k = 0; k < K; k++) for (let k2 = 0; k2 < K; k2++) v += other[r * K + k]! * other[r * K + k2]! * c[(s * K + k) * D + s * K + k2]!;
        diag[r * S + s] = n * v;
      }
    } else {
      for (let k = 0; k < K; k++) {
        let v = 0;
        for (let s = 0; s < S; s++) for (let s2 = 0; s2 < S; s2++) v += other[r * S + s]! * other[r * S + s2]! * c[(s * K + k) * D + s2 * K + k]!;
        diag[r * K + k] = n * v;
      }
    }
  }
  return conjugateGradient(op, rhs, onFirst ? f.first : f.depth, {
    iterations: o.cgIterations, precondition: (res) => res.map((v, i) => (diag[i]! > 0 ? v / diag[i]! : v)),
  });
}

/**
 * Up to `sweeps` sweeps (F, Dp, then A = lastFit(H)) from `start`; returns the last kept
 * factors and how many sweeps were kept. A sweep that does not lower f (no further gain,
 * or rounding) or that `accept` rejects ends the refinement.
 */
export function cpDataSweeps(start: CpChainFactors, T: number, S: number, K: number, obj: PatchQuadratic, lastFit: (h: Matrix) => Matrix, o: CpDataAlsOptions): { factors: CpChainFactors; sweeps: number; objective: number } {
  const R = start.first.length / S;
  let cur = start;
  let fCur = patchObjectiveValue({ rows: T, cols: R, data: cur.last }, chainInput(cur.first, cur.depth, R, S, K), obj, o.gemm);
  let kept = 0;
  for (let s = 0; s < o.sweeps; s++) {
    // A is fixed through both factor steps: its products are made once.
    const terms = lastFactorTerms({ rows: T, cols: R, data: cur.last }, obj, o.gemm);
    const first = factorStep(true, cur, terms, obj, S, K, o);
    const depth = factorStep(false, { ...cur, first }, terms, obj, S, K, o);
    const h = chainInput(first, depth, R, S, K);
    const last = Float64Array.from(lastFit(h).data);
    const next: CpChainFactors = { first, depth, last };
    const fNext = patchObjectiveValue({ rows: T, cols: R, data: last }, h, obj, o.gemm);
    if (!(fNext < fCur) || (o.accept && !o.accept(next))) break;
    cur = next;
    fCur = fNext;
    kept++;
    o.onSweep?.(cur, fCur);
  }
  return { factors: cur, sweeps: kept, objective: fCur };
}

/** Multiply-adds of `sweeps` sweeps at rank R on a [T, S, K] kernel (the products; CG's vector work is smaller). */
export function cpDataSweepFlops(T: number, S: number, K: number, R: number, sweeps: number, cgIterations: number): number {
  const D = S * K;
  // Per CG product: H·Ĉ (R·D²) and AᵀA·(H·Ĉ) (R²·D); the last-factor fit and f: ~(R + 2T)·D².
  const step = (cgIterations + 1) * (R * D * D + R * R * D);
  return sweeps * (2 * step + (R + 2 * T) * D * D);
}

/** Sweeps the fits run at most, and CG iterations per factor step (bench:cp-als: 4 × 8 keeps most of 8 × 25's gain). */
export const CP_DATA_SWEEPS = 4;
export const CP_DATA_CG_ITERATIONS = 8;
/** The sweeps' multiply-adds per fit at most (a 96-channel 3x3 conv at rank 80: 5e9 for four sweeps). */
export const CP_DATA_MAX_FLOPS = 2e10;

/** How many sweeps a fit at rank R of `groups` [T, S, K] kernels runs: as many of CP_DATA_SWEEPS as fit in CP_DATA_MAX_FLOPS. */
export function cpDataSweepCount(T: number, S: number, K: number, R: number, groups = 1): number {
  const one = groups * cpDataSweepFlops(T, S, K, R, 1, CP_DATA_CG_ITERATIONS);
  return Math.max(0, Math.min(CP_DATA_SWEEPS, Math.floor(CP_DATA_MAX_FLOPS / one)));
}

/** Each rank-one term's scale spread evenly over its three factors (as cp-conv.ts ships them), in place. */
export function balanceCpTerms(f: CpChainFactors, T: number, S: number, K: number): void {
  const R = f.first.length / S;
  for (let r = 0; r < R; r++) {
    let na = 0, nf = 0, nd = 0;
    for (let t = 0; t < T; t++) na += f.last[t * R + r]! ** 2;
    for (let s = 0; s < S; s++) nf += f.first[r * S + s]! ** 2;
    for (let k = 0; k < K; k++) nd += f.depth[r * K + k]! ** 2;
    na = Math.sqrt(na); nf = Math.sqrt(nf); nd = Math.sqrt(nd);
    if (!(na > 0 && nf > 0 && nd > 0)) continue;
    const g = Math.cbrt(na * nf * nd);
    for (let t = 0; t < T; t++) f.last[t * R + r] *= g / na;
    for (let s = 0; s < S; s++) f.first[r * S + s] *= g / nf;
    for (let k = 0; k < K; k++) f.depth[r * K + k] *= g / nd;
  }
}
