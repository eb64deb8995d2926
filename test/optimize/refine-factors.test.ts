/**
 * refineFactors (src/optimize/refine.ts) called directly on a model whose "new" weights
 * are named: a weight read by a node without an exact gradient stays as it was (its
 * gradient would be a part of it), the others move and lower the loss in ORT; the
 * optimizer's state is kept within the memory allowed (a shorter history, else no refit).
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { readTensorFloat } from '../../src/onnx/tensor.js';
import { runAll } from '../../src/optimize/output-error.js';
import { historyFor, peakCopies, refineFactors } from '../../src/optimize/refine.js';
import { createRng } from '../../src/util/rng.js';
import type { Feeds } from '../../src/verify/tensor.js';

describe('refineFactors', () => {
  it('a weight shared with a node behind Floor (no product) is kept; the weight only covered nodes read moves, and the loss falls', async () => {
    const rng = createRng(3);
    const randn = (n: number, s: number): number[] => Array.from({ length: n }, () => s * rng.normal());
    const make = (ws: number[], wt: number[]) => {
      const b = new ModelBuilder({ opset: 13 });
      const x = b.input('x', [16, 6]);
      const [shared, own] = [b.init('ws', [6, 6], ws), b.init('wt', [6, 4], wt)];
      const a = b.node('MatMul', [b.node('Tanh', [b.node('MatMul', [x, shared], {}, { name: 'm1' })]), own], {}, { name: 'm3' });
      const f = b.node('Floor', [b.node('MatMul', [x, shared], {}, { name: 'm2' })]);
      b.output(b.node('Add', [a, b.node('ReduceMean', [f], { axes: [1], keepdims: 1 })]));
      return b.build();
    };
    const [ws, wt] = [randn(36, 0.4), randn(24, 0.4)];
    const target = make(ws, wt);
    // The "rewritten" model: the same graph with wt disturbed; ws as it was.
    const start = make(ws, wt.map((v) => v + 0.3 * rng.normal()));
    const feeds: Feeds[] = [0, 1].map(() => ({ x: { type: 'float32', dims: [16, 6], data: Float32Array.from(randn(96, 1)) } }));
    const ref = await runAll({ bytes: encodeModel(target) }, feeds);
    if (!ref.ok) throw ref.error;
    const out = target.graph!.output[0]!.name!;
    const model = new Model(structuredClone(start));
    const r = await refineFactors(model, new Set(['x']), feeds, ref.value.map((o) => ({ [out]: o[out]! })), { steps: 15 });
    expect(r.notes.join('\n')).toMatch(/1 of 3 factor node\(s\) kept as fitted \(no exact gradient; m2: no gradient through Floor/);
    expect(r.notes.join('\n')).toMatch(/1 factor weight\(s\) read by a node without an exact gradient kept as fitted/);
    expect(r.tensors).toBe(1);
    expect(Array.from(readTensorFloat(model.root.initializer('ws')!))).toEqual(Array.from(Float32Array.from(ws)));
    expect(Array.from(readTensorFloat(model.root.initializer('wt')!))).not.toEqual(Array.from(readTensorFloat(new Model(start).root.initializer('wt')!)));
    // Two feeds: the first fitted, the second left out; both lower.
    expect(r.fitted).toBe('1 of 2 calibration feeds');
    expect(r.after).toBeLessThan(0.9 * r.before);
    expect(r.leftOut!.after).toBeLessThan(r.leftOut!.before);
  });

  it('keeps L-BFGS within the memory allowed: a shorter history that still lowers the loss, or no refit at all, said in a note', async () => {
    const rng = createRng(5);
    const randn = (n: number, s: number): number[] => Array.from({ length: n }, () => s * rng.normal());
    const make = (w1: number[], w2: number[]) => {
      const b = new ModelBuilder({ opset: 13 });
      const x = b.input('x', [32, 8]);
      b.output(b.node('MatMul', [b.node('Tanh', [b.node('MatMul', [x, b.init('w1', [8, 6], w1)])]), b.init('w2', [6, 5], w2)]));
      return b.build();
    };
    const [w1, w2] = [randn(48, 0.5), randn(30, 0.5)];
    const target = make(w1, w2);
    const start = make(w1.map((v) => v + 0.2 * rng.normal()), w2.map((v) => v + 0.2 * rng.normal()));
    const feeds: Feeds[] = [0, 1].map(() => ({ x: { type: 'float32', dims: [32, 8], data: Float32Array.from(randn(256, 1)) } }));
    const ref = await runAll({ bytes: encodeModel(target) }, feeds);
    if (!ref.ok) throw ref.error;
    const out = target.graph!.output[0]!.name!;
    const reference = ref.value.map((o) => ({ [out]: o[out]! }));
    const size = 48 + 30;
    // Room for the peak of a history of 4 (5 pairs and 9 more copies of 78 float64s): 4; of 10: 10.
    expect(peakCopies(4)).toBe(19);
    expect(historyFor(size, 19 * 8 * size)).toBe(4);
    expect(historyFor(size, 31 * 8 * size)).toBe(10);
    const short = new Model(structuredClone(start));
    const r = await refineFactors(short, new Set(['x']), feeds, reference, { steps: 20, memoryLimit: 4 * 19 * 8 * size });
    expect(r.notes.join('\n')).toMatch(/L-BFGS keeps 4 steps of history, not 10, so that its state of 78 factor weights stays within/);
    expect(r.tensors).toBe(2);
    expect(r.after).toBeLessThan(0.7 * r.before);
    // Below a history of 2's peak (15 copies): nothing moves, and the note says how much it would have needed.
    const none = new Model(structuredClone(start));
    const n = await refineFactors(none, new Set(['x']), feeds, reference, { steps: 20, memoryLimit: 4 * 14 * 8 * size });
    expect(n.tensors).toBe(0);
    expect(n.notes.join('\n')).toMatch(/nothing refined: its 78 factor weights would need .* GiB of optimizer state, more than the .* GiB allowed/);
    for (const w of ['w1', 'w2']) expect(Array.from(readTensorFloat(none.root.initializer(w)!))).toEqual(Array.from(readTensorFloat(new Model(start).root.initializer(w)!)));
  });
});
