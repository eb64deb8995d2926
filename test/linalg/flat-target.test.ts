/**
 * Fits through a clamping activation (linalg/flat-target.ts): the majorizing target, the
 * sample moments and the lift through a weight, each against a computation by another
 * route; and refits to the moving target on a reduced-rank least-squares problem, which
 * must beat the linear fit after the activation, on the rows fitted and on others.
 */
import { describe, expect, it } from 'vitest';
import { clampTo, crossCovariance, flatLoss, flatTargets, rowSpaceLift, sampleCovariance, type FlatRegion } from '../../src/linalg/flat-target.js';
import { gemm } from '../../src/linalg/gemm.js';
import type { Matrix } from '../../src/linalg/matrix.js';
import { householderQr } from '../../src/linalg/qr.js';
import { solveUpperLeft } from '../../src/linalg/triangular.js';
import { createRng } from '../../src/util/rng.js';
import { reducedRankLs, withSpectrum } from './helpers.js';

const rng = createRng(5);
const randn = (n: number, scale = 1): Float64Array => Float64Array.from({ length: n }, () => scale * rng.normal());

describe('the majorizing target of a clamp', () => {
  for (const region of [{ lo: 0 }, { lo: -0.5, hi: 1 }, { hi: 0.25 }] as FlatRegion[]) {
    it(`bounds the loss after clamp(·, ${region.lo ?? '-inf'}, ${region.hi ?? 'inf'}) from above, touching it at the current prediction`, () => {
      const y = randn(400);
      const m = Float64Array.from(y, (v) => v + 0.7 * rng.normal());
      const z = flatTargets(y, m, region);
      for (let i = 0; i < y.length; i++) {
        const v = y[i]!;
        // Entries outside the flat regions keep their target; inside, the prediction clamped into the region.
        if ((region.lo === undefined || v > region.lo) && (region.hi === undefined || v < region.hi)) expect(z[i]).toBe(v);
        else if (region.lo !== undefined && v <= region.lo) expect(z[i]).toBe(Math.min(m[i]!, region.lo));
        else expect(z[i]).toBe(Math.max(m[i]!, region.hi!));
      }
      const sq = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, i) => s + (v - b[i]!) ** 2, 0);
      // At m the surrogate equals the true loss on the flat entries, and bounds it everywhere else.
      const flatOnly = (p: Float64Array) => Array.from(y).reduce((s, v, i) => (clampTo(v, region) === v ? s : s + (clampTo(v, region) - clampTo(p[i]!, region)) ** 2), 0);
      const flatSq = (p: Float64Array) => Array.from(y).reduce((s, v, i) => (clampTo(v, region) === v ? s : s + (z[i]! - p[i]!) ** 2), 0);
      expect(flatSq(m)).toBeCloseTo(flatOnly(m), 9);
      for (let t = 0; t < 20; t++) {
        const p = Float64Array.from(m, (v) => v + rng.normal());
        expect(sq(z, p)).toBeGreaterThanOrEqual(flatLoss(y, p, region).num - 1e-9);
      }
      const { den } = flatLoss(y, m, region);
      expect(den).toBeCloseTo(Array.from(y).reduce((s, v) => s + clampTo(v, region) ** 2, 0), 9);
    });
  }
});

describe('sample moments', () => {
  it('are the means and covariances computed entry by entry', () => {
    const n = 50;
    const D = 6;
    const O = 4;
    const x: Matrix = { rows: n, cols: D, data: randn(n * D) };
    const z: Matrix = { rows: n, cols: O, data: randn(n * O) };
    const cx = sampleCovariance(x);
    const cz = crossCovariance(z, x, cx.mean);
    const s = { meanHat: cx.mean, covHat: cx.cov, targetMean: cz.mean, targetCov: cz.cov };
    const mean = (a: Matrix, j: number) => Array.from({ length: n }, (_, i) => a.data[i * a.cols + j]!).reduce((p, v) => p + v, 0) / n;
    for (let j = 0; j < D; j++) expect(s.meanHat[j]).toBeCloseTo(mean(x, j), 12);
    for (let o = 0; o < O; o++) expect(s.targetMean[o]).toBeCloseTo(mean(z, o), 12);
    for (let a = 0; a < D; a++) {
      for (let b = 0; b < D; b++) {
        let c = 0;
        for (let i = 0; i < n; i++) c += (x.data[i * D + a]! - mean(x, a)) * (x.data[i * D + b]! - mean(x, b));
        expect(s.covHat[a * D + b]).toBeCloseTo(c / n, 12);
      }
    }
    for (let o = 0; o < O; o++) {
      for (let b = 0; b < D; b++) {
        let c = 0;
        for (let i = 0; i < n; i++) c += (z.data[i * O + o]! - mean(z, o)) * (x.data[i * D + b]! - mean(x, b));
        expect(s.targetCov[o * D + b]).toBeCloseTo(c / n, 12);
      }
    }
  });
});

describe('the lift through a weight', () => {
  it('gives W·Xᵀ = T and W·v = r with v in the row space of W', () => {
    const O = 5;
    const D = 12;
    const w: Matrix = { rows: O, cols: D, data: randn(O * D) };
    const t: Matrix = { rows: O, cols: D, data: randn(O * D) };
    const lift = rowSpaceLift(w);
    const x = lift.matrix(t);
    const back = gemm(w, { rows: D, cols: D, data: x }, { transB: true });
    for (let i = 0; i < back.data.length; i++) expect(back.data[i]).toBeCloseTo(t.data[i]!, 9);
    const r = randn(O);
    const v = lift.vector(r);
    const wv = gemm(w, { rows: D, cols: 1, data: v });
    for (let i = 0; i < O; i++) expect(wv.data[i]).toBeCloseTo(r[i]!, 9);
    // Least norm: v = Wᵀ·c for some c (the least-squares c reproduces v).
    const { q, r: rr } = householderQr({ rows: D, cols: O, data: gemm(w, { rows: O, cols: O, data: Float64Array.from({ length: O * O }, (_, i) => (i % (O + 1) === 0 ? 1 : 0)) }, { transA: true }).data });
    const c = solveUpperLeft(rr, gemm(q, { rows: D, cols: 1, data: v }, { transA: true }));
    const wc = gemm(w, c, { transA: true });
    for (let i = 0; i < D; i++) expect(wc.data[i]).toBeCloseTo(v[i]!, 9);
  });
});

describe('refits to the moving target on a reduced-rank fit through a Relu', () => {
  it('end below the linear fit after the Relu, on held-out rows too', () => {
    const n = 2000;
    const D = 16;
    const O = 12;
    const r = 4;
    const region = { lo: 0 };
    const OFFSET = 2;
    // Responses with a decaying spectrum and a negative offset: ~90% of entries land in the Relu's flat region.
    const w = withSpectrum(D, O, Array.from({ length: O }, (_, k) => 4 * 0.6 ** k), rng);
    const sample = (rows: number) => {
      const x: Matrix = { rows, cols: D, data: randn(rows * D) };
      const y = gemm(x, w).data.map((v) => v - OFFSET);
      return { x, y: { rows, cols: O, data: Float64Array.from(y) } as Matrix };
    };
    const fit = sample(n);
    const held = sample(n);
    const predict = (x: Matrix, b: Matrix) => Float64Array.from(gemm(x, b).data, (v) => v - OFFSET);
    const shifted = (t: Matrix) => ({ ...t, data: t.data.map((v) => v + OFFSET) });
    let b = reducedRankLs(fit.x, shifted(fit.y), r);
    const linearFit = flatLoss(fit.y.data, predict(fit.x, b), region).num;
    const linearHeld = flatLoss(held.y.data, predict(held.x, b), region).num;
    for (let k = 0; k < 8; k++) {
      const z: Matrix = { rows: n, cols: O, data: flatTargets(fit.y.data, predict(fit.x, b), region) };
      b = reducedRankLs(fit.x, shifted(z), r);
    }
    const fitRatio = flatLoss(fit.y.data, predict(fit.x, b), region).num / linearFit;
    const heldRatio = flatLoss(held.y.data, predict(held.x, b), region).num / linearHeld;
    expect(fitRatio).toBeLessThan(0.95);
    expect(heldRatio).toBeLessThan(0.97);
  });

});
