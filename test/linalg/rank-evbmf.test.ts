import { describe, expect, it } from 'vitest';
import { LrError } from '../../src/errors.js';
import { evbmf, evbmfConvRanks, evbmfFromSingularValues, solveTauBar } from '../../src/linalg/evbmf.js';
import { gemm } from '../../src/linalg/gemm.js';
import { randomNormal, zeros, type Matrix } from '../../src/linalg/matrix.js';
import {
  alignRank, cpBreakEvenRank, cpParams, energyRank, evbmfFromSpectrum, partialEnergyRank, svdBreakEvenRank, svdParams, tucker2Params, tucker2Pays,
} from '../../src/linalg/rank.js';
import { singularValues } from '../../src/linalg/svd.js';
import { reconstructTucker2 } from '../../src/linalg/tucker2.js';
import { runSync } from '../../src/linalg/engine.js';
import { createRng } from '../../src/util/rng.js';
import { randomOrthonormal, withSpectrum } from './helpers.js';

function addNoise(a: Matrix, sigma: number, seed: number): Matrix {
  const rng = createRng(seed);
  return { rows: a.rows, cols: a.cols, data: a.data.map((v) => v + sigma * rng.normal()) };
}

describe('energy rank and break-even formulas', () => {
  it('energyRank is the smallest r reaching the energy share', () => {
    const s = [3, 2, 1, 0]; // energies 9, 4, 1 of 14
    expect(energyRank(s, 9 / 14)).toBe(1);
    expect(energyRank(s, 9 / 14 + 1e-6)).toBe(2);
    expect(energyRank(s, 0.99)).toBe(3);
    expect(energyRank(s, 1)).toBe(3);
    expect(energyRank([0, 0], 0.9)).toBe(0); // zero matrix: leave it alone
    expect(() => energyRank(s, 0)).toThrow(LrError);
    expect(() => energyRank(s, 1.5)).toThrow(LrError);
    expect(() => energyRank([1, NaN], 0.5)).toThrowError(/singular value 1/);
    // A partial spectrum: the leading values and the total energy.
    expect(partialEnergyRank([3, 2], 14, 9 / 14)).toBe(1);
    expect(partialEnergyRank([3, 2], 14, 0.99)).toBeUndefined();
    expect(partialEnergyRank([3, 2, 1], 14, 0.99)).toBe(energyRank([3, 2, 1], 0.99));
    expect(partialEnergyRank([], 0, 0.5)).toBe(0);
  });

  it('break-even ranks sit exactly at the parameter crossover', () => {
    for (const [m, n] of [[2, 2], [4, 4], [768, 3072], [1, 100], [100, 1], [4096, 11008]] as const) {
      const r = svdBreakEvenRank(m, n);
      if (r > 0) expect(svdParams(m, n, r)).toBeLessThan(m * n);
      expect(svdParams(m, n, r + 1)).toBeGreaterThanOrEqual(m * n);
    }
    expect(svdBreakEvenRank(2, 2)).toBe(0);
    expect(svdBreakEvenRank(1, 100)).toBe(0); // a vector never pays
    const r = cpBreakEvenRank(64, 32, 3, 3);
    expect(cpParams(64, 32, 3, 3, r)).toBeLessThan(64 * 32 * 9);
    expect(cpParams(64, 32, 3, 3, r + 1)).toBeGreaterThanOrEqual(64 * 32 * 9);
    expect(tucker2Params(64, 32, 3, 3, 8, 16)).toBe(32 * 8 + 8 * 16 * 9 + 16 * 64);
    expect(tucker2Pays(64, 32, 3, 3, 8, 16)).toBe(true);
    expect(tucker2Pays(64, 32, 3, 3, 32, 64)).toBe(false);
    expect(alignRank(13, 8, 100)).toBe(16);
    expect(alignRank(13, 8, 14)).toBe(14);
    expect(alignRank(0, 8, 14)).toBe(0);
    expect(alignRank(13, undefined, 100)).toBe(13);
    expect(alignRank(13, 1, 10)).toBe(10);
  });
});

describe('EVBMF', () => {
  it('τ̲ matches the published approximation 2.5129·√α', () => {
    for (const alpha of [0.1, 0.5, 1]) expect(solveTauBar(alpha) / (2.5129 * Math.sqrt(alpha))).toBeCloseTo(1, 1);
    expect(solveTauBar(1)).toBeCloseTo(2.5129, 3);
  });

  it('recovers the true rank of noisy low-rank matrices across noise levels', () => {
    const rng = createRng(50);
    for (const [m, n, r] of [[100, 150, 6], [200, 80, 10], [120, 120, 3]] as const) {
      for (const sigma of [0.01, 0.1, 1]) {
        // Signal values 2–4× the noise edge σ(√m + √n): above the EVB threshold.
        const edge = sigma * (Math.sqrt(m) + Math.sqrt(n));
        const s = Array.from({ length: r }, (_, i) => edge * (4 - (2 * i) / r));
        const a = addNoise(withSpectrum(m, n, s, rng), sigma, m + n + r);
        const res = evbmf(a);
        expect(res.rank, `m=${m} n=${n} r=${r} σ=${sigma}`).toBe(r);
        expect(res.sigma2 / (sigma * sigma)).toBeGreaterThan(0.8);
        expect(res.sigma2 / (sigma * sigma)).toBeLessThan(1.2);
      }
    }
  });

  it('says 0 for pure noise and for the zero matrix', () => {
    const rng = createRng(51);
    expect(evbmf(randomNormal(80, 120, rng.normal)).rank).toBe(0);
    expect(evbmf(zeros(10, 20)).rank).toBe(0);
  });

  it('accepts a partial spectrum with the total energy (evbmfFromSpectrum)', () => {
    const rng = createRng(52);
    const sigma = 0.1;
    const edge = sigma * (Math.sqrt(90) + Math.sqrt(110));
    const a = addNoise(withSpectrum(90, 110, [5 * edge, 4 * edge, 3 * edge, 2.5 * edge], rng), sigma, 1);
    const s = singularValues(a);
    let total = 0;
    for (let i = 0; i < a.data.length; i++) total += a.data[i]! ** 2;
    expect(evbmfFromSpectrum(s.slice(0, 20), total, 90, 110)).toBe(4);
    expect(evbmfFromSingularValues(s, 90, 110).rank).toBe(4);
  });

  it('estimates both channel ranks of a noisy low-Tucker-rank conv kernel', () => {
    const rng = createRng(53);
    const [T, S, k, r1, r2] = [64, 48, 9, 5, 7];
    const uT = randomOrthonormal(T, r2, rng);
    const uS = randomOrthonormal(S, r1, rng);
    // A well-conditioned core: orthonormal rows scaled, so every unfolding has clear singular values.
    const core = gemm(randomOrthonormal(r2, r2, rng), randomOrthonormal(r1 * k, r2, rng), { transB: true }).data as Float64Array;
    const w = runSync(reconstructTucker2(core.map((v) => v * 20), uT, uS));
    const noisy = w.map((v) => v + 0.01 * rng.normal());
    expect(evbmfConvRanks({ data: noisy, shape: [T, S, 3, 3] })).toEqual([r1, r2]);
  });
});
