/**
 * learnShapes (graph/shapes.ts): the shape of every main-graph value from one ORT run that
 * outputs Shape(v), checked against a run that fetches the values themselves.
 */
import { describe, expect, it } from 'vitest';
import { learnShapes, shapeProbe } from '../../src/graph/shapes.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { loadModel } from '../../src/onnx/file.js';
import { AttributeType, DataType, newAttribute, newGraph, newModel, newNode, newValueInfo, type ModelProto } from '../../src/onnx/schema.js';
import { makeFloatTensor } from '../../src/onnx/tensor.js';
import { buildFeeds, parseShapeArgs } from '../../src/verify/inputs.js';
import { createSession } from '../../src/verify/session.js';
import type { Feeds } from '../../src/verify/tensor.js';
import { REAL, REAL_SHAPES } from '../helpers/models.js';
import { floatInfo, randomFloat } from '../onnx/helpers.js';

/** Every node output's dims from a run of a copy that outputs the values themselves. */
async function valueDims(model: ModelProto, feeds: Feeds): Promise<Map<string, number[]>> {
  const g = model.graph!;
  const have = new Set(g.output.map((o) => o.name));
  const extra = g.node.flatMap((n) => n.output).filter((o) => o && !have.has(o)).map((name) => newValueInfo({ name }));
  const s = await createSession({ bytes: encodeModel({ ...model, graph: { ...g, output: [...g.output, ...extra] } }) }, { graphOptimizationLevel: 'disabled' });
  if (!s.ok) throw s.error;
  try {
    const out = await s.value.run(feeds);
    if (!out.ok) throw out.error;
    return new Map(Object.entries(out.value).map(([k, t]) => [k, [...t.dims]]));
  } finally {
    await s.value.release();
  }
}

describe('learnShapes', () => {
  it('PP-OCRv4 rec: every value\'s shape as fetching the value gives it', async () => {
    const loaded = loadModel(REAL.rec);
    const shapes = parseShapeArgs(REAL_SHAPES.rec);
    if (!shapes.ok) throw shapes.error;
    const r = await learnShapes(loaded.model, { shapes: shapes.value });
    if (!r.ok) throw r.error;
    const s = await createSession({ path: REAL.rec });
    if (!s.ok) throw s.error;
    const plan = buildFeeds(s.value.inputs, { seed: 0, count: 1, shapes: shapes.value });
    await s.value.release();
    if (!plan.ok) throw plan.error;
    const want = await valueDims(loaded.model, plan.value.feeds[0]!);
    expect(want.size).toBeGreaterThan(500);
    for (const [name, dims] of want) expect(r.value.shapes.get(name), name).toEqual(dims);
    loaded.external.close();
  });

  it('a scalar, a value already named like a shape output, and a 5-D value', async () => {
    const w = makeFloatTensor('w', [4, 3, 3, 3], randomFloat(1, 108));
    const model = newModel({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 13 }],
      graph: newGraph({
        name: 'g',
        input: [floatInfo('x', [1, 3, 8, 8])],
        output: [floatInfo('y', [])],
        initializer: [w, makeFloatTensor('shape5', [5], Float32Array.from([1, 2, 2, 8, 8]))],
        node: [
          newNode({ opType: 'Conv', input: ['x', 'w'], output: ['h::shape'], attribute: [newAttribute({ name: 'pads', type: AttributeType.INTS, ints: [1n, 1n, 1n, 1n] })] }),
          newNode({ opType: 'Relu', input: ['h::shape'], output: ['h'] }),
          newNode({ opType: 'Cast', input: ['shape5'], output: ['shape5i'], attribute: [newAttribute({ name: 'to', type: AttributeType.INT, i: BigInt(DataType.INT64) })] }),
          newNode({ opType: 'Reshape', input: ['h', 'shape5i'], output: ['h5'] }),
          newNode({ opType: 'ReduceSum', input: ['h5'], output: ['y'], attribute: [newAttribute({ name: 'keepdims', type: AttributeType.INT, i: 0n })] }),
        ],
      }),
    });
    const r = await learnShapes(model);
    if (!r.ok) throw r.error;
    const want = await valueDims(model, { x: { type: 'float32', dims: [1, 3, 8, 8], data: randomFloat(2, 192) } });
    expect(want.get('h5')).toEqual([1, 2, 2, 8, 8]);
    expect(want.get('y')).toEqual([]);
    for (const [name, dims] of want) expect(r.value.shapes.get(name), name).toEqual(dims);
    // The probe's Shape outputs take names no value has, each mapped back to its value.
    const probe = shapeProbe(model, ['h::shape', 'h', 'y'])!;
    expect([...probe.valueOf]).toEqual([['h::shape::shape', 'h::shape'], ['h::shape_1', 'h'], ['y::shape', 'y']]);
    expect(probe.probe.graph!.output.map((o) => o.name)).toEqual(['y', 'h::shape::shape', 'h::shape_1', 'y::shape']);
    expect(model.graph!.node).toHaveLength(5); // the model given is not changed
  });
});
