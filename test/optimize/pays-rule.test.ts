/**
 * The pays rule: a rewrite is kept only when it lowers both the parameters and the MACs
 * per output position. A strided conv is where the two part: Tucker-2's first 1x1 conv
 * runs at the input resolution, ∏strides times as many positions as the output has.
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { createRng } from '../../src/util/rng.js';
import { compareModels, randomFeed } from '../helpers/ort.js';

const S = 128;
const T = 16;
const K = 9;

/** A 3x3 conv S→T on a 16x16 input, with the given strides. */
function conv(strides: number): Uint8Array {
  const rng = createRng(4);
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, S, 16, 16]);
  const w = Float32Array.from({ length: T * S * K }, () => rng.normal());
  b.output(b.node('Conv', [x, b.init('w', [T, S, 3, 3], w)], { pads: [1, 1, 1, 1], strides: [strides, strides] }, { name: 'conv' }));
  return encodeModel(b.build());
}

describe('the pays rule on a strided conv', () => {
  // Tucker-2 at rank 32: input rank 32, output rank 16 (all of T).
  const [r1, r2] = [32, 16];
  const before = T * S * K; // 18432, params and MACs per output position alike
  const params = S * r1 + r2 * r1 * K + T * r2; // 8960: under half
  const macsAt = (strideFactor: number): number => S * r1 * strideFactor + r2 * r1 * K + T * r2;

  it('stride 2: fewer parameters but more MACs per output position, so the layer is skipped', () => {
    expect(params).toBeLessThan(before);
    expect(macsAt(4)).toBeGreaterThan(before); // 21248
    const bytes = conv(2);
    const model = new Model(decodeModel(bytes));
    const [rec] = optimizeModel(model, undefined, { method: 'tucker2', policy: { kind: 'fixed', rank: 32 }, minParams: 0, seed: 0 });
    expect(rec.pass).toBe('conv-tucker2');
    expect(rec.skipped).toBe(true);
    expect(rec.reason).toBe(`ranks ${r1},${r2} do not pay: params ${before}→${params}, MACs/position ${before}→${macsAt(4)}`);
    expect(rec.paramsAfter).toBe(rec.paramsBefore);
    expect(model.proto.graph!.node.map((n) => n.opType)).toEqual(['Conv']);
  });

  it('stride 1, same ranks: both drop, and the chain is written', async () => {
    expect(macsAt(1)).toBeLessThan(before);
    const bytes = conv(1);
    const model = new Model(decodeModel(bytes));
    const [rec] = optimizeModel(model, undefined, { method: 'tucker2', policy: { kind: 'fixed', rank: 32 }, minParams: 0, seed: 0 });
    expect(rec.skipped).toBeUndefined();
    expect(rec.ranks).toEqual([r1, r2]);
    expect(rec.paramsAfter).toBe(params);
    expect(model.proto.graph!.node.map((n) => n.opType)).toEqual(['Conv', 'Conv', 'Conv']);
    // A rank-32 cut of a random kernel: a different function, but the same shapes in ORT.
    const e = await compareModels(bytes, encodeModel(model.proto), { x: randomFeed([1, S, 16, 16], 3) });
    expect(Number.isFinite(e)).toBe(true);
  });
});
