/**
 * A Gather's rewrite adds MACs where the lookup ran none: the record and the report show
 * the new MatMul's r·D per looked-up token (layers.ts `positions`, driver.ts scaleMacs).
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { DataType } from '../../src/onnx/schema.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { lowRank } from '../helpers/ort.js';

describe('Gather MACs', () => {
  it('positions are the looked-up tokens; after the rewrite the record counts r·D per token', () => {
    const b = new ModelBuilder();
    b.output(b.node('Gather', [b.init('table', [100, 32], lowRank(100, 32, 4, 1)), b.input('ids', [3, 5], DataType.INT64)], {}, { name: 'embed' }), [3, 5, 32]);
    const shapes = new Map<string, number[]>([['ids', [3, 5]], ['embed_out0', [3, 5, 32]]]);
    const model = new Model(b.build());
    expect(findLayers(model, shapes)[0]).toMatchObject({ macs: 0, positions: 15 });
    expect('positions' in findLayers(model)[0]!).toBe(false);
    const [rec] = optimizeModel(model, shapes, { method: 'auto', policy: { kind: 'fixed', rank: 4 }, minParams: 0, seed: 0 });
    expect(rec).toMatchObject({ pass: 'gather-svd', macsBefore: 0, macsAfter: 15 * 4 * 32 });
  });
});
