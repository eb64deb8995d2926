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
  balanceChain, chainDataSweeps, chainInput, chainMap, chainSweepCount, cpDataSweepCount, lastFactorTerms, modeStep, patchObjectiveValue,
  CP_DATA_MAX_FLOPS, CP_DATA_SWEEPS, type ChainModes, type PatchQuadratic,
} from '../../src/linalg/cp-data-als.js';
import { cpNdConv, cpNdPrefix, refineCpNdOnData } from '../../src/linalg/cpn-conv.js';
import { fitLastFactor } from '../../src/linalg/last-factor.js';
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
  // The 3-way chain: modes F [R, S] and Dp [R, K].
  const [first, depth] = [randn(R, S).data as Float64Array, randn(R, K).data as Float64Array];
  const start: ChainModes = { modes: [first, depth], last: randn(T, R).data as Float64Array };
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
        const h = onFirst ? chainInput(e, depth, R, S, K) : chainInput(first, e, R, S, K);
        const col = outputs(a, h, p);
        for (let i = 0; i < n * T; i++) design.data[i * size + j] = col[i]!;
      }
      const optimum = lstsq(design, target);
      const step = modeStep(onFirst ? 0 : 1, start, lastFactorTerms(a, obj), obj, [S, K], { cgIterations: 4 * size });
      expect(relDiff(step, optimum)).toBeLessThan(1e-6);
    });
  }

  it('sweeps lower the objective every time, end below the start, and keep nothing a rejecting accept refuses', () => {
    const lastFit = (h: Matrix): Matrix => ({ rows: T, cols: R, data: refitLastFactor(w, h, obj.cHat.data as Float64Array).b });
    const f0 = patchObjectiveValue(a, chainInput(first, depth, R, S, K), obj);
    const seen: number[] = [];
    const out = chainDataSweeps(start, T, [S, K], obj, lastFit, { sweeps: 5, cgIterations: 6, onSweep: (_, f) => seen.push(f) });
    expect(out.sweeps).toBeGreaterThan(0);
    expect(seen.length).toBe(out.sweeps);
    expect(seen[0]!).toBeLessThan(f0);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeLessThan(seen[i - 1]!);
    expect(out.objective).toBe(seen[seen.length - 1]);
    const none = chainDataSweeps(start, T, [S, K], obj, lastFit, { sweeps: 5, cgIterations: 6, accept: () => false });
    expect(none.sweeps).toBe(0);
    expect(none.factors).toBe(start);
  });

  it('balancing spreads each term evenly over its three factors without changing the chain', () => {
    const f = { first: Float64Array.from(first), depth: Float64Array.from(depth), last: Float64Array.from(start.last) };
    for (let s = 0; s < S; s++) f.first[s] *= 50; // term 0's scale sits in F
    const before = gemm({ rows: T, cols: R, data: f.last }, chainInput(f.first, f.depth, R, S, K));
    balanceChain({ modes: [f.first, f.depth], last: f.last }, T, [S, K]);
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

describe('chain data sweeps with more modes (the 4-way CP chain: first, kh×1, 1×kw)', () => {
  const [T, S, kh, kw, R, n] = [5, 3, 3, 2, 3, 300];
  const dims = [S, kh, kw];
  const D = S * kh * kw;
  const w = randn(T, D);
  const p = patches(n, D);
  const obj = moments(w, p);
  const start: ChainModes = { modes: dims.map((d) => randn(R, d).data as Float64Array), last: randn(T, R).data as Float64Array };
  const a: Matrix = { rows: T, cols: R, data: start.last };
  const target = outputs(w, { rows: D, cols: D, data: Float64Array.from({ length: D * D }, (_, i) => (i % (D + 1) === 0 ? 1 : 0)) }, p);

  it('the chain map is the product of the modes in patch order', () => {
    const h = chainMap(start.modes, R, dims);
    for (const [r, s, y, x] of [[0, 0, 0, 0], [1, 2, 1, 1], [2, 1, 2, 0]] as const) {
      expect(h.data[r * D + (s * kh + y) * kw + x]).toBeCloseTo(start.modes[0]![r * S + s]! * start.modes[1]![r * kh + y]! * start.modes[2]![r * kw + x]!, 14);
    }
    // Four modes (a 3-D kernel), every entry against the product written out.
    const d4 = [2, 3, 2, 2];
    const u4 = d4.map((d) => randn(R, d).data as Float64Array);
    const h4 = chainMap(u4, R, d4);
    for (let r = 0; r < R; r++) for (let a = 0; a < 2; a++) for (let b = 0; b < 3; b++) for (let c = 0; c < 2; c++) for (let e = 0; e < 2; e++) {
      expect(h4.data[r * 24 + ((a * 3 + b) * 2 + c) * 2 + e]).toBeCloseTo(u4[0]![r * 2 + a]! * u4[1]![r * 3 + b]! * u4[2]![r * 2 + c]! * u4[3]![r * 2 + e]!, 14);
    }
  });

  for (const m of [0, 1, 2]) {
    it(`mode ${m}'s step is the least-squares optimum on the stacked patches`, () => {
      const size = R * dims[m]!;
      const design: Matrix = { rows: n * T, cols: size, data: new Float64Array(n * T * size) };
      for (let j = 0; j < size; j++) {
        const e = new Float64Array(size);
        e[j] = 1;
        const col = outputs(a, chainMap(start.modes.map((u, k) => (k === m ? e : u)), R, dims), p);
        for (let i = 0; i < n * T; i++) design.data[i * size + j] = col[i]!;
      }
      const optimum = lstsq(design, target);
      const step = modeStep(m, start, lastFactorTerms(a, obj), obj, dims, { cgIterations: 4 * size });
      expect(relDiff(step, optimum)).toBeLessThan(1e-6);
    });
  }

  it('sweeps lower the objective every time; balancing keeps the chain and evens out each term', () => {
    const lastFit = (h: Matrix): Matrix => ({ rows: T, cols: R, data: refitLastFactor(w, h, obj.cHat.data as Float64Array).b });
    const f0 = patchObjectiveValue(a, chainMap(start.modes, R, dims), obj);
    const seen: number[] = [];
    const out = chainDataSweeps(start, T, dims, obj, lastFit, { sweeps: 4, cgIterations: 6, onSweep: (_, f) => seen.push(f) });
    expect(out.sweeps).toBeGreaterThan(0);
    expect(seen[0]!).toBeLessThan(f0);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeLessThan(seen[i - 1]!);
    const f = { modes: out.factors.modes.map((u) => Float64Array.from(u)), last: Float64Array.from(out.factors.last) };
    f.modes[1]!.subarray(0, kh).forEach((_, i) => { f.modes[1]![i] *= 40; });
    const before = gemm({ rows: T, cols: R, data: f.last }, chainMap(f.modes, R, dims));
    balanceChain(f, T, dims);
    expect(relDiff(gemm({ rows: T, cols: R, data: f.last }, chainMap(f.modes, R, dims)).data, before.data)).toBeLessThan(1e-12);
    for (let r = 0; r < R; r++) {
      let na = 0;
      for (let t = 0; t < T; t++) na += f.last[t * R + r]! ** 2;
      dims.forEach((d, m) => {
        let nm = 0;
        for (let i = 0; i < d; i++) nm += f.modes[m]![r * d + i]! ** 2;
        expect(Math.sqrt(nm / na)).toBeCloseTo(1, 9);
      });
    }
    // More modes cost more work: fewer sweeps fit the bound than for the 3-way chain on the same patch.
    expect(chainSweepCount(96, [96, 3, 3], 200)).toBeLessThanOrEqual(cpDataSweepCount(96, 96, 9, 200));
  });

  it('refineCpNdOnData: a 4-way CP refined on the statistics fits them, and other inputs of the same kind, better than its last-factor refit alone', () => {
    const [T2, S2, R2] = [8, 6, 6];
    const D2 = S2 * 9;
    const kernel = Float32Array.from(randn(1, T2 * D2).data);
    const wm: Matrix = { rows: T2, cols: D2, data: Float64Array.from(kernel) };
    const gramOf = (q: Matrix): Float64Array => gemm(q, q, { transA: true }).data.map((v) => v / q.rows) as Float64Array;
    // One distribution (patches() draws its mixing anew on each call), split in two.
    const all = patches(1600, D2);
    const fitP: Matrix = { rows: 800, cols: D2, data: all.data.subarray(0, 800 * D2) as Float64Array };
    const heldP: Matrix = { rows: 800, cols: D2, data: all.data.subarray(800 * D2) as Float64Array };
    const patchStats = { patches: { gram: gramOf(fitP) } };
    const f = cpNdConv({ data: kernel, shape: [T2, S2, 3, 3] }, R2, { rng: createRng(9), maxIter: 60, tol: 1e-6 });
    const errorOn = (first: Float32Array, spatial: Float32Array[], q: Matrix): number => {
      const h = cpNdPrefix(first, spatial, S2, [3, 3], R2);
      const last = fitLastFactor(wm, h, patchStats)!.last;
      return relDiff(outputs({ rows: T2, cols: R2, data: last }, h, q), outputs(wm, { rows: D2, cols: D2, data: Float64Array.from({ length: D2 * D2 }, (_, i) => (i % (D2 + 1) === 0 ? 1 : 0)) }, q));
    };
    const refined = refineCpNdOnData(f, wm, [3, 3], patchStats, { sweeps: 4 });
    expect(refined.sweeps).toBeGreaterThan(0);
    expect(errorOn(refined.first, refined.spatial, fitP)).toBeLessThan(0.98 * errorOn(f.first, f.spatial, fitP));
    expect(errorOn(refined.first, refined.spatial, heldP)).toBeLessThan(errorOn(f.first, f.spatial, heldP));
    // No sweeps asked: the factors come back as they were.
    const none = refineCpNdOnData(f, wm, [3, 3], patchStats, { sweeps: 0 });
    expect(none.sweeps).toBe(0);
    expect(none.first).toBe(f.first);
  });
});
