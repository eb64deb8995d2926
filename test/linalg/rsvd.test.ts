import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LrError } from '../../src/errors.js';
import { asFloat32, diffNorm, frobeniusNorm, fromRows, orthonormalityError, randomNormal, transpose, zeros } from '../../src/linalg/matrix.js';
import { randomizedSvdSync, truncatedSvd, truncatedSvdSync } from '../../src/linalg/rsvd.js';
import { singularValues } from '../../src/linalg/svd.js';
import { createRng } from '../../src/util/rng.js';
import { reconstruct, withSpectrum } from './helpers.js';

/** Optimal rank-r error (Eckart–Young) from the exact spectrum. */
function optimalError(s: ArrayLike<number>, r: number): number {
  let t = 0;
  for (let i = r; i < s.length; i++) t += s[i]! ** 2;
  return Math.sqrt(t);
}

describe('randomized truncated SVD', () => {
  it('is within 1% of the optimal rank-r error on a slowly decaying spectrum', () => {
    const rng = createRng(20);
    const s = Array.from({ length: 200 }, (_, i) => 1 / Math.sqrt(i + 1)); // slow decay
    const a = withSpectrum(400, 300, s, rng);
    for (const r of [10, 40]) {
      const res = randomizedSvdSync(a, r, { seed: 1 });
      expect(res.s.length).toBe(r);
      const err = diffNorm(reconstruct(res), a);
      expect(err / optimalError(s, r)).toBeLessThan(1.01);
      expect(orthonormalityError(res.u)).toBeLessThan(1e-12);
      expect(orthonormalityError(transpose(res.vt))).toBeLessThan(1e-12);
    }
  });

  it('is exact on exactly low-rank matrices (fp64)', () => {
    const rng = createRng(21);
    const a = withSpectrum(300, 250, [5, 4, 3, 2, 1, 0.5, 0.25, 0.1], rng);
    const res = randomizedSvdSync(a, 8, { seed: 3, powerIters: 0 });
    expect(diffNorm(reconstruct(res), a) / frobeniusNorm(a)).toBeLessThan(1e-12);
    expect(res.s[7]).toBeCloseTo(0.1, 12);
  });

  it('property: exact-rank recovery across shapes, ranks and seeds', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 70, max: 160 }), fc.integer({ min: 70, max: 160 }), fc.integer({ min: 1, max: 12 }), fc.integer(),
        (m, n, r, seed) => {
          const rng = createRng(seed);
          const s = Array.from({ length: r }, () => 0.1 + rng.next() * 10);
          const a = withSpectrum(m, n, s, rng);
          const res = randomizedSvdSync(a, r, { seed, oversample: 5, powerIters: 1 });
          expect(diffNorm(reconstruct(res), a) / frobeniusNorm(a)).toBeLessThan(1e-10);
        },
      ),
      { numRuns: 15 },
    );
  });

  it('a warm start with the right subspace makes even q = 0 optimal', () => {
    const rng = createRng(27);
    const s = Array.from({ length: 150 }, (_, i) => 1 / Math.sqrt(i + 1));
    const a = withSpectrum(300, 200, s, rng);
    const exact = truncatedSvdSync(a, 20, { method: 'exact' });
    const cold = randomizedSvdSync(a, 20, { seed: 1, powerIters: 0 });
    const warm = randomizedSvdSync(a, 20, { seed: 1, powerIters: 0, start: exact.u });
    const opt = optimalError(s, 20);
    expect(diffNorm(reconstruct(cold), a) / opt).toBeGreaterThan(1.01);
    expect(diffNorm(reconstruct(warm), a) / opt).toBeLessThan(1 + 1e-9);
    expect(() => randomizedSvdSync(a, 20, { start: exact.vt })).toThrowError(/start has/);
  });

  it('is deterministic for a given seed, and the seed matters', () => {
    const rng = createRng(22);
    const a = randomNormal(150, 120, rng.normal);
    const r1 = randomizedSvdSync(a, 5, { seed: 7 });
    const r2 = randomizedSvdSync(a, 5, { seed: 7 });
    const r3 = randomizedSvdSync(a, 5, { seed: 8, powerIters: 0 });
    expect(Array.from(r1.u.data)).toEqual(Array.from(r2.u.data));
    expect(Array.from(r1.s)).toEqual(Array.from(r2.s));
    expect(Array.from(r1.s)).not.toEqual(Array.from(r3.s));
  });

  it('handles Float32 input (products in fp32) to fp32 accuracy', () => {
    const rng = createRng(23);
    const a = asFloat32(withSpectrum(200, 180, [9, 7, 5, 3, 1], rng));
    const res = randomizedSvdSync(a, 5, { seed: 1 });
    expect(diffNorm(reconstruct(res), a) / frobeniusNorm(a)).toBeLessThan(1e-5);
  });

  it('randomized path: NaN or Inf anywhere in the input is a clear error naming the entry', () => {
    const rng = createRng(28);
    for (const bad of [NaN, Infinity, -Infinity]) {
      const a = randomNormal(120, 100, rng.normal);
      a.data[37 * 100 + 81] = bad;
      expect(() => randomizedSvdSync(a, 5, { seed: 1 })).toThrowError(/non-finite.*\(37, 81\)/);
      const a32 = asFloat32(a);
      expect(() => randomizedSvdSync(a32, 5, { seed: 1, start: randomNormal(120, 3, rng.normal) })).toThrowError(/non-finite.*\(37, 81\)/);
    }
    const a = randomNormal(120, 100, rng.normal);
    const start = randomNormal(120, 3, rng.normal);
    start.data[4] = NaN;
    expect(() => randomizedSvdSync(a, 5, { start })).toThrowError(/start contains a non-finite/);
  });

  it('auto method uses the exact SVD for small matrices (matches singular values exactly)', () => {
    const rng = createRng(24);
    const a = randomNormal(30, 20, rng.normal);
    const res = truncatedSvdSync(a, 4);
    const s = singularValues(a);
    for (let i = 0; i < 4; i++) expect(res.s[i]).toBeCloseTo(s[i]!, 12);
  });

  it('async API with the default (JS) engine gives the same result', async () => {
    const rng = createRng(25);
    const a = randomNormal(120, 100, rng.normal);
    const sync = truncatedSvdSync(a, 6, { seed: 2, method: 'randomized' });
    const asy = await truncatedSvd(a, 6, { seed: 2, method: 'randomized' });
    expect(Array.from(asy.s)).toEqual(Array.from(sync.s));
  });

  it('edge cases: rank clamping, invalid ranks, zero matrix, 1×n and n×1, NaN', () => {
    const rng = createRng(26);
    const a = randomNormal(7, 5, rng.normal);
    const clamped = truncatedSvdSync(a, 50);
    expect(clamped.s.length).toBe(5); // clamped to min(m, n): documented
    expect(diffNorm(reconstruct(clamped), a) / frobeniusNorm(a)).toBeLessThan(1e-13);
    for (const bad of [0, -1, 2.5, NaN]) {
      expect(() => truncatedSvdSync(a, bad)).toThrow(LrError);
      try {
        truncatedSvdSync(a, bad);
      } catch (e) {
        expect((e as LrError).kind).toBe('rank');
      }
    }
    const z = truncatedSvdSync(zeros(100, 90), 3, { method: 'randomized' });
    expect(Array.from(z.s)).toEqual([0, 0, 0]);
    expect(Array.from(z.u.data).every(Number.isFinite)).toBe(true);
    const row = truncatedSvdSync(fromRows([[3, 0, 4]]), 2);
    expect(row.s.length).toBe(1);
    expect(row.s[0]).toBeCloseTo(5, 14);
    const col = truncatedSvdSync(fromRows([[3], [4]]), 1, { method: 'randomized' });
    expect(col.s[0]).toBeCloseTo(5, 14);
    expect(() => truncatedSvdSync(fromRows([[1, NaN]]), 1)).toThrowError(/non-finite/);
  });
});
