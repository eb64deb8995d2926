/**
 * A CP conv chain's input-side factors refined with its last one on the data objective
 * (issue 18: every factor fitted on the patch statistics, Kalle et al. 2025), not only
 * its last one.
 *
 * The chain computes Ŵ·p with Ŵ = A·H, H[r, (i₀, …, i_{N−1})] = Π_m U_m[r, i_m]: U₀ = F the
 * first 1x1 [R, S], then the depthwise factors (CP-3: one, Dp [R, K]; CP-4: the kh×1 and
 * 1×kw ones [R, kh], [R, kw]; 3-D kernels one per axis), A the last 1x1 [T, R]. cp-conv.ts
 * and conv-cp4 fit them by CP-ALS on the whitened kernel (the patch covariance approximated
 * by a Kronecker product) and A exactly on the full patch moments. The objective here is the
 * exact one, f(Ŵ) = tr(Ŵ·Ĉ·Ŵᵀ) − 2·⟨Ŵ, Y⟩ (Ĉ the patch second moment the chain sees,
 * Y = W·Xᵀ the target's cross moment; the plain data-aware fit has Ĉ = X = Σ), and each
 * sweep minimises it in U₀, U₁, … in turn, then A. H is linear in each U_m with the others
 * fixed, H = L_m(U_m), so the U_m-step solves the normal equations
 *   L_mᵀ(AᵀA·L_m(U_m)·Ĉ) = L_mᵀ(Aᵀ·Y),
 * L_mᵀ(Q)[r, i] = Σ over positions j with i_m = i of Q[r, j]·Π_{m'≠m} U_m'[r, i_m'],
 * by conjugate gradients (the systems are (R·n_m)²: too large to form) with their diagonal
 * as preconditioner; A by the caller's exact last-factor fit. Every step lowers f, so f
 * never rises; a sweep the caller rejects (`accept`) ends the refinement with the factors
 * before it.
 */
import { dampingOf, fitThroughInputMap, plusDiagonal } from './anchored.js';
import { conjugateGradient } from './cg.js';
import { product, type SyncGemm } from './engine.js';
import type { LastFactorStats } from './last-factor.js';
import type { Matrix } from './matrix.js';
import { refitLastFactor } from './refit.js';

/** f(Ŵ) = tr(Ŵ·Ĉ·Ŵᵀ) − 2·⟨Ŵ, Y⟩: Ĉ [D, D], Y [T, D]. */
export interface PatchQuadratic { cHat: Matrix; y: Matrix }

/** A chain's factors: the input-side modes U_m [R, n_m] in patch order, the last A [T, R]. */
export interface ChainModes { modes: Float64Array[]; last: Float64Array }

/** The sweeps' bounds and hooks. */
export interface ChainSweepOptions {
  sweeps: number;
  /** CG iterations per factor step (each starts from the current factor). */
  cgIterations: number;
  gemm?: SyncGemm;
  /** A sweep's factors are kept only when this says so (e.g. a sensitivity bound). */
  accept?: (f: ChainModes) => boolean;
  /** After each kept sweep, with its objective value. */
  onSweep?: (f: ChainModes, objective: number) => void;
}

/** H [R, Π n_m]: H[r, (i₀, …)] = Π_m U_m[r, i_m] (row-major over the modes, as the patch). */
export function chainMap(modes: readonly ArrayLike<number>[], R: number, dims: readonly number[]): Matrix {
  const D = dims.reduce((a, b) => a * b, 1);
  const h = new Float64Array(R * D);
  for (let r = 0; r < R; r++) {
    const row = h.subarray(r * D, (r + 1) * D);
    row[0] = 1;
    let len = 1;
    // Expand one mode at a time: row[0..len·n) = row[0..len) ⊗ U_m[r, ·].
    for (let m = 0; m < dims.length; m++) {
      const n = dims[m]!;
      const u = modes[m]!;
      for (let j = len - 1; j >= 0; j--) {
        const v = row[j]!;
        for (let i = n - 1; i >= 0; i--) row[j * n + i] = v * u[r * n + i]!;
      }
      len *= n;
    }
  }
  return { rows: R, cols: D, data: h };
}

/** H [R, S·K]: H[r, c·K + k] = F[r, c]·Dp[r, k]. */
export function chainInput(first: ArrayLike<number>, depth: ArrayLike<number>, R: number, S: number, K: number): Matrix {
  return chainMap([first, depth], R, [S, K]);
}

/** Mode m's layout in the patch: positions j = (a·n + i)·stride + b. */
const modeLayout = (dims: readonly number[], m: number) => ({
  n: dims[m]!, stride: dims.slice(m + 1).reduce((a, b) => a * b, 1), outer: dims.slice(0, m).reduce((a, b) => a * b, 1),
});

/** L_mᵀ(Q) [R, n_m]: Q [R, D] contracted with every mode but m. */
function contractExcept(q: Matrix, modes: readonly ArrayLike<number>[], R: number, dims: readonly number[], m: number): Float64Array {
  const { n, stride, outer } = modeLayout(dims, m);
  const others = modes.map((u, k) => (k === m ? onesMode(R, n) : u));
  const g = chainMap(others, R, dims).data;
  const D = q.cols;
  const out = new Float64Array(R * n);
  for (let r = 0; r < R; r++) for (let a = 0; a < outer; a++) for (let i = 0; i < n; i++) {
    const base = r * D + (a * n + i) * stride;
    let v = 0;
    for (let b = 0; b < stride; b++) v += q.data[base + b]! * g[base + b]!;
    out[r * n + i] += v;
  }
  return out;
}

const onesMode = (R: number, n: number): Float64Array => new Float64Array(R * n).fill(1);

/** f for the chain A·H. */
export function patchObjectiveValue(a: Matrix, h: Matrix, obj: PatchQuadratic, sync?: SyncGemm): number {
  const wHat = product(a, h, {}, sync);
  const wc = product(wHat, obj.cHat, {}, sync);
  let f = 0;
  for (let i = 0; i < wHat.data.length; i++) f += wHat.data[i]! * (wc.data[i]! - 2 * obj.y.data[i]!);
  return f;
}

/** What every factor step of a sweep needs of the fixed last factor A: AᵀA [R, R] and Aᵀ·Y [R, D]. */
export interface LastFactorTerms { ata: Matrix; aty: Matrix }

export function lastFactorTerms(a: Matrix, obj: PatchQuadratic, sync?: SyncGemm): LastFactorTerms {
  return { ata: product(a, a, { transA: true }, sync), aty: product(a, obj.y, { transA: true }, sync) };
}

/** U_m minimising f with the other factors fixed (A through its terms), by preconditioned CG from its current value. */
export function modeStep(m: number, f: ChainModes, terms: LastFactorTerms, obj: PatchQuadratic, dims: readonly number[], o: Pick<ChainSweepOptions, 'cgIterations' | 'gemm'>): Float64Array {
  const { ata, aty } = terms;
  const R = ata.rows;
  const D = obj.cHat.cols;
  const op = (x: Float64Array): Float64Array => {
    const h = chainMap(f.modes.map((u, k) => (k === m ? x : u)), R, dims);
    return contractExcept(product(ata, product(h, obj.cHat, {}, o.gemm), {}, o.gemm), f.modes, R, dims, m);
  };
  const rhs = contractExcept(aty, f.modes, R, dims, m);
  // The diagonal: (AᵀA)[r, r]·g_iᵀ·Ĉ·g_i, g_i the chain's row r with U_m[r, ·] = e_i (its
  // nonzeros are the D/n_m positions with i_m = i).
  const { n, stride, outer } = modeLayout(dims, m);
  const g = chainMap(f.modes.map((u, k) => (k === m ? onesMode(R, n) : u)), R, dims).data;
  const c = obj.cHat.data;
  const diag = new Float64Array(rhs.length);
  const pos = new Int32Array(outer * stride);
  const val = new Float64Array(outer * stride);
  for (let r = 0; r < R; r++) {
    const w = ata.data[r * R + r]!;
    for (let i = 0; i < n; i++) {
      let p = 0;
      for (let a = 0; a < outer; a++) for (let b = 0; b < stride; b++) {
        const j = (a * n + i) * stride + b;
        pos[p] = j;
        val[p++] = g[r * D + j]!;
      }
      let v = 0;
      for (let x = 0; x < p; x++) {
        const vx = val[x]!;
        if (vx === 0) continue;
        const row = pos[x]! * D;
        let s = 0;
        for (let y = 0; y < p; y++) s += val[y]! * c[row + pos[y]!]!;
        v += vx * s;
      }
      diag[r * n + i] = w * v;
    }
  }
  return conjugateGradient(op, rhs, f.modes[m]!, {
    iterations: o.cgIterations, precondition: (res) => res.map((v, i) => (diag[i]! > 0 ? v / diag[i]! : v)),
  });
}

/**
 * Up to `sweeps` sweeps (each U_m in turn, then A = lastFit(H)) from `start`; returns the
 * last kept factors and how many sweeps were kept. A sweep that does not lower f (no
 * further gain, or rounding) or that `accept` rejects ends the refinement.
 */
export function chainDataSweeps(start: ChainModes, T: number, dims: readonly number[], obj: PatchQuadratic, lastFit: (h: Matrix) => Matrix, o: ChainSweepOptions): { factors: ChainModes; sweeps: number; objective: number } {
  const R = start.modes[0]!.length / dims[0]!;
  let cur = start;
  let fCur = patchObjectiveValue({ rows: T, cols: R, data: cur.last }, chainMap(cur.modes, R, dims), obj, o.gemm);
  let kept = 0;
  for (let s = 0; s < o.sweeps; s++) {
    // A is fixed through the factor steps: its products are made once.
    const terms = lastFactorTerms({ rows: T, cols: R, data: cur.last }, obj, o.gemm);
    const modes = [...cur.modes];
    for (let m = 0; m < dims.length; m++) modes[m] = modeStep(m, { modes, last: cur.last }, terms, obj, dims, o);
    const h = chainMap(modes, R, dims);
    const last = Float64Array.from(lastFit(h).data);
    const next: ChainModes = { modes, last };
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
  return chainSweepFlops(T, [S, K], R, sweeps, cgIterations);
}

/** The same for a chain with input-side modes of sizes `dims` (one factor step per mode). */
export function chainSweepFlops(T: number, dims: readonly number[], R: number, sweeps: number, cgIterations: number): number {
  const D = dims.reduce((a, b) => a * b, 1);
  // Per CG product: H·Ĉ (R·D²) and AᵀA·(H·Ĉ) (R²·D); the last-factor fit and f: ~(R + 2T)·D².
  const step = (cgIterations + 1) * (R * D * D + R * R * D);
  return sweeps * (dims.length * step + (R + 2 * T) * D * D);
}

/**
 * The data objective a chain's last factor is fitted on, and that fit, for the sweeps:
 * anchored (the partly compressed model's patch moments, damped, fitted to the original's
 * outputs: anchored.ts) or plain (the patch second moment and mean: refit.ts).
 */
export function chainObjective(w: Matrix, R: number, stats: LastFactorStats, sync?: SyncGemm): { obj: PatchQuadratic; lastFit: (h: Matrix) => Matrix } {
  const D = w.cols;
  if (stats.anchor) {
    const { patch: p, damp } = stats.anchor;
    const delta = dampingOf(p.gramHat, D, damp);
    return {
      obj: { cHat: { rows: D, cols: D, data: plusDiagonal(p.gramHat, D, delta) }, y: product(w, { rows: D, cols: D, data: plusDiagonal(p.cross, D, delta) }, { transB: true }, sync) },
      lastFit: (h) => fitThroughInputMap(w, h, p.gramHat, p.cross, damp, sync),
    };
  }
  const { gram, mean } = stats.patches!;
  const sigma: Matrix = { rows: D, cols: D, data: gram };
  return { obj: { cHat: sigma, y: product(w, sigma, {}, sync) }, lastFit: (h) => ({ rows: w.rows, cols: R, data: refitLastFactor(w, h, gram, mean, sync).b }) };
}

/** Sweeps the fits run at most, and CG iterations per factor step (bench:cp-als: 4 × 8 keeps most of 8 × 25's gain). */
export const CP_DATA_SWEEPS = 4;
export const CP_DATA_CG_ITERATIONS = 8;
/** The sweeps' multiply-adds per fit at most (a 96-channel 3x3 conv at rank 80: 5e9 for four sweeps). */
export const CP_DATA_MAX_FLOPS = 2e10;

/** How many sweeps a fit at rank R of `groups` [T, S, K] kernels runs: as many of CP_DATA_SWEEPS as fit in CP_DATA_MAX_FLOPS. */
export function cpDataSweepCount(T: number, S: number, K: number, R: number, groups = 1): number {
  return chainSweepCount(T, [S, K], R, groups);
}

/** The same for a chain with input-side modes of sizes `dims`. */
export function chainSweepCount(T: number, dims: readonly number[], R: number, groups = 1): number {
  const one = groups * chainSweepFlops(T, dims, R, 1, CP_DATA_CG_ITERATIONS);
  return Math.max(0, Math.min(CP_DATA_SWEEPS, Math.floor(CP_DATA_MAX_FLOPS / one)));
}

/** Each rank-one term's scale spread evenly over all its factors (the last and every mode), in place. */
export function balanceChain(f: ChainModes, T: number, dims: readonly number[]): void {
  const R = f.last.length / T;
  const norm = (d: Float64Array, n: number, at: (i: number) => number): number => {
    let s = 0;
    for (let i = 0; i < n; i++) s += d[at(i)]! ** 2;
    return Math.sqrt(s);
  };
  for (let r = 0; r < R; r++) {
    const na = norm(f.last, T, (t) => t * R + r);
    const nm = dims.map((n, m) => norm(f.modes[m]!, n, (i) => r * n + i));
    if (!(na > 0 && nm.every((v) => v > 0))) continue;
    const g = (na * nm.reduce((a, b) => a * b, 1)) ** (1 / (dims.length + 1));
    for (let t = 0; t < T; t++) f.last[t * R + r] *= g / na;
    dims.forEach((n, m) => { for (let i = 0; i < n; i++) f.modes[m]![r * n + i] *= g / nm[m]!; });
  }
}
