/**
 * The anchored fits of linalg/anchored.ts against optima computed another way: least
 * squares on the stacked activations (Householder QR, then the SVD of the fitted values:
 * reduced-rank regression), never through the moments or a Cholesky whitening.
 */
import { describe, expect, it } from 'vitest';
import {
  anchoredError, centered, fitThroughInputMap, meanError, rankFit, reducedRankFromMoments, whitenedTarget,
} from '../../src/linalg/anchored.js';
import { gemm } from '../../src/linalg/gemm.js';
import { randomNormal, transpose, type Matrix } from '../../src/linalg/matrix.js';
import { svd } from '../../src/linalg/svd.js';
import { createRng } from '../../src/util/rng.js';
import { reducedRankLs, relDiff } from './helpers.js';

const rng = createRng(2024);
const randn = (r: number, c: number): Matrix => randomNormal(r, c, rng.normal);
const map = (m: Matrix, f: (v: number) => number): Matrix => ({ ...m, data: m.data.map(f) });
const sub = (a: Matrix, b: Matrix): Matrix => ({ ...a, data: a.data.map((v, i) => v - b.data[i]!) });
const frob2 = (m: Matrix): number => { let s = 0; for (const v of m.data) s += v * v; return s; };
/** Σ rows uᵢ·vᵢᵀ / n for U [n, p], V [n, q] (samples on the rows). */
const moment = (u: Matrix, v: Matrix): Float64Array => gemm(u, v, { transA: true }).data.map((x) => x / u.rows) as Float64Array;

/** Stacks A [n, d] over a·I_d, and T [n, t] over a·B [d, t]: the damped problem as plain least squares. */
function stack(a: Matrix, t: Matrix, b: Matrix, scale: number): { a: Matrix; t: Matrix } {
  const d = a.cols;
  const sa: Matrix = { rows: a.rows + d, cols: d, data: new Float64Array((a.rows + d) * d) };
  sa.data.set(a.data);
  for (let i = 0; i < d; i++) sa.data[(a.rows + i) * d + i] = scale;
  const st: Matrix = { rows: t.rows + d, cols: t.cols, data: new Float64Array((t.rows + d) * t.cols) };
  st.data.set(t.data);
  for (let i = 0; i < b.data.length; i++) st.data[t.rows * t.cols + i] = scale * b.data[i]!;
  return { a: sa, t: st };
}


describe('anchored rank-r fit (asymmetric reconstruction)', () => {
  // Layer 1: x ↦ h = tanh(W1·x), compressed to rank 3 (a plain truncation); layer 2: h ↦ W2·h.
  const n = 500;
  const d0 = 10;
  const d1 = 12;
  const t = 9;
  const x = randn(n, d0);
  const w1 = randn(d1, d0);
  const f = svd(w1);
  const w1hat = gemm(gemm(f.u, { rows: f.s.length, cols: f.s.length, data: Float64Array.from({ length: f.s.length ** 2 }, (_, i) => (i % (f.s.length + 1) === 0 && i / (f.s.length + 1) < 3 ? f.s[i / (f.s.length + 1)]! : 0)) }), f.vt);
  const h = map(gemm(x, w1, { transB: true }), Math.tanh); // [n, d1], original activations
  const hHat = map(gemm(x, w1hat, { transB: true }), Math.tanh); // what the compressed layer 1 feeds layer 2
  const w2 = randn(t, d1);
  const y = gemm(h, w2, { transB: true }); // [n, t]
  const moments = { gram: moment(h, h), gramHat: moment(hHat, hHat), cross: moment(hHat, h) };

  for (const lambda of [0, 0.05]) {
    it(`matches reduced-rank regression on the stacked activations (λ = ${lambda}) and beats the independent fit`, () => {
      const r = 4;
      const fit = rankFit(whitenedTarget(w2, moments.gramHat, moments.cross, lambda), r);
      const w2hat = gemm(fit.b, fit.g); // [t, d1]
      expect(fit.b.cols).toBe(r);
      // The other route: min ‖H·W2ᵀ − Ĥ·Bᵀ‖² + n·δ‖W2ᵀ − Bᵀ‖² as stacked least squares.
      let tr = 0;
      for (let i = 0; i < d1; i++) tr += moments.gramHat[i * d1 + i]!;
      const delta = (lambda * tr) / d1;
      const s = stack(hHat, y, transpose(w2), Math.sqrt(n * delta));
      const opt = transpose(reducedRankLs(s.a, s.t, r));
      expect(relDiff(w2hat.data, opt.data)).toBeLessThan(1e-8);
      // The reported error is the error on the data.
      const direct = frob2(sub(y, gemm(hHat, w2hat, { transB: true }))) / n;
      const e = anchoredError(w2, w2hat, moments);
      expect(e.num).toBeCloseTo(direct, 8);
      expect(e.den).toBeCloseTo(frob2(y) / n, 8);
      // The independent fit (whitened by the original activations only, as without
      // anchoring) leaves more error on what layer 2 is actually fed.
      const indep = rankFit(whitenedTarget(w2, moments.gram, moments.gram, lambda), r);
      const eIndep = frob2(sub(y, gemm(hHat, gemm(indep.b, indep.g), { transB: true }))) / n;
      expect(direct).toBeLessThan(0.9 * eIndep);
    });
  }

  it('with x̂ = x and no damping it is the SVD-LLM whitening optimum (best rank-r approximation of the outputs)', () => {
    const r = 3;
    const fit = rankFit(whitenedTarget(w2, moments.gram, moments.gram, 0), r);
    const err = frob2(sub(y, gemm(h, gemm(fit.b, fit.g), { transB: true })));
    const sv = svd(y).s;
    const tail = Array.from(sv.slice(r)).reduce((a, v) => a + v * v, 0);
    expect(err / tail).toBeCloseTo(1, 8);
  });

  it('through a fixed input map: the normal equations, and the rank-r version, equal stacked least squares', () => {
    const q = 7;
    const hm = randn(q, d1); // the chain before its last factor
    const lambda = 0.02;
    let tr = 0;
    for (let i = 0; i < d1; i++) tr += moments.gramHat[i * d1 + i]!;
    const delta = (lambda * tr) / d1;
    // Least squares over B [t, q]: Ĥ·Hmᵀ·Bᵀ ≈ Y, damped by δ‖W2 − B·Hm‖²: stacked as rows of Hmᵀ.
    const z = gemm(hHat, hm, { transB: true }); // [n, q]
    const stackedA: Matrix = { rows: n + d1, cols: q, data: new Float64Array((n + d1) * q) };
    stackedA.data.set(z.data);
    const hmT = transpose(hm);
    for (let i = 0; i < d1 * q; i++) stackedA.data[n * q + i] = Math.sqrt(n * delta) * hmT.data[i]!;
    const stackedT: Matrix = { rows: n + d1, cols: t, data: new Float64Array((n + d1) * t) };
    stackedT.data.set(y.data);
    const w2T = transpose(w2);
    for (let i = 0; i < d1 * t; i++) stackedT.data[n * t + i] = Math.sqrt(n * delta) * w2T.data[i]!;

    const b = fitThroughInputMap(w2, hm, moments.gramHat, moments.cross, lambda);
    const ls = transpose(reducedRankLs(stackedA, stackedT, Math.min(q, t)));
    expect(relDiff(b.data, ls.data)).toBeLessThan(1e-8);

    // Rank 2 through the map: from the projected moments Z = Hm·(Ĉ+δI)·Hmᵀ, R = W2·(X+δI)ᵀ·Hmᵀ.
    const plus = (a: Float64Array): Matrix => ({ rows: d1, cols: d1, data: a.map((v, i) => v + (i % (d1 + 1) === 0 ? delta : 0)) as Float64Array });
    const zm = gemm(gemm(hm, plus(moments.gramHat)), hm, { transB: true });
    const rm = gemm(gemm(w2, plus(moments.cross), { transB: true }), hm, { transB: true });
    const rr = reducedRankFromMoments(zm, rm, 2);
    const m2 = gemm(rr.b, rr.g);
    const ls2 = transpose(reducedRankLs(stackedA, stackedT, 2));
    expect(relDiff(m2.data, ls2.data)).toBeLessThan(1e-8);
  });

  it('centered moments and the mean error give the optimal bias', () => {
    const d = 4;
    const u = map(randn(200, d), (v) => v + 1.5);
    const v = map(randn(200, d), (w) => w - 0.5);
    const mu = Float64Array.from({ length: d }, (_, j) => { let s = 0; for (let i = 0; i < 200; i++) s += u.data[i * d + j]!; return s / 200; });
    const mv = Float64Array.from({ length: d }, (_, j) => { let s = 0; for (let i = 0; i < 200; i++) s += v.data[i * d + j]!; return s / 200; });
    const raw = gemm(u, v, { transA: true }).data as Float64Array;
    const c = centered(raw, 200, d, mu, mv);
    const uc = { ...u, data: u.data.map((x, i) => x - mu[i % d]!) };
    const vc = { ...v, data: v.data.map((x, i) => x - mv[i % d]!) };
    expect(relDiff(c, moment(uc, vc))).toBeLessThan(1e-12);
    // W·E[u] − Ŵ·E[v]: the constant that makes the mean output error vanish.
    const w = randn(3, d);
    const wh = randn(3, d);
    const delta = meanError(w, wh, mu, mv);
    const yu = gemm(u, w, { transB: true });
    const yv = gemm(v, wh, { transB: true });
    for (let k = 0; k < 3; k++) {
      let s = 0;
      for (let i = 0; i < 200; i++) s += yu.data[i * 3 + k]! - yv.data[i * 3 + k]! - delta[k]!;
      expect(Math.abs(s / 200)).toBeLessThan(1e-12);
    }
  });
});
