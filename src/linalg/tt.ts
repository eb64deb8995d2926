/**
 * Tensor-Train decomposition of a 2-D conv kernel (Oseledets 2011, TT-SVD), as the
 * weights of a 1x1 → kh×1 → 1×kw → 1x1 chain. With the kernel W [T, S, kh, kw] read in
 * the order (s, y, x, t):
 *   W[t, s, y, x] ≈ Σ C[s, r1]·Y[r1, y, r2]·X[r2, x, r3]·Tf[r3, t]
 * by three sequential truncated SVDs: of [S, kh·kw·T] (keeps R1), of the remainder
 * reshaped to [R1·kh, kw·T] (keeps R2), and of the next remainder reshaped to [R2·kw, T]
 * (keeps R3). The left factors are orthonormal, so the discarded parts are mutually
 * orthogonal and ‖W − Ŵ‖²_F is exactly the sum of the three discarded energies, each at
 * most the tail energy of the matching unfolding of W ([S, kh·kw·T], [S·kh, kw·T],
 * [S·kh·kw, T]) past its rank.
 *
 * Chain weights: first [R1, S] (= Cᵀ), rows [R2, R1, kh] (= Y), cols [R3, R2, kw] (= X),
 * last [T, R3] (= Tfᵀ). The singular values stay in the last factor (the others are
 * orthonormal, so every factor is of unit scale except the last).
 */
import { isRank, notARank } from './checks.js';
import { product, type SyncGemm } from './engine.js';
import type { Matrix } from './matrix.js';
import { singularValues, svd } from './svd.js';

/** A 2-D conv kernel [T, S, kh, kw], row-major. */
export interface TtKernel {
  data: ArrayLike<number>;
  shape: readonly [number, number, number, number];
}

export interface TtConv {
  /** The ranks fitted [R1, R2, R3] (clamped to what each step's matrix allows). */
  ranks: [number, number, number];
  /** [R1, S]: the first 1x1 conv. */
  first: Float32Array;
  /** [R2, R1, kh]: the kh×1 conv. */
  rows: Float32Array;
  /** [R3, R2, kw]: the 1×kw conv. */
  cols: Float32Array;
  /** [T, R3]: the last 1x1 conv. */
  last: Float32Array;
  /** ‖W − Ŵ‖_F / ‖W‖_F from the fp32 chain weights. */
  relError: number;
  /** The energy (Σ σ² past the rank) each of the three SVDs discarded, relative to ‖W‖²_F. */
  discarded: [number, number, number];
}

/** The three TT unfoldings of W [T, S, kh, kw] as matrices: [S, kh·kw·T], [S·kh, kw·T], [S·kh·kw, T]. */
export function ttUnfoldings(k: TtKernel): [Matrix, Matrix, Matrix] {
  const a = ttOrder(k);
  const [T, S, kh, kw] = k.shape;
  return [
    { rows: S, cols: kh * kw * T, data: a },
    { rows: S * kh, cols: kw * T, data: a },
    { rows: S * kh * kw, cols: T, data: a },
  ];
}

/** Singular values (descending) and ‖W‖²_F of each TT unfolding: what rank policies read. */
export function ttSpectra(k: TtKernel): { sigma: Float64Array; total: number }[] {
  let total = 0;
  for (let i = 0; i < k.data.length; i++) total += k.data[i]! * k.data[i]!;
  return ttUnfoldings(k).map((u) => ({ sigma: singularValues(u), total }));
}

/** The TT of `k` at ranks [R1, R2, R3] by TT-SVD. Ranks past a step's matrix size are clamped. */
export function ttSvd(k: TtKernel, ranks: readonly [number, number, number], opts: { gemm?: SyncGemm } = {}): TtConv {
  for (const r of ranks) if (!isRank(r)) throw new RangeError(`ttSvd: ${notARank(r)}`);
  const [T, S, kh, kw] = k.shape;
  const a = ttOrder(k);
  let total = 0;
  for (let i = 0; i < a.length; i++) total += a[i]! * a[i]!;
  const rel = (x: number): number => (total > 0 ? x / total : 0);
  // Step 1: [S, kh·kw·T] → C [S, R1], rest [R1, kh·kw·T].
  const s1 = truncated({ rows: S, cols: kh * kw * T, data: a }, ranks[0], opts.gemm);
  const R1 = s1.rank;
  // Step 2: rest as [R1·kh, kw·T] (same row-major data) → Y [R1·kh, R2], rest [R2, kw·T].
  const s2 = truncated({ rows: R1 * kh, cols: kw * T, data: s1.rest }, ranks[1], opts.gemm);
  const R2 = s2.rank;
  // Step 3: rest as [R2·kw, T] → X [R2·kw, R3], Tf [R3, T].
  const s3 = truncated({ rows: R2 * kw, cols: T, data: s2.rest }, ranks[2], opts.gemm);
  const R3 = s3.rank;
  const first = new Float32Array(R1 * S);
  for (let s = 0; s < S; s++) for (let r = 0; r < R1; r++) first[r * S + s] = s1.left[s * R1 + r]!;
  const rows = new Float32Array(R2 * R1 * kh);
  for (let r1 = 0; r1 < R1; r1++) for (let y = 0; y < kh; y++) for (let r2 = 0; r2 < R2; r2++) rows[(r2 * R1 + r1) * kh + y] = s2.left[(r1 * kh + y) * R2 + r2]!;
  const cols = new Float32Array(R3 * R2 * kw);
  for (let r2 = 0; r2 < R2; r2++) for (let x = 0; x < kw; x++) for (let r3 = 0; r3 < R3; r3++) cols[(r3 * R2 + r2) * kw + x] = s3.left[(r2 * kw + x) * R3 + r3]!;
  const last = new Float32Array(T * R3);
  for (let r = 0; r < R3; r++) for (let t = 0; t < T; t++) last[t * R3 + r] = s3.rest[r * T + t]!;
  const w = ttKernel(first, rows, cols, last, T, S, kh, kw, [R1, R2, R3], opts.gemm);
  let num = 0;
  let den = 0;
  for (let i = 0; i < w.length; i++) {
    const x = k.data[i]!;
    num += (x - w[i]!) ** 2;
    den += x * x;
  }
  return {
    ranks: [R1, R2, R3], first, rows, cols, last, relError: den === 0 ? 0 : Math.sqrt(num / den),
    discarded: [rel(s1.discarded), rel(s2.discarded), rel(s3.discarded)],
  };
}

/**
 * The kernel [T, S, kh, kw] a TT chain computes: W[t, s, y, x] =
 * Σ last[t, r3]·cols[r3, r2, x]·rows[r2, r1, y]·first[r1, s] (the inverse for --stages).
 */
export function ttKernel(
  first: ArrayLike<number>, rows: ArrayLike<number>, cols: ArrayLike<number>, last: ArrayLike<number>,
  T: number, S: number, kh: number, kw: number, ranks: readonly [number, number, number], gemm?: SyncGemm,
): Float32Array {
  const [R1, R2, R3] = ranks;
  // B [S·kh, R2]: B[(s, y), r2] = Σ_r1 first[r1, s]·rows[r2, r1, y].
  const b = new Float64Array(S * kh * R2);
  for (let r2 = 0; r2 < R2; r2++) for (let r1 = 0; r1 < R1; r1++) for (let y = 0; y < kh; y++) {
    const v = rows[(r2 * R1 + r1) * kh + y]!;
    if (v === 0) continue;
    for (let s = 0; s < S; s++) b[(s * kh + y) * R2 + r2] += v * first[r1 * S + s]!;
  }
  // X as [R2, kw·R3] and the product D [S·kh, kw·R3] = [S·kh·kw, R3].
  const x = new Float64Array(R2 * kw * R3);
  for (let r3 = 0; r3 < R3; r3++) for (let r2 = 0; r2 < R2; r2++) for (let c = 0; c < kw; c++) x[r2 * kw * R3 + c * R3 + r3] = cols[(r3 * R2 + r2) * kw + c]!;
  const d = product({ rows: S * kh, cols: R2, data: b }, { rows: R2, cols: kw * R3, data: x }, {}, gemm);
  // W' [S·kh·kw, T] = D · lastᵀ.
  const wt = product({ rows: S * kh * kw, cols: R3, data: d.data }, { rows: T, cols: R3, data: Float64Array.from(last) }, { transB: true }, gemm);
  const out = new Float32Array(T * S * kh * kw);
  const K = kh * kw;
  for (let i = 0; i < S * K; i++) for (let t = 0; t < T; t++) out[t * S * K + i] = wt.data[i * T + t]!;
  return out;
}

/** W [T, S, kh, kw] in TT order (s, y, x, t), fp64. */
function ttOrder(k: TtKernel): Float64Array {
  const [T, S, kh, kw] = k.shape;
  const K = kh * kw;
  if (k.data.length !== T * S * K) throw new RangeError(`ttSvd: kernel has ${k.data.length} values, expected ${T}x${S}x${kh}x${kw}`);
  const a = new Float64Array(T * S * K);
  for (let t = 0; t < T; t++) for (let i = 0; i < S * K; i++) a[i * T + t] = k.data[t * S * K + i]!;
  return a;
}

/** Rank-r truncation of m: left [rows, r] (orthonormal), rest = diag(σ)·Vᵀ [r, cols], and the energy dropped (tt-nd.ts too). */
export function truncated(m: Matrix, rank: number, gemm?: SyncGemm): { rank: number; left: Float64Array; rest: Float64Array; discarded: number } {
  const f = svd(m, gemm);
  const r = Math.max(1, Math.min(rank, f.s.length));
  let discarded = 0;
  for (let i = r; i < f.s.length; i++) discarded += f.s[i]! * f.s[i]!;
  const k = f.u.cols;
  const left = new Float64Array(m.rows * r);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < r; j++) left[i * r + j] = f.u.data[i * k + j]!;
  const rest = new Float64Array(r * m.cols);
  for (let j = 0; j < r; j++) for (let c = 0; c < m.cols; c++) rest[j * m.cols + c] = f.s[j]! * f.vt.data[j * m.cols + c]!;
  return { rank: r, left, rest, discarded };
}

/**
 * The chain before its last 1x1 as a map on im2col patches, H [R3, S·kh·kw] (patch index
 * (s·kh + y)·kw + x): H[r3, (s, y, x)] = Σ cols[r3, r2, x]·rows[r2, r1, y]·first[r1, s].
 * What a least-squares refit of the last factor on patch statistics needs (refit.ts).
 */
export function ttPrefix(
  first: ArrayLike<number>, rows: ArrayLike<number>, cols: ArrayLike<number>,
  S: number, kh: number, kw: number, ranks: readonly [number, number, number], gemm?: SyncGemm,
): Matrix {
  const [R1, R2, R3] = ranks;
  // With last = I (T = R3), ttKernel gives H as [R3, S, kh, kw] = [R3, D].
  const eye = new Float64Array(R3 * R3);
  for (let i = 0; i < R3; i++) eye[i * R3 + i] = 1;
  const h = ttKernel(first, rows, cols, eye, R3, S, kh, kw, [R1, R2, R3], gemm);
  return { rows: R3, cols: S * kh * kw, data: Float64Array.from(h) };
}
