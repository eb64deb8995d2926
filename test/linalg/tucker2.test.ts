import { describe, expect, it } from 'vitest';
import { LrError } from '../../src/errors.js';
import { runSync } from '../../src/linalg/engine.js';
import { gemm } from '../../src/linalg/gemm.js';
import { orthonormalityError, randomNormal } from '../../src/linalg/matrix.js';
import { tensorNorm, type Tensor } from '../../src/linalg/tensor.js';
import { tucker2 as tucker2Adapter } from '../../src/linalg/tucker.js';
import { reconstructTucker2, tucker2, tucker2Sync } from '../../src/linalg/tucker2.js';
import { createRng } from '../../src/util/rng.js';
import { randomOrthonormal, relDiff } from './helpers.js';

/** W = G ×₁ U_T ×₂ U_S with random orthonormal factors: Tucker ranks exactly (r1, r2). */
function lowTuckerRank(T: number, S: number, kh: number, kw: number, r1: number, r2: number, seed: number): Tensor {
  const rng = createRng(seed);
  const uT = randomOrthonormal(T, r2, rng);
  const uS = randomOrthonormal(S, r1, rng);
  const core = randomNormal(r2, r1 * kh * kw, rng.normal).data as Float64Array;
  return { data: runSync(reconstructTucker2(core, uT, uS)), shape: [T, S, kh, kw] };
}

describe('Tucker-2 (HOSVD + HOOI)', () => {
  it('recovers exactly low-Tucker-rank kernels to 1e-6 relative', () => {
    for (const [T, S, kh, kw, r1, r2] of [[24, 20, 3, 3, 5, 7], [16, 32, 1, 1, 4, 4], [40, 12, 5, 3, 12, 9]] as const) {
      const w = lowTuckerRank(T, S, kh, kw, r1, r2, T + S);
      const res = tucker2Sync(w, [r1, r2], { svd: { seed: 1 } });
      expect(res.relError).toBeLessThan(1e-6);
      expect(res.core.shape).toEqual([r2, r1, kh, kw]);
      expect([res.uS.rows, res.uS.cols, res.uT.rows, res.uT.cols]).toEqual([S, r1, T, r2]);
      expect(orthonormalityError(res.uS)).toBeLessThan(1e-10);
      expect(orthonormalityError(res.uT)).toBeLessThan(1e-10);
      // Factor roles: reconstruct with the documented formula W ≈ G ×₁ U_T ×₂ U_S.
      const back = runSync(reconstructTucker2(res.core.data as Float64Array, res.uT, res.uS));
      expect(relDiff(back, w.data)).toBeLessThan(1e-6);
    }
  });

  it('HOOI does not lose to HOSVD and reports the true residual', () => {
    const rng = createRng(30);
    const w: Tensor = { data: randomNormal(1, 32 * 24 * 9, rng.normal).data, shape: [32, 24, 3, 3] };
    const hosvd = tucker2Sync(w, [6, 8], { maxIter: 0, svd: { seed: 1 } });
    const hooi = tucker2Sync(w, [6, 8], { maxIter: 20, tol: 1e-10, svd: { seed: 1 } });
    expect(hooi.relError).toBeLessThanOrEqual(hosvd.relError + 1e-12);
    expect(hooi.iterations).toBeGreaterThan(0);
    const back = runSync(reconstructTucker2(hooi.core.data as Float64Array, hooi.uT, hooi.uS));
    expect(Math.abs(relDiff(back, w.data) - hooi.relError)).toBeLessThan(1e-12);
    // A random kernel is far from low rank: the error is substantial but below 1.
    expect(hooi.relError).toBeGreaterThan(0.5);
    expect(hooi.relError).toBeLessThan(1);
  });

  it('the Gram route for wide unfoldings gives the exact SVD route\'s factors', () => {
    const rng = createRng(31);
    // Ranks near the channel counts: the exact path, where U comes from the Gram matrix.
    const w: Tensor = { data: randomNormal(1, 48 * 40 * 9, rng.normal).data, shape: [48, 40, 3, 3] };
    const gram = tucker2Sync(w, [30, 36], { maxIter: 3 });
    const exact = tucker2Sync(w, [30, 36], { maxIter: 3, svd: { method: 'exact' } });
    expect(Math.abs(gram.relError - exact.relError)).toBeLessThan(1e-10);
    // Same subspaces: the projectors U·Uᵀ agree.
    const proj = (u: typeof gram.uT) => gemm(u, u, { transB: true }).data;
    expect(relDiff(proj(gram.uT), proj(exact.uT))).toBeLessThan(1e-8);
    expect(relDiff(proj(gram.uS), proj(exact.uS))).toBeLessThan(1e-8);
  });

  it('async API matches the sync result', async () => {
    const w = lowTuckerRank(12, 10, 3, 3, 3, 4, 5);
    const a = tucker2Sync(w, [3, 4], { svd: { seed: 2 } });
    const b = await tucker2(w, [3, 4], { svd: { seed: 2 } });
    expect(Array.from(b.core.data)).toEqual(Array.from(a.core.data));
  });

  it('edge cases: zero kernel, clamped ranks, invalid ranks, NaN', () => {
    const zero = tucker2Sync({ data: new Float64Array(8 * 6 * 9), shape: [8, 6, 3, 3] }, [2, 3]);
    expect(zero.relError).toBe(0);
    expect(Array.from(zero.core.data).every((v) => v === 0)).toBe(true);
    const w = lowTuckerRank(6, 4, 1, 1, 2, 2, 9);
    const big = tucker2Sync(w, [100, 100]);
    expect(big.ranks).toEqual([4, 4]); // R1 ≤ S, R2 ≤ min(T, R1·k)
    expect(big.relError).toBeLessThan(1e-12);
    expect(() => tucker2Sync(w, [0, 2])).toThrow(LrError);
    expect(() => tucker2Sync(w, [2, -1])).toThrowError(/rank must be a positive integer/);
    const bad = Float64Array.from(w.data);
    bad[3] = NaN;
    expect(() => tucker2Sync({ data: bad, shape: w.shape }, [2, 2])).toThrowError(/non-finite/);
  });

  it('pass adapter (tucker.ts) returns [U_T, U_S] and takes ranks as [R2, R1]', () => {
    const w = lowTuckerRank(10, 8, 3, 3, 3, 5, 4);
    const d = tucker2Adapter({ rows: 10, cols: 8 * 9, data: w.data }, [10, 8, 9], [5, 3], { rng: createRng(1) });
    expect([d.factors[0].rows, d.factors[0].cols, d.factors[1].rows, d.factors[1].cols]).toEqual([10, 5, 8, 3]);
    expect(d.core.shape).toEqual([5, 3, 9]);
    expect(d.relError).toBeLessThan(1e-6);
    expect(tensorNorm(d.core)).toBeCloseTo(tensorNorm(w), 6);
  });
});
