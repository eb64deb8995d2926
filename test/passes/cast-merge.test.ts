/**
 * --stages on weights stored fp16/bf16 behind a Cast (src/rewrite/merge.ts): a Cast-fed
 * layer's chain (factors stored in the weight's type, each behind a Cast) merges back into
 * the original op reading one merged weight stored in that type behind one Cast, computing
 * what the chain did up to the rounding of the merged weight to the stored type (fp16:
 * u = 2⁻¹¹, so ~1e-3 relative at most; bf16: 2⁻⁸, ~1e-2), and splits again. Checked in ORT.
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType } from '../../src/onnx/schema.js';
import { makeFloatTensor } from '../../src/onnx/tensor.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { mergeStage, snapshotLayers } from '../../src/optimize/stages.js';
import { createRng } from '../../src/util/rng.js';
import { compareModels, randomFeed } from '../helpers/ort.js';

const rnd = (seed: number, n: number): Float32Array => {
  const rng = createRng(seed);
  return Float32Array.from({ length: n }, () => rng.normal());
};

/** A Gemm (transB), a MatMul and a 3x3 Conv, each weight stored as `stored` behind a Cast to float. */
function castNet(stored: number): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  const cast = (name: string, dims: number[], seed: number): string => {
    b.graph.initializer.push(makeFloatTensor(name, dims, rnd(seed, dims.reduce((x, y) => x * y, 1)), stored));
    return b.node('Cast', [name], { to: DataType.FLOAT }, { name: `${name}/cast` });
  };
  const x = b.input('x', [4, 32]);
  const g = b.node('Gemm', [x, cast('w1', [40, 32], 1), b.init('c1', [40], rnd(2, 40))], { transB: 1 }, { name: 'fc' });
  b.output(b.node('MatMul', [g, cast('w2', [40, 24], 3)], {}, { name: 'mm' }), [4, 24]);
  const img = b.input('img', [1, 12, 8, 8]);
  b.output(b.node('Conv', [img, cast('w3', [16, 12, 3, 3], 4), b.init('b3', [16], rnd(5, 16))], { pads: [1, 1, 1, 1] }, { name: 'conv' }));
  return encodeModel(b.build());
}

const feeds = { x: randomFeed([4, 32], 11), img: randomFeed([1, 12, 8, 8], 12) };
const OPTS = (rank: number) => ({ method: 'auto' as const, policy: { kind: 'fixed' as const, rank }, minParams: 0, seed: 0 });

describe('merging the chains of Cast-fed layers (--stages)', () => {
  for (const [stored, label, tol] of [[DataType.FLOAT16, 'fp16', 2e-3], [DataType.BFLOAT16, 'bf16', 2e-2]] as const) {
    it(`${label}: every chain merges into its original op reading one ${label} weight behind a Cast; ORT output equal to the chain's within ${tol}; splits again`, async () => {
      const original = castNet(stored);
      const model = new Model(decodeModel(original));
      const snapshot = snapshotLayers(model);
      expect([...snapshot.keys()].sort()).toEqual(['conv', 'fc', 'mm']);
      const records = optimizeModel(model, undefined, OPTS(4));
      expect(records.filter((r) => !r.skipped).map((r) => r.name).sort()).toEqual(['conv', 'fc', 'mm']);
      const factored = encodeModel(model.proto);
      const problems = mergeStage(model, records, snapshot, undefined);
      expect(problems).toEqual([]);
      const merged = encodeModel(model.proto);
      const g = model.proto.graph!;
      // The original ops, each weight a Cast of one stored-type initializer (no fp32 weight copy).
      expect(g.node.map((n) => n.opType).sort()).toEqual(['Cast', 'Cast', 'Cast', 'Conv', 'Gemm', 'MatMul']);
      const weights = g.initializer.filter((t) => t.dims.length >= 2);
      expect(weights).toHaveLength(3);
      expect(weights.every((t) => t.dataType === stored)).toBe(true);
      const layers = findLayers(model);
      expect(layers.map((l) => [l.name, l.cast?.stored])).toEqual([['fc', stored], ['mm', stored], ['conv', stored]]);
      expect(layers.find((l) => l.name === 'fc')!.weightShape).toEqual([40, 32]);
      const e = await compareModels(factored, merged, feeds);
      expect(e).toBeGreaterThan(0);
      expect(e).toBeLessThan(tol);
      // Far from the original (rank 4 of full-rank weights): the merge is of the chain, not a copy of W.
      expect(await compareModels(original, merged, feeds)).toBeGreaterThan(0.05);
      // A second stage splits the merged layers again, lower.
      const again = optimizeModel(model, undefined, OPTS(2));
      expect(again.filter((r) => !r.skipped).map((r) => r.name).sort()).toEqual(['conv', 'fc', 'mm']);
      expect(await compareModels(merged, encodeModel(model.proto), feeds)).toBeLessThan(1);
    });
  }
});
