/**
 * Tensor-Train of a conv kernel with any number n of spatial axes (TT-SVD, Oseledets 2011),
 * as the weights of a chain 1x1 → (a conv along axis 1) → … → (a conv along axis n) → 1x1.
 * With W [T, S, k1, …, kn] read in the order (s, y1, …, yn, t):
 *   W[t, s, y1…yn] ≈ Σ C[s, r1]·Y1[r1, y1, r2]·…·Yn[rn, yn, r(n+1)]·Tf[r(n+1), t]
 * by n + 1 sequential truncated SVDs (of [S, K·T], then each remainder as [R_i·k_i, …·T]).
 * The left factors are orthonormal, so ‖W − Ŵ‖²_F is exactly the sum of the discarded
 * energies. Chain weights: first [R1, S], cores[i] [R(i+1), R_i, k_i], last [T, R(n+1)].
 * A 2-D kernel goes through tt.ts (the chain conv-tt wrote before 1-D/3-D: same numbers).
 */
import { isRank, notARank } from './checks.js';
import type { SyncGemm } from './engine.js';
import { relativeDiff, type Matrix } from './matrix.js';
import { singularValues } from './svd.js';
import { truncated, ttKernel, ttPrefix, ttSpectra, ttSvd } from './tt.js';

/** A conv kernel [T, S, k1, …, kn], row-major. */
export interface TtNdKernel {
  data: ArrayLike<number>;
  shape: readonly number[];
}

export interface TtNdConv {
  /** The ranks fitted [R1, …, R(n+1)] (clamped to what each step's matrix allows). */
  ranks: number[];
  /** [R1, S]. */
  first: Float32Array;
  /** Per spatial axis i: [R(i+1), R_i, k_i]. */
  cores: Float32Array[];
  /** [T, R(n+1)]. */
  last: Float32Array;
  relError: number;
  /** The energy each SVD discarded, relative to ‖W‖²_F. */
  discarded: number[];
}

const as2d = (k: TtNdKernel) => ({ data: k.data, shape: k.shape as [number, number, number, number] });

/** Singular values and ‖W‖²_F of each TT unfolding [S·k1…k_i, k(i+1)…kn·T], i = 0…n. */
export function ttNdSpectra(k: TtNdKernel): { sigma: Float64Array; total: number }[] {
  if (k.shape.length === 4) return ttSpectra(as2d(k));
  const a = ttOrder(k);
  let total = 0;
  for (let i = 0; i < k.data.length; i++) total += k.data[i]! * k.data[i]!;
  const [T, S, ...ks] = k.shape as number[];
  const K = ks.reduce((p, q) => p * q, 1);
  const out: { sigma: Float64Array; total: number }[] = [];
  let rows = S!;
  for (let i = 0; i <= ks.length; i++) {
    out.push({ sigma: singularValues({ rows, cols: (S! * K * T!) / rows, data: a }), total });
    if (i < ks.length) rows *= ks[i]!;
  }
  return out;
}

/** The TT of `k` at ranks [R1, …, R(n+1)] by TT-SVD. Ranks past a step's matrix size are clamped. */
export function ttNdSvd(k: TtNdKernel, ranks: readonly number[], opts: { gemm?: SyncGemm } = {}): TtNdConv {
  for (const r of ranks) if (!isRank(r)) throw new RangeError(`ttSvd: ${notARank(r)}`);
  const [T, S, ...ks] = k.shape as number[];
  if (ranks.length !== ks.length + 1) throw new RangeError(`ttSvd: ${ranks.length} ranks for ${ks.length} spatial axes (needs ${ks.length + 1})`);
  if (ks.length === 2) {
    const f = ttSvd(as2d(k), ranks as [number, number, number], opts);
    return { ranks: f.ranks, first: f.first, cores: [f.rows, f.cols], last: f.last, relError: f.relError, discarded: f.discarded };
  }
  const a = ttOrder(k);
  let total = 0;
  for (let i = 0; i < a.length; i++) total += a[i]! * a[i]!;
  const K = ks.reduce((p, q) => p * q, 1);
  let step = truncated({ rows: S!, cols: K * T!, data: a }, ranks[0]!, opts.gemm);
  const R = [step.rank];
  const discarded = [step.discarded];
  const first = new Float32Array(step.rank * S!);
  for (let s = 0; s < S!; s++) for (let r = 0; r < step.rank; r++) first[r * S! + s] = step.left[s * step.rank + r]!;
  const cores: Float32Array[] = [];
  let after = K;
  for (let i = 0; i < ks.length; i++) {
    const ki = ks[i]!;
    const r1 = R[i]!;
    after /= ki;
    // The remainder [R_i, k_i·after·T] read as [R_i·k_i, after·T] (same row-major data).
    step = truncated({ rows: r1 * ki, cols: after * T!, data: step.rest }, ranks[i + 1]!, opts.gemm);
    const r2 = step.rank;
    const core = new Float32Array(r2 * r1 * ki);
    for (let p = 0; p < r1; p++) for (let y = 0; y < ki; y++) for (let q = 0; q < r2; q++) core[(q * r1 + p) * ki + y] = step.left[(p * ki + y) * r2 + q]!;
    cores.push(core);
    R.push(r2);
    discarded.push(step.discarded);
  }
  const Rn = R.at(-1)!;
  const last = new Float32Array(T! * Rn);
  for (let r = 0; r < Rn; r++) for (let t = 0; t < T!; t++) last[t * Rn + r] = step.rest[r * T! + t]!;
  const w = ttNdKernel(first, cores, last, T!, S!, ks, R);
  return { ranks: R, first, cores, last, relError: relativeDiff(k.data, w), discarded: discarded.map((d) => (total > 0 ? d / total : 0)) };
}

/**
 * The kernel [T, S, k1, …, kn] a TT chain computes (the inverse for --stages):
 * contracted from the input side, B [S·k1…k_i, R(i+1)], then times lastᵀ.
 */
export function ttNdKernel(
  first: ArrayLike<number>, cores: readonly ArrayLike<number>[], last: ArrayLike<number>,
  T: number, S: number, ks: readonly number[], ranks: readonly number[], gemm?: SyncGemm,
): Float32Array {
  if (ks.length === 2) return ttKernel(first, cores[0]!, cores[1]!, last, T, S, ks[0]!, ks[1]!, ranks as [number, number, number], gemm);
  const R1 = ranks[0]!;
  let P = S;
  let b = new Float64Array(S * R1);
  for (let r = 0; r < R1; r++) for (let s = 0; s < S; s++) b[s * R1 + r] = first[r * S + s]!;
  for (let i = 0; i < ks.length; i++) {
    const [ki, r1, r2] = [ks[i]!, ranks[i]!, ranks[i + 1]!];
    const core = cores[i]!;
    const next = new Float64Array(P * ki * r2);
    for (let p = 0; p < P; p++) for (let a = 0; a < r1; a++) {
      const v = b[p * r1 + a]!;
      if (v === 0) continue;
      for (let y = 0; y < ki; y++) for (let q = 0; q < r2; q++) next[(p * ki + y) * r2 + q] += v * core[(q * r1 + a) * ki + y]!;
    }
    b = next;
    P *= ki;
  }
  const Rn = ranks.at(-1)!;
  const out = new Float32Array(T * P);
  for (let t = 0; t < T; t++) for (let p = 0; p < P; p++) {
    let v = 0;
    for (let r = 0; r < Rn; r++) v += b[p * Rn + r]! * last[t * Rn + r]!;
    out[t * P + p] = v;
  }
  return out;
}

/** The chain before its last 1x1 as a map on im2col patches, H [R(n+1), S·K] (for the last factor's refit). */
export function ttNdPrefix(first: ArrayLike<number>, cores: readonly ArrayLike<number>[], S: number, ks: readonly number[], ranks: readonly number[], gemm?: SyncGemm): Matrix {
  if (ks.length === 2) return ttPrefix(first, cores[0]!, cores[1]!, S, ks[0]!, ks[1]!, ranks as [number, number, number], gemm);
  const Rn = ranks.at(-1)!;
  const eye = new Float64Array(Rn * Rn);
  for (let i = 0; i < Rn; i++) eye[i * Rn + i] = 1;
  const h = ttNdKernel(first, cores, eye, Rn, S, ks, ranks, gemm);
  return { rows: Rn, cols: h.length / Rn, data: Float64Array.from(h) };
}

/** W [T, S, k…] in TT order (s, k…, t), fp64. */
function ttOrder(k: TtNdKernel): Float64Array {
  const [T, S, ...ks] = k.shape as number[];
  const P = S! * ks.reduce((p, q) => p * q, 1);
  if (k.data.length !== T! * P) throw new RangeError(`ttSvd: kernel has ${k.data.length} values, expected ${k.shape.join('x')}`);
  const a = new Float64Array(T! * P);
  for (let t = 0; t < T!; t++) for (let i = 0; i < P; i++) a[i * T! + t] = k.data[t * P + i]!;
  return a;
}
