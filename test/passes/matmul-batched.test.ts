/**
 * matmul-batched-svd: a MatMul with a constant batched weight [B…, K, N] (or on the left,
 * [B…, M, K]) becomes two batched MatMuls through one rank r, an SVD pair per slice.
 * Exact per-slice ranks match in ORT under broadcasting; the error is the slices' discarded
 * energy; the rank is the largest any slice needs; 2-D MatMuls route as before.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers, type LayerInfo } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import type { ModelProto, NodeProto } from '../../src/onnx/schema.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { planLayer } from '../../src/calib/stats-plan.js';
import { isSkip, type PassContext } from '../../src/rewrite/pass.js';
import { route } from '../../src/rewrite/registry.js';
import { createRng } from '../../src/util/rng.js';
import { matmulBatchedSvd } from '../../passes/matmul-batched-svd.js';
import { PASSES } from '../../passes/dispatch.js';
import { lowRank, randomFeed, relL2 } from '../helpers/ort.js';

const cxOf = (model: Model): PassContext => ({ model, rng: createRng(0), shared: new Map() });
const mmLayer = (model: Model): LayerInfo => findLayers(model).find((l) => l.op === 'MatMul')!;

/** Slices stacked: slice b is `slice(b)` [rows, cols]. */
function stacked(count: number, rows: number, cols: number, slice: (b: number) => Float32Array): Float32Array {
  const w = new Float32Array(count * rows * cols);
  for (let b = 0; b < count; b++) w.set(slice(b), b * rows * cols);
  return w;
}

/** Y = MatMul(X, W) (or MatMul(W, X) with `left`), X an input of xDims. */
function model(w: Float32Array, wDims: number[], xDims: number[], left = false): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', xDims);
  const wt = b.init('w', wDims, w);
  b.output(b.node('MatMul', left ? [wt, x] : [x, wt], {}, { name: 'mm' }));
  return encodeModel(b.build());
}

function rewrite(bytes: Uint8Array, r: number): { proto: ModelProto; relError: number } {
  const m0 = new Model(decodeModel(bytes));
  const cx = cxOf(m0);
  const m = matmulBatchedSvd.match(mmLayer(m0), cx);
  if (isSkip(m)) throw new Error(m.skip);
  const a = matmulBatchedSvd.apply(m, [r], cx);
  if (isSkip(a)) throw new Error(a.skip);
  m0.root.removeUnusedInitializers();
  return { proto: m0.proto, relError: a.relError };
}

async function run(bytes: Uint8Array, xDims: number[]): Promise<{ data: Float32Array; dims: readonly number[] }> {
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1 });
  try {
    const out = await s.run({ x: randomFeed(xDims, 5) });
    const y = out[s.outputNames[0]!]!;
    return { data: y.data as Float32Array, dims: y.dims };
  } finally {
    await s.release();
  }
}

describe('matmul-batched-svd', () => {
  it('exact per-slice rank: the pair of batched MatMuls matches in ORT, weight right or left, under broadcasting', async () => {
    // [weight dims, X dims, left]: X batched like W, X 2-D (broadcast), X with an extra leading axis, a 4-D weight.
    const cases: [number[], number[], boolean][] = [
      [[3, 20, 16], [3, 5, 20], false],
      [[3, 20, 16], [5, 20], false],
      [[4, 20, 16], [2, 4, 5, 20], false],
      [[2, 3, 18, 14], [2, 3, 4, 18], false],
      [[3, 20, 16], [3, 16, 6], true],
      [[2, 3, 18, 14], [3, 14, 4], true],
    ];
    for (const [wDims, xDims, left] of cases) {
      const [rows, cols] = wDims.slice(-2) as [number, number];
      const count = wDims.slice(0, -2).reduce((a, b) => a * b, 1);
      // Slices of different ranks, at most 3.
      const w = stacked(count, rows, cols, (b) => lowRank(rows, cols, 1 + (b % 3), 10 + b));
      const bytes = model(w, wDims, xDims, left);
      const { proto, relError } = rewrite(bytes, 3);
      const what = JSON.stringify([wDims, xDims, left]);
      expect(relError, what).toBeLessThan(1e-5);
      expect(proto.graph!.node.map((n) => n.opType)).toEqual(['MatMul', 'MatMul']);
      const dims = new Map(proto.graph!.initializer.map((t) => [t.name, t.dims]));
      const batch = wDims.slice(0, -2);
      const [first, second] = proto.graph!.node as [NodeProto, NodeProto];
      if (left) {
        expect(dims.get(first.input[0]!), what).toEqual([...batch, 3, cols]);
        expect(dims.get(second.input[0]!), what).toEqual([...batch, rows, 3]);
      } else {
        expect(dims.get(first.input[1]!), what).toEqual([...batch, rows, 3]);
        expect(dims.get(second.input[1]!), what).toEqual([...batch, 3, cols]);
      }
      const a = await run(bytes, xDims);
      const b = await run(encodeModel(proto), xDims);
      expect(b.dims, what).toEqual(a.dims);
      expect(relL2(a.data, b.data), what).toBeLessThan(1e-5);
    }
  });

  it('the rank is the largest any slice needs, and the error is the slices\' discarded energy', () => {
    // Slice 0 of rank 2, slice 1 of rank 4: energy 1 − 1e-9 needs 4.
    const w = stacked(2, 24, 20, (b) => lowRank(24, 20, b === 0 ? 2 : 4, 3 + b));
    const bytes = model(w, [2, 24, 20], [2, 3, 24]);
    const m0 = new Model(decodeModel(bytes));
    const m = matmulBatchedSvd.match(mmLayer(m0), cxOf(m0));
    if (isSkip(m)) throw new Error(m.skip);
    expect(matmulBatchedSvd.chooseRanks(m, { kind: 'energy', energy: 1 - 1e-9 })).toEqual([4]);
    // At rank 2, slice 0 is exact and slice 1 loses its two smallest singular values.
    const s1 = m.slices[1]!.spectrum(20).sigma;
    const s0 = m.slices[0]!.spectrum(20).sigma;
    const total = [...s0, ...s1].reduce((a, x) => a + x * x, 0);
    const discarded = Math.sqrt((s1[2]! ** 2 + s1[3]! ** 2) / total);
    expect(rewrite(bytes, 2).relError / discarded).toBeCloseTo(1, 4);
    expect(matmulBatchedSvd.cost(m, [4])).toEqual({ before: { params: 2 * 480, macsPerPosition: 2 * 480 }, after: { params: 2 * 4 * 44, macsPerPosition: 2 * 4 * 44 } });
  });

  it('routes batched weights here and 2-D weights as before; declines a declared 1-D operand; no paired statistics', () => {
    const batched = new Model(decodeModel(model(lowRank(40, 16, 2, 1), [2, 20, 16], [2, 4, 20])));
    expect(route(PASSES, mmLayer(batched), 'auto')).toEqual([matmulBatchedSvd, ...PASSES.filter((p) => p.name === 'matmul-svd')]);
    expect(planLayer(batched, mmLayer(batched))).toMatch(/^batched weight \[2, 20, 16\]: its statistics are per slice/);
    const flat = new Model(decodeModel(model(lowRank(20, 16, 2, 1), [20, 16], [4, 20])));
    expect(route(PASSES, mmLayer(flat), 'auto')).toEqual(PASSES.filter((p) => p.name === 'matmul-svd'));
    expect(matmulBatchedSvd.accepts!(mmLayer(flat))).toEqual({ skip: 'applies to batched (3-D or more) constant weights only' });
    const oneD = new Model(decodeModel(model(lowRank(40, 16, 2, 1), [2, 20, 16], [20])));
    expect(matmulBatchedSvd.match(mmLayer(oneD), cxOf(oneD))).toEqual({ skip: 'the other operand is 1-D: the factored pair would not keep its shape' });
  });

  it('per-slice statistics whiten each slice by its own Gram; statistics of another form leave the fit weight-only', () => {
    const K = 12, N = 10, r = 3;
    const w = stacked(2, K, N, (b) => Float32Array.from(lowRank(K, N, 8, 20 + b)));
    const bytes = model(w, [2, K, N], [2, 4, K]);
    // Slice b's inputs live on coordinates b·6 … b·6+2: its Gram is 100·I there, 0 elsewhere.
    const hot = (b: number): number[] => [b * 6, b * 6 + 1, b * 6 + 2];
    const gram = new Float64Array(2 * K * K);
    for (let b = 0; b < 2; b++) for (const i of hot(b)) gram[b * K * K + i * K + i] = 100;
    const fit = (stats: PassContext['stats']) => {
      const m0 = new Model(decodeModel(bytes));
      const cx = { ...cxOf(m0), stats };
      const m = matmulBatchedSvd.match(mmLayer(m0), cx);
      if (isSkip(m)) throw new Error(m.skip);
      const a = matmulBatchedSvd.apply(m, [r], cx);
      if (isSkip(a)) throw new Error(a.skip);
      const init = (suffix: string): Float32Array => {
        const t = m0.proto.graph!.initializer.find((x) => x.name!.endsWith(suffix))!;
        return new Float32Array(t.rawData!.slice().buffer);
      };
      const [l, rr] = [init('lr_l'), init('lr_r')];
      // Relative error of each slice on its own inputs: rows hot(b) of W_b − L_b·R_b.
      const onInputs = [0, 1].map((b) => {
        let num = 0, den = 0;
        for (const i of hot(b)) {
          for (let j = 0; j < N; j++) {
            let p = 0;
            for (let t = 0; t < r; t++) p += l[b * K * r + i * r + t]! * rr[b * r * N + t * N + j]!;
            const v = w[b * K * N + i * N + j]!;
            num += (v - p) ** 2;
            den += v * v;
          }
        }
        return Math.sqrt(num / den);
      });
      return { ...a, onInputs };
    };
    const perSlice = fit(new Map([['mm', { kind: 'matrix', gram, dim: K, groups: 2, count: 100 }]]));
    // Rank 3 holds the 3 rows each slice's inputs reach (up to the damping), whatever the whole weight loses.
    expect(Math.max(...perSlice.onInputs)).toBeLessThan(0.02);
    expect(perSlice.relError).toBeGreaterThan(0.3);
    expect(perSlice.dataError).toBeLessThan(0.2);
    // One pooled Gram [K, K] is not per-slice statistics: weight-only, no data error, and the reached rows are not kept.
    const pooled = fit(new Map([['mm', { kind: 'matrix', gram: gram.slice(0, K * K), dim: K, groups: 1, count: 100 }]]));
    expect(pooled.dataError).toBeUndefined();
    expect(Math.min(...pooled.onInputs)).toBeGreaterThan(0.1);
    expect(fit(undefined).relError).toBeCloseTo(pooled.relError, 6);
  });

  it('findLayers lists batched weights with K MACs per output entry; the driver rewrites them and composes back', () => {
    const w = stacked(3, 32, 24, (b) => lowRank(32, 24, 2, b));
    const bytes = model(w, [3, 32, 24], [3, 5, 32]);
    const m0 = new Model(decodeModel(bytes));
    const [l] = findLayers(m0, new Map([['mm_out0', [3, 5, 24]]]));
    expect(l).toMatchObject({ op: 'MatMul', weightShape: [3, 32, 24], params: 3 * 32 * 24, macs: 3 * 5 * 24 * 32 });
    const [rec] = optimizeModel(m0, undefined, { method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0 });
    expect(rec).toMatchObject({ pass: 'matmul-batched-svd', ranks: [2], paramsAfter: 3 * 2 * 56 });
    const inits = new Map(m0.proto.graph!.initializer.map((t) => [t.name!, t]));
    const factors = m0.proto.graph!.node.map((n) => {
      const t = inits.get(n.input[1]!)!;
      const data = new Float32Array(t.rawData!.slice().buffer);
      return { name: t.name!, dims: t.dims.map(Number), dataType: 1, read: () => data };
    });
    const back = matmulBatchedSvd.compose(m0.proto.graph!.node, factors, { name: 'mm', original: m0.proto.graph!.node[0]!, weightInput: 1, weightDims: [3, 32, 24], nodes: [] }, undefined);
    if (typeof back === 'string') throw new Error(back);
    expect(relL2(w, back)).toBeLessThan(1e-5);
  });
});
