/**
 * inspect lists every node that holds a constant weight (issue 20): the layers, the
 * quantized ones, and apart the others no rewrite takes, each with why (src/graph/
 * other-weights.ts): an Einsum with a constant operand (fp16 behind a Cast too), a Gather
 * on a 3-D table, a positional table added to the activations, a MatMul of two constants.
 * Vectors (biases) and the recurrent weights of a layer (an LSTM's R, noted on its layer)
 * are not listed; a model ORT runs, in text and in schema-valid JSON.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import type { InspectResult } from '../../src/api/inspect.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { findOtherWeights } from '../../src/graph/other-weights.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { DataType } from '../../src/onnx/schema.js';
import { makeFloatTensor } from '../../src/onnx/tensor.js';
import { seededArray } from '../calib/helpers.js';
import { runCli } from '../helpers/cli.js';
import { SchemaValidator } from '../report/json-schema.js';

const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-inspect-other-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const schemas = new SchemaValidator(path.resolve('schema'));

const T = 6, D = 8, H = 4, I = 5;

function model(): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, T, D]);
  // A positional table [1, T, D] added to the input, a bias [D] added after (a vector: not listed).
  const pos = b.node('Add', [x, b.init('pos', [1, T, D], seededArray(T * D, 1))], {}, { name: 'add_pos' });
  const mm = b.node('MatMul', [pos, b.init('w', [D, D], seededArray(D * D, 2))], {}, { name: 'proj' });
  const biased = b.node('Add', [mm, b.init('bias', [D], seededArray(D, 3))], {}, { name: 'add_bias' });
  // Einsum with a constant [D, H, 2] operand, stored fp16 behind a Cast.
  b.graph.initializer.push(makeFloatTensor('heads', [D, H, 2], seededArray(D * H * 2, 4), DataType.FLOAT16));
  const heads = b.node('Cast', ['heads'], { to: DataType.FLOAT }, { name: 'heads/cast' });
  b.output(b.node('Einsum', [biased, heads], { equation: 'btd,dhk->bthk' }, { name: 'einsum' }));
  // A Gather on a 3-D table.
  b.output(b.node('Gather', [b.init('table3', [10, 3, 4], seededArray(120, 5)), b.input('ids', [2], DataType.INT64)], {}, { name: 'embed3' }));
  // Two constants multiplied.
  b.output(b.node('MatMul', [b.init('ca', [3, 4], seededArray(12, 6)), b.init('cb', [4, 2], seededArray(8, 7))], {}, { name: 'folded' }));
  // An LSTM: a layer (its W); its R [1, 4H, H] and B [1, 8H] are not listed.
  const seq = b.input('s', [T, 1, I]);
  const outs = b.nodeMulti('LSTM', [seq, b.init('lw', [1, 4 * H, I], seededArray(4 * H * I, 8)), b.init('lr', [1, 4 * H, H], seededArray(4 * H * H, 9)),
    b.init('lb', [1, 8 * H], seededArray(8 * H, 10))], { hidden_size: H }, { name: 'lstm', outputs: 2 });
  b.output(outs[1]!);
  return encodeModel(b.build());
}

describe('inspect: other constant weights', () => {
  const file = path.join(dir, 'mixed.onnx');
  writeFileSync(file, model());

  it('lists the Einsum, the 3-D Gather table, the positional Add and the constant MatMul with why; not the layers, biases or R', async () => {
    const r = await runCli('inspect', file, '--no-profile', '--json');
    expect(r.code, r.err).toBe(0);
    const j = JSON.parse(r.out) as InspectResult;
    expect(schemas.validate('inspect.schema.json', j)).toEqual([]);
    // ORT ran it (the model is valid ONNX).
    expect(j.shapeSource, j.shapeNote).toBe('ort-run');
    expect(j.layers.map((l) => l.name).sort()).toEqual(['lstm', 'proj']);
    expect(j.otherWeights).toEqual([
      { name: 'add_pos', op: 'Add', weightShape: [1, T, D], params: T * D, subgraphDepth: 0, reason: `Add reads a constant weight [1, ${T}, ${D}]: no rewrite applies to Add` },
      { name: 'einsum', op: 'Einsum', weightShape: [D, H, 2], params: D * H * 2, subgraphDepth: 0, reason: `Einsum reads a constant weight [${D}, ${H}, 2]: no rewrite applies to Einsum` },
      { name: 'embed3', op: 'Gather', weightShape: [10, 3, 4], params: 120, subgraphDepth: 0, reason: 'Gather on a table of rank 3: the embedding rewrite applies to 2-D tables [V, D] only' },
      { name: 'folded', op: 'MatMul', weightShape: [3, 4], params: 12, subgraphDepth: 0, reason: 'both operands are constants: not a layer (ONNX Runtime folds it), no rewrite applies to it' },
    ]);
    const text = await runCli('inspect', file, '--no-profile');
    expect(text.code, text.err).toBe(0);
    expect(text.out).toMatch(/other constant weights \(no rewrite applies\): 4/);
    expect(text.out).toMatch(/einsum\s+Einsum\s+8x4x2\s+64\s+Einsum reads a constant weight/);
  }, 60_000);

  it('a model whose weights are all layers lists none; the rewritten factors of a layer are layers, not others', () => {
    const b = new ModelBuilder({ opset: 13 });
    b.output(b.node('MatMul', [b.input('x', [2, D]), b.init('w', [D, D], seededArray(D * D, 2))], {}, { name: 'mm' }));
    const m = new Model(b.build());
    expect(findOtherWeights(m, findLayers(m))).toEqual([]);
  });
});
