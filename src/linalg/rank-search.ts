/**
 * The smallest rank whose fit meets an error budget, for decompositions with no spectrum
 * to read the rank from (CP): each trial is a costly fit, so the search gallops up from
 * the lower bound (doubling: fits near the answer, not at the top of the range) and then
 * bisects, which assumes the fitted error falls with the rank (true of the best fit; ALS
 * fits follow it up to their tolerance). Errors already known (an earlier search on the
 * same layer, e.g. the next rung of an energy ladder) narrow the range before any fit.
 */

/** The rank found, or the top of the range (`above`: no rank up to it meets the budget) and its error². */
export type RankSearch = { rank: number } | { above: number; err2: number };

/**
 * Smallest r in [lo, hi] with err2(r) ≤ budget, to within `tolerance` (relative): the rank
 * returned meets the budget and every rank below r·(1 − tolerance) was found (or is
 * assumed, by monotonicity) not to; 0 gives the smallest. `err2At` fits at r and gives the
 * relative error² (NaN: the fit failed, which counts as not meeting the budget); `known`
 * holds the errors² of ranks already fitted and receives every new one, so no rank is
 * fitted twice.
 */
export function smallestRankWithin(
  lo: number, hi: number, budget: number, err2At: (r: number) => number, known: Map<number, number> = new Map(), tolerance = 0,
): RankSearch {
  const err2 = (r: number): number => {
    let e = known.get(r);
    if (e === undefined) {
      e = err2At(r);
      known.set(r, e);
    }
    return e;
  };
  const meets = (e: number): boolean => e <= budget;
  // b: the smallest rank known to meet the budget; a: the smallest not known to fail below b.
  let b: number | undefined;
  for (const [r, e] of known) if (r >= lo && r <= hi && meets(e) && (b === undefined || r < b)) b = r;
  let a = lo;
  for (const [r, e] of known) if (r >= lo && r <= hi && !meets(e) && (b === undefined || r < b)) a = Math.max(a, r + 1);
  if (a > hi) return { above: hi, err2: err2(hi) };
  if (b === undefined) {
    for (let r = a; ; r = Math.min(hi, 2 * r)) {
      const e = err2(r);
      if (meets(e)) { b = r; break; }
      if (r >= hi) return { above: hi, err2: e };
      a = r + 1;
    }
  }
  let top: number = b;
  while (a < top && top - a >= tolerance * top) {
    const mid = (a + top) >> 1;
    if (meets(err2(mid))) top = mid; else a = mid + 1;
  }
  return { rank: top };
}
