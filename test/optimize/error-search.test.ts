import { describe, expect, it } from 'vitest';
import { nextErrorBudget, type ErrorAttempt } from '../../src/optimize/error-search.js';
import { top1OverLastAxis } from '../../src/optimize/sensitivity.js';
import type { HostTensor } from '../../src/verify/tensor.js';

/** Runs the search against a model where the budget holds iff err2 ≤ threshold. */
function search(mode: 'err2' | 'top1', start: number, holds: (e: number) => boolean): { attempts: ErrorAttempt[]; best?: ErrorAttempt } {
  const attempts: ErrorAttempt[] = [];
  for (;;) {
    const s = nextErrorBudget(mode, start, attempts);
    if (!('next' in s)) return { attempts, best: s.best };
    attempts.push({ err2: s.next, met: holds(s.next), measuredErr2: s.next * 1.5 });
  }
}

describe('error budget search', () => {
  it('err2: starts at the target and only tightens, by the overshoot, until it holds', () => {
    const r = search('err2', 0.01, (e) => e * 1.5 <= 0.01);
    expect(r.attempts[0]!.err2).toBe(0.01);
    expect(r.attempts.map((a) => a.err2)).toEqual([...r.attempts.map((a) => a.err2)].sort((a, b) => b - a));
    expect(r.best?.met).toBe(true);
    expect(r.best).toBe(r.attempts[r.attempts.length - 1]);
  });

  it('err2: gives up after 3 allocations without a best', () => {
    const r = search('err2', 0.01, () => false);
    expect(r.attempts).toHaveLength(3);
    expect(r.best).toBeUndefined();
  });

  it('top1: grows while it holds, then bisects; the best is the largest budget that held', () => {
    const threshold = 0.037;
    const r = search('top1', 0.002, (e) => e <= threshold);
    expect(r.attempts.length).toBeLessThanOrEqual(6);
    expect(r.attempts[1]!.err2).toBeCloseTo(0.008, 12);
    expect(r.best!.err2).toBeLessThanOrEqual(threshold);
    // Within the bisection's resolution of the threshold.
    expect(r.best!.err2).toBeGreaterThan(threshold / 2);
  });

  it('top1: shrinks when the first guess fails, and stops once more budget buys nothing', () => {
    const r = search('top1', 0.1, (e) => e <= 0.001);
    expect(r.attempts[1]!.err2).toBeCloseTo(0.025, 12);
    expect(r.best === undefined || r.best.err2 <= 0.001).toBe(true);
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
