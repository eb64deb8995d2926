/**
 * Data-aware embedding Gather (passes/gather-svd.ts with LayerInputStats.rowCounts): the
 * table's rows weighted by how often the calibration inputs look them up
 * (src/linalg/row-weights.ts, src/calib/index-counts.ts). With ten rows taking all the
 * lookups, a rank-10 fit keeps exactly those rows (their span has rank ≤ 10) while the
 * weight-only truncation of a full-rank table spreads its error over all 80; the rows
 * never looked up stay approximated (floor weight), not lost. Checked in ORT.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { accumulateIndexCounts } from '../../src/calib/index-counts.js';
import { Model } from '../../src/graph/graph.js';
import { rowScales } from '../../src/linalg/row-weights.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType } from '../../src/onnx/schema.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import type { LayerInputStats } from '../../src/rewrite/pass.js';
import { createRng } from '../../src/util/rng.js';
import { relL2 } from '../helpers/ort.js';

const V = 80, D = 24, HOT = 10;

function table(): Uint8Array {
  const rng = createRng(4);
  const b = new ModelBuilder({ opset: 13 });
  b.output(b.node('Gather', [b.init('table', [V, D], Float32Array.from({ length: V * D }, () => rng.normal())), b.input('ids', [6], DataType.INT64)], {}, { name: 'embed' }));
  return encodeModel(b.build());
}

async function lookup(bytes: Uint8Array, ids: number[]): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled' });
  try {
    const out = await s.run({ ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [6]) });
    return Float32Array.from(out[s.outputNames[0]!]!.data as Float32Array);
  } finally {
    await s.release();
  }
}

function rewrite(stats?: LayerInputStats): { bytes: Uint8Array; doc: string; note?: string } {
  const model = new Model(decodeModel(table()));
  const recs = optimizeModel(model, undefined, { method: 'auto', policy: { kind: 'fixed', rank: HOT }, minParams: 0, seed: 0, saves: 'params' }, undefined, stats ? { stats: new Map([['embed', stats]]) } : {});
  expect(recs.map((r) => [r.pass, r.skipped ?? false])).toEqual([['gather-svd', false]]);
  return { bytes: encodeModel(model.proto), doc: model.proto.graph!.node[0]!.docString ?? '', note: recs[0]!.note };
}

describe('data-aware Gather: rows weighted by their calibration lookups', () => {
  it('index counts: every lookup counted once, negative indices from the end, out-of-range ones reported', () => {
    const c = new Float64Array(5);
    expect(accumulateIndexCounts(c, BigInt64Array.from([0n, 4n, -1n, 2n, 5n, -6n]))).toBe(2);
    expect([...c]).toEqual([1, 0, 1, 0, 2]);
    expect(rowScales([0, 0])).toBeUndefined();
    const s = rowScales([3, 1, 0, 0])!;
    expect(s[0]! ** 2).toBeCloseTo(3 + 0.01, 12);
    expect(s[2]! ** 2).toBeCloseTo(0.01, 12);
  });

  it(`ten hot rows: rank ${HOT} keeps them to ~1e-3 (weight-only: ~0.5 relative) and the cold rows stay within 1.5`, async () => {
    const counts = new Float64Array(V);
    const rng = createRng(8);
    accumulateIndexCounts(counts, Array.from({ length: 500 }, () => Math.floor(rng.next() * HOT)));
    const stats: LayerInputStats = { kind: 'matrix', gram: new Float64Array(0), dim: V, count: 500, rowCounts: counts, indexOutOfRange: 7 };
    const plain = rewrite();
    const aware = rewrite(stats);
    expect(aware.doc).toMatch(/rows weighted by their calibration lookups/);
    expect(aware.note).toBe(`rows weighted by 500 calibration lookup(s); 7 lookup(s) outside [-${V}, ${V}) ignored`);
    expect(plain.doc).not.toMatch(/weighted/);
    expect(plain.note).toBeUndefined();
    const hot = [0, 3, 9, 5, 1, 7];
    const cold = [10, 44, 79, 23, 61, 12];
    const original = table();
    const [oh, ph, ah] = [await lookup(original, hot), await lookup(plain.bytes, hot), await lookup(aware.bytes, hot)];
    expect(relL2(ph, oh)).toBeGreaterThan(0.2);
    expect(relL2(ah, oh)).toBeLessThan(relL2(ph, oh) / 20);
    const [oc, ac] = [await lookup(original, cold), await lookup(aware.bytes, cold)];
    const coldErr = relL2(ac, oc);
    expect(Number.isFinite(coldErr)).toBe(true);
    expect(coldErr).toBeLessThan(1.5);
  });

  it('lookups all out of range: the weight-only fit, and the report says why', async () => {
    const all = rewrite({ kind: 'matrix', gram: new Float64Array(0), dim: V, count: 0, rowCounts: new Float64Array(V), indexOutOfRange: 12 });
    const plain = rewrite();
    expect(all.note).toBe(`no calibration lookup in range; 12 lookup(s) outside [-${V}, ${V}) ignored: rows weighted equally`);
    expect(all.doc).not.toMatch(/weighted/);
    expect(all.bytes).toEqual(plain.bytes);
  });
});
