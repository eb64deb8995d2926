/**
 * --method auto on a layer several passes take: a rival challenges the current choice at
 * the largest rank whose chain is no larger (params) and no costlier (MACs per output
 * position), and wins when it reconstructs the layer at least as well — with calibration
 * statistics, its output on them; else the weight (equal within 2% counts as equal: the
 * rival is no larger, and its fit may be iterative). A rival with several ranks (TT)
 * competes along a one-parameter family of them (`ranksOf`). A rival whose chain was
 * measured slower in ORT than the choice it would replace at equal params and MACs (TT,
 * CP-4, CP on grouped convs: their passes' *_SLOW_PATH) is compared like any other; where
 * latency counts (PassContext.saves) it must do better than equal error to win, and its win
 * says so: the latency screen then times it against the choice it replaced and keeps the
 * faster (optimize/method-latency.ts).
 * A rival that declines the rank it would compete at (a CP whose refit under the sensitivity
 * bound stays degenerate: never shipped) does not compete, and the note says why.
 * A rival whose fit would cost more than COMPARE_WORK (its pass's fitWork) is not fitted
 * only to compare (PassContext.compareWork: --compare-limit); the note says what the fit
 * would cost.
 */
import type { LayerInfo } from '../graph/layers.js';
import { MIN_ROWS_PER_DIM } from './conv-stats.js';
import { bound } from './registry.js';
import { isSkip, paysInParamsAndMacs, type BoundPass, type Challenge, type Cost, type LayerRewrite, type PassContext, type Skip } from './pass.js';
import type { RankPolicy } from './rank-policy.js';


export interface RivalSpec<M> {
  pass: LayerRewrite<M> & { method: string };
  match: M;
  /** The rank limit of the rival's single rank. */
  limit: number;
  /** Values one row of statistics holds for this layer (S·∏k for a conv): how many rows make the data error trustworthy. */
  patchDim: number;
  /** Under a fixed rank policy (--rank N), compete at rank N as --method would write it, when that chain is no larger. */
  fixedRank?: boolean;
  /** When the choice so far does not pay, take the rank policy (challengeByPolicy); only for rivals whose chooseRanks is cheap. */
  byPolicy?: boolean;
  /** The rival's ranks at size k (default [k]), cost nondecreasing in k; `limit` bounds k. */
  ranksOf?: (k: number) => number[];
  /**
   * Why the rival's chain can be slower in ORT than its MACs say (measured): where latency
   * counts, the note of its win says it is timed against the choice it replaced.
   */
  slowPath?: string;
  /**
   * A cheaper fit for the shrink search (CP, CP-4: the ALS without the refit under the
   * sensitivity bound, which took 3/4 of auto's time on det and whose error it lowers by
   * 0.3–2%): the search runs on it and the rank it ends on is fitted in full (smallestWithin).
   */
  rough?: (ranks: number[]) => { relError: number; dataError?: number } | Skip;
}

/**
 * Flops (a pass's fitWork) one fit made only to compare methods may cost. Measured on the
 * 2-core AVX-512 machine of the benches, with ORT's GEMM: CP rank 408 of a 256x256x3x3
 * kernel (with its refit under the sensitivity bound) 2.2e11 in 131 s; spatial SVD rank 277
 * of 512x512x3x3, whitened, 1.6e10 in 14 s; TT 301,301,301 of it 3.7e10 in 8 s. So a fit at
 * the limit takes about half a minute there: spatial SVD and TT are compared on 512-channel
 * 3x3 convs, CP up to rank × weight size ≈ 5.6e7 (as before this count: 5e7).
 */
export const COMPARE_WORK = 5e10;

/** Whether latency counts in this run (PassContext.saves absent or latency): a slow-path rival's win is then timed. */
const latencyCounts = (cx: PassContext): boolean => cx.saves === undefined || cx.saves === 'latency';

/** The rival's ranks at size k. */
const ranksAt = <M>(spec: RivalSpec<M>, k: number): number[] => (spec.ranksOf ? spec.ranksOf(k) : [k]);

/** Whether a chain's cost is within `limit`: no more params and no more MACs per position. */
const within = (c: Cost, limit: Cost): boolean => c.params <= limit.params && c.macsPerPosition <= limit.macsPerPosition;

/** The largest single rank of `spec` whose chain is no larger and no costlier than `limit` (the choice so far), or 0. */
export function rankAtCost<M>(spec: RivalSpec<M>, limit: Cost): number {
  let r = 0;
  for (let lo = 1, hi = spec.limit; lo <= hi;) {
    const mid = (lo + hi) >> 1;
    if (within(spec.pass.cost(spec.match, ranksAt(spec, mid)).after, limit)) { r = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return r;
}

/**
 * When the choice so far does not pay at its ranks, the rival is not held to its size: it
 * takes the run's rank policy itself and wins when its chain pays (a kernel of rank-1
 * spatial structure has full Tucker-2 ranks but an exact CP or spatial SVD).
 */
function challengeByPolicy<M>(spec: RivalSpec<M>, preferred: BoundPass, ranks: readonly number[], policy: RankPolicy): Challenge | undefined {
  let r;
  try { r = spec.pass.chooseRanks(spec.match, policy); } catch { return undefined; }
  if (isSkip(r)) return undefined;
  const c = spec.pass.cost(spec.match, r);
  const pays = spec.pass.pays ? spec.pass.pays(c) : paysInParamsAndMacs(c);
  const note = `${preferred.method} ${ranks.join(',')} does not pay; ${spec.pass.method} ${r.join(',')} ${pays ? 'does' : 'does not either'}`;
  return pays ? { note, use: { bound: bound(spec.pass, spec.match), ranks: r } } : { note };
}

/** The rival's ranks under a fixed policy when its chain is no larger and no costlier than `limit`, else undefined. */
function fixedRanksAtCost<M>(spec: RivalSpec<M>, limit: Cost, policy: RankPolicy): number[] | undefined {
  const f = spec.pass.chooseRanks(spec.match, policy);
  if (isSkip(f)) return undefined;
  return within(spec.pass.cost(spec.match, f).after, limit) ? f : undefined;
}

/** The challenge of a single-rank rival at equal cost (see the file's comment); undefined when there is nothing to compare. */
export function challengeAtEqualCost<M>(
  layer: LayerInfo, spec: RivalSpec<M>, preferred: BoundPass, ranks: readonly number[], cx: PassContext, policy?: RankPolicy,
): Challenge | undefined {
  const ct = preferred.cost(ranks);
  if (spec.byPolicy && policy && !preferred.pays(ct)) return challengeByPolicy(spec, preferred, ranks, policy);
  if (ct.after.params >= ct.before.params || !preferred.estimate || !spec.pass.estimate) return undefined;
  const fixed = spec.fixedRank && policy?.kind === 'fixed';
  let rivalRanks: number[];
  let r: number;
  if (fixed) {
    const f = fixedRanksAtCost(spec, ct.after, policy);
    if (!f) return undefined;
    rivalRanks = f;
    r = Math.max(...f);
  } else {
    r = rankAtCost(spec, ct.after);
    if (r === 0) return undefined;
    rivalRanks = ranksAt(spec, r);
  }
  const name = spec.pass.method;
  const shown = rivalRanks.join(',');
  const work = spec.pass.fitWork?.(spec.match, rivalRanks) ?? 0;
  const most = cx.compareWork ?? COMPARE_WORK;
  if (work > most) {
    return { note: `${name} ${shown} not compared (its fit, ~${work.toExponential(1)} flops, is past the ${most.toExponential(0)} a comparison may spend: --compare-limit raises it)` };
  }
  const fP = preferred.estimate(ranks, cx);
  const fR = spec.pass.estimate(spec.match, rivalRanks, cx);
  if (isSkip(fP)) return undefined;
  // A rival that declines its rank (e.g. a CP still degenerate after its refit under the
  // sensitivity bound: never shipped) does not compete; the note says why.
  if (isSkip(fR)) return { note: `${name} ${shown} declined (${fR.skip})` };
  const rows = cx.stats?.get(layer.name)?.count ?? 0;
  const data = fP.dataError !== undefined && fR.dataError !== undefined && rows >= MIN_ROWS_PER_DIM * spec.patchDim;
  const [eP, eR] = data ? [fP.dataError!, fR.dataError!] : [fP.relError, fR.relError];
  const note = `${preferred.method} ${ranks.join(',')} ${data ? 'data ' : ''}err ${eP.toExponential(2)} vs ${name} ${shown} err ${eR.toExponential(2)}`;
  // Equal within 2% (or both below 1e-4, where iterative fits stop) counts as equal. Where
  // latency counts a slow-path rival must do better than equal: at equal error its chain
  // measured slower, so it is not worth the latency screen's timing.
  const tol = eP * 1.02 + 1e-4;
  if (eR > tol) return { note };
  // Where latency counts, a slow-path rival's win is timed against the choice it replaces (the latency screen).
  const slow = latencyCounts(cx) ? spec.slowPath : undefined;
  if (slow && eR >= eP / 1.02 - 1e-4) return { note: `${note} (equal: ${name}'s chains ${slow}, so ${preferred.method} stays where latency counts)` };
  const timed = slow ? `; ${name} timed against ${preferred.method} in ORT, as its chains ${slow}` : '';
  if (fixed) return { note: note + timed, use: { bound: bound(spec.pass, spec.match), ranks: rivalRanks } };
  // The winner at equal size is then made as small as the same error allows; a rank it
  // declines (a CP that stays degenerate) is unusable: infinite error, never the answer.
  const errOf = (f: { relError: number; dataError?: number } | Skip): number => (isSkip(f) ? Infinity : data ? f.dataError ?? Infinity : f.relError);
  const errAt = (k: number): number => errOf(spec.pass.estimate!(spec.match, ranksAt(spec, k), cx));
  const rough = spec.rough;
  const small = smallestWithin(r, eR, errAt, tol, SHRINK_FITS, rough && ((k: number) => errOf(rough(ranksAt(spec, k)))));
  const smallRanks = ranksAt(spec, small.rank);
  const shrunk = small.rank < r ? `; ${name} ${smallRanks.join(',')} err ${small.err.toExponential(2)}, the smallest within it` : '';
  return { note: note + shrunk + timed, use: { bound: bound(spec.pass, spec.match), ranks: smallRanks } };
}

/** Fits a winner may spend on shrinking (a bisection over ranks 1…r). */
const SHRINK_FITS = 6;

/** Full fits the shrink may spend after a rough search whose rank the full fit does not confirm. */
const CONFIRM_FITS = 3;

/**
 * How far a rough fit's error may exceed `tol` in the search: the full fit's refit under
 * the sensitivity bound lowered CP-ALS errors on det's 3x3 convs by 0.3–2% at the ranks the
 * shrink ends on (4.8% at twice them), so a rough search held to `tol` itself ended 2–5%
 * above the rank a search of full fits found.
 */
export const ROUGH_SLACK = 0.02;

/**
 * The smallest rank ≤ r whose error is within `tol`, by bisection (errors fall with the
 * rank; `r` is within), spending at most `fits` evaluations: the smallest rank found.
 * With `roughAt` (a cheaper fit whose error is a little above the full one's, as a CP-ALS
 * before its refit under the sensitivity bound) the bisection runs on it, allowed
 * ROUGH_SLACK over `tol`, and the rank it ends on is fitted in full: within `tol`, that
 * rank and its full error; else a bisection of full fits (at most CONFIRM_FITS) above it.
 * The full fit is then mostly the last one made, which the passes cache for the next
 * rival's comparison and for the rewrite.
 */
export function smallestWithin(
  r: number, errR: number, errAt: (k: number) => number, tol: number, fits: number, roughAt?: (k: number) => number,
): { rank: number; err: number } {
  const bisect = (from: number, at: (k: number) => number, n: number): number => {
    let lo = from, hi = r;
    for (let i = 0; i < n && lo < hi; i++) {
      const mid = (lo + hi) >> 1;
      if (at(mid) <= tol) hi = mid; else lo = mid + 1;
    }
    return hi;
  };
  if (!roughAt) {
    let err = errR;
    const rank = bisect(1, (k) => { const e = errAt(k); if (e <= tol) err = e; return e; }, fits);
    return { rank, err };
  }
  const k = bisect(1, (q) => roughAt(q) / (1 + ROUGH_SLACK), fits);
  if (k === r) return { rank: r, err: errR };
  const e = errAt(k);
  if (e <= tol) return { rank: k, err: e };
  let err = errR;
  const rank = bisect(k + 1, (q) => { const f = errAt(q); if (f <= tol) err = f; return f; }, CONFIRM_FITS);
  return { rank, err };
}
