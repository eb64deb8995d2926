import { describe, expect, it } from 'vitest';
import { nextErrorBudget, TOP1_LIMITS, type ErrorAttempt } from '../../src/optimize/error-search.js';
import { top1OverLastAxis } from '../../src/optimize/output-error.js';
import type { HostTensor } from '../../src/verify/tensor.js';

/**
 * Runs the search against a model whose measured error for an allocation budget e is
 * measure(e) (1.5·e unless given); the budget holds iff holds(e).
 */
function search(mode: 'err2' | 'top1', start: number, holds: (e: number) => boolean, measure = (e: number) => e * 1.5): { attempts: ErrorAttempt[]; best?: ErrorAttempt } {
  const attempts: ErrorAttempt[] = [];
  for (;;) {
    const s = nextErrorBudget(mode, start, attempts);
    if (!('next' in s)) return { attempts, best: s.best };
    attempts.push({ err2: s.next, met: holds(s.next), measuredErr2: measure(s.next) });
  }
}

/**
 * The top-1 search as the module's doc states it: grown ×4 while every budget held (shrunk
 * by the same factor while none did), then bisected geometrically between the largest
 * budget that held and the smallest that did not.
 */
function expectTop1Steps(attempts: readonly ErrorAttempt[]): void {
  for (let i = 1; i < attempts.length; i++) {
    const before = attempts.slice(0, i);
    const held = before.filter((a) => a.met).map((a) => a.err2);
    const failed = before.filter((a) => !a.met).map((a) => a.err2);
    const want = failed.length === 0 ? 4 * before[i - 1]!.err2
      : held.length === 0 ? Math.min(...failed) / 4
        : Math.sqrt(Math.max(...held) * Math.min(...failed));
    expect(attempts[i]!.err2 / want, `attempt ${i}`).toBeCloseTo(1, 12);
  }
}

describe('error budget search', () => {
  it('err2: starts at the target and tightens, by the overshoot, until it holds', () => {
    const r = search('err2', 0.01, (e) => e * 1.5 <= 0.01);
    expect(r.attempts[0]!.err2).toBe(0.01);
    expect(r.attempts[1]!.err2).toBeCloseTo(0.01 / 1.5, 12);
    expect(r.best?.met).toBe(true);
    expect(r.best!.measuredErr2).toBeLessThanOrEqual(0.01);
    expect(r.best!.measuredErr2).toBeGreaterThan(0.5 * 0.01);
  });

  it('err2: while nothing holds it keeps tightening for twice the attempts (8), then gives up without a best', () => {
    const r = search('err2', 0.01, () => false);
    expect(r.attempts).toHaveLength(8);
    expect(r.best).toBeUndefined();
    // Each failure tightens by at least 30%.
    for (let i = 1; i < 8; i++) expect(r.attempts[i]!.err2).toBeLessThanOrEqual(0.7 * r.attempts[i - 1]!.err2 + 1e-15);
  });

  it('err2: an allocation that holds only after the fourth attempt is found (a margin the prediction underestimates)', () => {
    // A floor the allocation cannot shrink (0.008: layers every allocation keeps, or the margin
    // for unseen inputs): tightening by the overshoot, at least 30% a step, reaches 0.002 on the fifth.
    const measure = (e: number) => 0.008 + e;
    const r = search('err2', 0.01, (e) => measure(e) <= 0.01, measure);
    expect(r.attempts).toHaveLength(5);
    expect(r.attempts.slice(0, 4).every((a) => !a.met)).toBe(true);
    expect(r.best?.met).toBe(true);
    expect(r.best!.measuredErr2).toBeLessThanOrEqual(0.01);
  });

  it('err2: an allocation that holds with much to spare is grown towards the target', () => {
    // Layer errors cancel: the measured error is 0.4 of the predicted one.
    const target = 0.01;
    const r = search('err2', target, (e) => e * 0.4 <= target, (e) => e * 0.4);
    expect(r.attempts[0]!.err2).toBe(target);
    // Growth is in proportion to the room left: the measured error scales with the budget
    // here, so one step lands it in the band where the search stops (at least 80% of the
    // target, the module's GROW_BELOW, and within it).
    expect(r.attempts).toHaveLength(2);
    expect(r.attempts[1]!.err2).toBeGreaterThan(target);
    expect(r.attempts[1]!.measuredErr2).toBeGreaterThanOrEqual(0.8 * target);
    expect(r.attempts[1]!.measuredErr2).toBeLessThanOrEqual(target);
    expect(r.best).toBe(r.attempts[r.attempts.length - 1]);
    // The chosen allocation uses most of the target, not the 40% the first one used.
    expect(r.best!.measuredErr2).toBeGreaterThanOrEqual(0.8 * target);
    expect(r.best!.measuredErr2).toBeLessThanOrEqual(target);
  });

  it('err2: a grown budget that fails is backed off, never below the one that held, and the best is kept', () => {
    // Errors cancel up to a budget of 0.015, beyond it they do not.
    const target = 0.01;
    const measure = (e: number) => (e <= 0.015 ? e * 0.4 : e);
    const r = search('err2', target, (e) => measure(e) <= target, measure);
    expect(r.attempts.length).toBeLessThanOrEqual(4);
    const held = r.attempts.filter((a) => a.met).map((a) => a.err2);
    const failed = r.attempts.filter((a) => !a.met).map((a) => a.err2);
    expect(failed.length).toBeGreaterThan(0);
    expect(r.best!.err2).toBe(Math.max(...held));
    expect(r.best!.err2).toBeGreaterThan(target);
    // Every attempt after a failure lies between the largest budget that held and the smallest that failed.
    for (let i = 1; i < r.attempts.length; i++) {
      const before = r.attempts.slice(0, i);
      const lo = Math.max(0, ...before.filter((a) => a.met).map((a) => a.err2));
      const hi = Math.min(Infinity, ...before.filter((a) => !a.met).map((a) => a.err2));
      expect(r.attempts[i]!.err2).toBeGreaterThan(lo);
      expect(r.attempts[i]!.err2).toBeLessThan(hi);
    }
  });

  it('err2: stops when a larger budget changes nothing', () => {
    expect(nextErrorBudget('err2', 0.01, [{ err2: 0.01, met: true, measuredErr2: 0.001, saturated: true }]))
      .toEqual({ done: true, best: { err2: 0.01, met: true, measuredErr2: 0.001, saturated: true } });
  });

  it('top1: grows while it holds, then bisects; the best is the largest budget that held', () => {
    const threshold = 0.037;
    const r = search('top1', 0.002, (e) => e <= threshold);
    expect(r.attempts.length).toBeLessThanOrEqual(TOP1_LIMITS.maxAttempts);
    expectTop1Steps(r.attempts);
    expect(r.attempts.some((a) => !a.met)).toBe(true);
    expect(r.best!.err2).toBeLessThanOrEqual(threshold);
    // Within the bisection's resolution of the threshold.
    expect(r.best!.err2).toBeGreaterThan(threshold / 2);
  });

  it('top1: shrinks when the first guess fails, and stops once more budget buys nothing', () => {
    const r = search('top1', 0.1, (e) => e <= 0.001);
    expectTop1Steps(r.attempts);
    // Shrunk by the factor it grows by until a budget holds, then bisected: the search
    // ends with a budget that holds, within a factor 4 of the threshold.
    expect(r.attempts[1]!.err2).toBeLessThan(r.attempts[0]!.err2);
    expect(r.best).toBeDefined();
    expect(r.best!.met).toBe(true);
    expect(r.best!.err2).toBeLessThanOrEqual(0.001);
    expect(r.best!.err2).toBeGreaterThan(0.001 / 4);
    const sat = nextErrorBudget('top1', 0.1, [{ err2: 0.1, met: true, measuredErr2: 0 }, { err2: 0.4, met: true, measuredErr2: 0, saturated: true }]);
    expect(sat).toEqual({ done: true, best: { err2: 0.4, met: true, measuredErr2: 0, saturated: true } });
  });
});

describe('top-1 agreement over the last axis', () => {
  const t = (dims: number[], v: number[]): HostTensor => ({ type: 'float32', dims, data: Float32Array.from(v) });
  it('counts rows of every leading position and takes the worst output', () => {
    const ref = [{ a: t([1, 2, 3], [0, 1, 0, 5, 0, 0]), b: t([1, 2], [1, 0]) }];
    const got = [{ a: t([1, 2, 3], [0, 1, 0, 0, 0, 5]), b: t([1, 2], [2, 0]) }];
    expect(top1OverLastAxis(ref, got)).toBe(0.5);
    expect(top1OverLastAxis(ref, ref)).toBe(1);
  });
  it('is undefined when no output has a class axis', () => {
    expect(top1OverLastAxis([{ a: t([4, 1], [1, 2, 3, 4]) }], [{ a: t([4, 1], [1, 2, 3, 4]) }])).toBeUndefined();
  });
});
