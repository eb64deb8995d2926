/**
 * Shrunk anchored statistics (calib/anchor-shrink.ts): the anchored fit on the mixed sums
 * is the least-squares fit on the stacked data of both objectives, checked against
 * Householder QR on that stack (not through the moments).
 */
import { describe, expect, it } from 'vitest';
import { anchoredShrinkage, mix, shrinkAnchor, shrinkageOf } from '../../src/calib/anchor-shrink.js';
import { centered, fitThroughInputMap } from '../../src/linalg/anchored.js';
import { gemm } from '../../src/linalg/gemm.js';
import { randomNormal, type Matrix } from '../../src/linalg/matrix.js';
import { householderQr } from '../../src/linalg/qr.js';
import { solveUpperLeft } from '../../src/linalg/triangular.js';
import type { LayerInputStats } from '../../src/rewrite/pass.js';
import { createRng } from '../../src/util/rng.js';

const rng = createRng(77);
const randn = (r: number, c: number): Matrix => randomNormal(r, c, rng.normal);
const sumOf = (u: Matrix, v: Matrix): Float64Array => gemm(u, v, { transA: true }).data as Float64Array;
const colMean = (u: Matrix): Float64Array => {
  const m = new Float64Array(u.cols);
  for (let i = 0; i < u.rows; i++) for (let j = 0; j < u.cols; j++) m[j] += u.data[i * u.cols + j]! / u.rows;
  return m;
};
function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let n = 0;
  let d = 0;
  for (let i = 0; i < a.length; i++) { n += (a[i]! - b[i]!) ** 2; d += b[i]! ** 2; }
  return Math.sqrt(n / d);
}

describe('anchoredShrinkage', () => {
  it('is n / (n + κ·D): a half at κ rows per dimension, 1 without shrinkage, 0 without rows', () => {
    expect(anchoredShrinkage(800, 100, 8)).toBeCloseTo(0.5, 12);
    expect(anchoredShrinkage(18, 240, 8)).toBeCloseTo(18 / (18 + 1920), 12);
    expect(anchoredShrinkage(100, 10, 0)).toBe(1);
    expect(anchoredShrinkage(0, 10, 8)).toBe(0);
  });
});

describe('shrinkAnchor', () => {
  // x: the original layer input; x̂: the partly compressed model's (x plus a distortion).
  const n = 400;
  const d = 6;
  const t = 5;
  const x = randn(n, d);
  for (let i = 0; i < n; i++) x.data[i * d] += 2; // a non-zero mean
  const mixin = randn(d, d);
  const xm = gemm(x, mixin).data;
  const xHat: Matrix = { rows: n, cols: d, data: x.data.map((v, i) => v + 0.4 * Math.tanh(v) + 0.3 * xm[i]!) as Float64Array };
  const w = randn(t, d);
  const st: LayerInputStats = {
    kind: 'matrix', dim: d, count: n, gram: sumOf(x, x), mean: colMean(x),
    anchor: { gram: sumOf(xHat, xHat), cross: sumOf(xHat, x), mean: colMean(xHat) },
  };

  /** The fit's weight and bias on shrunk statistics, through the moments (as the passes fit). */
  function fitOn(s: LayerInputStats): { w: Matrix; b: Float64Array } {
    const an = s.anchor!;
    const mh = an.mean;
    const m = s.mean!;
    const fit = fitThroughInputMap(w, identity(d), centered(an.gram, n, d, mh, mh), centered(an.cross, n, d, mh, m), 0);
    const b = new Float64Array(t);
    for (let i = 0; i < t; i++) for (let j = 0; j < d; j++) b[i] += w.data[i * d + j]! * m[j]! - fit.data[i * d + j]! * mh[j]!;
    return { w: fit, b };
  }

  for (const alpha of [0, 0.3, 1]) {
    it(`α = ${alpha}: the fit is least squares on the stacked rows √α·[x̂, 1] and √(1−α)·[x, 1] against W·x`, () => {
      const s = shrinkAnchor(st, { alpha, patchAlpha: alpha });
      const got = fitOn(s);
      // Stacked problem: rows [x̂ᵢ, 1] weighted √α and [xᵢ, 1] weighted √(1−α), targets W·xᵢ likewise.
      const rows = 2 * n;
      const a: Matrix = { rows, cols: d + 1, data: new Float64Array(rows * (d + 1)) };
      const y: Matrix = { rows, cols: t, data: new Float64Array(rows * t) };
      const wx = gemm(x, w, { transB: true });
      for (let i = 0; i < rows; i++) {
        const src = i < n ? xHat : x;
        const k = i % n;
        const sc = Math.sqrt(i < n ? alpha : 1 - alpha);
        for (let j = 0; j < d; j++) a.data[i * (d + 1) + j] = sc * src.data[k * d + j]!;
        a.data[i * (d + 1) + d] = sc;
        for (let j = 0; j < t; j++) y.data[i * t + j] = sc * wx.data[k * t + j]!;
      }
      // Rows of weight 0 carry nothing; drop them so QR sees a full-rank system.
      const keep = [...Array(rows).keys()].filter((i) => (i < n ? alpha : 1 - alpha) > 0);
      const pick = (m: Matrix): Matrix => ({ rows: keep.length, cols: m.cols, data: Float64Array.from(keep.flatMap((i) => [...m.data.subarray(i * m.cols, (i + 1) * m.cols)])) });
      const { q, r } = householderQr(pick(a));
      const sol = solveUpperLeft(r, gemm(q, pick(y), { transA: true })); // [d + 1, t]
      const wOpt = new Float64Array(t * d);
      const bOpt = new Float64Array(t);
      for (let i = 0; i < t; i++) { for (let j = 0; j < d; j++) wOpt[i * d + j] = sol.data[j * t + i]!; bOpt[i] = sol.data[d * t + i]!; }
      expect(relDiff(got.w.data, wOpt)).toBeLessThan(1e-8);
      // The fit's bias is the original output mean minus the fitted one on the mixture's mean.
      // (Relative to the output mean's size: at α = 0 the bias is 0.)
      const scale = Math.hypot(...gemm(w, { rows: d, cols: 1, data: st.mean! }).data);
      expect(Math.hypot(...got.b.map((v, i) => v - bOpt[i]!)) / scale).toBeLessThan(1e-8);
      if (alpha === 0) expect(relDiff(got.w.data, w.data)).toBeLessThan(1e-8); // the fit to x alone keeps W
    });
  }

  it('leaves statistics without a compressed upstream (x̂ = x, shared arrays) and α = 1 untouched', () => {
    const same: LayerInputStats = { ...st, anchor: { gram: st.gram, cross: st.gram, mean: st.mean! } };
    expect(shrinkAnchor(same, { alpha: 0.2, patchAlpha: 0.2 })).toBe(same);
    expect(shrinkAnchor(st, { alpha: 1, patchAlpha: 1 })).toBe(st);
    const s = shrinkAnchor(st, { alpha: 0.25, patchAlpha: 1 });
    expect(s).not.toBe(st);
    expect(st.anchor!.gram).toEqual(sumOf(xHat, xHat)); // the input statistics are not modified
    expect(s.anchor!.cross[3]).toBeCloseTo(0.25 * st.anchor!.cross[3]! + 0.75 * st.gram[3]!, 9);
  });

  it('in place: the same mixture written into the anchor\'s own arrays; aliased arrays are copied instead', () => {
    const pg = sumOf(x, x);
    const own = (): LayerInputStats => ({
      ...st, patchDim: d, patchCount: n, patchGram: pg, patchMean: colMean(x),
      anchor: { gram: sumOf(xHat, xHat), cross: sumOf(xHat, x), mean: colMean(xHat), patchGram: sumOf(xHat, xHat), patchCross: sumOf(xHat, x), patchMean: colMean(xHat) },
    });
    const k = { alpha: 0.3, patchAlpha: 0.6 };
    const copied = shrinkAnchor(own(), k);
    const mine = own();
    const before = { ...mine.anchor! };
    const inPlace = shrinkAnchor(mine, k, true);
    for (const f of ['gram', 'cross', 'mean', 'patchGram', 'patchCross', 'patchMean'] as const) {
      expect(inPlace.anchor![f], f).toBe(before[f]); // the same array, overwritten
      expect(inPlace.anchor![f], f).toEqual(copied.anchor![f]);
    }
    expect(mine.gram).toEqual(sumOf(x, x)); // the original's side is read only
    expect(pg).toEqual(sumOf(x, x));
    // Patch sums aliased to each other would be mixed twice in place: copied instead.
    const shared = sumOf(xHat, xHat);
    const aliased: LayerInputStats = { ...own(), anchor: { ...own().anchor!, patchGram: shared, patchCross: shared } };
    const got = shrinkAnchor(aliased, k, true);
    expect(shared).toEqual(sumOf(xHat, xHat));
    expect(got.anchor!.patchCross).toEqual(mix(sumOf(xHat, xHat), pg, 0.6));
  });

  it('weights vectors and patches by their own rows per dimension', () => {
    const conv: LayerInputStats = { kind: 'conv', dim: 4, count: 640, gram: new Float64Array(16), patchDim: 36, patchCount: 576 };
    const k = shrinkageOf(conv, 8);
    expect(k.alpha).toBeCloseTo(640 / (640 + 32), 12);
    expect(k.patchAlpha).toBeCloseTo(576 / (576 + 288), 12);
    expect(shrinkageOf({ ...conv, patchDim: undefined }, 8).patchAlpha).toBe(1);
  });

  it('mix refuses arrays of different lengths', () => {
    expect(() => mix(new Float64Array(2), new Float64Array(3), 0.5)).toThrow(/lengths/);
  });
});

function identity(d: number): Matrix {
  const m: Matrix = { rows: d, cols: d, data: new Float64Array(d * d) };
  for (let i = 0; i < d; i++) m.data[i * d + i] = 1;
  return m;
}
