/**
 * gather-svd: an embedding Gather on a constant table E [V, D] becomes Gather(A [V, r]) →
 * MatMul(·, B [r, D]). Exact-rank tables match in ORT for every index shape; on tables of
 * known spectrum the error is the discarded energy; declines say why; it pays on params.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers, type LayerInfo } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType, type ModelProto } from '../../src/onnx/schema.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { bind, route } from '../../src/rewrite/registry.js';
import { isSkip, type PassContext } from '../../src/rewrite/pass.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { gatherSvd } from '../../passes/gather-svd.js';
import { PASSES } from '../../passes/dispatch.js';
import { lowRank, relL2 } from '../helpers/ort.js';

const cxOf = (model: Model): PassContext => ({ model, rng: createRng(0), shared: new Map() });
const gathers = (model: Model): LayerInfo[] => findLayers(model).filter((l) => l.op === 'Gather');

/** Y = Gather(E [V, D], ids; axis), ids an int64 input of `idsDims`; optional extra readers of E. */
function gatherModel(e: Float32Array, v: number, d: number, idsDims: number[], opts: { axis?: number; second?: 'gather' | 'matmul' } = {}): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  const ids = b.input('ids', idsDims, DataType.INT64);
  const table = b.init('table', [v, d], e);
  b.output(b.node('Gather', [table, ids], opts.axis === undefined ? {} : { axis: opts.axis }, { name: 'embed' }));
  if (opts.second === 'gather') b.output(b.node('Gather', [table, ids], {}, { name: 'embed2' }));
  if (opts.second === 'matmul') b.output(b.node('MatMul', [b.input('h', [2, v]), table], {}, { name: 'tied' }));
  return encodeModel(b.build());
}

function indices(rng: Rng, v: number, dims: number[]): BigInt64Array {
  const n = dims.reduce((a, b) => a * b, 1);
  // Negative indices count from the end in ONNX Gather: include some.
  return BigInt64Array.from({ length: n }, () => BigInt(rng.int(2 * v) - v));
}

async function run(bytes: Uint8Array, ids: BigInt64Array, dims: number[]): Promise<{ data: Float32Array; dims: readonly number[] }[]> {
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1 });
  try {
    const out = await s.run({ ids: new ort.Tensor('int64', ids, dims) });
    return s.outputNames.map((k) => ({ data: out[k]!.data as Float32Array, dims: out[k]!.dims }));
  } finally {
    await s.release();
  }
}

function rewriteAll(bytes: Uint8Array, rank: number): { proto: ModelProto; relErrors: number[] } {
  const model = new Model(decodeModel(bytes));
  const cx = cxOf(model);
  const relErrors: number[] = [];
  for (const l of gathers(model)) {
    const m = gatherSvd.match(l, cx);
    if (isSkip(m)) throw new Error(m.skip);
    const a = gatherSvd.apply(m, [rank], cx);
    if (isSkip(a)) throw new Error(a.skip);
    relErrors.push(a.relError);
  }
  model.root.removeUnusedInitializers();
  return { proto: model.proto, relErrors };
}

/** E = Q₁·diag(σ)·Q₂ᵀ with Q₁ [V, k], Q₂ [D, k] orthonormal (Gram–Schmidt on normals): a table of known spectrum. */
function withSpectrum(rng: Rng, v: number, d: number, sigma: number[]): Float32Array {
  const ortho = (n: number): Float64Array[] => {
    const cols: Float64Array[] = [];
    while (cols.length < sigma.length) {
      const c = Float64Array.from({ length: n }, () => rng.normal());
      for (const q of cols) { let dot = 0; for (let i = 0; i < n; i++) dot += c[i]! * q[i]!; for (let i = 0; i < n; i++) c[i] -= dot * q[i]!; }
      const norm = Math.hypot(...c);
      cols.push(c.map((x) => x / norm));
    }
    return cols;
  };
  const q1 = ortho(v);
  const q2 = ortho(d);
  const e = new Float32Array(v * d);
  sigma.forEach((s, k) => { for (let i = 0; i < v; i++) for (let j = 0; j < d; j++) e[i * d + j] += s * q1[k]![i]! * q2[k]![j]!; });
  return e;
}

describe('gather-svd', () => {
  it('exact rank: Gather(A) → MatMul(B) matches the lookup in ORT for scalar, 1-D and 2-D indices, axis 0 and -2', async () => {
    const rng = createRng(7);
    for (const [idsDims, axis] of [[[], undefined], [[5], 0], [[3, 4], -2], [[2, 1, 3], undefined]] as [number[], number | undefined][]) {
      const v = 40 + rng.int(20);
      const d = 16 + rng.int(16);
      const r = 1 + rng.int(6);
      const bytes = gatherModel(lowRank(v, d, r, rng.int(1000)), v, d, idsDims, { axis });
      const { proto, relErrors } = rewriteAll(bytes, r);
      expect(relErrors[0]).toBeLessThan(1e-5);
      expect(proto.graph!.node.map((n) => n.opType)).toEqual(['Gather', 'MatMul']);
      const dims = new Map(proto.graph!.initializer.map((t) => [t.name, t.dims]));
      expect(dims.get(proto.graph!.node[0]!.input[0]!)).toEqual([v, r]);
      expect(dims.get(proto.graph!.node[1]!.input[1]!)).toEqual([r, d]);
      expect(dims.has('table')).toBe(false);
      const ids = indices(rng, v, idsDims);
      const [a] = await run(bytes, ids, idsDims);
      const [b] = await run(encodeModel(proto), ids, idsDims);
      expect(b!.dims).toEqual(a!.dims);
      expect(relL2(a!.data, b!.data), JSON.stringify(idsDims)).toBeLessThan(1e-5);
    }
  });

  it('a table read by two Gathers is factorized once, and both lookups match', async () => {
    const bytes = gatherModel(lowRank(50, 24, 3, 1), 50, 24, [6], { second: 'gather' });
    const { proto } = rewriteAll(bytes, 3);
    expect(proto.graph!.initializer).toHaveLength(2);
    expect(proto.graph!.node.map((n) => n.opType)).toEqual(['Gather', 'MatMul', 'Gather', 'MatMul']);
    const ids = indices(createRng(2), 50, [6]);
    const a = await run(bytes, ids, [6]);
    const b = await run(encodeModel(proto), ids, [6]);
    for (let i = 0; i < 2; i++) expect(relL2(a[i]!.data, b[i]!.data)).toBeLessThan(1e-5);
  });

  it('structured table: the weight error is the discarded energy, and so is the output error over every row', async () => {
    const rng = createRng(3);
    const v = 64;
    const d = 24;
    const sigma = Array.from({ length: d }, (_, k) => 10 * 0.8 ** k);
    const e = withSpectrum(rng, v, d, sigma);
    const all = Array.from({ length: v }, (_, i) => i);
    const bytes = gatherModel(e, v, d, [v]);
    const ids = BigInt64Array.from(all.map(BigInt));
    const [a] = await run(bytes, ids, [v]);
    for (const r of [2, 5, 9]) {
      const discarded = Math.sqrt(sigma.slice(r).reduce((s, x) => s + x * x, 0) / sigma.reduce((s, x) => s + x * x, 0));
      const { proto, relErrors } = rewriteAll(bytes, r);
      expect(relErrors[0]! / discarded).toBeCloseTo(1, 3);
      // Looking up every row once gives E_r itself: the output error is the table's.
      const [b] = await run(encodeModel(proto), ids, [v]);
      expect(relL2(a!.data, b!.data) / discarded).toBeCloseTo(1, 3);
    }
  });

  it('declines other axes, non-float tables and tables another node reads, with the reason', () => {
    const e = lowRank(30, 20, 2, 1);
    const at = (bytes: Uint8Array): { layer: LayerInfo; cx: PassContext } => {
      const model = new Model(decodeModel(bytes));
      return { layer: gathers(model)[0]!, cx: cxOf(model) };
    };
    const axis1 = at(gatherModel(e, 30, 20, [4], { axis: 1 }));
    expect(gatherSvd.match(axis1.layer, axis1.cx)).toEqual({ skip: 'Gather along axis 1: only row lookups (axis 0) are factorized' });
    expect(route(PASSES, axis1.layer, 'auto')).toBe('gather-svd Gather along axis 1: only row lookups (axis 0) are factorized');
    expect(route(PASSES, axis1.layer, 'svd')).toBe('--method svd Gather along axis 1: only row lookups (axis 0) are factorized');
    expect(route(PASSES, axis1.layer, 'tucker2')).toBe('--method tucker2 does not apply to Gather');
    const tied = at(gatherModel(e, 30, 20, [4], { second: 'matmul' }));
    expect(gatherSvd.match(tied.layer, tied.cx)).toEqual({ skip: 'the table table is also read by MatMul tied: its factors would add parameters' });
    const ib = new ModelBuilder({ opset: 13 });
    ib.output(ib.node('Gather', [ib.initInt64('itable', [8, 8], Array.from({ length: 64 }, (_, i) => i)), ib.input('ids', [2], DataType.INT64)], {}, { name: 'embed' }), undefined, DataType.INT64);
    const ints = at(encodeModel(ib.build()));
    expect(gatherSvd.match(ints.layer, ints.cx)).toEqual({ skip: `table type ${DataType.INT64} is not floating point` });
  });

  it('pays on parameters alone: the MatMul adds r·D MACs per token where the Gather ran none', () => {
    const model = new Model(decodeModel(gatherModel(lowRank(100, 32, 4, 1), 100, 32, [3])));
    const b = bind(gatherSvd, gathers(model)[0]!, cxOf(model));
    if (isSkip(b)) throw new Error(b.skip);
    const c = b.cost([8]);
    expect(c).toEqual({ before: { params: 3200, macsPerPosition: 0 }, after: { params: 8 * 132, macsPerPosition: 8 * 32 } });
    expect(b.pays(c)).toBe(true);
    // Break-even: r·(V + D) < V·D ⇔ r < 24.24.
    expect(b.pays(b.cost([24]))).toBe(true);
    expect(b.pays(b.cost([25]))).toBe(false);
  });

  it('the driver rewrites it under --method svd and auto at a rank policy, and skips it with the reason when it does not pay', () => {
    const bytes = gatherModel(lowRank(100, 32, 4, 1), 100, 32, [3]);
    for (const method of ['auto', 'svd'] as const) {
      const model = new Model(decodeModel(bytes));
      const [rec] = optimizeModel(model, undefined, { method, policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0 });
      expect(rec).toMatchObject({ name: 'embed', pass: 'gather-svd', ranks: [4], paramsBefore: 3200, paramsAfter: 4 * 132 });
      expect(rec!.skipped).toBeUndefined();
      expect(model.proto.graph!.node.map((n) => n.opType)).toEqual(['Gather', 'MatMul']);
    }
    const model = new Model(decodeModel(gatherModel(withSpectrum(createRng(1), 100, 32, Array.from({ length: 32 }, () => 1)), 100, 32, [3])));
    const [rec] = optimizeModel(model, undefined, { method: 'auto', policy: { kind: 'fixed', rank: 30 }, minParams: 0, seed: 0 });
    expect(rec!.skipped).toBe(true);
    expect(rec!.reason).toBe('ranks 30 do not pay: params 3200→3960, MACs/position 0→960');
  });

  it('composes back to the table for --stages', () => {
    const e = lowRank(30, 12, 2, 5);
    const { proto } = rewriteAll(gatherModel(e, 30, 12, [2]), 2);
    const inits = new Map(proto.graph!.initializer.map((t) => [t.name!, t]));
    const factors = proto.graph!.node.map((n, i) => {
      const t = inits.get(n.input[i === 0 ? 0 : 1]!)!;
      const data = new Float32Array(t.rawData!.slice().buffer);
      return { name: t.name!, dims: t.dims.map(Number), dataType: 1, read: () => data };
    });
    const w = gatherSvd.compose(proto.graph!.node, factors, { name: 'embed', original: proto.graph!.node[0]!, weightInput: 0, weightDims: [30, 12], nodes: [] }, undefined);
    if (typeof w === 'string') throw new Error(w);
    expect(relL2(e, w)).toBeLessThan(1e-5);
  });
});
