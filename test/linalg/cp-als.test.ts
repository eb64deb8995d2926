import { describe, expect, it } from 'vitest';
import { LrError } from '../../src/errors.js';
import { cpAls as cpAdapter } from '../../src/linalg/cp.js';
import { balancedFactors, cpAls, cpAlsSync } from '../../src/linalg/cp-als.js';
import { khatriRao } from '../../src/linalg/tensor.js';
import { gemm } from '../../src/linalg/gemm.js';
import { randomNormal, type Matrix } from '../../src/linalg/matrix.js';
import type { Tensor } from '../../src/linalg/tensor.js';
import { createRng } from '../../src/util/rng.js';
import { relDiff } from './helpers.js';

/** Σ_r ∘_n F_n[:, r] as a dense tensor. */
function fromFactors(fs: Matrix[]): Tensor {
  const x = gemm(fs[0]!, khatriRao(fs.slice(1)), { transB: true });
  return { data: x.data, shape: fs.map((f) => f.rows) };
}

function randomCp(dims: number[], R: number, seed: number): Tensor {
  const rng = createRng(seed);
  return fromFactors(dims.map((d) => randomNormal(d, R, rng.normal)));
}

describe('CP-ALS', () => {
  it('recovers exactly CP-rank-R 3-way tensors to 1e-6 relative', () => {
    for (const [dims, R] of [[[12, 10, 9], 4], [[20, 16, 9], 6]] as const) {
      const x = randomCp([...dims], R, R);
      const res = cpAlsSync(x, R, { seed: 1, tol: 1e-14, maxIter: 2000 });
      expect(res.relError).toBeLessThan(1e-6);
      expect(res.factors.map((f) => [f.rows, f.cols])).toEqual(dims.map((d) => [d, R]));
      // Returned factors reproduce X (weights absorbed by balancedFactors).
      expect(relDiff(fromFactors(balancedFactors(res)).data, x.data)).toBeLessThan(1e-6);
    }
  });

  it('recovers a 4-way [T, S, kh, kw] CP tensor', () => {
    const x = randomCp([10, 8, 3, 3], 3, 7);
    const res = cpAlsSync(x, 3, { seed: 2, tol: 1e-14, maxIter: 2000 });
    expect(res.factors.length).toBe(4);
    expect(res.relError).toBeLessThan(1e-6);
  });

  it('random init works too and reports convergence', () => {
    const x = randomCp([9, 8, 7], 3, 3);
    const res = cpAlsSync(x, 3, { init: 'random', seed: 5, tol: 1e-14, maxIter: 3000 });
    expect(res.relError).toBeLessThan(1e-6);
    expect(res.converged).toBe(true);
    expect(res.iterations).toBeLessThan(3000);
  });

  it('stays bounded on a degenerate problem (rank-3 tensor of border rank 2)', () => {
    // X = a1∘b1∘c2 + a1∘b2∘c1 + a2∘b1∘c1: rank 3, but approximable arbitrarily well by
    // rank 2 with diverging, cancelling components (de Silva & Lim 2008).
    const rng = createRng(40);
    const [A, B, C] = [randomNormal(6, 2, rng.normal), randomNormal(6, 2, rng.normal), randomNormal(6, 2, rng.normal)];
    const col = (m: Matrix, j: number) => ({ rows: m.rows, cols: 1, data: Float64Array.from({ length: m.rows }, (_, i) => m.data[i * 2 + j]!) });
    const parts = [[col(A, 0), col(B, 0), col(C, 1)], [col(A, 0), col(B, 1), col(C, 0)], [col(A, 1), col(B, 0), col(C, 0)]];
    const x = new Float64Array(216);
    for (const p of parts) fromFactors(p).data.forEach((v, i) => (x[i]! += v));
    const tensor = { data: x, shape: [6, 6, 6] };
    let norm = 0;
    x.forEach((v) => (norm += v * v));
    norm = Math.sqrt(norm);

    // Plain ALS: the two components keep growing while the error creeps towards 0.
    const unguarded = cpAlsSync(tensor, 2, { seed: 3, maxIter: 2000, tol: 0, maxNormRatio: Infinity, ridge: 0 });
    expect(Math.max(...unguarded.weights)).toBeGreaterThan(3 * norm);
    // Guarded: same run, weights held at the bound, fit still good and finite.
    const guarded = cpAlsSync(tensor, 2, { seed: 3, maxIter: 2000, tol: 0, maxNormRatio: 2 });
    expect(Math.max(...guarded.weights)).toBeLessThanOrEqual(2 * norm * (1 + 1e-12));
    expect(Number.isFinite(guarded.relError)).toBe(true);
    expect(guarded.relError).toBeLessThan(0.05);
    const balanced = balancedFactors(guarded);
    for (const f of balanced) expect(Array.from(f.data).every((v) => Math.abs(v) < 10)).toBe(true);
  });

  it('edge cases: zero tensor, rank validation and clamping, NaN, wrong order', async () => {
    const z = cpAlsSync({ data: new Float64Array(24), shape: [2, 3, 4] }, 2);
    expect(z.relError).toBe(0);
    expect(z.converged).toBe(true);
    const x = randomCp([3, 3, 2], 2, 1);
    expect(() => cpAlsSync(x, 0)).toThrow(LrError);
    expect(cpAlsSync(x, 100, { maxIter: 5 }).rank).toBe(6); // clamped to Π dims / max dim
    const bad = Float64Array.from(x.data);
    bad[0] = Infinity;
    expect(() => cpAlsSync({ data: bad, shape: x.shape }, 2)).toThrowError(/non-finite/);
    expect(() => cpAlsSync({ data: new Float64Array(4), shape: [2, 2] }, 1)).toThrowError(/3 or more ways/);
    const asy = await cpAls(x, 2, { seed: 1, maxIter: 10 });
    const syn = cpAlsSync(x, 2, { seed: 1, maxIter: 10 });
    expect(asy.relError).toBe(syn.relError);
  });

  it('pass adapter (cp.ts) takes { data, dims } and returns unit-norm factors plus weights', () => {
    const x = randomCp([8, 7, 9], 3, 11);
    const fit = cpAdapter({ data: Float32Array.from(x.data), dims: [8, 7, 9] }, 3, { rng: createRng(1), tol: 1e-12, maxIter: 1000 });
    expect(fit.relError).toBeLessThan(1e-5);
    for (const f of fit.factors) {
      for (let r = 0; r < 3; r++) {
        let s = 0;
        for (let i = 0; i < f.rows; i++) s += f.data[i * 3 + r]! ** 2;
        expect(Math.sqrt(s)).toBeCloseTo(1, 12);
      }
    }
  });
});
