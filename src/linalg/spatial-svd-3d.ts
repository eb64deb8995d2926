/**
 * Spatial SVD of a 3-D conv kernel: W [T, S, kd, kh, kw] as a chain of one conv per axis,
 *   W[t, s, z, y, x] ≈ Σ_{p, q} B[t, q, x]·C2[q, p, y]·C1[p, s, z]
 * (Conv kd×1×1 S→R1, Conv 1×kh×1 R1→R2, Conv 1×1×kw R2→T): Jaderberg et al.'s scheme 2
 * (spatial-svd.ts) applied twice, from the last axis in:
 *  1. outer: W read as a 2-D kernel [T, S, kd·kh, kw] (the same im2col order) split at R2
 *     into A [R2, S·kd·kh] (a kd×kh×1 conv) and B [T, R2, kw], data-aware as in 2-D
 *     (whitened start, ALS on the patch moments, anchored when given);
 *  2. inner: A read as a 2-D kernel [R2, S, kd, kh] split at R1 into C1 [R1, S, kd] and
 *     C2 [R2, R1, kh], in the metric of the final kernel: ‖B∘ΔA‖²_F = Σ_i ΔA[:, i]ᵀ·Q·ΔA[:, i]
 *     with Q = Σ_{t, x} B[t, :, x]·B[t, :, x]ᵀ = L·Lᵀ, so the split of Lᵀ·A (C2 mapped back
 *     by L⁻ᵀ) is Eckart–Young for the weight error given B; with statistics it is fitted by
 *     the same ALS on the moments of the [S·kd·kh] window at one column (the patch moments'
 *     diagonal blocks averaged over the kw columns: the input of the kd×kh×1 conv);
 *  3. B refitted by least squares given Â = C2·C1 (the 2-D B-step on the patch moments; on
 *     the weight without statistics), the mean output error moved into the bias.
 * This is a right-to-left TT-SVD of W in the order (s·z, y, x·t): exact at ranks no lower
 * than those unfoldings' ranks ([S·kd, kh·kw·T] and [S·kd·kh, kw·T]), and the TT of
 * tt-nd.ts without its two 1x1 convs (the channel sides stay inside the first and last
 * spatial convs, as in 2-D). Pure numerics: no ONNX here.
 */
import { solveSpd, type AnchoredPatch } from './anchored.js';
import { isRank, notARank } from './checks.js';
import { choleskyWithRidge } from './cholesky.js';
import { product, type SyncGemm } from './engine.js';
import { relativeDiff, transpose, type Matrix } from './matrix.js';
import { bStep, objectiveOf, rowBlocks } from './spatial-svd-als.js';
import { balance, dataErrors, spatialKernel, spatialSvd, type SpatialSvdOptions } from './spatial-svd.js';
import { singularValues } from './svd.js';
import { solveUpperLeft } from './triangular.js';

/** A 3-D conv kernel [T, S, kd, kh, kw] (one group), fp32 as stored. */
export interface SpatialKernel3d {
  data: Float32Array;
  shape: readonly [number, number, number, number, number];
}

export interface SpatialSvd3d {
  /** The ranks fitted [R1, R2] (clamped to what each split's matrix allows). */
  ranks: [number, number];
  /** C1 as the kd×1×1 conv's weight [R1, S, kd]. */
  first: Float32Array;
  /** C2 as the 1×kh×1 conv's weight [R2, R1, kh]. */
  middle: Float32Array;
  /** B as the 1×1×kw conv's weight [T, R2, kw]. */
  last: Float32Array;
  /** ‖W − Ŵ‖_F / ‖W‖_F from the fp32 factors. */
  relError: number;
  /** With patch statistics: the relative output error on them (after the bias correction). */
  dataError?: number;
  biasDelta?: Float64Array;
  /** ALS sweeps run (the outer split's). */
  sweeps: number;
}

/**
 * Singular values and ‖W‖²_F of each split's matrix of an n-axis kernel [T, S, k1, …, kn]:
 * split a (a = 1 … n − 1) between axes a and a + 1 is the unfolding [S·k1…k_a, k(a+1)…kn·T]
 * (2-D: [S·kh, kw·T], the spatial reshape up to a column order).
 */
export function spatialSplitSpectra(k: { data: ArrayLike<number>; shape: readonly number[] }): { sigma: Float64Array; total: number }[] {
  const [T, S, ...ks] = k.shape as number[];
  const K = ks.reduce((p, q) => p * q, 1);
  const P = S! * K;
  if (k.data.length !== T! * P) throw new RangeError(`spatialSplitSpectra: kernel has ${k.data.length} values, expected ${k.shape.join('x')}`);
  // Order (s, k…, t): row-major [S·K, T], read as [S·k1…k_a, rest·T] for each split.
  const a = new Float64Array(T! * P);
  let total = 0;
  for (let t = 0; t < T!; t++) for (let i = 0; i < P; i++) {
    const v = k.data[t * P + i]!;
    a[i * T! + t] = v;
    total += v * v;
  }
  const out: { sigma: Float64Array; total: number }[] = [];
  let rows = S!;
  for (let i = 0; i < ks.length - 1; i++) {
    rows *= ks[i]!;
    out.push({ sigma: singularValues({ rows, cols: (P * T!) / rows, data: a }), total });
  }
  return out;
}

/** The kernel [T, S, kd, kh, kw] the three convs compute (the inverse for --stages). */
export function spatialKernel3d(
  first: ArrayLike<number>, middle: ArrayLike<number>, last: ArrayLike<number>,
  T: number, S: number, [kd, kh, kw]: readonly number[], [R1, R2]: readonly number[],
): Float32Array {
  // Â [R2, S·kd·kh] = C2·C1 read as a 2-D chain, then B on the last axis.
  const a = spatialKernel(first, middle, R2!, S, kd!, kh!, R1!);
  return spatialKernel(a, last, T, S, kd! * kh!, kw!, R2!);
}

/** The diagonal blocks (x = x′) of a [D, D] patch moment (D = I·kw, index i·kw + x) averaged over x: [I, I]. */
export function columnBlockMean(g: ArrayLike<number>, I: number, kw: number): Float64Array {
  const D = I * kw;
  const out = new Float64Array(I * I);
  for (let i = 0; i < I; i++) for (let j = 0; j < I; j++) {
    let v = 0;
    for (let x = 0; x < kw; x++) v += g[(i * kw + x) * D + j * kw + x]!;
    out[i * I + j] = v / kw;
  }
  return out;
}

/** A [D] patch mean averaged over the kw columns: [I]. */
function columnMean(m: ArrayLike<number>, I: number, kw: number): Float64Array {
  const out = new Float64Array(I);
  for (let i = 0; i < I; i++) {
    let v = 0;
    for (let x = 0; x < kw; x++) v += m[i * kw + x]!;
    out[i] = v / kw;
  }
  return out;
}

/** The statistics of the kd×kh×1 conv's input: the window at one column, moments averaged over the columns. */
function windowStatistics(opts: SpatialSvdOptions, I: number, kw: number): Pick<SpatialSvdOptions, 'patches' | 'anchor'> {
  const a = opts.anchor;
  if (a) {
    const anchor: AnchoredPatch = {
      gram: columnBlockMean(a.gram, I, kw), gramHat: columnBlockMean(a.gramHat, I, kw), cross: columnBlockMean(a.cross, I, kw),
      mean: columnMean(a.mean, I, kw), meanHat: columnMean(a.meanHat, I, kw),
    };
    return { anchor };
  }
  const p = opts.patches;
  if (!p) return {};
  return { patches: { gram: columnBlockMean(p.gram, I, kw), mean: p.mean && columnMean(p.mean, I, kw), count: p.count } };
}

/**
 * Rank-[R1, R2] spatial SVD of a 3-D kernel, weight-only or fitted to the patch statistics
 * (`opts` as spatialSvd's; its whitening is the outer split's, rows [S·kd·kh] or [S]).
 */
export function spatialSvd3d(kernel: SpatialKernel3d, ranks: readonly [number, number], opts: SpatialSvdOptions = {}): SpatialSvd3d {
  for (const r of ranks) if (!isRank(r)) throw new RangeError(`spatialSvd3d: ${notARank(r)}`);
  const [T, S, kd, kh, kw] = kernel.shape;
  const I = S * kd * kh;
  const D = I * kw;
  const sync = opts.gemm;
  const outer = spatialSvd({ data: kernel.data, shape: [T, S, kd * kh, kw] }, ranks[1], opts);
  const R2 = outer.rank;
  // Q = Σ_{t,x} B[t, :, x]·B[t, :, x]ᵀ = L·Lᵀ: the final kernel's metric on A's rows.
  const q = new Float64Array(R2 * R2);
  for (let t = 0; t < T; t++) for (let x = 0; x < kw; x++) {
    for (let r = 0; r < R2; r++) {
      const v = outer.second[(t * R2 + r) * kw + x]!;
      if (v === 0) continue;
      for (let r2 = 0; r2 < R2; r2++) q[r * R2 + r2] += v * outer.second[(t * R2 + r2) * kw + x]!;
    }
  }
  const { l } = choleskyWithRidge({ rows: R2, cols: R2, data: q }, 1e-10, sync);
  const aw = product(l, { rows: R2, cols: I, data: Float64Array.from(outer.first) }, { transA: true }, sync);
  const inner = spatialSvd({ data: Float32Array.from(aw.data), shape: [R2, S, kd, kh] }, ranks[0], {
    gemm: sync, seed: opts.seed, sweeps: opts.sweeps, cgIters: opts.cgIters, damp: opts.damp, ...windowStatistics(opts, I, kw),
  });
  const R1 = inner.rank;
  // C2 = L⁻ᵀ·C2′ (rows q of [R2, R1·kh]).
  const c2 = solveUpperLeft(transpose(l), { rows: R2, cols: R1 * kh, data: Float64Array.from(inner.second) });
  const aHat: Matrix = { rows: R2, cols: I, data: Float64Array.from(spatialKernel(inner.first, c2.data, R2, S, kd, kh, R1)) };
  const w: Matrix = { rows: T, cols: D, data: Float64Array.from(kernel.data) };
  const obj = objectiveOf(w, opts);
  // B [R2, T·kw] (rows r, columns t·kw + x) given Â.
  const b = obj ? bStep(aHat, obj, rowBlocks(obj.g, I, kw), T, kw, [], sync) : weightRefit(w, aHat, T, kw, sync);
  balance(c2, b, T, kw);
  const last = new Float32Array(T * R2 * kw);
  for (let r = 0; r < R2; r++) for (let t = 0; t < T; t++) for (let x = 0; x < kw; x++) last[(t * R2 + r) * kw + x] = b.data[r * T * kw + t * kw + x]!;
  const mid = Float32Array.from(c2.data);
  const approx = spatialKernel3d(inner.first, mid, last, T, S, [kd, kh, kw], [R1, R2]);
  const out: SpatialSvd3d = { ranks: [R1, R2], first: inner.first, middle: mid, last, relError: relativeDiff(kernel.data, approx), sweeps: outer.sweeps };
  if (!obj) return out;
  return { ...out, ...dataErrors(w, { rows: T, cols: D, data: Float64Array.from(approx) }, opts, sync) };
}

/** B minimizing ‖W − B∘Â‖_F: per column x, B_x [T, R2] = W_x·Âᵀ·(Â·Âᵀ)⁻¹, as [R2, T·kw]. */
function weightRefit(w: Matrix, aHat: Matrix, T: number, kw: number, sync: SyncGemm | undefined): Matrix {
  const { rows: R, cols: I } = aHat;
  const z = product(aHat, aHat, { transB: true }, sync);
  // W's rows (t, x) [T·kw, I].
  const wx = new Float64Array(T * kw * I);
  for (let t = 0; t < T; t++) for (let i = 0; i < I; i++) for (let x = 0; x < kw; x++) wx[(t * kw + x) * I + i] = w.data[t * I * kw + i * kw + x]!;
  const rhs = product({ rows: T * kw, cols: I, data: wx }, aHat, { transB: true }, sync);
  const bx = solveSpd(z, rhs, sync); // [(t, x), R]
  const b = new Float64Array(R * T * kw);
  for (let t = 0; t < T; t++) for (let x = 0; x < kw; x++) for (let r = 0; r < R; r++) b[r * T * kw + t * kw + x] = bx.data[(t * kw + x) * R + r]!;
  return { rows: R, cols: T * kw, data: b };
}
