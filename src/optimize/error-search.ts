/**
 * Error budgets are checked in ORT after the rewrite, because layer errors do not add up
 * exactly. This decides the next allocation budget (a predicted Σ‖Δy‖²/‖y‖²) from the
 * attempts so far, or that the search is over.
 *
 * - 'err2' (rel. L2 or cosine targets): the allocation budget starts at the target. It is
 *   tightened in proportion to the overshoot until the measured error fits; when the error
 *   fits with much to spare (layer errors partly cancel, so the additive prediction is
 *   pessimistic), it is grown towards the target, never past a budget that failed.
 * - 'top1' (top-1 agreement targets): there is no closed-form link between the predicted
 *   error and agreement, so the budget is searched: grown ×4 while it holds, then bisected
 *   (geometrically) between the largest budget that held and the smallest that did not.
 */

export interface ErrorAttempt {
  /** The allocation's error budget. */
  err2: number;
  /** The measured value met the target. */
  met: boolean;
  /** Measured squared relative output error (for 'err2' searches). */
  measuredErr2: number;
  /** The allocation changed nothing compared to the attempt before (a larger budget buys no more). */
  saturated?: boolean;
}

export interface SearchLimits {
  /** Attempts once one has held; while none has, twice as many (a budget missed is worse than a search that takes longer). */
  maxAttempts: number;
  /** Bisection stops when failing/holding budgets are this close (ratio). */
  closeRatio: number;
}

export const ERR2_LIMITS: SearchLimits = { maxAttempts: 4, closeRatio: 1.1 };
export const TOP1_LIMITS: SearchLimits = { maxAttempts: 6, closeRatio: 1.5 };

/** An err2 attempt that holds below this share of the target is grown. */
const GROW_BELOW = 0.8;
/** A grown budget aims at this share of the target, to land under it. */
const GROW_AIM = 0.9;

export type NextBudget = { next: number } | { done: true; best?: ErrorAttempt };

export function nextErrorBudget(mode: 'err2' | 'top1', target: number, attempts: readonly ErrorAttempt[], limits = mode === 'err2' ? ERR2_LIMITS : TOP1_LIMITS): NextBudget {
  const last = attempts[attempts.length - 1];
  if (!last) return { next: target };
  const held = attempts.filter((a) => a.met);
  const best = held.reduce<ErrorAttempt | undefined>((b, a) => (!b || a.err2 > b.err2 ? a : b), undefined);
  if (attempts.length >= (best ? 1 : 2) * limits.maxAttempts) return { done: true, best };
  const failed = attempts.filter((a) => !a.met);
  // Infinity while nothing has failed.
  const lowestFail = Math.min(...failed.map((a) => a.err2));
  if (mode === 'err2') {
    let next: number;
    if (last.met) {
      if (last.saturated || last.measuredErr2 >= GROW_BELOW * target) return { done: true, best };
      next = last.err2 * Math.min(4, (GROW_AIM * target) / Math.max(last.measuredErr2, 1e-300));
      next = Math.min(next, Math.sqrt(last.err2 * lowestFail));
    } else {
      // Shrink by the overshoot, and by at least 30%; not below a budget that held.
      next = last.err2 * Math.min(0.7, target / Math.max(last.measuredErr2, 1e-300));
      if (best) next = Math.max(next, Math.sqrt(best.err2 * lowestFail));
    }
    return best && next / best.err2 <= limits.closeRatio ? { done: true, best } : { next };
  }
  if (failed.length === 0) return last.saturated ? { done: true, best } : { next: last.err2 * 4 };
  if (!best) return { next: lowestFail / 4 };
  if (lowestFail / best.err2 <= limits.closeRatio) return { done: true, best };
  return { next: Math.sqrt(lowestFail * best.err2) };
}
