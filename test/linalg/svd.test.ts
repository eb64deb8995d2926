import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LrError } from '../../src/errors.js';
import { diffNorm, fromRows, frobeniusNorm, orthonormalityError, randomNormal, transpose, zeros } from '../../src/linalg/matrix.js';
import { truncate } from '../../src/linalg/rsvd.js';
import { singularValues, singularValuesByGram, svd } from '../../src/linalg/svd.js';
import { createRng } from '../../src/util/rng.js';
import { reconstruct, withSpectrum } from './helpers.js';

function checkSvd(a: ReturnType<typeof randomNormal>, tolRec = 1e-12) {
  const res = svd(a);
  const k = Math.min(a.rows, a.cols);
  expect(res.s.length).toBe(k);
  expect([res.u.rows, res.u.cols, res.vt.rows, res.vt.cols]).toEqual([a.rows, k, k, a.cols]);
  for (let i = 0; i < k; i++) {
    expect(res.s[i]).toBeGreaterThanOrEqual(0);
    if (i > 0) expect(res.s[i]).toBeLessThanOrEqual(res.s[i - 1]!);
  }
  const norm = frobeniusNorm(a);
  expect(diffNorm(reconstruct(res), a)).toBeLessThanOrEqual(tolRec * Math.max(norm, 1e-300));
  expect(orthonormalityError(res.u)).toBeLessThan(1e-12);
  expect(orthonormalityError(transpose(res.vt))).toBeLessThan(1e-12);
  return res;
}

describe('full SVD (fp64)', () => {
  it('reconstructs square, tall, wide and very tall matrices to ~1e-12', () => {
    const rng = createRng(10);
    for (const [m, n] of [[1, 1], [6, 6], [40, 25], [25, 40], [300, 20], [20, 300], [130, 130]] as const) {
      checkSvd(randomNormal(m, n, rng.normal));
    }
  });

  it('recovers a prescribed spectrum, including repeated and tiny values', () => {
    const rng = createRng(11);
    const s = [10, 10, 3, 1, 1e-3, 1e-9, 0, 0];
    const a = withSpectrum(30, 20, s, rng);
    const res = checkSvd(a);
    for (let i = 0; i < s.length; i++) expect(Math.abs(res.s[i]! - s[i]!)).toBeLessThan(1e-12 * 10);
    for (let i = s.length; i < 20; i++) expect(res.s[i]).toBeLessThan(1e-12 * 10);
  });

  it('Eckart–Young: ‖A − A_r‖²_F = Σ_{i>r} σ_i² (1e-6 relative)', () => {
    const rng = createRng(12);
    const a = randomNormal(60, 45, rng.normal);
    const res = svd(a);
    for (const r of [1, 5, 20, 44]) {
      const err = diffNorm(reconstruct(truncate(res, r)), a) ** 2;
      let tail = 0;
      for (let i = r; i < res.s.length; i++) tail += res.s[i]! ** 2;
      expect(Math.abs(err - tail) / tail).toBeLessThan(1e-6);
    }
  });

  it('singularValues agrees with svd().s', () => {
    const rng = createRng(13);
    for (const [m, n] of [[50, 30], [30, 50], [200, 20]] as const) {
      const a = randomNormal(m, n, rng.normal);
      const s1 = svd(a).s;
      const s2 = singularValues(a);
      for (let i = 0; i < s1.length; i++) expect(s2[i]).toBeCloseTo(s1[i]!, 11);
    }
  });

  it('tall matrices of low rank and of huge condition number (CholeskyQR2 falls back) still reconstruct', () => {
    const rng = createRng(15);
    // Rank 5 in a 300×20: the Gram matrix is singular, so CholeskyQR2 cannot run as is.
    const l = randomNormal(300, 5, rng.normal);
    const r = randomNormal(5, 20, rng.normal);
    const low = { rows: 300, cols: 20, data: new Float64Array(300 * 20) };
    for (let i = 0; i < 300; i++) for (let j = 0; j < 20; j++) for (let k = 0; k < 5; k++) low.data[i * 20 + j] += l.data[i * 5 + k]! * r.data[k * 20 + j]!;
    const res = checkSvd(low);
    expect(res.s[5]! / res.s[0]!).toBeLessThan(1e-13);
    checkSvd(withSpectrum(200, 40, Array.from({ length: 40 }, (_, i) => 10 ** (-i / 3)), rng));
  });

  it('singularValuesByGram: the energies σ² of wide and tall matrices, to ε·σ₁² absolute', () => {
    const rng = createRng(14);
    for (const [m, n] of [[60, 400], [400, 60], [33, 33]] as const) {
      const a = randomNormal(m, n, rng.normal);
      const s1 = singularValues(a);
      const s2 = singularValuesByGram(a);
      expect(s2.length).toBe(s1.length);
      for (let i = 0; i < s1.length; i++) expect(Math.abs(s2[i]! ** 2 - s1[i]! ** 2)).toBeLessThan(1e-12 * s1[0]! ** 2);
    }
    expect(singularValuesByGram({ rows: 0, cols: 3, data: new Float64Array(0) }).length).toBe(0);
    expect(() => singularValuesByGram(fromRows([[1, NaN]]))).toThrowError(/non-finite/);
  });

  it('property: reconstruction and orthonormality for random shapes and scales', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 1, max: 30 }), fc.integer(), fc.constantFrom(1e-150, 1, 1e150), (m, n, seed, scale) => {
        const rng = createRng(seed);
        const a = randomNormal(m, n, () => rng.normal() * scale);
        checkSvd(a);
      }),
      { numRuns: 30 },
    );
  });

  it('edge cases: zero matrix, 1×n, n×1, rank-1, NaN', () => {
    const z = checkSvd(zeros(4, 3));
    expect(Array.from(z.s)).toEqual([0, 0, 0]);
    const row = checkSvd(fromRows([[3, 4]]));
    expect(row.s[0]).toBeCloseTo(5, 14);
    const col = checkSvd(fromRows([[3], [4]]));
    expect(col.s[0]).toBeCloseTo(5, 14);
    const rank1 = checkSvd(fromRows([[1, 2, 3], [2, 4, 6], [3, 6, 9]]));
    expect(rank1.s[1]).toBeLessThan(1e-14);
    expect(() => svd(fromRows([[1, NaN]]))).toThrow(LrError);
    expect(() => singularValues(fromRows([[Infinity]]))).toThrowError(/non-finite/);
  });

  it('handles a matrix with an exactly zero diagonal in its bidiagonal form', () => {
    // Upper bidiagonal with a zero in the middle of the diagonal exercises the zero-shift chase.
    const a = fromRows([[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1]]);
    checkSvd(a);
  });
});
