import { describe, expect, it } from 'vitest';
import { compareOutput, top1Agreement } from '../../src/verify/compare.js';
import { percentiles } from '../../src/verify/latency.js';

const tol = { atol: 1e-5, rtol: 1e-5 };

describe('compareOutput', () => {
  it('identical outputs: zero error, cosine 1, pass', () => {
    const s = compareOutput('y', [1, -2, 3], [1, -2, 3], [3], tol);
    expect(s).toMatchObject({ maxAbs: 0, meanAbs: 0, relL2: 0, cosine: 1, mismatches: 0, pass: true, reasons: [] });
  });

  it('a known perturbation gives the hand-computed numbers', () => {
    // ref (3, 4) has norm 5; diff (0, 1) has norm 1; cand (3, 5) has norm √34.
    const s = compareOutput('y', [3, 4], [3, 5], [2], tol);
    expect(s.maxAbs).toBe(1);
    expect(s.meanAbs).toBe(0.5);
    expect(s.relL2).toBeCloseTo(0.2, 15);
    expect(s.cosine).toBeCloseTo(29 / (5 * Math.sqrt(34)), 15);
    expect(s.mismatches).toBe(1);
    expect(s.pass).toBe(false);
    expect(s.reasons[0]).toMatch(/^output y: 1 of 2 elements exceed .* at index 1: ref 4, got 5/);
  });

  it('negated output: cosine −1, relL2 2', () => {
    const s = compareOutput('y', [1, 2, 2], [-1, -2, -2], [3], tol);
    expect(s.cosine).toBeCloseTo(-1, 15);
    expect(s.relL2).toBeCloseTo(2, 15);
  });

  it('the tolerance scales with the reference (original) value, not the candidate', () => {
    // |diff| = 0.2. rtol 0.0199: allowed 0.199 when ref = 10, 0.20298 when ref = 10.2.
    const t = { atol: 0, rtol: 0.0199 };
    expect(compareOutput('y', [10], [10.2], [1], t).pass).toBe(false);
    expect(compareOutput('y', [10.2], [10], [1], t).pass).toBe(true);
    // atol + rtol·|ref| together: 0.1 + 0.01·10 = 0.2 ≥ 0.19999…
    expect(compareOutput('y', [10], [10.2], [1], { atol: 0.1, rtol: 0.01 }).pass).toBe(true);
    expect(compareOutput('y', [10], [10.2], [1], { atol: 0.1, rtol: 0.005 }).pass).toBe(false);
  });

  it('minCosine fails a comparison that the elementwise rule would pass', () => {
    const s = compareOutput('y', [1, 0], [1, 1], [2], { atol: 10, rtol: 0, minCosine: 0.9 });
    expect(s.cosine).toBeCloseTo(Math.SQRT1_2, 15);
    expect(s.pass).toBe(false);
    expect(s.reasons).toEqual(['output y: cosine 0.707 < 0.9']);
    expect(compareOutput('y', [1, 0], [1, 1], [2], { atol: 10, rtol: 0, minCosine: 0.7 }).pass).toBe(true);
  });

  it('NaN in either output fails with a reason saying which side', () => {
    const a = compareOutput('y', [1, 2, 3], [1, NaN, 3], [3], { atol: 1, rtol: 1 });
    expect(a.pass).toBe(false);
    expect(a.reasons).toEqual(["output y: 1 NaN in the optimized model's output"]);
    expect(a.maxAbs).toBe(0); // stats cover the finite pairs
    const b = compareOutput('y', [NaN, NaN], [NaN, 1], [2], { atol: 1, rtol: 1 });
    expect(b.reasons).toEqual(["output y: 2 NaN in the original model's output", "output y: 1 NaN in the optimized model's output"]);
  });

  it('equal infinities match, different ones do not', () => {
    expect(compareOutput('y', [Infinity, 1], [Infinity, 1], [2], tol).pass).toBe(true);
    const s = compareOutput('y', [Infinity, 1], [-Infinity, 1], [2], tol);
    expect(s.pass).toBe(false);
    expect(s.maxAbs).toBe(Infinity);
  });

  it('all-zero outputs: guarded relL2 and cosine', () => {
    expect(compareOutput('y', [0, 0], [0, 0], [2], tol)).toMatchObject({ relL2: 0, cosine: 1, pass: true });
    expect(compareOutput('y', [0, 0], [0, 1], [2], tol)).toMatchObject({ relL2: Infinity, cosine: 0, pass: false });
  });

  it('length mismatch fails', () => {
    const s = compareOutput('y', [1, 2], [1], [2], tol);
    expect(s.pass).toBe(false);
    expect(s.reasons[0]).toContain('1 elements, reference has 2');
  });

  it('top-1 agreement on [N, C] outputs only, checked when minTop1 is set', () => {
    const ref = [1, 5, 2, /**/ 3, 1, 0];
    const cand = [1, 5, 2, /**/ 0, 1, 3];
    const loose = { atol: 10, rtol: 0 };
    expect(compareOutput('p', ref, cand, [2, 3], loose)).toMatchObject({ top1: 0.5, pass: true });
    const strict = compareOutput('p', ref, cand, [2, 3], { ...loose, minTop1: 0.9 });
    expect(strict.pass).toBe(false);
    expect(strict.reasons).toEqual(['output p: top-1 agreement 0.5 < 0.9']);
    expect(compareOutput('p', ref, cand, [6], loose).top1).toBeUndefined();
    expect(compareOutput('p', [1, 2], [1, 2], [2, 1], loose).top1).toBeUndefined();
    expect(top1Agreement([0, 1, 1, 0, 0, 1], [0, 1, 1, 0, 0, 1], 3, 2)).toBe(1);
  });
});

describe('percentiles', () => {
  it('interpolates linearly like numpy', () => {
    expect(percentiles([5, 1, 3, 2, 4, 10, 9, 8, 7, 6])).toEqual({ p10: 1.9, p50: 5.5, p90: 9.1 });
    expect(percentiles([7])).toEqual({ p10: 7, p50: 7, p90: 7 });
  });
});
