import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { gemm } from '../../src/linalg/gemm.js';
import { svd } from '../../src/linalg/svd.js';
import type { Matrix } from '../../src/linalg/matrix.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { damped, SvdCache, svdPairFactors, WHITEN_DAMP, whiteningFor } from '../../src/rewrite/svd-pair.js';
import { createRng } from '../../src/util/rng.js';
import { runModel } from '../helpers/ort.js';

const rng = createRng(123);
const randn = (rows: number, cols: number): Matrix => ({ rows, cols, data: Float64Array.from({ length: rows * cols }, () => rng.normal()) });

/** n samples in a d-dimensional subspace of R^k, plus a little isotropic noise. */
function subspaceInputs(n: number, k: number, d: number, noise: number): Matrix {
  const x = gemm(randn(n, d), randn(d, k));
  for (let i = 0; i < x.data.length; i++) x.data[i] += noise * rng.normal();
  return x;
}

const frob = (m: Matrix): number => Math.sqrt(Array.from(m.data).reduce((a, v) => a + v * v, 0));
function outErr(x: Matrix, w: Matrix, left: Float32Array, right: Float32Array, r: number): number {
  const wr = gemm({ rows: w.rows, cols: r, data: Float64Array.from(left) }, { rows: r, cols: w.cols, data: Float64Array.from(right) });
  const d = { rows: w.rows, cols: w.cols, data: w.data.map((v, i) => v - wr.data[i]) };
  return frob(gemm(x, d)) / frob(gemm(x, w));
}

describe('truncation-aware whitening (SVD-LLM)', () => {
  const K = 32;
  const N = 24;
  const r = 4;
  const x = subspaceInputs(400, K, 4, 1e-3);
  const w = randn(K, N);
  const gram = gemm(x, x, { transA: true }).data as Float64Array;

  it('beats plain SVD on inputs in a low-dimensional subspace and reaches the optimum', () => {
    const plain = svdPairFactors(new SvdCache(w, 0), r);
    const white = svdPairFactors(new SvdCache(w, 0, { side: 'rows', gram }), r);
    const ePlain = outErr(x, w, plain.left, plain.right, r);
    const eWhite = outErr(x, w, white.left, white.right, r);
    // Another route to the optimum: the best rank-r approximation of Y = X·W itself.
    const s = svd(gemm(x, w)).s;
    const total = s.reduce((a, v) => a + v * v, 0);
    const tail = s.slice(r).reduce((a, v) => a + v * v, 0);
    const optimum = Math.sqrt(tail / total);
    expect(eWhite).toBeLessThan(ePlain / 3);
    expect(eWhite).toBeLessThan(optimum * 1.01 + 1e-6);
    expect(eWhite).toBeGreaterThan(optimum * 0.99 - 1e-6);
    // The reported data error is that same number.
    expect(white.dataError!).toBeCloseTo(eWhite, 3);
  });

  it('damping: G + λ·mean(diag G)·I on a copy; λ = 0 keeps the exact optimum; the passes damp by default', () => {
    const g = Float64Array.from([4, 1, 1, 2]);
    expect(Array.from(damped(g, 2, 0.1))).toEqual([4.3, 1, 1, 2.3]);
    expect(Array.from(g)).toEqual([4, 1, 1, 2]);
    expect(damped(g, 2, 0)).toBe(g);
    const stats = { kind: 'matrix' as const, dim: K, count: 400, gram };
    expect(whiteningFor(stats, 'rows', K)?.damp).toBe(WHITEN_DAMP);
    expect(WHITEN_DAMP).toBeGreaterThan(0);
    // Damped, the fit stays close to the optimum on the calibration inputs, far below plain.
    const exact = svdPairFactors(new SvdCache(w, 0, { side: 'rows', gram }), r);
    const damp = svdPairFactors(new SvdCache(w, 0, whiteningFor(stats, 'rows', K)), r);
    const plain = svdPairFactors(new SvdCache(w, 0), r);
    expect(outErr(x, w, exact.left, exact.right, r)).toBeLessThanOrEqual(outErr(x, w, damp.left, damp.right, r) + 1e-9);
    expect(outErr(x, w, damp.left, damp.right, r)).toBeLessThan(outErr(x, w, plain.left, plain.right, r) / 10);
  });

  it('columns-side whitening (Y = W·X) mirrors the rows side', () => {
    const wt: Matrix = { rows: N, cols: K, data: new Float64Array(N * K) };
    for (let i = 0; i < K; i++) for (let j = 0; j < N; j++) wt.data[j * K + i] = w.data[i * N + j];
    const white = svdPairFactors(new SvdCache(wt, 0, { side: 'cols', gram }), r);
    // W'ᵀ = Rᵀ·Lᵀ must give the same output error as the rows-side factorization.
    const lt = new Float32Array(K * r);
    const rt = new Float32Array(r * N);
    for (let i = 0; i < N; i++) for (let k = 0; k < r; k++) rt[k * N + i] = white.left[i * r + k];
    for (let k = 0; k < r; k++) for (let j = 0; j < K; j++) lt[j * r + k] = white.right[k * K + j];
    const rows = svdPairFactors(new SvdCache(w, 0, { side: 'rows', gram }), r);
    expect(outErr(x, w, lt, rt, r)).toBeCloseTo(outErr(x, w, rows.left, rows.right, r), 4);
  });

  it('through the driver and ORT: data-aware output error is far below plain at equal rank', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const xin = b.input('x', [400, K]);
    b.output(b.node('MatMul', [xin, b.init('w', [K, N], w.data)], {}, { name: 'mm' }));
    const bytes = encodeModel(b.build());
    const feeds = { x: new ort.Tensor('float32', Float32Array.from(x.data), [400, K]) };
    const ref = (await runModel(bytes, feeds)).mm_out0;
    const errOf = async (stats?: Map<string, { kind: 'matrix'; gram: Float64Array; dim: number; count: number }>): Promise<number> => {
      const model = new Model(decodeModel(bytes));
      const [rec] = optimizeModel(model, undefined, { method: 'auto', policy: { kind: 'fixed', rank: r }, minParams: 0, seed: 0 }, undefined, { stats });
      expect(rec.skipped).toBeUndefined();
      if (stats) expect(rec.dataError).toBeDefined();
      const y = (await runModel(encodeModel(model.proto), feeds)).mm_out0;
      let num = 0;
      let den = 0;
      for (let i = 0; i < y.length; i++) { num += (y[i] - ref[i]) ** 2; den += ref[i] ** 2; }
      return Math.sqrt(num / den);
    };
    const plain = await errOf();
    const aware = await errOf(new Map([['mm', { kind: 'matrix', gram, dim: K, count: 400 }]]));
    expect(aware).toBeLessThan(plain / 3);
  });
});
