/**
 * How ranks are chosen from spectra when no calibration data is given:
 * fixed rank, energy fraction, fraction of parameters kept, or EVBMF. `align` rounds a
 * rank up to a multiple (kernels often run faster on multiples of 8), never past full rank.
 */
import { skip, type Skip } from './skip.js';
import { isRank, notARank } from '../linalg/checks.js';
import { alignRank, evbmfFromSpectrum, partialEnergyRank, rankMultiple } from '../linalg/rank.js';

/** The singular values a rank policy chooses from. */
export interface SvdSpectrum {
  /** Leading singular values, descending (all of them when `complete`). */
  sigma: Float64Array;
  /** ‖W‖²_F = Σ all σ². */
  total: number;
  complete: boolean;
}

export type RankPolicy = (
  | { kind: 'fixed'; rank: number }
  | { kind: 'energy'; energy: number }
  | { kind: 'ratio'; ratio: number }
  | { kind: 'vbmf' }
) & { align?: number };

export function describePolicy(p: RankPolicy): string {
  const base = p.kind === 'fixed' ? `rank ${p.rank}` : p.kind === 'energy' ? `energy ${p.energy}` : p.kind === 'ratio' ? `rank-ratio ${p.ratio}` : 'vbmf';
  return rankMultiple(p.align) ? `${base}, align ${p.align}` : base;
}

/**
 * EVBMF rank estimate (Nakajima et al. 2013, global analytic VB solution with the noise
 * variance estimated): the number of singular values above the VB threshold.
 */
export function vbmfRank(sigma: ArrayLike<number>, total: number, m: number, n: number): number {
  // Delegated to the numerical core.
  return evbmfFromSpectrum(sigma, total, m, n);
}

export function chooseSvdRank(p: RankPolicy, spec: SvdSpectrum, m: number, n: number): number | Skip {
  const full = Math.min(m, n);
  let r: number;
  switch (p.kind) {
    case 'fixed':
      if (!isRank(p.rank)) return skip(notARank(p.rank));
      r = Math.min(p.rank, full);
      break;
    case 'energy': {
      const e = partialEnergyRank(spec.sigma, spec.total, p.energy);
      if (e === undefined) return skip(`energy ${p.energy} needs a rank above break-even`);
      r = e;
      break;
    }
    case 'ratio':
      r = Math.max(1, Math.floor((p.ratio * m * n) / (m + n)));
      break;
    case 'vbmf':
      r = vbmfRank(spec.sigma, spec.total, m, n);
      if (r === 0) return skip('EVBMF rank 0: leave the layer alone');
      break;
  }
  return alignRank(r, p.align, full);
}
