import { describe, expect, it } from 'vitest';
import { convCp } from '../../passes/conv-cp.js';
import { balancedFactors, cpAlsSync } from '../../src/linalg/cp-als.js';
import { chainSensitivity, cpConv } from '../../src/linalg/cp-conv.js';
import { cp4Conv } from '../../src/linalg/cp4-conv.js';
import { convCp4 } from '../../passes/conv-cp4.js';
import { balanceColumns, cpNorm, cpSensitivity, cpSs, SENSITIVITY_LIMIT, stableCp } from '../../src/linalg/cp-sensitivity.js';
import { gemm } from '../../src/linalg/gemm.js';
import { orthonormalize } from '../../src/linalg/qr.js';
import { randomNormal, type Matrix } from '../../src/linalg/matrix.js';
import { khatriRao } from '../../src/linalg/tensor.js';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { isSkip } from '../../src/rewrite/pass.js';
import { createRng } from '../../src/util/rng.js';
import { borderRank2, unit } from '../helpers/cp-kernels.js';
import { compareInOrt, context, convLayer, convModel, windowSpec, type ConvSpec } from '../passes/conv-harness.js';

/** Σ_r ∘_n F_n[:, r] as a flat tensor. */
const full = (fs: readonly Matrix[]): Float64Array => gemm(fs[0]!, khatriRao(fs.slice(1) as Matrix[]), { transB: true }).data as Float64Array;

describe('CP sensitivity (Phan et al. 2020)', () => {
  it('ss is the expected squared change of X̂ per unit noise variance on every factor entry (summed Jacobian, by finite differences; 3- and 4-way)', () => {
    for (const dims of [[4, 3, 5], [3, 4, 2, 3]]) {
      const rng = createRng(dims.length);
      const R = 3;
      const fs = dims.map((d) => randomNormal(d, R, rng.normal));
      const x0 = full(fs);
      // X̂ is linear in each entry: the finite difference is exact up to rounding.
      let sum = 0;
      const eps = 1e-3;
      for (const f of fs) for (let i = 0; i < f.data.length; i++) {
        const keep = f.data[i]!;
        f.data[i] = keep + eps;
        const x1 = full(fs);
        f.data[i] = keep;
        let d = 0;
        for (let j = 0; j < x0.length; j++) d += (x1[j]! - x0[j]!) ** 2;
        sum += d / (eps * eps);
      }
      expect(cpSs(fs) / sum).toBeCloseTo(1, 8);
      // 3-way closed form: K·tr(AᵀA ⊛ BᵀB) + J·tr(AᵀA ⊛ CᵀC) + I·tr(BᵀB ⊛ CᵀC).
      if (dims.length === 3) {
        const g = fs.map((f) => gemm(f, f, { transA: true }).data);
        const tr = (p: ArrayLike<number>, q: ArrayLike<number>) => Array.from({ length: R }, (_, r) => p[r * R + r]! * q[r * R + r]!).reduce((u, v) => u + v, 0);
        expect(cpSs(fs)).toBeCloseTo(dims[2]! * tr(g[0]!, g[1]!) + dims[1]! * tr(g[0]!, g[2]!) + dims[0]! * tr(g[1]!, g[2]!), 9);
      }
      // ‖X̂‖ from the Grams equals the explicit norm.
      expect(cpNorm(fs)).toBeCloseTo(Math.hypot(...x0), 9);
    }
  });

  it('ratio: exactly 1 for R orthogonal balanced terms of equal weight, below 1 for unequal weights; rebalancing never raises ss', () => {
    const rng = createRng(3);
    const dims = [6, 5, 7];
    const R = 4;
    const ortho = dims.map((d) => orthonormalize(randomNormal(d, R, rng.normal)));
    const scaled = (w: number[]) => ortho.map((f) => ({ rows: f.rows, cols: R, data: Float64Array.from(f.data, (v, i) => v * Math.cbrt(w[i % R]!)) }));
    expect(cpSensitivity(scaled([2, 2, 2, 2])).ratio).toBeCloseTo(1, 10);
    expect(cpSensitivity(scaled([5, 1, 0.5, 0.1])).ratio).toBeLessThan(1);
    const skewed = randomNormal(6, R, rng.normal);
    const fs = [skewed, randomNormal(5, R, rng.normal), randomNormal(7, R, rng.normal)].map((f, n) => ({ ...f, data: f.data.map((v) => v * [10, 0.1, 1][n]!) }));
    const bal = balanceColumns(fs);
    expect(Math.hypot(...full(bal).map((v, i) => v - full(fs)[i]!))).toBeLessThan(1e-9);
    expect(cpSs(bal)).toBeLessThan(cpSs(fs));
  });

  it('plain rank-2 CP-ALS on a border-rank-2 kernel is degenerate (large opposite terms, ratio above the limit); the refit bounds it at a small cost in error', () => {
    for (const seed of [1, 2, 3]) {
      const rng = createRng(seed);
      const [T, S, K] = [6, 5, 9];
      const x = borderRank2(rng, T, S, K);
      const norm = Math.hypot(...x);
      const als = cpAlsSync({ data: x, shape: [T, S, K] }, 2, { maxIter: 200, tol: 1e-9, seed });
      const fs = balancedFactors(als);
      // Two rank-one terms, each larger than the whole tensor, pointing against each other.
      expect(Math.min(...als.weights)).toBeGreaterThan(norm);
      const t0 = full(fs.map((f) => ({ ...f, data: f.data.map((v, i) => (i % 2 === 0 ? v : 0)) })));
      const t1 = full(fs.map((f) => ({ ...f, data: f.data.map((v, i) => (i % 2 === 1 ? v : 0)) })));
      expect(t0.reduce((a, v, i) => a + v * t1[i]!, 0)).toBeLessThan(-0.5 * norm * norm);
      const before = cpSensitivity(fs);
      expect(before.ratio).toBeGreaterThan(SENSITIVITY_LIMIT);
      const st = stableCp({ data: x, shape: [T, S, K] }, fs);
      expect(st.bounded).toBe(true);
      expect(st.sensitivity.ratio).toBeLessThanOrEqual(SENSITIVITY_LIMIT);
      expect(st.sensitivity.ss).toBeLessThan(before.ss);
      // The price: the fit moves by a few percent of ‖X‖ (no CP of rank 2 reaches this tensor).
      expect(st.relError).toBeLessThan(als.relError + 0.05);
      // cp-conv does it unasked, and says so; with stable: false it ships the degenerate fit.
      const plain = cpConv({ data: x, shape: [T, S, K] }, 2, { rng: createRng(seed), maxIter: 50, tol: 1e-5, stable: false });
      expect(plain.stabilized).toBeUndefined();
      expect(plain.sensitivity!.ratio).toBeGreaterThan(SENSITIVITY_LIMIT);
      const stable = cpConv({ data: x, shape: [T, S, K] }, 2, { rng: createRng(seed), maxIter: 50, tol: 1e-5 });
      expect(stable.stabilized).toMatchObject({ bounded: true });
      expect(stable.stabilized!.ratioAfter).toBeLessThanOrEqual(SENSITIVITY_LIMIT);
      expect(stable.sensitivity!.ratio).toBeLessThanOrEqual(SENSITIVITY_LIMIT * 1.001);
      expect(stable.relError).toBeLessThan(plain.relError + 0.05);
      // The shipped chain's sensitivity is the one of its weights.
      expect(chainSensitivity(stable.first, stable.depth, stable.last, T, S, K, 2).ss).toBeCloseTo(stable.sensitivity!.ss, 6);
    }
  });

  it('a well-conditioned CP is left alone (no refit: ratio at most 1 for orthogonal terms)', () => {
    const rng = createRng(7);
    const [T, S, K, R] = [8, 6, 9, 3];
    const fs = [T, S, K].map((d) => orthonormalize(randomNormal(d, R, rng.normal)));
    const x = Float32Array.from(full(fs.map((f, n) => (n === 0 ? { ...f, data: f.data.map((v, i) => v * (1 + (i % R))) } : f))));
    const f = cpConv({ data: x, shape: [T, S, K] }, R, { rng });
    expect(f.stabilized).toBeUndefined();
    expect(f.relError).toBeLessThan(1e-5);
    expect(f.sensitivity!.ratio).toBeLessThanOrEqual(1 + 1e-6);
  });

  it('conv-cp on the degenerate kernel: the shipped CP is bounded, the note reports it, and ORT agrees within the fit error', async () => {
    const rng = createRng(2);
    const [T, S] = [6, 5];
    const spec: ConvSpec = { S, T, bias: true, ...windowSpec(2, 3, 1, 1, 'sym') };
    const bytes = convModel(spec, borderRank2(rng, T, S, 9), rng);
    const model = new Model(decodeModel(bytes));
    const cx = context(model);
    const m = convCp.match(convLayer(model), cx);
    if (isSkip(m)) throw new Error(m.skip);
    const applied = convCp.apply(m, [2], cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    expect(m.fitted!.stabilized!.ratioBefore).toBeGreaterThan(SENSITIVITY_LIMIT);
    expect(m.fitted!.sensitivity!.ratio).toBeLessThanOrEqual(SENSITIVITY_LIMIT * 1.001);
    expect(applied.note).toMatch(/^CP sensitivity ss \S+ \(ratio [01]\.\d\d to a non-cancelling CP's\); degenerate ALS fit refitted under the sensitivity bound: ratio \d+\.\d\d → [0-2]\.\d\d \(limit 2\), fit error \S+ → \S+$/);
    expect(model.root.nodes[0]!.docString).toContain(applied.note!);
    model.root.removeUnusedInitializers();
    const cmp = await compareInOrt(bytes, encodeModel(model.proto), spec, 2);
    expect(applied.relError).toBeLessThan(0.1);
    // Output error on white inputs tracks the weight error (edges aside).
    expect(cmp.rel).toBeLessThan(1.5 * applied.relError);
  });

  it('4-way (conv-cp4): a border-rank-2 [T, S, 3, 3] kernel gives a degenerate rank-2 CP-ALS fit; the shipped one is bounded and its note says so', async () => {
    const rng = createRng(5);
    const [T, S] = [6, 5];
    const [a, a2, b, b2, y, y2, x, x2] = [unit(rng, T), unit(rng, T), unit(rng, S), unit(rng, S), unit(rng, 3), unit(rng, 3), unit(rng, 3), unit(rng, 3)];
    // Σ over the four modes of (one primed factor, the others plain): rank 4, border rank 2.
    const w = new Float32Array(T * S * 9);
    for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) {
      w[((t * S + s) * 3 + i) * 3 + j] = a2[t]! * b[s]! * y[i]! * x[j]! + a[t]! * b2[s]! * y[i]! * x[j]! + a[t]! * b[s]! * y2[i]! * x[j]! + a[t]! * b[s]! * y[i]! * x2[j]!;
    }
    const plain = cp4Conv({ data: w, shape: [T, S, 3, 3] }, 2, { rng: createRng(1), maxIter: 50, tol: 1e-5, stable: false });
    expect(plain.sensitivity!.ratio).toBeGreaterThan(SENSITIVITY_LIMIT);
    const stable = cp4Conv({ data: w, shape: [T, S, 3, 3] }, 2, { rng: createRng(1), maxIter: 50, tol: 1e-5 });
    expect(stable.stabilized).toMatchObject({ bounded: true });
    expect(stable.sensitivity!.ratio).toBeLessThanOrEqual(SENSITIVITY_LIMIT * 1.001);
    expect(stable.relError).toBeLessThan(plain.relError + 0.05);
    const spec: ConvSpec = { S, T, ...windowSpec(2, 3, 1, 1, 'sym') };
    const bytes = convModel(spec, w, rng);
    const model = new Model(decodeModel(bytes));
    const cx = context(model, 1);
    const m = convCp4.match(convLayer(model), cx);
    if (isSkip(m)) throw new Error(m.skip);
    const applied = convCp4.apply(m, [2], cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    expect(applied.note).toMatch(/^CP sensitivity ss \S+ \(ratio [01]\.\d\d to a non-cancelling CP's\); degenerate ALS fit refitted under the sensitivity bound: ratio \d+\.\d\d → [0-2]\.\d\d \(limit 2\), fit error /);
    model.root.removeUnusedInitializers();
    const cmp = await compareInOrt(bytes, encodeModel(model.proto), spec, 5);
    expect(cmp.rel).toBeLessThan(1.5 * applied.relError);
  });
});
