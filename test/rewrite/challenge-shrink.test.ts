/**
 * The shrink after a rival wins auto's comparison (challenge.ts smallestWithin): a rough
 * search (CP-ALS without the refit under the sensitivity bound) and one full fit to confirm,
 * instead of a bisection of full fits.
 */
import { describe, expect, it } from 'vitest';
import { ROUGH_SLACK, smallestWithin } from '../../src/rewrite/challenge.js';

/** Errors falling with the rank: 1/k. */
const full = (k: number): number => 1 / k;

describe('smallestWithin', () => {
  it('without a rough fit: the bisection of full fits, at most `fits` of them', () => {
    const calls: number[] = [];
    const r = smallestWithin(64, full(64), (k) => { calls.push(k); return full(k); }, 1 / 20, 6);
    expect(r).toEqual({ rank: 20, err: 1 / 20 });
    expect(calls.length).toBeLessThanOrEqual(6);
  });

  it('with a rough fit a little above the full one: the search runs on it and one full fit confirms its rank', () => {
    const fulls: number[] = [];
    const roughs: number[] = [];
    const r = smallestWithin(64, full(64), (k) => { fulls.push(k); return full(k); }, 1 / 20, 8, (k) => { roughs.push(k); return full(k) * 1.01; });
    // Within ROUGH_SLACK, the rough search ends where the full one would.
    expect(1.01).toBeLessThan(1 + ROUGH_SLACK);
    expect(r).toEqual({ rank: 20, err: 1 / 20 });
    expect(fulls).toEqual([20]);
    expect(roughs.length).toBeGreaterThan(1);
  });

  it('a rough rank the full fit does not confirm: full fits above it find a rank within, never one outside', () => {
    const fulls: number[] = [];
    // The rough fit is optimistic here (below the full error): the rank it ends on fails.
    const r = smallestWithin(64, full(64), (k) => { fulls.push(k); return full(k); }, 1 / 20, 8, (k) => full(k) * 0.8);
    expect(fulls[0]).toBe(16);
    expect(r.err).toBeLessThanOrEqual(1 / 20);
    expect(r.err).toBe(full(r.rank));
    expect(r.rank).toBeGreaterThanOrEqual(20);
    expect(fulls.length).toBeLessThanOrEqual(4);
  });

  it('nothing smaller within: the rank it started from and its error, no full fit', () => {
    const fulls: number[] = [];
    const r = smallestWithin(10, 0.1, (k) => { fulls.push(k); return full(k); }, 0.1, 6, (k) => full(k) * 1.5);
    expect(r).toEqual({ rank: 10, err: 0.1 });
    expect(fulls).toEqual([]);
  });
});
