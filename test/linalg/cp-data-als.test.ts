/**
 * The CP data sweeps (linalg/cp-data-als.ts): each factor step against the least-squares
 * optimum computed another way (the chain's outputs on stacked patches as a linear map of
 * the factor, formed column by column, solved by Householder QR), the sweeps' objective,
 * and cp-conv.ts's fits with and without them.
 */
import { describe, expect, it } from 'vitest';
import { anchoredError } from '../../src/linalg/anchored.js';
import { cpConv } from '../../src/linalg/cp-conv.js';
import {
  balanceCpTerms, chainInput, cpDataSweepCount, cpDataSweeps, factorStep, lastFactorTerms, patchObjectiveValue, CP_DATA_MAX_FLOPS, CP_DATA_SWEEPS, type CpChainFactors, type PatchQuadratic,
} from '../../src/linalg/cp-data-als.js';
import { gemm } from '../../src/linalg/gemm.js';
import { randomNormal, type Matrix } from '../../src/linalg/matrix.js';
import { householderQr } from '../../src/linalg/qr.js';
import { refitLastFactor } from '../../src/linalg/refit.js';
import { solveUpperLeft } from '../../src/linalg/triangular.js';
import { createRng } from '../../src/util/rng.js';
import { relDiff } from './helpers.js';

const rng = createRng(77);
const randn = (r: number, c: number): Matrix => randomNormal(r, c, rng.normal);

/** Patches [n, D] with correlated, non-Kronecker covariance (a random mixing plus a mean). */
function patches(n: number, D: number): Matrix {
  const z = randn(n, D);
  const mix = randn(D, D);
  for (let i = 0; i < D; i++) mix.data[i * D + i] += 2;
  const p = gemm(z, mix);
  for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) p.data[i * D + d] += 0.3 * Math.sin(d);
  return p;
}

/** The plain data objective's moments for patches P: Ĉ = PᵀP, Y = W·PᵀP. */
function moments(w: Matrix, p: Matrix): PatchQuadratic {
  const cHat = gemm(p, p, { transA: true });
  return { cHat, y: gemm(w, cHat) };
}

/** min over x of ‖b − M·x‖ by Householder QR. */
function lstsq(m: Matrix, b: Float64Array): Float64Array {
  const { q, r } = householderQr(m);
  return solveUpperLeft(r, gemm(q, { rows: b.length, cols: 1, data: b }, { transA: true })).data as Float64Array;
}

/** vec(P·(A·H)ᵀ) [n·T]: the chain's outputs on the stacked patches. */
const outputs = (a: Matrix, h: Matrix, p: Matrix): Float64Array => gemm(p, gemm(a, h), { transB: true }).data as Float64Array;

describe('CP data sweeps', () => {
  const [T, S, K, R, n] = [5, 4, 3, 3, 200];
  const D = S * K;
  const w = randn(T, D);
  const p = patches(n, D);
  const obj = moments(w, p);
  const start: CpChainFactors = { first: randn(R, S).data as Float64Array, depth: randn(R, K).data as Float64Array, last: randn(T, R).data as Float64Array };
  const a: Matrix = { rows: T, cols: R, data: start.last };
  const target = outputs(w, { rows: D, cols: D, data: Float64Array.from({ length: D * D }, (_, i) => (i % (D + 1) === 0 ? 1 : 0)) }, p);

  for (const onFirst of [true, false]) {
    it(`the ${onFirst ? 'first-factor (F)' : 'depthwise (Dp)'} step is the least-squares optimum on the stacked patches`, () => {
      const size = onFirst ? R * S : R * K;
      // Column j of the design: the outputs with the factor = unit vector j (the chain is linear in it).
      const design: Matrix = { rows: n * T, cols: size, data: new Float64Array(n * T * size) };
      for (let j = 0; j < size; j++) {
        const e = new Float64Array(size);
        e[j] = 1;
        const h = onFirst ? chainInput(e, start.depth, R, S, K) : chainInput(start.first, e, R, S, K);
        const col = outputs(a, h, p);
        for (let i = 0; i < n * T; i++) design.data[i * size + j] = col[i]!;
      }
      const optimum = lstsq(design, target);
      const step = factorStep(onFirst, start, lastFactorTerms(a, obj), obj, S, K, { cgIterations: 4 * size });
      expect(relDiff(step, optimum)).toBeLessThan(1e-6);
    });
  }

  it('sweeps lower the objective every time, end below the start, and keep nothing a rejecting accept refuses', () => {
    const lastFit = (h: Matrix): Matrix => ({ rows: T, cols: R, data: refitLastFactor(w, h, obj.cHat.data as Float64Array).b });
    const f0 = patchObjectiveValue(a, chainInput(start.first, start.depth, R, S, K), obj);
    const seen: number[] = [];
    const out = cpDataSweeps(start, T, S, K, obj, lastFit, { sweeps: 5, cgIterations: 6, onSweep: (_, f) => seen.push(f) });
    expect(out.sweeps).toBeGreaterThan(0);
    expect(seen.length).toBe(out.sweeps);
    expect(seen[0]!).toBeLessThan(f0);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeLessThan(seen[i - 1]!);
    expect(out.objective).toBe(seen[seen.length - 1]);
    const none = cpDataSweeps(start, T, S, K, obj, lastFit, { sweeps: 5, cgIterations: 6, accept: () => false });
    expect(none.sweeps).toBe(0);
    expect(none.factors).toBe(start);
  });

  it('balancing spreads each term evenly over its three factors without changing the chain', () => {
    const f: CpChainFactors = { first: Float64Array.from(start.first), depth: Float64Array.from(start.depth), last: Float64Array.from(start.last) };
    for (let s = 0; s < S; s++) f.first[s] *= 50; // term 0's scale sits in F
    const before = gemm({ rows: T, cols: R, data: f.last }, chainInput(f.first, f.depth, R, S, K));
    balanceCpTerms(f, T, S, K);
    const after = gemm({ rows: T, cols: R, data: f.last }, chainInput(f.first, f.depth, R, S, K));
    expect(relDiff(after.data, before.data)).toBeLessThan(1e-12);
    for (let r = 0; r < R; r++) {
      let na = 0, nf = 0, nd = 0;
      for (let t = 0; t < T; t++) na += f.last[t * R + r]! ** 2;
      for (let s = 0; s < S; s++) nf += f.first[r * S + s]! ** 2;
      for (let k = 0; k < K; k++) nd += f.depth[r * K + k]! ** 2;
      expect(Math.sqrt(nf / na)).toBeCloseTo(1, 9);
      expect(Math.sqrt(nd / na)).toBeCloseTo(1, 9);
    }
  });

  it('the sweep count follows the work bound', () => {
    expect(cpDataSweepCount(24, 96, 9, 80)).toBe(CP_DATA_SWEEPS);
    expect(cpDataSweepCount(512, 512, 9, 400)).toBe(0);
    // Groups share the bound: many groups of a small kernel get fewer sweeps than one.
    expect(cpDataSweepCount(24, 96, 9, 80, 64)).toBeLessThan(cpDataSweepCount(24, 96, 9, 80));
    expect(CP_DATA_MAX_FLOPS).toBeGreaterThan(0);
  });
});

describe('cpConv with the data sweeps', () => {
  it('fits the data better than without them (anchored and plain statistics), and reports the error of the factors it returns', () => {
    const [T, S, K, R, n] = [8, 6, 9, 6, 600];
    const D = S * K;
    const data = Float32Array.from(randn(1, T * D).data);
    const pHat = patches(n, D);
    // The original's inputs: the compressed model's plus a perturbation (anchored), centered moments.
    const pOrig: Matrix = { rows: n, cols: D, data: pHat.data.map((v) => v + 0.2 * rng.normal()) };
    const mean = (m: Matrix): Float64Array => { const o = new Float64Array(D); for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) o[d] += m.data[i * D + d]! / n; return o; };
    const mu = mean(pOrig), muHat = mean(pHat);
    const centered = (m: Matrix, mm: Float64Array): Matrix => ({ rows: n, cols: D, data: m.data.map((v, i) => v - mm[i % D]!) });
    const cx = centered(pOrig, mu), cxHat = centered(pHat, muHat);
    const scale = (m: Matrix): Float64Array => m.data.map((v) => v / n) as Float64Array;
    const patch = { gramHat: scale(gemm(cxHat, cxHat, { transA: true })), cross: scale(gemm(cxHat, cx, { transA: true })), gram: scale(gemm(cx, cx, { transA: true })), mean: mu, meanHat: muHat };
    const anchor = { patch, damp: 1e-3 };
    const fit = (dataSweeps?: number) => cpConv({ data, shape: [T, S, K] }, R, { rng: createRng(5), maxIter: 50, tol: 1e-5, anchor, dataSweeps });
    const without = fit(0);
    const withSweeps = fit();
    expect(without.dataSweeps).toBeUndefined();
    expect(withSweeps.dataSweeps).toBeGreaterThan(0);
    expect(withSweeps.dataError!).toBeLessThan(0.98 * without.dataError!);
    // The reported error is that of the returned factors (recomputed from them on the moments).
    const wHat = gemm({ rows: T, cols: R, data: Float64Array.from(withSweeps.last) }, chainInput(withSweeps.first, withSweeps.depth, R, S, K));
    const e = anchoredError({ rows: T, cols: D, data: Float64Array.from(data) }, wHat, patch);
    expect(withSweeps.dataError!).toBeLessThanOrEqual(Math.sqrt(e.num / e.den) * (1 + 1e-9));
    expect(withSweeps.dataError!).toBeGreaterThan(0.5 * Math.sqrt(e.num / e.den));
    // Plain patch statistics (data-aware, not anchored).
    const gram = gemm(pHat, pHat, { transA: true }).data as Float64Array;
    const plain = (dataSweeps?: number) => cpConv({ data, shape: [T, S, K] }, R, { rng: createRng(5), maxIter: 50, tol: 1e-5, patches: { gram, mean: muHat }, dataSweeps });
    expect(plain().dataError!).toBeLessThan(0.98 * plain(0).dataError!);
    // Quick fits (stable: false) never run the sweeps.
    expect(cpConv({ data, shape: [T, S, K] }, R, { rng: createRng(5), anchor, stable: false }).dataSweeps).toBeUndefined();
  });
});
