/**
 * Rank choice: energy thresholds, parameter counts and break-even ranks (design
 * notes, "Costs, break-even, rank choice"). A rank of 0 is a valid answer and means
 * "a low-rank factorisation does not pay here: leave the layer alone".
 */
import { LrError } from '../errors.js';
import { evbmfFromSingularValues } from './evbmf.js';

/**
 * Smallest r with Σ_{i≤r} σ_i² ≥ energy·Σ σ_i² (σ descending). energy ∈ (0, 1].
 * Returns 0 for an all-zero spectrum.
 */
export function energyRank(s: ArrayLike<number>, energy: number): number {
  if (!(energy > 0 && energy <= 1)) throw new LrError('rank', `energyRank: energy must be in (0, 1], got ${energy}`);
  let total = 0;
  for (let i = 0; i < s.length; i++) {
    const v = s[i]!;
    if (!Number.isFinite(v) || v < 0) throw new LrError('numeric', `energyRank: singular value ${i} is ${v}`);
    total += v * v;
  }
  return partialEnergyRank(s, total, energy) ?? s.length;
}

/**
 * The same from the leading singular values of a partial spectrum and the total energy
 * ‖W‖²_F: undefined when the listed values do not reach the share (the rank lies beyond).
 */
export function partialEnergyRank(sigma: ArrayLike<number>, total: number, energy: number): number | undefined {
  if (total <= 0) return 0;
  const target = energy * total * (1 - 1e-12); // tolerate rounding in the running sum at energy = 1
  let acc = 0;
  for (let i = 0; i < sigma.length; i++) {
    acc += sigma[i]! * sigma[i]!;
    if (acc >= target) return i + 1;
  }
  return undefined;
}

/** Parameters of a rank-r SVD pair for an m×n matrix: r(m + n). */
export function svdParams(m: number, n: number, r: number): number {
  return r * (m + n);
}

/** Largest r for which the SVD pair has fewer parameters than the dense m×n matrix (r(m+n) < mn); may be 0. */
export function svdBreakEvenRank(m: number, n: number): number {
  if (m <= 0 || n <= 0) return 0;
  return Math.max(0, Math.ceil((m * n) / (m + n)) - 1);
}

/** Tucker-2 parameters S·R1 + R1·R2·kh·kw + R2·T (conv kernel [T, S, kh, kw]). */
export function tucker2Params(T: number, S: number, kh: number, kw: number, r1: number, r2: number): number {
  return S * r1 + r1 * r2 * kh * kw + r2 * T;
}

/** CP parameters R·(S + T + kh·kw) (3-way reshape of [T, S, kh, kw]). */
export function cpParams(T: number, S: number, kh: number, kw: number, r: number): number {
  return r * (S + T + kh * kw);
}

/** Dense conv kernel parameters T·S·kh·kw. */
export function convParams(T: number, S: number, kh: number, kw: number): number {
  return T * S * kh * kw;
}

/** Largest CP rank with fewer parameters than the dense kernel (may be 0). */
export function cpBreakEvenRank(T: number, S: number, kh: number, kw: number): number {
  const dense = convParams(T, S, kh, kw);
  return Math.max(0, Math.ceil(dense / (S + T + kh * kw)) - 1);
}

/** Whether Tucker-2 at (r1, r2) has fewer parameters than the dense kernel. */
export function tucker2Pays(T: number, S: number, kh: number, kw: number, r1: number, r2: number): boolean {
  return tucker2Params(T, S, kh, kw, r1, r2) < convParams(T, S, kh, kw);
}

/** The rank multiple an `align` setting means: none (undefined) when absent or ≤ 1. */
export function rankMultiple(align: number | undefined): number | undefined {
  return align && align > 1 ? align : undefined;
}

/** Rounds a rank up to a multiple of `align` (e.g. 8: faster kernels; none when absent or ≤ 1), never above `max`. */
export function alignRank(r: number, align: number | undefined, max: number): number {
  if (r <= 0) return 0;
  const m = rankMultiple(align);
  return m ? Math.min(max, Math.ceil(r / m) * m) : Math.min(r, max);
}

/**
 * EVBMF rank (Nakajima et al. 2013) of an m×n matrix from its leading singular values
 * `sigma` and total energy `total` = ‖W‖²_F (which covers any values not listed).
 * 0 means nothing stands above the estimated noise.
 */
export function evbmfFromSpectrum(sigma: ArrayLike<number>, total: number, m: number, n: number): number {
  return evbmfFromSingularValues(sigma, m, n, total).rank;
}
