/**
 * The alternating least squares of the data-aware spatial SVD (spatial-svd.ts has the
 * algebra): the quadratic objective from the patch statistics, the closed-form B-step and
 * the A-step by conjugate gradients preconditioned with the Kronecker approximation of G.
 */
import { dampingOf, plusDiagonal, solveSpd, type AnchoredPatch } from './anchored.js';
import { conjugateGradient, dot } from './cg.js';
import { choleskyWithRidge } from './cholesky.js';
import { product, type SyncGemm } from './engine.js';
import { transpose, type Matrix } from './matrix.js';
import { solveLowerLeft, solveUpperLeft } from './triangular.js';

/** What the objective is built from: patch statistics as collected, or anchored moments. */
export interface AlsStatistics {
  /** Patch statistics as collected: Σ p·pᵀ [D·D], E[p] [D], and the patch count (centers when given with the mean). */
  patches?: { gram: Float64Array; mean?: Float64Array; count?: number };
  /** Anchored patch moments (centered, anchored.ts); used instead of `patches`. */
  anchor?: AnchoredPatch;
  /** Damping λ of the objective: δ = λ·mean(diag) added to G (and to X when anchored). */
  damp?: number;
}

/** The quadratic objective's terms; undefined without statistics. `scale` = tr(W·G·Wᵀ)-like, for the stopping rule. */
export interface Objective { g: Matrix; rm: Matrix; scale: number }

export function objectiveOf(w: Matrix, opts: AlsStatistics): Objective | undefined {
  const D = w.cols;
  const lambda = opts.damp ?? 0;
  if (opts.anchor) {
    const p = opts.anchor;
    const delta = dampingOf(p.gramHat, D, lambda);
    const g: Matrix = { rows: D, cols: D, data: plusDiagonal(p.gramHat, D, delta) };
    const rm = product(w, { rows: D, cols: D, data: plusDiagonal(p.cross, D, delta) }, { transB: true });
    return { g, rm, scale: dot(rm.data, w.data) };
  }
  if (!opts.patches) return undefined;
  const c = patchCovariance(opts.patches, D);
  const g: Matrix = { rows: D, cols: D, data: plusDiagonal(c.cov, D, dampingOf(c.cov, D, lambda)) };
  const rm = product(w, g);
  return { g, rm, scale: dot(rm.data, w.data) };
}

/** The covariance E[p·pᵀ] − μ·μᵀ when the mean and count are known, else the second-moment sum as given. */
export function patchCovariance(p: NonNullable<AlsStatistics['patches']>, D: number): { cov: Float64Array; centered: boolean } {
  if (p.mean && p.count && p.count > 0) {
    const cov = new Float64Array(D * D);
    for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) cov[i * D + j] = p.gram[i * D + j]! / p.count - p.mean[i]! * p.mean[j]!;
    return { cov, centered: true };
  }
  return { cov: p.gram, centered: false };
}

/** G's rows gathered by x: block x is [I, D] with rows i·kw + x. */
export function rowBlocks(g: Matrix, I: number, kw: number): Matrix[] {
  const D = g.cols;
  return Array.from({ length: kw }, (_, x) => {
    const data = new Float64Array(I * D);
    for (let i = 0; i < I; i++) data.set(g.data.subarray((i * kw + x) * D, (i * kw + x + 1) * D), i * D);
    return { rows: I, cols: D, data };
  });
}

/** H_A·G [(r, x), D] from G's row blocks (G symmetric). */
function hTimesG(a: Matrix, gRows: readonly Matrix[], kw: number, sync: SyncGemm | undefined): Matrix {
  const R = a.rows;
  const D = gRows[0]!.cols;
  const out = new Float64Array(R * kw * D);
  gRows.forEach((gx, x) => {
    const p = product(a, gx, {}, sync).data; // [R, D]
    for (let r = 0; r < R; r++) out.set(p.subarray(r * D, (r + 1) * D), (r * kw + x) * D);
  });
  return { rows: R * kw, cols: D, data: out };
}

/** Y·H_Aᵀ for Y [n, D]: out[n, (r, x)] = Σ_i Y[n, i·kw + x]·A[r, i]. */
function timesHt(y: Matrix, a: Matrix, kw: number, sync: SyncGemm | undefined): Matrix {
  const { rows: R, cols: I } = a;
  const n = y.rows;
  const out = new Float64Array(n * R * kw);
  for (let x = 0; x < kw; x++) {
    const yx = new Float64Array(n * I);
    for (let j = 0; j < n; j++) for (let i = 0; i < I; i++) yx[j * I + i] = y.data[j * y.cols + i * kw + x]!;
    const p = product({ rows: n, cols: I, data: yx }, a, { transB: true }, sync).data; // [n, R]
    for (let j = 0; j < n; j++) for (let r = 0; r < R; r++) out[j * R * kw + r * kw + x] = p[j * R + r]!;
  }
  return { rows: n, cols: R * kw, data: out };
}

/** B-step: B̃ = Rm·H_Aᵀ·(H_A·G·H_Aᵀ)⁻¹, returned as B [R, T·kw]; appends f at the optimum (−⟨B̃, Rm·H_Aᵀ⟩). */
export function bStep(a: Matrix, obj: Objective, gRows: readonly Matrix[], T: number, kw: number, objective: number[], sync: SyncGemm | undefined): Matrix {
  const R = a.rows;
  const hg = hTimesG(a, gRows, kw, sync); // [(r, x), D]
  const z = timesHt(hg, a, kw, sync); // H·G·Hᵀ [(r, x), (r', x')]
  const rhs = timesHt(obj.rm, a, kw, sync); // [T, (r, x)]
  const bt = solveSpd(z, rhs); // [T, (r, x)]
  objective.push(-dot(bt.data, rhs.data));
  const b = new Float64Array(R * T * kw);
  for (let t = 0; t < T; t++) for (let r = 0; r < R; r++) for (let x = 0; x < kw; x++) b[r * T * kw + t * kw + x] = bt.data[t * R * kw + r * kw + x]!;
  return { rows: R, cols: T * kw, data: b };
}

/** B_p [(r, x), t] from B [R, T·kw]. */
function bByRx(b: Matrix, T: number, kw: number): Matrix {
  const R = b.rows;
  const data = new Float64Array(R * kw * T);
  for (let r = 0; r < R; r++) for (let t = 0; t < T; t++) for (let x = 0; x < kw; x++) data[(r * kw + x) * T + t] = b.data[r * T * kw + t * kw + x]!;
  return { rows: R * kw, cols: T, data };
}

/** Σ_x Y[(r, x), i·kw + x] for Y [(r, x), I·kw]: [R, I]. */
export function diagonalSum(y: Matrix, R: number, I: number, kw: number): Matrix {
  const out = new Float64Array(R * I);
  for (let r = 0; r < R; r++) for (let x = 0; x < kw; x++) {
    const row = (r * kw + x) * y.cols;
    for (let i = 0; i < I; i++) out[r * I + i] += y.data[row + i * kw + x]!;
  }
  return { rows: R, cols: I, data: out };
}

interface Preconditioner { gi: Matrix; li: Matrix; gx: Float64Array }

/** Partial traces G_I [I, I] and G_X [kw, kw] of G, and G_I's Cholesky factor. */
export function kroneckerPreconditioner(g: Matrix, I: number, kw: number): Preconditioner {
  const D = I * kw;
  const gi = new Float64Array(I * I);
  const gx = new Float64Array(kw * kw);
  for (let i = 0; i < I; i++) {
    for (let i2 = 0; i2 < I; i2++) {
      let v = 0;
      for (let x = 0; x < kw; x++) v += g.data[(i * kw + x) * D + i2 * kw + x]!;
      gi[i * I + i2] = v;
    }
    for (let x = 0; x < kw; x++) for (let x2 = 0; x2 < kw; x2++) gx[x * kw + x2] += g.data[(i * kw + x) * D + i * kw + x2]!;
  }
  const m: Matrix = { rows: I, cols: I, data: gi };
  return { gi: m, li: choleskyWithRidge(m, 1e-10).l, gx };
}

/** A-step: the normal equations L(A) = b in A given B, by preconditioned CG from the current A. */
export function aStep(a0: Matrix, b: Matrix, obj: Objective, gRows: readonly Matrix[], pre: Preconditioner, T: number, kw: number, iters: number, sync: SyncGemm | undefined): Matrix {
  const { rows: R, cols: I } = a0;
  const bp = bByRx(b, T, kw); // [(r, x), t]
  const q = product(bp, bp, { transB: true }, sync); // [(r, x), (r', x')]
  const op = (a: Matrix): Matrix => diagonalSum(product(q, hTimesG(a, gRows, kw, sync), {}, sync), R, I, kw);
  const rhs = diagonalSum(product(bp, obj.rm, {}, sync), R, I, kw);
  // Preconditioner Q̃⁻¹·Z·G_I⁻¹ with Q̃[r, r'] = Σ_{x, x'} Q[(r, x), (r', x')]·G_X[x', x]: the inverse of L when G = G_I ⊗ G_X.
  const qt = new Float64Array(R * R);
  for (let r = 0; r < R; r++) for (let r2 = 0; r2 < R; r2++) {
    let v = 0;
    for (let x = 0; x < kw; x++) for (let x2 = 0; x2 < kw; x2++) v += q.data[(r * kw + x) * R * kw + r2 * kw + x2]! * pre.gx[x2 * kw + x]!;
    qt[r * R + r2] = v;
  }
  const lq = choleskyWithRidge({ rows: R, cols: R, data: qt }, 1e-10).l;
  const precond = (z: Matrix): Matrix => {
    // Q̃⁻¹·Z, then ·G_I⁻¹ (G_I symmetric: (G_I⁻¹·(Q̃⁻¹Z)ᵀ)ᵀ).
    const left = solveUpperLeft(transpose(lq), solveLowerLeft(lq, z));
    return transpose(solveUpperLeft(transpose(pre.li), solveLowerLeft(pre.li, transpose(left))));
  };
  const x = conjugateGradient((v) => op({ rows: R, cols: I, data: v }).data, rhs.data, a0.data, {
    iterations: iters, precondition: (v) => precond({ rows: R, cols: I, data: v }).data,
  });
  return { rows: R, cols: I, data: x };
}

