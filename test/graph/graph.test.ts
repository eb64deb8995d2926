import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { intAttr } from '../../src/graph/attrs.js';
import { resolveConstant } from '../../src/graph/constants.js';
import { Model, outerReferences } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { newGraph, newNode } from '../../src/onnx/schema.js';
import { LrError } from '../../src/errors.js';
import { readFileSync } from 'node:fs';
import { REAL } from '../helpers/models.js';

function chain(): ModelBuilder {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, 4]);
  const w = b.init('w', [4, 4], Array.from({ length: 16 }, (_, i) => i));
  const a = b.node('MatMul', [x, w], {}, { name: 'mm' });
  const r = b.node('Relu', [a], {}, { name: 'relu' });
  b.output(r, [1, 4]);
  return b;
}

describe('Graph', () => {
  it('indexes producers and consumers', () => {
    const m = new Model(chain().build());
    const g = m.root;
    expect(g.producer('relu_out0')?.name).toBe('relu');
    expect(g.consumers('mm_out0').map((n) => n.name)).toEqual(['relu']);
    expect(g.consumers('x').map((n) => n.name)).toEqual(['mm']);
    expect(g.isGraphOutput('relu_out0')).toBe(true);
    expect(g.initializer('w')?.dims).toEqual([4, 4]);
  });

  it('sorts an unsorted graph stably and detects cycles', () => {
    const b = chain();
    b.graph.node.reverse();
    const m = new Model(b.build());
    m.root.topoSort();
    expect(m.root.nodes.map((n) => n.name)).toEqual(['mm', 'relu']);
    // Make a cycle: mm reads relu's output.
    m.root.nodes[0].input[0] = 'relu_out0';
    m.root.invalidate();
    expect(() => m.root.topoSort()).toThrow(LrError);
  });

  it('generates unique names across the whole model', () => {
    const m = new Model(chain().build());
    expect(m.uniqueName('mm')).toBe('mm_1');
    expect(m.uniqueName('mm')).toBe('mm_2');
    expect(m.uniqueName('fresh')).toBe('fresh');
    expect(m.uniqueName('fresh')).toBe('fresh_1');
  });

  it('replaces a node by a chain and removes what became dead', () => {
    const m = new Model(chain().build());
    const g = m.root;
    const mm = g.producer('mm_out0')!;
    const id = newNode({ opType: 'Identity', name: 'id', input: ['x'], output: ['mm_out0'] });
    g.replaceNode(mm, [id]);
    expect(g.producer('mm_out0')?.name).toBe('id');
    expect(g.removeUnusedInitializers()).toBe(1);
    expect(g.initializer('w')).toBeUndefined();
    // A dangling node with an unused output goes away.
    g.insertBefore(id, [newNode({ opType: 'Relu', name: 'dead', input: ['x'], output: ['dead_out'] })]);
    expect(g.removeDeadNodes()).toBe(1);
    expect(g.nodes.map((n) => n.name)).toEqual(['id', 'relu']);
  });

  it('resolves constants through Identity chains, Constant nodes and outer scopes', () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 4]);
    b.init('w', [4, 4], new Array(16).fill(1));
    const wi = b.node('Identity', ['w'], {}, { name: 'wid' });
    const y = b.node('MatMul', [x, wi], {}, { name: 'mm' });
    const cond = b.input('cond', [], 9);
    // A subgraph that reads the outer initializer w.
    const body = newGraph({ name: 'then', node: [newNode({ opType: 'MatMul', name: 'inner', input: [y, 'w'], output: ['t_out'] })], output: [{ name: 't_out', metadataProps: [] }] });
    const els = newGraph({ name: 'else', node: [newNode({ opType: 'Identity', name: 'e', input: [y], output: ['e_out'] })], output: [{ name: 'e_out', metadataProps: [] }] });
    b.output(b.node('If', [cond], { then_branch: body, else_branch: els }, { name: 'if' }));
    const m = new Model(b.build());
    const main = m.root;
    const r1 = resolveConstant(main, wi)!;
    expect(r1.kind).toBe('initializer');
    expect(r1.via.map((n) => n.name)).toEqual(['wid']);
    const inner = main.children()[0];
    const r2 = resolveConstant(inner, 'w')!;
    expect(r2.outer).toBe(true);
    expect(outerReferences(body)).toEqual(new Set([y, 'w']));
    // The If node counts as a consumer of w, so w is not removable.
    expect(main.consumers('w').map((n) => n.name).sort()).toEqual(['if', 'wid']);
    expect(main.removeUnusedInitializers()).toBe(0);
    const layers = findLayers(m);
    expect(layers.map((l) => [l.name, l.where, l.subgraphDepth])).toEqual([['mm', 'initializer', 0], ['inner', 'outer-initializer', 1]]);
  });

  it('reads the opset per domain and survives an encode/decode round trip', () => {
    const p = chain().build();
    p.opsetImport.push({ domain: 'com.microsoft', version: 1 });
    const m = new Model(decodeModel(encodeModel(p)));
    expect(m.opsetVersion('')).toBe(13);
    expect(m.opsetVersion('ai.onnx')).toBe(13);
    expect(m.opsetVersion('com.microsoft')).toBe(1);
    expect(m.opsetVersion('x')).toBeUndefined();
    expect(intAttr('a', 3).i).toBe(3n);
  });

  it('finds the weights of real models in Constant nodes and subgraphs', () => {
    const detProto = decodeModel(new Uint8Array(readFileSync(REAL.det)));
    // Counted from the file itself: every Conv whose weight a Constant node outputs.
    const constOut = new Set(detProto.graph!.node.filter((n) => n.opType === 'Constant').flatMap((n) => n.output));
    const constConvs = detProto.graph!.node.filter((n) => n.opType === 'Conv' && constOut.has(n.input[1]!)).map((n) => n.name);
    expect(constConvs.length).toBeGreaterThan(0);
    const det = new Model(detProto);
    const dl = findLayers(det);
    expect(dl.filter((l) => l.op === 'Conv' && l.where === 'constant').map((l) => l.name).sort()).toEqual(constConvs.sort());
    const vad = new Model(decodeModel(new Uint8Array(readFileSync(REAL.vad))));
    const vl = findLayers(vad);
    expect(vl.length).toBeGreaterThan(0);
    expect(vl.every((l) => l.subgraphDepth > 0 && l.where === 'outer-initializer')).toBe(true);
  });
});
