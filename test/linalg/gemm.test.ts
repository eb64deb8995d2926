import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LrError } from '../../src/errors.js';
import { gemm } from '../../src/linalg/gemm.js';
import {
  assertFinite, fromArray, fromRows, frobeniusNorm, randomNormal, toRows, transpose,
} from '../../src/linalg/matrix.js';
import { createRng } from '../../src/util/rng.js';
import { naiveProduct } from './helpers.js';

describe('matrix helpers', () => {
  it('transposes (blocked) any shape', () => {
    const rng = createRng(1);
    for (const [r, c] of [[1, 7], [7, 1], [33, 65], [64, 64]] as const) {
      const a = randomNormal(r, c, rng.normal);
      const t = transpose(a);
      expect([t.rows, t.cols]).toEqual([c, r]);
      for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) expect(t.data[j * r + i]).toBe(a.data[i * c + j]);
    }
  });

  it('frobenius norm is overflow-safe', () => {
    expect(frobeniusNorm(fromRows([[3e200, 4e200]]))).toBeCloseTo(5e200, -190);
    expect(frobeniusNorm(fromRows([[3, 4]]))).toBeCloseTo(5, 14);
  });

  it('rejects NaN/Inf with a clear numeric LrError', () => {
    const a = fromRows([[1, 2], [3, NaN]]);
    expect(() => assertFinite(a, 'weight')).toThrowError(/weight contains a non-finite value \(NaN\) at \(1, 1\)/);
    expect(() => assertFinite(fromRows([[Infinity]]))).toThrow(LrError);
    expect(() => fromArray(2, 2, new Float64Array(3))).toThrow(LrError);
  });
});

describe('gemm (pure JS)', () => {
  it('matches a naive product for all transpose flags and ragged sizes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 23 }), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 23 }),
        fc.boolean(), fc.boolean(), fc.integer(),
        (m, k, n, ta, tb, seed) => {
          const rng = createRng(seed);
          const a = randomNormal(ta ? k : m, ta ? m : k, rng.normal);
          const b = randomNormal(tb ? n : k, tb ? k : n, rng.normal);
          const ref = naiveProduct(toRows(ta ? transpose(a) : a), toRows(tb ? transpose(b) : b));
          const c = gemm(a, b, { transA: ta, transB: tb });
          expect([c.rows, c.cols]).toEqual([m, n]);
          const got = toRows(c);
          for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) expect(got[i]![j]).toBeCloseTo(ref[i]![j]!, 10);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('crosses the panel boundaries (k > 256, n > 512) exactly', () => {
    const rng = createRng(2);
    const a = randomNormal(5, 600, rng.normal);
    const b = randomNormal(600, 530, rng.normal);
    const c = gemm(a, b);
    for (const [i, j] of [[0, 0], [4, 529], [2, 511], [3, 512]] as const) {
      let s = 0;
      for (let p = 0; p < 600; p++) s += a.data[i * 600 + p]! * b.data[p * 530 + j]!;
      expect(c.data[i * 530 + j]).toBeCloseTo(s, 11);
    }
  });

  it('accepts Float32 operands and accumulates in fp64', () => {
    const a = fromArray(1, 3, Float32Array.from([1e8, 1, -1e8]));
    const b = fromArray(3, 1, Float32Array.from([1, 1, 1]));
    expect(gemm(a, b).data[0]).toBe(1);
  });

  it('reports inner-dimension mismatches', () => {
    const rng = createRng(3);
    expect(() => gemm(randomNormal(2, 3, rng.normal), randomNormal(2, 3, rng.normal))).toThrowError(/inner dimensions/);
  });

  it('handles empty products', () => {
    const c = gemm({ rows: 2, cols: 0, data: new Float64Array(0) }, { rows: 0, cols: 3, data: new Float64Array(0) });
    expect(Array.from(c.data)).toEqual([0, 0, 0, 0, 0, 0]);
  });
});
