/**
 * The report's spectra of the chains fitted along the spatial axes (conv-tt, conv-spatial-svd):
 * grouped kernels are read per group (group 1's kernel, as fitted), 1-D and 3-D kernels get
 * their own unfoldings with the ranks kept on each.
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { singularValues } from '../../src/linalg/svd.js';
import type { LayerRecord } from '../../src/report/records.js';
import { layerSpectra } from '../../src/report/spectra.js';

const record = (over: Partial<LayerRecord>): LayerRecord => ({
  name: 'conv', op: 'Conv', weightShape: [], where: 'initializer', paramsBefore: 0, paramsAfter: 0, ms: 0, ...over,
});

/** One Conv of weight [T, S/g, k…] (deterministic values) on an input of extent 6 per axis. */
function convOf(T: number, S: number, k: number[], group = 1): { model: Model; w: Float32Array } {
  const s = S / group;
  const w = Float32Array.from({ length: T * s * k.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 1.3) + ((i * 7) % 5) * 0.2);
  const b = new ModelBuilder();
  const x = b.input('x', [1, S, ...k.map(() => 6)]);
  const attrs: Record<string, number> = group > 1 ? { group } : {};
  b.output(b.node('Conv', [x, b.init('W', [T, s, ...k], w)], attrs, { name: 'conv' }));
  return { model: new Model(b.build()), w };
}

const energy = (a: ArrayLike<number>): number => Array.from(a).reduce((p, v) => p + v * v, 0);

/** Singular values of the [rows, cols] unfolding of group 1's kernel [t, s, k…] in the order (s, k…, t). */
function unfolding(w: Float32Array, t: number, s: number, K: number, rows: number): number[] {
  const P = s * K;
  const a = new Float64Array(t * P);
  for (let o = 0; o < t; o++) for (let i = 0; i < P; i++) a[i * t + o] = w[o * P + i]!;
  return [...singularValues({ rows, cols: (P * t) / rows, data: a })];
}

describe('spectra of the split conv chains', () => {
  it('a grouped 2-D TT: group 1\'s three unfoldings (not the grouped weight read as one kernel), with R1…R3', () => {
    const [T, S, g] = [8, 6, 2];
    const { model, w } = convOf(T, S, [3, 3], g);
    const [sp] = layerSpectra(model, [record({ weightShape: [T, S / g, 3, 3], pass: 'conv-tt', method: 'tt', ranks: [2, 3, 4] })]);
    expect(sp!.note).toBeUndefined();
    expect(sp!.spectra.map((x) => x.label)).toEqual([
      'TT unfolding 1, [S/g, kh·kw·T/g] (group 1 of 2), 3 x 36',
      'TT unfolding 2, [S/g·kh, kw·T/g] (group 1 of 2), 9 x 12',
      'TT unfolding 3, [S/g·kh·kw, T/g] (group 1 of 2), 27 x 4',
    ]);
    expect(sp!.spectra.map((x) => [x.rankLabel, x.rank])).toEqual([['R1', 2], ['R2', 3], ['R3', 4]]);
    const g1 = w.subarray(0, 4 * 3 * 9);
    [3, 9, 27].forEach((rows, i) => {
      const want = unfolding(g1, 4, 3, 9, rows);
      const got = sp!.spectra[i]!.series[0]!.sigma;
      expect(got).toHaveLength(want.length);
      got.forEach((v, j) => expect(v).toBeCloseTo(want[j]!, 4));
      // Every unfolding holds group 1's weights once.
      expect(energy(got)).toBeCloseTo(energy(g1), 3);
    });
    // Read as one [8, 3, 3, 3] kernel (what the page drew before), the last unfolding has 8 values, not 4.
    expect(sp!.spectra[2]!.series[0]!.sigma).toHaveLength(4);
  });

  it('1-D and 3-D TT: n + 1 unfoldings with the n + 1 ranks', () => {
    const one = convOf(5, 4, [3]);
    const [a] = layerSpectra(one.model, [record({ weightShape: [5, 4, 3], pass: 'conv-tt', method: 'tt', ranks: [2, 3] })]);
    expect(a!.spectra.map((x) => x.label)).toEqual(['TT unfolding 1, [S, k·T], 4 x 15', 'TT unfolding 2, [S·k, T], 12 x 5']);
    expect(a!.spectra.map((x) => x.rank)).toEqual([2, 3]);
    const three = convOf(5, 4, [2, 3, 2]);
    const [b] = layerSpectra(three.model, [record({ weightShape: [5, 4, 2, 3, 2], pass: 'conv-tt', method: 'tt', ranks: [2, 3, 4, 5] })]);
    expect(b!.spectra.map((x) => x.label.replace(/^TT unfolding \d, /, ''))).toEqual(['[S, kd·kh·kw·T], 4 x 60', '[S·kd, kh·kw·T], 8 x 30', '[S·kd·kh, kw·T], 24 x 10', '[S·kd·kh·kw, T], 48 x 5']);
    expect(b!.spectra.map((x) => x.rankLabel)).toEqual(['R1', 'R2', 'R3', 'R4']);
    [4, 8, 24, 48].forEach((rows, i) => {
      const want = unfolding(three.w, 5, 4, 12, rows);
      b!.spectra[i]!.series[0]!.sigma.forEach((v, j) => expect(v).toBeCloseTo(want[j]!, 4));
    });
  });

  it('spatial SVD: a grouped 2-D kernel is group 1\'s reshape; a 3-D kernel has its two splits with R1 and R2', () => {
    const [T, S, g] = [6, 4, 2];
    const { model, w } = convOf(T, S, [3, 3], g);
    const [a] = layerSpectra(model, [record({ weightShape: [T, S / g, 3, 3], pass: 'conv-spatial-svd', method: 'spatial-svd', ranks: [3] })]);
    expect(a!.spectra).toHaveLength(1);
    expect(a!.spectra[0]!.label).toBe('kernel as [S/g·kh, T/g·kw] (group 1 of 2), 6 x 9');
    const g1 = w.subarray(0, 3 * 2 * 9);
    // [s·kh, kw·t] has the singular values of [s·kh, t·kw] (a column permutation).
    const want = unfolding(g1, 3, 2, 9, 6);
    a!.spectra[0]!.series[0]!.sigma.forEach((v, j) => expect(v).toBeCloseTo(want[j]!, 4));
    const three = convOf(5, 4, [2, 3, 2]);
    const [b] = layerSpectra(three.model, [record({ weightShape: [5, 4, 2, 3, 2], pass: 'conv-spatial-svd', method: 'spatial-svd', ranks: [3, 4] })]);
    expect(b!.spectra.map((x) => [x.label, x.rankLabel, x.rank])).toEqual([
      ['split 1 of the kernel, [S·kd, kh·kw·T], 8 x 30', 'R1', 3], ['split 2 of the kernel, [S·kd·kh, kw·T], 24 x 10', 'R2', 4],
    ]);
    [8, 24].forEach((rows, i) => {
      const u = unfolding(three.w, 5, 4, 12, rows);
      b!.spectra[i]!.series[0]!.sigma.forEach((v, j) => expect(v).toBeCloseTo(u[j]!, 4));
    });
  });

  it('an unfolding past maxWork leaves the layer with a note naming it', () => {
    const { model } = convOf(5, 4, [2, 3, 2]);
    const [sp] = layerSpectra(model, [record({ weightShape: [5, 4, 2, 3, 2], pass: 'conv-tt', method: 'tt', ranks: [2, 3, 4, 5] })], { maxWork: 2000 });
    expect(sp!.spectra).toEqual([]);
    expect(sp!.note).toBe('too large to plot here (24 x 10)');
  });
});
