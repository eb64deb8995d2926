import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers, type LayerInfo } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { createRng } from '../../src/util/rng.js';
import { isSkip, type PassContext } from '../../src/rewrite/pass.js';
import { bind } from '../../src/rewrite/registry.js';
import { passFor } from '../../passes/dispatch.js';

const seq = (n: number, scale: number): number[] => Array.from({ length: n }, (_, i) => Math.sin(i * 0.7 + scale));

/** A Gemm with bias, a MatMul and a 3×3 Conv; before IR 4 every initializer is also a graph input. */
function threeLayers(irVersion: number): Uint8Array {
  const b = new ModelBuilder({ opset: 13, irVersion });
  const x = b.input('x', [1, 8]);
  const y = b.input('y', [1, 4, 6, 6]);
  const inits: [string, number[]][] = [['gw', [8, 8]], ['gb', [8]], ['mw', [8, 8]], ['cw', [8, 4, 3, 3]]];
  inits.forEach(([name, dims], k) => {
    b.init(name, dims, seq(dims.reduce((p, q) => p * q, 1), k));
    if (irVersion < 4) b.input(name, dims);
  });
  const g = b.node('Gemm', [x, 'gw', 'gb'], {}, { name: 'gemm' });
  const m = b.node('MatMul', [g, 'mw'], {}, { name: 'mm' });
  const c = b.node('Conv', [y, 'cw'], { pads: [1, 1, 1, 1] }, { name: 'conv' });
  b.output(b.node('Relu', [m], {}, { name: 'relu' }), [1, 8]);
  b.output(c, [1, 8, 6, 6]);
  return encodeModel(b.build());
}

/** Applies the preferred pass to a layer at the smallest ranks it accepts; the names of the initializers it added. */
function applyTrial(layer: LayerInfo, cx: PassContext): string[] {
  const pass = passFor(layer, 'auto');
  if (typeof pass === 'string') throw new Error(pass);
  const bound = bind(pass, layer, cx);
  if (isSkip(bound)) throw new Error(bound.skip);
  const ranks = [[2], [2, 2]].find((r) => bound.rankProblem(r) === undefined)!;
  const before = new Set(layer.graph.proto.initializer.map((t) => t.name));
  const applied = bound.apply(ranks, cx);
  if (isSkip(applied)) throw new Error(applied.skip);
  return layer.graph.proto.initializer.map((t) => t.name!).filter((n) => !before.has(n));
}

describe('Graph checkpoint and rollback', () => {
  for (const ir of [3, 8]) {
    it(`undoes a trial rewrite of each layer byte for byte, indexes and names included (IR ${ir})`, () => {
      const bytes = threeLayers(ir);
      const model = new Model(decodeModel(bytes));
      const g = model.root;
      const cx: PassContext = { model, rng: createRng(3), shared: new Map() };
      const layers = findLayers(model);
      expect(layers.map((l) => l.name)).toEqual(['gemm', 'mm', 'conv']);
      const originals = new Map(g.nodes.map((n) => [n.name, n]));
      const nodeList = g.proto.node;
      for (const layer of layers) {
        const cp = g.checkpoint();
        const added = applyTrial(layer, cx);
        expect(added.length).toBeGreaterThan(0);
        // The rewrite is live and indexed: the layer node is gone, its factors are there.
        expect(g.nodes).not.toContain(layer.node);
        expect(g.producer(layer.node.output[0]!)).not.toBe(layer.node);
        for (const n of added) expect(g.initializer(n)).toBeDefined();
        if (ir < 4) for (const n of added) expect(g.isGraphInput(n)).toBe(true);

        g.rollback(cp);
        expect(encodeModel(model.proto)).toEqual(bytes);
        expect(g.proto.node).toBe(nodeList);
        // Indexes answer for the restored graph, not the rewritten one.
        expect(g.producer(layer.node.output[0]!)).toBe(layer.node);
        for (const v of layer.node.input) expect(g.consumers(v)).toContain(layer.node);
        for (const n of added) {
          expect(g.initializer(n)).toBeUndefined();
          expect(g.isGraphInput(n)).toBe(false);
          expect(g.defines(n)).toBe(false);
        }
        expect(g.consumers('mm_out0')).toEqual([originals.get('relu')]);
        expect(g.producer('gemm_out0')).toBe(originals.get('gemm'));
        expect(g.consumers('gemm_out0')).toEqual([originals.get('mm')]);

        // The names the trial took are free again: the same trial names its tensors the same way.
        cx.shared.clear();
        const again = g.checkpoint();
        expect(applyTrial(layer, cx)).toEqual(added);
        g.rollback(again);
        cx.shared.clear();
        expect(encodeModel(model.proto)).toEqual(bytes);
      }
    });
  }

  it('refuses a checkpoint of another graph', () => {
    const a = new Model(decodeModel(threeLayers(8)));
    const b = new Model(decodeModel(threeLayers(8)));
    expect(() => a.root.rollback(b.root.checkpoint())).toThrow(/another graph/);
  });
});
