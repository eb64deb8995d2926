/**
 * A Gather's statistics (src/calib/stats.ts, 'index' plan in stats-plan.ts): how often the
 * calibration inputs look up each row of its table, read from the indices tensor ORT
 * computes (int64 or int32, any shape, negative from the end). Lookups outside [−V, V)
 * are counted apart, never an error; Gathers reading the same indices against tables of the
 * same size share one count; the counts are the same however the byte budget splits the
 * runs; a Gather that cannot have counts says why.
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import type { CalibSet } from '../../src/calib/load.js';
import { collectStats, statisticsNotes, type CalibStats, type StatsOptions } from '../../src/calib/stats.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { DataType } from '../../src/onnx/schema.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';
import { seededArray } from './helpers.js';

const V = 10, W = 7;

/**
 * ids [2, 3] int64 shifted by 2 (so large ids fall past the table) feed two tables of V
 * rows; j [4] int32 feeds a table of W rows; a constant-index Gather and a MatMul on
 * Relu(x) beside (two exposed tensors: a budget of one byte runs them apart).
 */
function model(): Model {
  const b = new ModelBuilder({ opset: 13 });
  const ids = b.input('ids', [2, 3], DataType.INT64);
  const j = b.input('j', [4], DataType.INT32);
  const x = b.input('x', [2, 6]);
  const shifted = b.node('Add', [ids, b.initInt64('two', [1], [2])], {}, { name: 'shift' });
  const t = (name: string, rows: number, cols: number, seed: number): string => b.init(name, [rows, cols], seededArray(rows * cols, seed));
  b.output(b.node('Gather', [t('ta', V, 4, 1), shifted], {}, { name: 'embed_a' }));
  b.output(b.node('Gather', [t('tb', V, 5, 2), shifted], {}, { name: 'embed_b' }));
  b.output(b.node('Gather', [t('tc', W, 3, 3), j], {}, { name: 'embed_c' }));
  b.output(b.node('Gather', [t('td', V, 4, 4), b.initInt64('fixed', [2], [1, 3])], {}, { name: 'embed_const' }));
  b.output(b.node('MatMul', [b.node('Relu', [x]), t('w', 6, 3, 5)], {}, { name: 'mm' }));
  return new Model(b.build());
}

const feeds: Feeds[] = [
  { ids: [0, 7, 8, -1, 3, 3], j: [0, -1, -7, 7] },
  { ids: [-12, 4, 5, 1, 1, 1], j: [2, 2, -8, 6] },
  { ids: [9, 9, 2, 0, -3, 6], j: [3, -2, 1, 100] },
].map((f, k) => ({
  ids: { type: 'int64', dims: [2, 3], data: BigInt64Array.from(f.ids.map(BigInt)) } as HostTensor,
  j: { type: 'int32', dims: [4], data: Int32Array.from(f.j) } as HostTensor,
  x: { type: 'float32', dims: [2, 6], data: seededArray(12, 10 + k) } as HostTensor,
}));

const calibSet = (list: Feeds[]): CalibSet => ({
  source: { kind: 'random', seed: 0 }, samples: list.length, batches: list.length, batchSize: 1, calibrated: [], fixed: [], random: [], notes: [],
  *feeds() { yield* list; },
});

/** The counts written out independently: index i of a table of n rows is row i (i ≥ 0) or n + i (i < 0), if that is in [0, n). */
function expected(values: number[], n: number): { counts: number[]; bad: number } {
  const counts = new Array<number>(n).fill(0);
  let bad = 0;
  for (const v of values) {
    const row = v >= 0 ? v : n + v;
    if (row >= 0 && row < n) counts[row]!++; else bad++;
  }
  return { counts, bad };
}

async function run(opts: StatsOptions = {}): Promise<CalibStats> {
  const m = model();
  const r = await collectStats(m, findLayers(m), calibSet(feeds), opts);
  if (!r.ok) throw r.error;
  return r.value;
}

describe('collectStats: Gather lookup counts', () => {
  it('counts each row\'s lookups from int64 and int32 indices, negative ones from the end, out-of-range ones apart', async () => {
    const got = await run();
    const shifted = expected(feeds.flatMap((f) => Array.from(f.ids!.data as BigInt64Array, (v) => Number(v) + 2)), V);
    const js = expected(feeds.flatMap((f) => Array.from(f.j!.data as Int32Array)), W);
    expect(shifted.bad).toBe(3);
    expect(js.bad).toBe(3);
    for (const name of ['embed_a', 'embed_b']) {
      const st = got.stats.get(name)!;
      expect([...st.rowCounts!]).toEqual(shifted.counts);
      expect(st.indexOutOfRange).toBe(shifted.bad);
      expect(st.count).toBe(18 - shifted.bad);
      expect(st.dim).toBe(V);
      expect(st.gram.length).toBe(0);
    }
    // Same indices, same table size: one count, shared (read-only).
    expect(got.stats.get('embed_a')).toBe(got.stats.get('embed_b'));
    const c = got.stats.get('embed_c')!;
    expect([...c.rowCounts!]).toEqual(js.counts);
    expect(c.indexOutOfRange).toBe(js.bad);
    expect(c.count).toBe(12 - js.bad);
    // The Gather's neighbours keep their statistics.
    expect(got.stats.get('mm')!.count).toBe(6);
    expect(got.unavailable.get('embed_const')).toMatch(/indices are a constant/);
    // The report's note counts each lookup once (embed_a and embed_b share theirs).
    expect(statisticsNotes(got.stats)).toEqual([`row weights of 3 Gather(s) from ${18 - shifted.bad + 12 - js.bad} calibration lookup(s) (${shifted.bad + js.bad} outside their tables, ignored)`]);
    expect(got.stats.has('embed_const')).toBe(false);
  });

  it('the counts do not depend on how the byte budget splits the runs', async () => {
    const one = await run();
    const split = await run({ maxBytesPerRun: 1 });
    expect(split.passes).toBeGreaterThan(one.passes);
    for (const name of ['embed_a', 'embed_c', 'mm']) {
      expect([...split.stats.get(name)!.rowCounts ?? []]).toEqual([...one.stats.get(name)!.rowCounts ?? []]);
      expect(split.stats.get(name)!.count).toBe(one.stats.get(name)!.count);
    }
  });

  it('a Gather whose lookups never reach it, or along another axis, says why', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const ids = b.input('ids', [2], DataType.INT64);
    b.output(b.node('Gather', [b.init('t', [V, 4], seededArray(4 * V, 1)), ids], { axis: 1 }, { name: 'cols' }));
    const m = new Model(b.build());
    const r = await collectStats(m, findLayers(m), calibSet([{ ids: { type: 'int64', dims: [2], data: BigInt64Array.from([0n, 1n]) } }]));
    if (!r.ok) throw r.error;
    expect(r.value.unavailable.get('cols')).toMatch(/axis 1/);
  });
});
