/** Fresh names for what a copy or a rewrite adds: never one the model uses, subgraphs included. */
import ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { freshName, namesOf } from '../../src/onnx/names.js';
import { DataType } from '../../src/onnx/schema.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { keptInside } from '../../src/verify/kept-outputs.js';
import { shapeProbe } from '../../src/graph/shapes.js';
import { runModel } from '../helpers/ort.js';

/** x → Relu → y → If(c) whose then-branch holds values named `inner` (an Identity of y) and whose else-branch nests another If; out is the If's output. */
function withBranches(inner: string) {
  const b = new ModelBuilder({ opset: 13 });
  const y = b.node('Relu', [b.input('x', [2, 3])], {}, { name: 'r' });
  const then = new ModelBuilder();
  then.node('Identity', [y], {}, { name: 'inner_node' });
  then.graph.node[0]!.output[0] = inner;
  then.output(inner, [2, 3]);
  const deep = new ModelBuilder();
  deep.output(deep.node('Neg', [y], {}, { name: 'deepest' }), [2, 3]);
  const shallow = new ModelBuilder();
  shallow.output(shallow.node('Identity', [y], {}, { name: 'shallow' }), [2, 3]);
  const other = new ModelBuilder();
  other.output(other.node('If', ['c'], { then_branch: deep.graph, else_branch: shallow.graph }, { name: 'nested' }), [2, 3]);
  const out = b.node('If', [b.input('c', [], DataType.BOOL)], { then_branch: then.graph, else_branch: other.graph }, { name: 'branch' });
  b.output(out, [2, 3]);
  return { model: b.build(), out };
}

describe('namesOf and freshName', () => {
  it('namesOf lists the names of the graph and, by default, of its subgraphs at any depth', () => {
    const { model } = withBranches('out_flat');
    const g = model.graph!;
    const all = namesOf(g);
    for (const n of ['x', 'c', 'r', 'branch', 'out_flat', 'inner_node', 'nested', 'deepest', 'deepest_out0', 'shallow']) expect(all.has(n), n).toBe(true);
    const own = namesOf(g, new Set(), false);
    expect(own.has('branch')).toBe(true);
    for (const n of ['out_flat', 'inner_node', 'nested', 'deepest']) expect(own.has(n), n).toBe(false);
  });

  it('freshName returns the base when free, else the first free base_i, and takes it', () => {
    const taken = new Set(['a', 'a_1', 'b']);
    expect(freshName(taken, 'c')).toBe('c');
    expect(freshName(taken, 'a')).toBe('a_2');
    expect(freshName(taken, 'a')).toBe('a_3');
    expect(taken.has('a_2') && taken.has('a_3') && taken.has('c')).toBe(true);
  });

  it('the timing copy and the shape probe never take a name a subgraph uses, and still run', async () => {
    const { model, out } = withBranches('branch_out0_flat');
    expect(out).toBe('branch_out0');
    const kept = keptInside(model);
    const added = kept.graph!.node.slice(model.graph!.node.length).flatMap((n) => [n.name!, ...n.output]);
    expect(added).not.toContain('branch_out0_flat');
    expect(added).toContain('branch_out0_flat_1');
    const feeds = { x: new ort.Tensor('float32', Float32Array.of(1, -2, 3, -4, 5, -6), [2, 3]), c: new ort.Tensor('bool', Uint8Array.of(1), []) };
    const got = await runModel(encodeModel(kept), feeds);
    expect(Object.values(got)[0]).toEqual(Float32Array.of(1));
    const probed = withBranches('r_out0::shape').model;
    const probe = shapeProbe(probed, ['r_out0'])!;
    expect([...probe.valueOf.keys()]).toEqual(['r_out0::shape_1']);
  });
});
