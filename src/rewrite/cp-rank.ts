/**
 * Rank choice shared by the CP passes (conv-cp: 3-way [T, S, K]; conv-cp4: 4-way
 * [T, S, kh, kw]): the rank policies, and the energy search over weight-only CP-ALS fits
 * (linalg/rank-search.ts), which has no spectrum to read the rank from. A fit that stays
 * degenerate after its refit under the sensitivity bound (cp-sensitivity.ts
 * degenerateReason) is never shipped, so the search counts its rank as missing the energy.
 */
import { isRank, notARank } from '../linalg/checks.js';
import { degenerateReason, type Stabilized } from '../linalg/cp-sensitivity.js';
import { alignRank } from '../linalg/rank.js';
import { smallestRankWithin } from '../linalg/rank-search.js';
import { isSkip, skip, type Skip } from './pass.js';
import type { RankPolicy } from './rank-policy.js';

/** Slack on the energy test: fp32 factors cannot reproduce a kernel below ~1e-7 relative. */
const ENERGY_SLACK = 1e-12;

/**
 * The energy search stops within this fraction of the smallest rank: each step is a CP-ALS
 * fit (seconds on a large kernel), and the last few steps of a bisection would move the
 * rank by a few percent (measured: 8 fits per energy on a 32x48x3x5 kernel, 5 with it).
 */
const RANK_TOLERANCE = 1 / 16;

/** What the policies need of a CP pass's layer. */
export interface CpRankSpec {
  /** Output and input channels and kernel size ∏k: the ratio policy's T·S·∏k. */
  T: number;
  S: number;
  K: number;
  /** Parameters per unit of rank (the sum of the modes): the ratio policy. */
  perRank: number;
  /** The generic CP rank, beyond which a CP is always exact: ranks are clamped to it. */
  limit: number;
  /** The Tucker-2 ranks of the channel unfoldings under a policy (a lower bound on the CP rank). */
  tucker2: (policy: RankPolicy) => [number, number] | Skip;
  /** The energy search from the lower bound `lo` (cpEnergyRank). */
  energyRank: (energy: number, lo: number) => number | Skip;
}

/**
 * fixed r → R = r; ratio ρ → ⌊ρ·T·S·K / perRank⌋; energy e → the energy search from
 * max(R1, R2), the Tucker-2 energy ranks; vbmf → max(R1, R2) of the EVBMF Tucker-2 ranks.
 * Clamped to the generic rank, aligned.
 */
export function cpRanks(policy: RankPolicy, spec: CpRankSpec): number[] | Skip {
  let r: number;
  switch (policy.kind) {
    case 'fixed':
      if (!isRank(policy.rank)) return skip(notARank(policy.rank));
      r = policy.rank;
      break;
    case 'ratio':
      r = Math.max(1, Math.floor((policy.ratio * spec.T * spec.S * spec.K) / spec.perRank));
      break;
    case 'energy': {
      const t = spec.tucker2(policy);
      if (isSkip(t)) return t;
      const e = spec.energyRank(policy.energy, Math.max(t[0], t[1]));
      if (isSkip(e)) return e;
      r = e;
      break;
    }
    case 'vbmf': {
      const t = spec.tucker2(policy);
      if (isSkip(t)) return t;
      r = Math.max(t[0], t[1]);
      break;
    }
  }
  r = alignRank(Math.min(r, spec.limit), policy.align, spec.limit);
  if (r <= 0) return skip('rank 0: the kernel has no low-rank structure worth keeping');
  return [r];
}

/** What the energy search reads of a fit: its errors, and the refit under the sensitivity bound (when it was degenerate). */
export interface CpSearchFit {
  rank: number;
  alsError: number;
  relError: number;
  stabilized?: Stabilized;
}

/** The energy search's view of one layer: its weight-only fits and where they are kept. */
export interface CpEnergySearch<F extends CpSearchFit> {
  /** The generic CP rank and the break-even rank (the largest that pays). */
  limit: number;
  even: number;
  /** A weight-only CP-ALS fit at rank r. */
  fit: (r: number) => F;
  /** Finite fits by rank, and the relative error² of every fit made (failed: NaN; degenerate: Infinity): reused across searches. */
  fits: Map<number, F>;
  err2: Map<number, number>;
  /** How a skip names the decomposition ('CP rank', '4-way CP rank') and the rank it reports on. */
  words: [what: string, rank: string];
}

/**
 * The smallest rank in [lo, break-even] (to within RANK_TOLERANCE) whose weight-only fit
 * leaves at most 1 − energy of ‖W‖² and is not degenerate (its ratio within the
 * sensitivity bound, after the refit), or why none does.
 */
export function cpEnergyRank<F extends CpSearchFit>(s: CpEnergySearch<F>, energy: number, lo: number): number | Skip {
  const low = Math.max(1, Math.min(lo, s.limit));
  const high = Math.max(low, s.even);
  const err2At = (r: number): number => {
    let f = s.fits.get(r);
    if (!f) {
      const c = s.fit(r);
      if (!Number.isFinite(c.alsError) || !Number.isFinite(c.relError)) return NaN;
      f = c;
      s.fits.set(r, f);
    }
    // A declined rank (the fit stays degenerate) is unusable: as if it kept no energy.
    return degenerateReason(f.rank, f.stabilized) ? Infinity : f.relError * f.relError;
  };
  const found = smallestRankWithin(low, high, Math.max(0, 1 - energy) + ENERGY_SLACK, err2At, s.err2, RANK_TOLERANCE);
  if ('above' in found) {
    const [what, rank] = s.words;
    const top = s.fits.get(found.above);
    const degenerate = top && degenerateReason(top.rank, top.stabilized);
    if (degenerate) return skip(`energy ${energy}: no ${what} up to ${found.above} both meets it and is stable (${degenerate})`);
    if (!Number.isFinite(found.err2)) return skip(`CP-ALS at rank ${found.above} produced a non-finite fit`);
    return skip(`energy ${energy} needs a ${what} above ${found.above}${found.above === s.even ? ' (break-even)' : ''}: ${rank} ${found.above} keeps energy ${(1 - found.err2).toFixed(4)}`);
  }
  return found.rank;
}
