/**
 * Multi-stage building block: every chain a pass emits merges back into the original node
 * (same ops, same attributes) computing what the chain computed, and splits again at a
 * lower rank without adding nodes. Checked in ORT.
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { optimizeModel, type MethodChoice } from '../../src/optimize/driver.js';
import { errorsAgainstOriginal, mergeStage, snapshotLayers } from '../../src/optimize/stages.js';
import type { ModelProto } from '../../src/onnx/schema.js';
import { createRng } from '../../src/util/rng.js';
import { compareModels, randomFeed } from '../helpers/ort.js';

const rnd = (seed: number, n: number): Float32Array => {
  const rng = createRng(seed);
  return Float32Array.from({ length: n }, () => rng.normal());
};

/** Gemm/MatMul in every placement: weight right, shared weight, left constant, Gemm with transB/alpha/beta/C, Gemm with constant A and transA. */
function mlp(opset: number): Uint8Array {
  const b = new ModelBuilder({ opset });
  const x = b.input('x', [4, 32]);
  const w1 = b.init('w1', [32, 48], rnd(1, 32 * 48));
  const a = b.node('MatMul', [x, w1], {}, { name: 'mm' });
  const a2 = b.node('MatMul', [b.node('Relu', [x]), w1], {}, { name: 'mm_shared' });
  const g = b.node('Gemm', [b.node('Add', [a, a2]), b.init('w2', [40, 48], rnd(2, 40 * 48)), b.init('c', [40], rnd(3, 40))],
    { transB: 1, alpha: { float: 0.5 }, beta: { float: 0.7 } }, { name: 'gemm' });
  b.output(g, [4, 40]);
  b.output(b.node('MatMul', [b.init('wl', [16, 32], rnd(4, 16 * 32)), b.node('Transpose', [x], { perm: [1, 0] })], {}, { name: 'left' }), [16, 4]);
  // Before opset 11 Gemm needs C.
  const c2 = opset < 11 ? [b.init('c2', [4], rnd(6, 4))] : [];
  b.output(b.node('Gemm', [b.init('wa', [32, 12], rnd(5, 32 * 12)), x, ...c2], { transA: 1, transB: 1 }, { name: 'gemm_left' }), [12, 4]);
  return encodeModel(b.build());
}

/** A 1x1 conv with bias, a grouped strided padded 3x3, and a dilated 3x3. */
function convnet(): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, 16, 12, 12]);
  const p = b.node('Conv', [x, b.init('w0', [24, 16, 1, 1], rnd(6, 24 * 16)), b.init('b0', [24], rnd(7, 24))], {}, { name: 'pw' });
  const q = b.node('Conv', [p, b.init('w1', [32, 12, 3, 3], rnd(8, 32 * 12 * 9)), b.init('b1', [32], rnd(9, 32))],
    { group: 2, strides: [2, 2], pads: [1, 0, 1, 2] }, { name: 'grouped' });
  const r = b.node('Conv', [q, b.init('w2', [16, 32, 3, 3], rnd(10, 16 * 32 * 9))], { dilations: [2, 2], pads: [2, 2, 2, 2] }, { name: 'dilated' });
  b.output(r);
  return encodeModel(b.build());
}

const ops = (m: ModelProto): string[] => m.graph!.node.map((n) => n.opType!).sort();

function factorThenMerge(bytes: Uint8Array, method: MethodChoice, rank: number) {
  const model = new Model(decodeModel(bytes));
  const snapshot = snapshotLayers(model);
  const records = optimizeModel(model, undefined, { method, policy: { kind: 'fixed', rank }, minParams: 0, seed: 0 });
  const factored = encodeModel(model.proto);
  const problems = mergeStage(model, records, snapshot, undefined);
  return { model, records, factored, merged: encodeModel(model.proto), problems };
}

/** Label, model, method, the passes that must have run, feeds. */
const CASES: [string, () => Uint8Array, MethodChoice, string[], Record<string, ReturnType<typeof randomFeed>>][] = [
  ['Gemm/MatMul SVD pairs (opset 13)', () => mlp(13), 'auto', ['gemm-svd', 'matmul-svd'], { x: randomFeed([4, 32], 11) }],
  ['Gemm/MatMul SVD pairs (opset 9: Gemm needs C)', () => mlp(9), 'auto', ['gemm-svd', 'matmul-svd'], { x: randomFeed([4, 32], 12) }],
  ['1x1 SVD pair', convnet, 'svd', ['conv1x1-svd'], { x: randomFeed([1, 16, 12, 12], 16) }],
  ['Tucker-2 chains (grouped, strided, padded; dilated)', convnet, 'tucker2', ['conv-tucker2'], { x: randomFeed([1, 16, 12, 12], 13) }],
  ['spatial SVD chain (grouped, strided, padded)', convnet, 'spatial-svd', ['conv-spatial-svd'], { x: randomFeed([1, 16, 12, 12], 15) }],
  ['CP chain (dilated)', convnet, 'cp', ['conv-cp'], { x: randomFeed([1, 16, 12, 12], 14) }],
];

describe('merging factored layers back', () => {
  for (const [label, make, method, passes, feeds] of CASES) {
    it(`${label}: the merged model computes what the factored one did, with the original ops`, async () => {
      const original = make();
      const { records, factored, merged, problems, model } = factorThenMerge(original, method, 4);
      expect(problems).toEqual([]);
      const rewritten = records.filter((r) => !r.skipped);
      for (const p of passes) expect(rewritten.map((r) => r.pass)).toContain(p);
      expect(ops(model.proto)).toEqual(ops(decodeModel(original)));
      // The product of the factors, not the original weight: far from the original, equal to the chain.
      expect(await compareModels(factored, merged, feeds)).toBeLessThan(1e-5);
      expect(await compareModels(original, merged, feeds)).toBeGreaterThan(1e-2);
      // Original attributes are kept on the merged nodes.
      const byName = new Map(model.proto.graph!.node.map((n) => [n.name, n]));
      for (const n of decodeModel(original).graph!.node.filter((n) => n.name && byName.has(n.name))) {
        expect(byName.get(n.name)!.attribute.map((a) => a.name)).toEqual(n.attribute.map((a) => a.name));
      }
    });

    it(`${label}: split again at a lower rank, no node is added`, async () => {
      const { factored, merged, records } = factorThenMerge(make(), method, 4);
      // At the same rank the split gives back the same function (ALS for CP only nearly).
      const same = new Model(decodeModel(merged));
      optimizeModel(same, undefined, { method, policy: { kind: 'fixed', rank: 4 }, minParams: 0, seed: 0 });
      expect(await compareModels(factored, encodeModel(same.proto), feeds)).toBeLessThan(method === 'cp' ? 0.05 : 1e-4);
      // The chain's names are free again: the new chain is named as the first one was.
      expect(same.proto.graph!.node.map((n) => n.name).sort()).toEqual(decodeModel(factored).graph!.node.map((n) => n.name).sort());
      const again = new Model(decodeModel(merged));
      const records2 = optimizeModel(again, undefined, { method, policy: { kind: 'fixed', rank: 2 }, minParams: 0, seed: 0 });
      expect(records2.filter((r) => !r.skipped).every((r) => r.ranks![0]! <= 2)).toBe(true);
      expect(again.proto.graph!.node.length).toBe(decodeModel(factored).graph!.node.length);
      expect(records2.filter((r) => !r.skipped).length).toBe(records.filter((r) => !r.skipped).length);
      // Rank 2 of a rank-4 product: a different function.
      const e = await compareModels(merged, encodeModel(again.proto), feeds);
      expect(e).toBeGreaterThan(1e-3);
      expect(Number.isFinite(e)).toBe(true);
    });
  }
});

describe('weight errors after several stages', () => {
  it('are measured against the original weight: rank 4 then 2 equals rank 2 directly for SVD pairs (Eckart–Young nesting)', () => {
    const bytes = mlp(13);
    const { merged } = factorThenMerge(bytes, 'auto', 4);
    const m2 = new Model(decodeModel(merged));
    const snapshot = snapshotLayers(new Model(decodeModel(bytes)));
    const staged = optimizeModel(m2, undefined, { method: 'auto', policy: { kind: 'fixed', rank: 2 }, minParams: 0, seed: 0 });
    const againstMerged = new Map(staged.map((r) => [r.name, r.relError]));
    errorsAgainstOriginal(m2, staged, snapshot, new Model(decodeModel(bytes)), undefined, undefined);
    const direct = optimizeModel(new Model(decodeModel(bytes)), undefined, { method: 'auto', policy: { kind: 'fixed', rank: 2 }, minParams: 0, seed: 0 });
    // Every Gemm/MatMul of the MLP (all have a constant operand) is split again, the same
    // ones as directly.
    const rewritten = staged.filter((x) => !x.skipped);
    expect(rewritten.map((r) => r.name).sort()).toEqual(direct.filter((x) => !x.skipped).map((r) => r.name).sort());
    expect(rewritten.length).toBe(decodeModel(bytes).graph!.node.filter((n) => n.opType === 'MatMul' || n.opType === 'Gemm').length);
    for (const r of rewritten) {
      const d = direct.find((x) => x.name === r.name)!;
      expect(r.relError!, r.name).toBeCloseTo(d.relError!, 4);
      // Against the merged rank-4 weight the error is smaller than against the original.
      expect(againstMerged.get(r.name)!).toBeLessThan(r.relError!);
    }
  });
});
