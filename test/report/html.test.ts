/** The HTML report's parts without a browser: spectra from known weights, escaping, charts' data. */
import { describe, expect, it } from 'vitest';
import { Model } from '../../src/graph/graph.js';
import { renderHtml } from '../../src/report/html.js';
import type { LayerRecord } from '../../src/report/records.js';
import type { Report } from '../../src/report/report.js';
import { energyKept, layerSpectra } from '../../src/report/spectra.js';
import { esc, lineChart } from '../../src/report/svg.js';
import { ModelBuilder } from '../../models/builder.js';

const record = (over: Partial<LayerRecord>): LayerRecord => ({
  name: 'l', op: 'MatMul', weightShape: [], where: 'initializer', paramsBefore: 0, paramsAfter: 0, ms: 0, ...over,
});

describe('spectra from the original weights', () => {
  it('an SVD pair: the singular values of its matrix, with the rank kept', () => {
    // W [5, 4] with orthogonal rows scaled: singular values exactly 5, 3, 1, 0.5.
    const s = [5, 3, 1, 0.5];
    const w = new Float32Array(20);
    for (let i = 0; i < 4; i++) w[i * 4 + ((i + 1) % 4)] = s[i]!;
    const b = new ModelBuilder();
    const x = b.input('x', [2, 5]);
    b.output(b.node('MatMul', [x, b.init('W', [5, 4], w)], {}, { name: 'mm' }), [2, 4]);
    const [sp] = layerSpectra(new Model(b.build()), [record({ name: 'mm', weightShape: [5, 4], pass: 'matmul-svd', method: 'svd', ranks: [2] })]);
    expect(sp!.note).toBeUndefined();
    expect(sp!.spectra).toHaveLength(1);
    expect(sp!.spectra[0]!.rank).toBe(2);
    sp!.spectra[0]!.series[0]!.sigma.forEach((v, i) => expect(v).toBeCloseTo(s[i]!, 5));
    expect(energyKept(sp!.spectra[0]!.series[0]!.sigma, 2)).toBeCloseTo(34 / 35.25, 5);
  });

  it('a conv Tucker-2: both channel unfoldings, r2 on the output side and r1 on the input side', () => {
    const [T, S, k] = [4, 3, 3];
    const w = Float32Array.from({ length: T * S * k * k }, (_, i) => Math.sin(i * 1.7) + (i % 5) * 0.1);
    const b = new ModelBuilder();
    const x = b.input('x', [1, S, 8, 8]);
    b.output(b.node('Conv', [x, b.init('W', [T, S, k, k], w)], { pads: [1, 1, 1, 1] }, { name: 'conv' }), [1, T, 8, 8]);
    const [sp] = layerSpectra(new Model(b.build()), [record({ name: 'conv', op: 'Conv', weightShape: [T, S, k, k], pass: 'conv-tucker2', method: 'tucker2', ranks: [2, 3] })]);
    const [out, inp] = sp!.spectra;
    expect(out!.label).toMatch(/^output channels .*4 x 27$/);
    expect(out!.series[0]!.sigma).toHaveLength(T);
    expect([out!.rankLabel, out!.rank]).toEqual(['r2', 3]);
    expect(inp!.series[0]!.sigma).toHaveLength(S);
    expect([inp!.rankLabel, inp!.rank]).toEqual(['r1', 2]);
    // Both unfoldings hold every weight once: Σσ² = ‖W‖²_F.
    const norm2 = w.reduce((a, v) => a + v * v, 0);
    for (const m of [out!, inp!]) expect(m.series[0]!.sigma.reduce((a, v) => a + v * v, 0)).toBeCloseTo(norm2, 3);
  });

  it('a layer missing from the model, or too large, gets a note instead of a spectrum', () => {
    const b = new ModelBuilder();
    const x = b.input('x', [2, 64]);
    b.output(b.node('MatMul', [x, b.init('W', [64, 64], new Float32Array(64 * 64).fill(1))], {}, { name: 'mm' }), [2, 64]);
    const [gone, big] = layerSpectra(new Model(b.build()), [
      record({ name: 'nope', pass: 'matmul-svd', ranks: [1] }), record({ name: 'mm', weightShape: [64, 64], pass: 'matmul-svd', ranks: [1] }),
    ], { maxWork: 1000 });
    expect(gone!.note).toMatch(/not found/);
    expect(big!.spectra).toEqual([]);
    expect(big!.note).toMatch(/too large to plot here \(64 x 64\)/);
  });
});

describe('the page', () => {
  const side: Report['input'] = { nodeCount: 3, params: 100, macs: 1000, bytes: 4000, ops: { MatMul: 1 }, file: 'a.onnx', irVersion: 8, opsets: { '': 13 } };
  const hostile = `<img src=x onerror="alert('x')">&amp;`;
  const report: Report = {
    schemaVersion: 1, tool: 'onnx-lr test', seed: 0, policy: 'svd, energy 0.999', policyKind: 'energy',
    input: side, output: { ...side, file: 'b.onnx', params: 60 }, seconds: 1, notes: [hostile],
    layers: [record({ name: hostile, weightShape: [5, 4], pass: 'matmul-svd', method: 'svd', ranks: [2], paramsBefore: 20, paramsAfter: 18 })],
  };

  it('escapes every name from the model and draws the spectra it is given', () => {
    const html = renderHtml(report, { spectra: [{ layer: hostile, method: 'svd', spectra: [{ label: 'weight matrix, 5 x 4', series: [{ label: 'w', sigma: [5, 3, 1, 0.5] }], rank: 2 }] }] });
    expect(html).not.toContain('<img');
    expect(html).toContain(esc(hostile));
    expect(html.match(/<figure class="spectrum"/g)).toHaveLength(1);
    expect(html).not.toMatch(/https?:\/\/(?!www\.w3\.org\/2000\/svg)/); // nothing to fetch: the SVG namespace is a name, not a request
  });

  it('shows the narrow reorder\'s line, escaped', () => {
    const html = renderHtml({ ...report, narrowReorder: { block: 16, sites: [{ conv: 'head', channels: 1, padded: 16, readers: [hostile] }], originalMs: 10, reorderedMs: 8, speedup: 1.25, runs: 6, kept: true, why: 'faster in ORT' } });
    expect(html).not.toContain('<img');
    expect(html).toContain(`narrow reorder: 1 conv output(s) of 1 channel(s), which ORT&#39;s blocked layout pads to 16, reordered before their readers (${esc(hostile)})`);
  });

  it('says why there are no spectra when none were computed', () => {
    expect(renderHtml(report, { spectraNote: 'not computed: because' })).toContain('spectra: not computed: because');
  });

  it('a chart with nothing to draw is left out', () => {
    expect(lineChart({ title: 't', xLabel: 'x', yLabel: 'y', logY: true, series: [{ label: 's', points: [[1, 0], [2, Number.NaN]] }] })).toBe('');
  });
});
