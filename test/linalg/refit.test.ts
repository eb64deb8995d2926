import { describe, expect, it } from 'vitest';
import { gemm } from '../../src/linalg/gemm.js';
import { randomNormal, type Matrix } from '../../src/linalg/matrix.js';
import { refitLastFactor } from '../../src/linalg/refit.js';
import { createRng } from '../../src/util/rng.js';

describe('refitLastFactor', () => {
  it('its error and bias correction equal tr(ΔW·Σ·ΔWᵀ) and ΔW·μ computed from ΔW = W − B·H itself', () => {
    const rng = createRng(21);
    const [t, r, D] = [12, 5, 30];
    const w = randomNormal(t, D, rng.normal);
    const h = randomNormal(r, D, rng.normal);
    const p = randomNormal(D, 200, rng.normal);
    const sigma = gemm(p, p, { transB: true });
    const mean = Float64Array.from({ length: D }, () => rng.normal());
    const f = refitLastFactor(w, h, Float64Array.from(sigma.data), mean);
    const bh = gemm({ rows: t, cols: r, data: f.b }, h);
    const dw: Matrix = { rows: t, cols: D, data: Float64Array.from(w.data, (x, i) => x - bh.data[i]!) };
    const trace = (a: Matrix): number => {
      const as = gemm(a, sigma);
      let s = 0;
      for (let i = 0; i < a.data.length; i++) s += as.data[i]! * a.data[i]!;
      return s;
    };
    expect(f.num).toBeCloseTo(trace(dw), 6);
    expect(f.den).toBeCloseTo(trace(w), 6);
    expect(f.dataError).toBeCloseTo(Math.sqrt(trace(dw) / trace(w)), 10);
    // The refit is the least-squares optimum: any other last factor does worse.
    const other: Matrix = { rows: t, cols: D, data: Float64Array.from(w.data, (x, i) => x - bh.data[i]! * 1.01) };
    expect(trace(other)).toBeGreaterThan(f.num);
    for (let a = 0; a < t; a++) {
      let v = 0;
      for (let d = 0; d < D; d++) v += dw.data[a * D + d]! * mean[d]!;
      expect(f.biasDelta![a]).toBeCloseTo(v, 10);
    }
  });
});
