/**
 * --method auto on a layer several passes take: a rival challenges the current choice at
 * the largest rank whose chain is no larger (params) and no costlier (MACs per output
 * position), and wins when it reconstructs the layer at least as well — with calibration
 * statistics, its output on them; else the weight (equal within 2% counts as equal: the
 * rival is no larger, and its fit may be iterative).
 */
import type { LayerInfo } from '../graph/layers.js';
import { MIN_ROWS_PER_DIM } from './conv-stats.js';
import { bound } from './registry.js';
import { isSkip, paysInParamsAndMacs, type BoundPass, type Challenge, type Cost, type LayerRewrite, type PassContext } from './pass.js';
import type { RankPolicy } from './rank-policy.js';


export interface RivalSpec<M> {
  pass: LayerRewrite<M> & { method: string };
  match: M;
  /** The rank limit of the rival's single rank. */
  limit: number;
  /** Values one row of statistics holds for this layer (S·∏k for a conv): how many rows make the data error trustworthy. */
  patchDim: number;
  /** Largest rank × weight size the comparison may fit (the fit's cost grows with both). */
  maxWork: number;
  /** Under a fixed rank policy (--rank N), compete at rank N as --method would write it, when that chain is no larger. */
  fixedRank?: boolean;
  /** When the choice so far does not pay, take the rank policy (challengeByPolicy); only for rivals whose chooseRanks is cheap. */
  byPolicy?: boolean;
}

/** Whether a chain's cost is within `limit`: no more params and no more MACs per position. */
const within = (c: Cost, limit: Cost): boolean => c.params <= limit.params && c.macsPerPosition <= limit.macsPerPosition;

/** The largest single rank of `spec` whose chain is no larger and no costlier than `limit` (the choice so far), or 0. */
export function rankAtCost<M>(spec: RivalSpec<M>, limit: Cost): number {
  let r = 0;
  for (let lo = 1, hi = spec.limit; lo <= hi;) {
    const mid = (lo + hi) >> 1;
    if (within(spec.pass.cost(spec.match, [mid]).after, limit)) { r = mid; lo = mid + 1; } else hi = mid - 1;
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

/** The rival's rank under a fixed policy when its chain is no larger and no costlier than `limit`, else 0. */
function fixedRankAtCost<M>(spec: RivalSpec<M>, limit: Cost, policy: RankPolicy): number {
  const f = spec.pass.chooseRanks(spec.match, policy);
  if (isSkip(f)) return 0;
  return within(spec.pass.cost(spec.match, f).after, limit) ? f[0]! : 0;
}

/** The challenge of a single-rank rival at equal cost (see the file's comment); undefined when there is nothing to compare. */
export function challengeAtEqualCost<M>(
  layer: LayerInfo, spec: RivalSpec<M>, preferred: BoundPass, ranks: readonly number[], cx: PassContext, policy?: RankPolicy,
): Challenge | undefined {
  const ct = preferred.cost(ranks);
  if (spec.byPolicy && policy && !preferred.pays(ct)) return challengeByPolicy(spec, preferred, ranks, policy);
  if (ct.after.params >= ct.before.params || !preferred.estimate || !spec.pass.estimate) return undefined;
  const r = spec.fixedRank && policy?.kind === 'fixed' ? fixedRankAtCost(spec, ct.after, policy) : rankAtCost(spec, ct.after);
  if (r === 0) return undefined;
  const name = spec.pass.method;
  if (r * layer.params > spec.maxWork) return { note: `${name} ${r} not compared (fit too costly at this size)` };
  const fP = preferred.estimate(ranks, cx);
  const fR = spec.pass.estimate(spec.match, [r], cx);
  if (isSkip(fP) || isSkip(fR)) return undefined;
  const rows = cx.stats?.get(layer.name)?.count ?? 0;
  const data = fP.dataError !== undefined && fR.dataError !== undefined && rows >= MIN_ROWS_PER_DIM * spec.patchDim;
  const [eP, eR] = data ? [fP.dataError!, fR.dataError!] : [fP.relError, fR.relError];
  const note = `${preferred.method} ${ranks.join(',')} ${data ? 'data ' : ''}err ${eP.toExponential(2)} vs ${name} ${r} err ${eR.toExponential(2)}`;
  // Equal within 2% (or both below 1e-4, where iterative fits stop) counts as equal.
  const tol = eP * 1.02 + 1e-4;
  if (eR > tol) return { note };
  if (spec.fixedRank && policy?.kind === 'fixed') return { note, use: { bound: bound(spec.pass, spec.match), ranks: [r] } };
  // The winner at equal size is then made as small as the same error allows.
  const errAt = (k: number): number => {
    const f = spec.pass.estimate!(spec.match, [k], cx);
    return isSkip(f) ? Infinity : data ? f.dataError ?? Infinity : f.relError;
  };
  const small = smallestWithin(r, eR, errAt, tol, SHRINK_FITS);
  const shrunk = small.rank < r ? `; ${name} ${small.rank} err ${small.err.toExponential(2)}, the smallest within it` : '';
  return { note: note + shrunk, use: { bound: bound(spec.pass, spec.match), ranks: [small.rank] } };
}

/** Fits a winner may spend on shrinking (a bisection over ranks 1…r). */
const SHRINK_FITS = 6;

/**
 * The smallest rank ≤ r whose error is within `tol`, by bisection (errors fall with the
 * rank; `r` is within), spending at most `fits` evaluations: the smallest rank found.
 */
export function smallestWithin(r: number, errR: number, errAt: (k: number) => number, tol: number, fits: number): { rank: number; err: number } {
  let lo = 1, hi = r, err = errR;
  for (let n = 0; n < fits && lo < hi; n++) {
    const mid = (lo + hi) >> 1;
    const e = errAt(mid);
    if (e <= tol) { hi = mid; err = e; } else lo = mid + 1;
  }
  return { rank: hi, err };
}
