/**
 * The factorization shared by the SVD passes: a weight W [m, n] becomes
 * W ≈ L·R with L = U_r·Σ_r^½ [m, r] and R = Σ_r^½·V_rᵀ [r, n] (Eckart–Young optimal).
 * Splitting Σ evenly keeps both factors at a similar scale, which suits fp16 storage.
 */
import type { Matrix } from '../linalg/matrix.js';
import { truncatedSvdSync } from '../linalg/rsvd.js';
import type { SvdResult } from '../linalg/svd.js';
import type { Cost, Skip } from './pass.js';
import { skip } from './pass.js';
import { chooseSvdRank, type RankPolicy } from './rank-policy.js';

export interface SvdSpectrum {
  /** Leading singular values, descending (all of them when `complete`). */
  sigma: Float64Array;
  /** ‖W‖²_F = Σ all σ². */
  total: number;
  complete: boolean;
}

/** Largest rank at which an SVD pair of an m×n weight has fewer parameters: r < mn/(m+n). */
export const svdBreakEven = (m: number, n: number): number => Math.ceil((m * n) / (m + n)) - 1;

/** Lazily computed, cached SVD of one weight. */
export class SvdCache {
  private full?: SvdResult;
  constructor(readonly w: Matrix, private readonly seed: number) {}

  /** Top-k factorization; exact for moderate sizes, randomized (seeded) for large ones. */
  factors(k: number): SvdResult {
    const kk = Math.min(k, this.w.rows, this.w.cols);
    if (this.full && this.full.s.length >= kk) return this.full;
    const f = truncatedSvdSync(this.w, Math.max(kk, 1), { seed: this.seed });
    this.full = f;
    return f;
  }

  spectrum(k: number): SvdSpectrum {
    const f = this.factors(k);
    let total = 0;
    for (let i = 0; i < this.w.data.length; i++) total += this.w.data[i] * this.w.data[i];
    return { sigma: f.s, total, complete: f.s.length >= Math.min(this.w.rows, this.w.cols) };
  }
}

export function svdPairRank(cache: SvdCache, policy: RankPolicy): number[] | Skip {
  const { rows: m, cols: n } = cache.w;
  const cap = Math.max(1, svdBreakEven(m, n));
  const r = chooseSvdRank(policy, cache.spectrum(Math.min(m, n, Math.max(cap, policy.kind === 'fixed' ? policy.rank : 0))), m, n);
  if (typeof r !== 'number') return r;
  if (r <= 0) return skip('rank 0: the weight has no low-rank structure worth keeping');
  return [r];
}

export function svdPairCost(m: number, n: number, r: number): { before: Cost; after: Cost } {
  return { before: { params: m * n, macsPerPosition: m * n }, after: { params: r * (m + n), macsPerPosition: r * (m + n) } };
}

/** Splits W into L [m, r] and R [r, n] (fp32 row-major) and reports the relative error. */
export function svdPairFactors(cache: SvdCache, r: number): { left: Float32Array; right: Float32Array; relError: number } {
  const { rows: m, cols: n } = cache.w;
  const f = cache.factors(r);
  const left = new Float32Array(m * r);
  const right = new Float32Array(r * n);
  const ucols = f.u.cols;
  for (let k = 0; k < r; k++) {
    const s = Math.sqrt(f.s[k]);
    for (let i = 0; i < m; i++) left[i * r + k] = f.u.data[i * ucols + k] * s;
    for (let j = 0; j < n; j++) right[k * n + j] = f.vt.data[k * n + j] * s;
  }
  const relError = reconstructionError(cache.w, left, right, r);
  return { left, right, relError };
}

/** ‖W − L·R‖_F / ‖W‖_F, computed directly (not from the spectrum) so wiring bugs show. */
export function reconstructionError(w: Matrix, left: Float32Array, right: Float32Array, r: number): number {
  const { rows: m, cols: n } = w;
  let num = 0;
  let den = 0;
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    for (let k = 0; k < r; k++) {
      const a = left[i * r + k];
      if (a === 0) continue;
      const off = k * n;
      for (let j = 0; j < n; j++) row[j] += a * right[off + j];
    }
    for (let j = 0; j < n; j++) {
      const x = w.data[i * n + j];
      const d = x - row[j];
      num += d * d;
      den += x * x;
    }
  }
  return den === 0 ? 0 : Math.sqrt(num / den);
}
