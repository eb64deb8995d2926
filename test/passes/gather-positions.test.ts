/**
 * layers.ts `positions`: a Gather runs no MACs, so what its rewrite adds (r·D per token)
 * is counted over the tokens it looks up, from the shapes when they are known.
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { DataType } from '../../src/onnx/schema.js';
import { lowRank } from '../helpers/ort.js';

describe('Gather positions', () => {
  it('are the looked-up tokens (output numel / D, else the indices), absent without shapes and on other layers', () => {
    const b = new ModelBuilder();
    const ids = b.input('ids', [3, 5], DataType.INT64);
    const e = b.node('Gather', [b.init('table', [100, 32], lowRank(100, 32, 4, 1)), ids], {}, { name: 'embed' });
    b.output(b.node('MatMul', [e, b.init('w', [32, 16], lowRank(32, 16, 4, 2))], {}, { name: 'proj' }));
    const model = new Model(b.build());
    const withOut = new Map<string, number[]>([['ids', [3, 5]], [e, [3, 5, 32]], ['proj_out0', [3, 5, 16]]]);
    const [embed, proj] = findLayers(model, withOut);
    expect(embed).toMatchObject({ macs: 0, positions: 15 });
    expect('positions' in proj!).toBe(false);
    expect(findLayers(model, new Map([['ids', [7]]]))[0]!.positions).toBe(7);
    expect('positions' in findLayers(model)[0]!).toBe(false);
  });
});
