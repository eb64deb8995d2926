/**
 * A batched MatMul weight's statistics (src/calib/accumulate-slices.ts, 'slices' plan in
 * stats-plan.ts): one Gram per weight slice, over exactly the rows (weight on the right)
 * or columns (on the left) of the data operand that broadcasting pairs with that slice.
 * Checked against Grams written out by hand from the slices each slice meets, pure and
 * through collectStats on models ORT runs (the data operand an input, and a computed tensor).
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import type { CalibSet } from '../../src/calib/load.js';
import { accumulateSlices, collectStats, planLayer, planSlices } from '../../src/calib/stats.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';
import { naiveColsGram, naiveRowsGram, seededArray } from './helpers.js';

const closeTo = (got: ArrayLike<number>, want: ArrayLike<number>): void => {
  expect(got.length).toBe(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (1 + Math.abs(want[i]!)));
  expect(worst).toBeLessThan(1e-9);
};

/** Slice `s` of a [count, n] array. */
const part = (x: Float32Array, s: number, n: number): Float32Array => x.subarray(s * n, (s + 1) * n);

/** Sum of Grams. */
const add = (...gs: Float64Array[]): Float64Array => gs.reduce((a, g) => a.map((v, i) => v + g[i]!), new Float64Array(gs[0]!.length));

describe('per-slice statistics of batched MatMul weights', () => {
  const K = 5, M = 3, N = 4;

  it('weight right, X [2, M, K] against W [2, K, N]: slice b gets X[b]ᵀX[b]', () => {
    const x = seededArray(2 * M * K, 1);
    const gram = new Float64Array(2 * K * K);
    const sum = new Float64Array(2 * K);
    expect(accumulateSlices(gram, x, [2, M, K], [2], 'rows', K, sum)).toBe(M);
    closeTo(gram.subarray(0, K * K), naiveRowsGram(part(x, 0, M * K), M, K));
    closeTo(gram.subarray(K * K), naiveRowsGram(part(x, 1, M * K), M, K));
    // Σ x of slice 1: its column sums.
    const s1 = Array.from({ length: K }, (_, j) => Array.from({ length: M }, (_, r) => x[M * K + r * K + j]!).reduce((a, b) => a + b, 0));
    closeTo(sum.subarray(K), s1);
  });

  it('broadcasting: X without batch dims meets every slice; X [2, 1, M, K] against W [3, K, N] gives each slice both X slices', () => {
    const x = seededArray(M * K, 2);
    const gram = new Float64Array(3 * K * K);
    expect(accumulateSlices(gram, x, [M, K], [3], 'rows', K)).toBe(M);
    const g = naiveRowsGram(x, M, K);
    for (let b = 0; b < 3; b++) closeTo(gram.subarray(b * K * K, (b + 1) * K * K), g);

    const x2 = seededArray(2 * M * K, 3);
    const gram2 = new Float64Array(3 * K * K);
    // Output batch [2, 3]: each of W's 3 slices meets X[0] and X[1], M rows each.
    expect(accumulateSlices(gram2, x2, [2, 1, M, K], [3], 'rows', K)).toBe(2 * M);
    const both = add(naiveRowsGram(part(x2, 0, M * K), M, K), naiveRowsGram(part(x2, 1, M * K), M, K));
    for (let b = 0; b < 3; b++) closeTo(gram2.subarray(b * K * K, (b + 1) * K * K), both);

    // W [2, 1, K, N] against X [3, M, K]: output [2, 3]; each W slice meets all three X slices.
    const x3 = seededArray(3 * M * K, 4);
    const gram3 = new Float64Array(2 * K * K);
    expect(accumulateSlices(gram3, x3, [3, M, K], [2, 1], 'rows', K)).toBe(3 * M);
    const all3 = add(...[0, 1, 2].map((s) => naiveRowsGram(part(x3, s, M * K), M, K)));
    for (let b = 0; b < 2; b++) closeTo(gram3.subarray(b * K * K, (b + 1) * K * K), all3);
  });

  it('weight left, X [2, K, N] against W [2, M, K]: slice b gets X[b]·X[b]ᵀ over its columns; a 1-D X is one vector', () => {
    const x = seededArray(2 * K * N, 5);
    const gram = new Float64Array(2 * K * K);
    expect(accumulateSlices(gram, x, [2, K, N], [2], 'cols', K)).toBe(N);
    closeTo(gram.subarray(0, K * K), naiveColsGram(x, K, N, 0));
    closeTo(gram.subarray(K * K), naiveColsGram(x, K, N, K * N));
    const v = seededArray(K, 6);
    const g1 = new Float64Array(2 * K * K);
    expect(accumulateSlices(g1, v, [K], [2], 'cols', K)).toBe(1);
    closeTo(g1.subarray(K * K), naiveRowsGram(v, 1, K));
  });

  it('dims that do not fit are a reason, not a throw', () => {
    const g = new Float64Array(2 * K * K);
    expect(accumulateSlices(g, seededArray(3 * M * K, 1), [3, M, K], [2], 'rows', K)).toMatch(/do not broadcast against the weight's batch dims \[2\]/);
    expect(accumulateSlices(g, seededArray(2 * M * 4, 1), [2, M, 4], [2], 'rows', K)).toMatch(/do not end in K = 5/);
    expect(accumulateSlices(g, seededArray(2 * 4 * N, 1), [2, 4, N], [2], 'cols', K)).toMatch(/do not have K = 5 second to last/);
  });

  describe('collectStats on a model ORT runs', () => {
    /** x [2, M, K] → MatMul(x, W [2, K, N]) and MatMul(Relu(x) [2, M, K]…) with W broadcast [1, K, N]; y [2, K, N] → MatMul(V [2, M, K], y). */
    function model(): Model {
      const b = new ModelBuilder({ opset: 13 });
      const x = b.input('x', [2, M, K]);
      const y = b.input('y', [2, K, N]);
      b.output(b.node('MatMul', [x, b.init('w', [2, K, N], seededArray(2 * K * N, 7))], {}, { name: 'right' }));
      b.output(b.node('MatMul', [b.node('Relu', [x], {}, { name: 'relu' }), b.init('w1', [1, K, N], seededArray(K * N, 8))], {}, { name: 'one' }));
      b.output(b.node('MatMul', [b.init('v', [2, M, K], seededArray(2 * M * K, 9)), y], {}, { name: 'left' }));
      return new Model(b.build());
    }
    const feeds: Feeds[] = [0, 1].map((k) => ({
      x: { type: 'float32', dims: [2, M, K], data: seededArray(2 * M * K, 20 + k) } as HostTensor,
      y: { type: 'float32', dims: [2, K, N], data: seededArray(2 * K * N, 30 + k) } as HostTensor,
    }));
    const calib: CalibSet = {
      source: { kind: 'random', seed: 0 }, samples: 2, batches: 2, batchSize: 1, calibrated: [], fixed: [], random: [], notes: [],
      *feeds() { yield* feeds; },
    };

    it('each slice\'s Gram, mean and count equal the hand-computed ones over both feeds', async () => {
      const m = model();
      const layers = findLayers(m);
      const r = await collectStats(m, layers, calib);
      if (!r.ok) throw r.error;
      expect([...r.value.unavailable]).toEqual([]);
      const xs = feeds.map((f) => f.x.data as Float32Array);
      const ys = feeds.map((f) => f.y.data as Float32Array);

      const right = r.value.stats.get('right')!;
      expect(right).toMatchObject({ kind: 'matrix', dim: K, groups: 2, count: 2 * M });
      for (let b = 0; b < 2; b++) {
        closeTo(right.gram.subarray(b * K * K, (b + 1) * K * K), add(...xs.map((x) => naiveRowsGram(part(x, b, M * K), M, K))));
        const mean = Array.from({ length: K }, (_, j) => xs.reduce((a, x) => a + Array.from({ length: M }, (_, i) => x[b * M * K + i * K + j]!).reduce((p, q) => p + q, 0), 0) / (2 * M));
        closeTo(right.mean.subarray(b * K, (b + 1) * K), mean);
      }

      // W [1, K, N]: one slice meeting both of Relu(x)'s slices.
      const one = r.value.stats.get('one')!;
      const relu = xs.map((x) => x.map((v) => Math.max(0, v)));
      expect(one).toMatchObject({ dim: K, groups: 1, count: 2 * 2 * M });
      closeTo(one.gram, add(...relu.flatMap((x) => [0, 1].map((s) => naiveRowsGram(part(x, s, M * K), M, K)))));

      const left = r.value.stats.get('left')!;
      expect(left).toMatchObject({ dim: K, groups: 2, count: 2 * N });
      for (let b = 0; b < 2; b++) closeTo(left.gram.subarray(b * K * K, (b + 1) * K * K), add(...ys.map((y) => naiveColsGram(y, K, N, b * K * N))));
    });

    it('planned apart from paired statistics: planLayer says why, planSlices gives side, K and batch dims', () => {
      const m = model();
      const byName = new Map(findLayers(m).map((l) => [l.name, l]));
      expect(planLayer(m, byName.get('right')!)).toMatch(/^batched weight \[2, 5, 4\]: its statistics are per slice/);
      expect(planSlices(m, byName.get('right')!)).toEqual({ kind: 'slices', side: 'rows', tensor: 'x', k: K, batch: [2] });
      expect(planSlices(m, byName.get('left')!)).toEqual({ kind: 'slices', side: 'cols', tensor: 'y', k: K, batch: [2] });
    });

    it('a batched weight whose per-slice Grams would pass 256 MiB gets none, with the reason (the fit is then weight-only)', () => {
      // [600, 256, 8]: 600 Grams of 256² Float64 = 300 MiB. Only the dims are read: the weight is a zero-filled stand-in.
      const b = new ModelBuilder({ opset: 13 });
      b.output(b.node('MatMul', [b.input('x', [600, 1, 256]), b.init('w', [600, 256, 8], new Float32Array(600 * 256 * 8))], {}, { name: 'big' }));
      const m = new Model(b.build());
      expect(planSlices(m, findLayers(m)[0]!)).toBe('per-slice statistics would hold 300 MiB of Gram matrices (at most 256 MiB): fitted weight-only');
    });
  });
});
