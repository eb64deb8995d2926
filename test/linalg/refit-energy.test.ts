/**
 * refit.ts's last-factor refit with the output energy tr(W·Σ·Wᵀ) computed
 * once (outputEnergy) and given, for the fits of one layer at several ranks.
 */
import { describe, expect, it } from 'vitest';
import { gemm } from '../../src/linalg/gemm.js';
import { randomNormal, type Matrix } from '../../src/linalg/matrix.js';
import { outputEnergy, refitLastFactor, refitLastFactorGiven } from '../../src/linalg/refit.js';
import { createRng } from '../../src/util/rng.js';

describe('refitLastFactorGiven', () => {
  const rng = createRng(11);
  const [t, D, n] = [7, 12, 40];
  const w = randomNormal(t, D, rng.normal);
  const p = randomNormal(n, D, rng.normal);
  const gram = gemm(p, p, { transA: true }).data as Float64Array;
  const mean = Float64Array.from({ length: D }, () => rng.normal());

  it('outputEnergy is tr(W·Σ·Wᵀ), by the naive sum', () => {
    let e = 0;
    for (let a = 0; a < t; a++) for (let x = 0; x < D; x++) for (let y = 0; y < D; y++) e += w.data[a * D + x]! * gram[x * D + y]! * w.data[a * D + y]!;
    expect(outputEnergy(w, gram)).toBeCloseTo(e, 8);
  });

  it('with the energy given, the refit is the least-squares optimum and its dataError the measured one, at every rank', () => {
    const den = outputEnergy(w, gram);
    // ‖(W − B·H)·Pᵀ‖² by the naive sums over the calibration rows.
    const err2 = (b: Float64Array, h: Matrix, r: number): number => {
      let s = 0;
      for (let i = 0; i < n; i++) {
        for (let a = 0; a < t; a++) {
          let v = 0;
          for (let x = 0; x < D; x++) {
            let bh = 0;
            for (let c = 0; c < r; c++) bh += b[a * r + c]! * h.data[c * D + x]!;
            v += (w.data[a * D + x]! - bh) * p.data[i * D + x]!;
          }
          s += v * v;
        }
      }
      return s;
    };
    for (const r of [1, 3, 5]) {
      const h = randomNormal(r, D, rng.normal);
      const got = refitLastFactorGiven(w, h, gram, den, mean);
      const e = err2(got.b, h, r);
      expect(got.dataError).toBeCloseTo(Math.sqrt(e / den), 6);
      expect(got.dataError).toBeGreaterThan(0);
      // Any step away from B raises the error (first-order optimality, both signs).
      for (let k = 0; k < 4; k++) {
        const step = Float64Array.from(got.b, () => 1e-3 * rng.normal());
        expect(err2(got.b.map((v, i) => v + step[i]!), h, r)).toBeGreaterThan(e);
        expect(err2(got.b.map((v, i) => v - step[i]!), h, r)).toBeGreaterThan(e);
      }
      expect(refitLastFactor(w, h, gram, mean).b).toEqual(got.b);
    }
  });
});
