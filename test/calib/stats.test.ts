import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pngjs from 'pngjs';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { describeCalibration, loadCalibration, randomCalibration, type CalibSet } from '../../src/calib/load.js';
import { collectStats, groupByBudget, planLayer, type CalibStats, type LayerStats, type StatsOptions } from '../../src/calib/stats.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { encodeModel } from '../../src/onnx/codec.js';
import { loadModel, saveModel } from '../../src/onnx/file.js';
import { isExternal } from '../../src/onnx/tensor.js';
import { newGraph, newNode, type ModelProto } from '../../src/onnx/schema.js';
import { createSession } from '../../src/verify/session.js';
import { toNumbers, type Feeds } from '../../src/verify/tensor.js';
import { REAL } from '../helpers/models.js';
import { gramOf, maxRelDiff, naiveColsGram, naivePatches, naiveRowsGram, seededArray, type NaiveConv } from './helpers.js';

async function inputsOf(p: ModelProto) {
  const s = await createSession({ bytes: encodeModel(p) });
  if (!s.ok) throw s.error;
  const inputs = s.value.inputs;
  await s.value.release();
  return inputs;
}

async function run(model: Model, calib: CalibSet, opts: StatsOptions = {}): Promise<CalibStats> {
  const r = await collectStats(model, findLayers(model), calib, opts);
  if (!r.ok) throw r.error;
  return r.value;
}

const get = (s: CalibStats, name: string): LayerStats => {
  const st = s.stats.get(name);
  if (!st) throw new Error(`no stats for ${name}: ${s.unavailable.get(name) ?? 'not a layer'}`);
  return st;
};

const relu = (a: Float64Array): Float64Array => a.map((v) => Math.max(0, v));
const sigmoid = (a: Float64Array): Float64Array => a.map((v) => 1 / (1 + Math.exp(-v)));

/** Matrix layers of every orientation; two of them read graph inputs directly. */
function matrixModel(): ModelProto {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [2, 5, 6]);
  const z = b.input('z', [7, 3]);
  const v = b.input('v', [2, 6, 5]);
  const h = b.input('h', [3, 6]);
  const q = b.input('q', [3, 5]);
  const r = b.node('Relu', [x], {}, { name: 'relu' });
  const s = b.node('Sigmoid', [v], {}, { name: 'sigmoid' });
  const w = (name: string, dims: number[], seed: number) => b.init(name, dims, seededArray(dims[0]! * dims[1]!, seed));
  const outs = [
    b.node('MatMul', [r, w('w1', [6, 4], 1)], {}, { name: 'mm_right_3d' }),
    b.node('MatMul', [r, w('w5', [6, 3], 5)], {}, { name: 'mm_right_shared' }),
    b.node('Gemm', [z, w('w2', [7, 4], 2)], { transA: 1 }, { name: 'gemm_transA' }),
    b.node('MatMul', [w('w3', [4, 6], 3), s], {}, { name: 'mm_left' }),
    b.node('Gemm', [h, w('w4', [5, 6], 4)], { transB: 1 }, { name: 'gemm_transB' }),
    b.node('Gemm', [w('w6', [3, 4], 6), q], { transA: 1 }, { name: 'gemm_const_A' }),
  ];
  for (const o of outs) b.output(o);
  return b.build();
}

describe('collectStats: Gemm / MatMul', () => {
  it('XᵀX from ORT equals a direct computation for every orientation', async () => {
    const proto = matrixModel();
    const model = new Model(proto);
    const calib = randomCalibration(await inputsOf(proto), { samples: 3, seed: 7 });
    if (!calib.ok) throw calib.error;
    const progress: number[][] = [];
    const got = await run(model, calib.value, { onProgress: (d, t) => progress.push([d, t]) });
    expect(got.unavailable).toEqual(new Map());
    expect(got.samples).toBe(3);
    expect(progress[progress.length - 1]).toEqual([1 + got.passes * 3, 1 + got.passes * 3]);

    const want: Record<string, Float64Array> = {};
    const add = (name: string, g: Float64Array) => { want[name] = want[name] ? want[name]!.map((v, i) => v + g[i]!) : g; };
    for (const f of calib.value.feeds()) {
      const num = (n: string) => toNumbers(f[n]!);
      add('mm_right_3d', naiveRowsGram(relu(num('x')), 10, 6));
      add('gemm_transA', naiveColsGram(num('z'), 7, 3));
      const sv = sigmoid(num('v'));
      add('mm_left', naiveColsGram(sv, 6, 5, 30, naiveColsGram(sv, 6, 5, 0)));
      add('gemm_transB', naiveRowsGram(num('h'), 3, 6));
      add('gemm_const_A', naiveColsGram(num('q'), 3, 5));
    }
    const expectations: [string, number, number][] = [
      ['mm_right_3d', 6, 30], ['gemm_transA', 7, 9], ['mm_left', 6, 30], ['gemm_transB', 6, 9], ['gemm_const_A', 3, 15],
    ];
    for (const [name, dim, count] of expectations) {
      const st = get(got, name);
      expect(st).toMatchObject({ kind: 'matrix', dim, groups: 1, count });
      expect(maxRelDiff(st.gram, want[name]!)).toBeLessThan(1e-6);
    }
    // The mean is Σx / count: for the direct input h, the column means of the feeds' rows.
    const h = [...calib.value.feeds()].flatMap((f) => Array.from(toNumbers(f.h!)));
    for (let c = 0; c < 6; c++) expect(get(got, 'gemm_transB').mean[c]).toBeCloseTo(h.filter((_, i) => i % 6 === c).reduce((a, b) => a + b, 0) / 9, 6);
    // Two layers reading the same tensor the same way share one object.
    expect(get(got, 'mm_right_shared')).toBe(get(got, 'mm_right_3d'));
    expect(get(got, 'mm_right_3d').input).toBe('relu_out0');
  });

  it('a tiny memory budget splits the layers into passes with identical results', async () => {
    const proto = matrixModel();
    const model = new Model(proto);
    const calib = randomCalibration(await inputsOf(proto), { samples: 2 });
    if (!calib.ok) throw calib.error;
    const one = await run(model, calib.value);
    const many = await run(model, calib.value, { maxBytesPerRun: 1 });
    expect(one.passes).toBe(1);
    expect(many.passes).toBe(2); // relu_out0 and sigmoid_out0; graph inputs come from the feeds
    expect(many.runs).toBe(1 + 2 * 2);
    expect([...many.stats.keys()].sort()).toEqual([...one.stats.keys()].sort());
    for (const [name, st] of one.stats) expect(many.stats.get(name)).toEqual(st);
    expect(groupByBudget([{ name: 'a', bytes: 5 }, { name: 'b', bytes: 5 }, { name: 'c', bytes: 20 }, { name: 'd', bytes: 1 }], 10)).toEqual([['a', 'b'], ['c'], ['d']]);
  });

  it('models with external data; NaN activations make a layer unavailable', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-calib-ext-'));
    const file = path.join(dir, 'm.onnx');
    saveModel(matrixModel(), file, { externalData: { threshold: 16 } });
    const loaded = loadModel(file);
    try {
      expect(loaded.model.graph!.initializer.filter(isExternal).length).toBe(6);
      const model = new Model(loaded.model);
      const calib = randomCalibration(await inputsOf(matrixModel()), { samples: 1 });
      if (!calib.ok) throw calib.error;
      const plain = await run(new Model(matrixModel()), calib.value);
      const ext = await collectStats(model, findLayers(model), calib.value, { external: loaded.external });
      if (!ext.ok) throw ext.error;
      expect(ext.value.stats.get('mm_left')).toEqual(plain.stats.get('mm_left'));
    } finally {
      loaded.external.close();
    }

    const b = new ModelBuilder({ opset: 13 });
    const lg = b.node('Log', [b.input('x', [4, 3])], {}, { name: 'log' });
    b.output(b.node('MatMul', [lg, b.init('w', [3, 2], seededArray(6, 1))], {}, { name: 'mm' }));
    const proto = b.build();
    const calib = randomCalibration(await inputsOf(proto), { samples: 1 });
    if (!calib.ok) throw calib.error;
    const got = await run(new Model(proto), calib.value);
    expect(got.unavailable.get('mm')).toBe('its input activations have NaN or Inf');
  });

  it('layers inside subgraphs are unavailable, with the reason', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 4]);
    b.init('w', [4, 4], seededArray(16, 1));
    const y = b.node('MatMul', [x, 'w'], {}, { name: 'mm' });
    const cond = b.input('cond', [], 9);
    const body = newGraph({ name: 'then', node: [newNode({ opType: 'MatMul', name: 'inner', input: [y, 'w'], output: ['t_out'] })], output: [{ name: 't_out', metadataProps: [] }] });
    const els = newGraph({ name: 'else', node: [newNode({ opType: 'Identity', name: 'e', input: [y], output: ['e_out'] })], output: [{ name: 'e_out', metadataProps: [] }] });
    b.output(b.node('If', [cond], { then_branch: body, else_branch: els }, { name: 'if' }));
    const proto = b.build();
    const model = new Model(proto);
    const calib = randomCalibration(await inputsOf(proto), { samples: 2 });
    if (!calib.ok) throw calib.error;
    const got = await run(model, calib.value);
    expect([...got.stats.keys()]).toEqual(['mm']);
    expect(get(got, 'mm').count).toBe(2);
    expect(got.unavailable.get('inner')).toMatch(/inside a subgraph/);
    expect(planLayer(model, findLayers(model)[1]!)).toMatch(/subgraph/);
  });
});

describe('collectStats: Conv', () => {
  // [name, weight dims, attrs, explicit pads the test resolves by hand, reads relu?]
  const convs: { name: string; w: number[]; attrs: Record<string, number | number[] | string>; pads: number[]; fromRelu: boolean }[] = [
    { name: 'grouped', w: [6, 2, 3, 2], attrs: { group: 2, strides: [2, 1], pads: [1, 0, 2, 1], dilations: [1, 2] }, pads: [1, 0, 2, 1], fromRelu: true },
    // SAME_LOWER, stride 2 on 9x8: outputs 5x4, total pads 2 and 1, the odd one first.
    { name: 'same_lower', w: [5, 4, 3, 3], attrs: { auto_pad: 'SAME_LOWER', strides: [2, 2] }, pads: [1, 1, 1, 0], fromRelu: false },
    // Depthwise, SAME_UPPER, stride 2 (ORT refuses dilations with SAME): the odd pad at the end.
    { name: 'depthwise', w: [4, 1, 3, 3], attrs: { group: 4, auto_pad: 'SAME_UPPER', strides: [2, 2] }, pads: [1, 0, 1, 1], fromRelu: true },
    { name: 'pointwise', w: [3, 4, 1, 1], attrs: {}, pads: [0, 0, 0, 0], fromRelu: true },
  ];
  const dims = [2, 4, 9, 8];

  function convModel(): ModelProto {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', dims);
    const r = b.node('Relu', [x], {}, { name: 'relu' });
    for (const c of convs) {
      const wt = b.init(`${c.name}_w`, c.w, seededArray(c.w.reduce((a, v) => a * v, 1), c.w.length + c.w[0]!));
      b.output(b.node('Conv', [c.fromRelu ? r : x, wt], c.attrs, { name: c.name }));
    }
    return b.build();
  }

  it('channel and im2col patch covariances equal a naive computation, and Σ y·yᵀ = W·G·Wᵀ in ORT', async () => {
    const proto = convModel();
    const model = new Model(proto);
    const calib = randomCalibration(await inputsOf(proto), { samples: 2, seed: 1 });
    if (!calib.ok) throw calib.error;
    const got = await run(model, calib.value);
    expect(got.unavailable).toEqual(new Map());
    const feeds: Feeds[] = [...calib.value.feeds()];
    const s = await createSession({ bytes: encodeModel(proto) }, { graphOptimizationLevel: 'disabled' });
    if (!s.ok) throw s.error;
    try {
      for (const c of convs) {
        const st = get(got, c.name);
        const groups = Number(c.attrs.group ?? 1);
        const sg = 4 / groups;
        const K = c.w[2]! * c.w[3]!;
        const D = sg * K;
        const geo: NaiveConv = { dims, kernel: c.w.slice(2), strides: (c.attrs.strides as number[]) ?? [1, 1], dilations: (c.attrs.dilations as number[]) ?? [1, 1], pads: c.pads, groups };
        expect(st).toMatchObject({ kind: 'conv', dim: sg, groups, count: 2 * 2 * 72, input: c.fromRelu ? 'relu_out0' : 'x' });
        expect(st.patchGram !== undefined).toBe(K > 1);
        const chan = new Float64Array(groups * sg * sg);
        const patches: number[][][] = Array.from({ length: groups }, () => []);
        const yy = new Float64Array(c.w[0]! / groups * (c.w[0]! / groups) * groups);
        for (const f of feeds) {
          const xin = c.fromRelu ? relu(toNumbers(f.x!)) : toNumbers(f.x!);
          for (let n = 0; n < 2; n++) for (let g = 0; g < groups; g++) {
            const blk = new Float64Array(sg * sg);
            naiveColsGram(xin, sg, 72, (n * 4 + g * sg) * 72, blk);
            for (let i = 0; i < sg * sg; i++) chan[g * sg * sg + i] += blk[i]!;
          }
          for (let g = 0; g < groups; g++) patches[g]!.push(...naivePatches(xin, geo, g));
          // The conv's own output, from ORT.
          const out = await s.value.run(f);
          if (!out.ok) throw out.error;
          const y = out.value[`${c.name}_out0`]!;
          const tg = c.w[0]! / groups;
          const pos = y.dims.slice(2).reduce((a, v) => a * v, 1);
          for (let n = 0; n < 2; n++) for (let g = 0; g < groups; g++) {
            const blk = new Float64Array(tg * tg);
            naiveColsGram(toNumbers(y), tg, pos, (n * c.w[0]! + g * tg) * pos, blk);
            for (let i = 0; i < tg * tg; i++) yy[g * tg * tg + i] += blk[i]!;
          }
        }
        expect(maxRelDiff(st.gram, chan)).toBeLessThan(1e-6);
        if (!st.patchGram) continue;
        expect(st.patchDim).toBe(D);
        expect(st.patchCount).toBe(patches[0]!.length);
        const wdata = seededArray(c.w.reduce((a, v) => a * v, 1), c.w.length + c.w[0]!);
        const tg = c.w[0]! / groups;
        for (let g = 0; g < groups; g++) {
          const G = st.patchGram.subarray(g * D * D, (g + 1) * D * D);
          expect(maxRelDiff(G, gramOf(patches[g]!, D))).toBeLessThan(1e-6);
          // W_g G W_gᵀ: the conv sees exactly these patches.
          const wg = wdata.subarray(g * tg * D, (g + 1) * tg * D);
          const wgw = new Float64Array(tg * tg);
          for (let a = 0; a < tg; a++) for (let bb = 0; bb < tg; bb++) {
            let acc = 0;
            for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) acc += wg[a * D + i]! * G[i * D + j]! * wg[bb * D + j]!;
            wgw[a * tg + bb] = acc;
          }
          expect(maxRelDiff(wgw, yy.subarray(g * tg * tg, (g + 1) * tg * tg))).toBeLessThan(1e-5);
        }
      }
    } finally {
      await s.value.release();
    }
  });

  it('maxPatchDim 0 skips patches; a tiny budget gives the same statistics', async () => {
    const proto = convModel();
    const model = new Model(proto);
    const calib = randomCalibration(await inputsOf(proto), { samples: 1 });
    if (!calib.ok) throw calib.error;
    const base = await run(model, calib.value);
    const split = await run(model, calib.value, { maxBytesPerRun: 1, maxPatchDim: 0 });
    expect(split.passes).toBe(1); // only relu_out0 is exposed
    for (const [name, st] of base.stats) {
      const other = split.stats.get(name)!;
      expect(other.patchGram).toBeUndefined();
      expect(other.gram).toEqual(st.gram);
    }
  });
});

describe('collectStats: learned shapes stand for the probe run', () => {
  it('at the dims they were learned at: one run fewer and the same statistics; at other dims, the probe runs', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [2, 4, 9, 8]);
    const r = b.node('Relu', [x], {}, { name: 'relu' });
    b.output(b.node('Conv', [r, b.init('w', [5, 4, 3, 3], seededArray(180, 3))], { pads: [1, 1, 1, 1] }, { name: 'conv' }));
    const proto = b.build();
    const model = new Model(proto);
    const calib = randomCalibration(await inputsOf(proto), { samples: 2 });
    if (!calib.ok) throw calib.error;
    const relu = model.root.proto.node.find((n) => n.name === 'relu')!.output[0]!;
    const conv = model.root.proto.node.find((n) => n.name === 'conv')!.output[0]!;
    const learned = new Map<string, number[]>([['x', [2, 4, 9, 8]], [relu, [2, 4, 9, 8]], [conv, [2, 5, 9, 8]]]);
    const base = await run(model, calib.value);
    const known = await run(model, calib.value, { knownShapes: learned });
    expect(known.runs).toBe(base.runs - 1);
    expect(known.stats.get('conv')!.patchGram).toEqual(base.stats.get('conv')!.patchGram);
    expect(known.stats.get('conv')!.gram).toEqual(base.stats.get('conv')!.gram);
    // Learned at another input size: not used.
    const other = await run(model, calib.value, { knownShapes: new Map([...learned, ['x', [1, 4, 9, 8]]]) });
    expect(other.runs).toBe(base.runs);
  });
});

describe('collectStats: real model', () => {
  it('PP-OCR rec: images resized to 48x160 give statistics for every main-graph layer', async () => {
    const loaded = loadModel(REAL.rec);
    try {
      const model = new Model(loaded.model);
      const layers = findLayers(model);
      const s = await createSession({ path: REAL.rec });
      if (!s.ok) throw s.error;
      const inputs = s.value.inputs;
      await s.value.release();
      const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-rec-calib-'));
      for (let k = 0; k < 2; k++) {
        const p = new pngjs.PNG({ width: 100, height: 30 });
        const noise = seededArray(100 * 30 * 4, k + 1);
        for (let i = 0; i < noise.length; i++) p.data[i] = Math.round((noise[i]! + 1) * 127.5);
        writeFileSync(path.join(dir, `line${k}.png`), pngjs.PNG.sync.write(p));
      }
      const calib = loadCalibration(dir, { inputs, shapes: { x: [1, 3, 48, 160] }, mean: [0.5], std: [0.5] });
      if (!calib.ok) throw calib.error;
      expect(describeCalibration(calib.value)).toBe(`2 samples from images in ${dir} (resize 48x160, mean 0.5,0.5,0.5, std 0.5,0.5,0.5, nchw); 1 run of up to 2`);
      expect(calib.value.batches).toBe(1);
      const got = await run(model, calib.value);
      expect(got.unavailable).toEqual(new Map());
      expect(got.stats.size).toBe(layers.length);
      expect(got.passes).toBe(1);
      // The first transformer MatMul reads [2, 20, 120]: 40 rows of 120.
      expect(get(got, 'p2o.MatMul.0')).toMatchObject({ kind: 'matrix', dim: 120, count: 40 });
      // The 1x3 conv over 960 channels: patches of 960·3, at 1x20 positions per image.
      expect(get(got, 'p2o.Conv.36')).toMatchObject({ kind: 'conv', dim: 960, groups: 1, patchDim: 2880, patchCount: 40 });
      // Depthwise 5x5: 240 groups of 25-entry patches.
      expect(get(got, 'p2o.Conv.13')).toMatchObject({ groups: 240, dim: 1, patchDim: 25 });
      // The first conv reads the graph input: its channel means are the images' (x − 0.5)/0.5 means.
      const first = get(got, 'p2o.Conv.0');
      const x = [...calib.value.feeds()][0]!.x!;
      const xs = toNumbers(x);
      let m0 = 0;
      for (let n = 0; n < 2; n++) for (let p = 0; p < 48 * 160; p++) m0 += xs[n * 3 * 48 * 160 + p]!;
      expect(first.mean[0]).toBeCloseTo(m0 / (2 * 48 * 160), 6);
      for (const st of got.stats.values()) {
        expect(st.count).toBeGreaterThan(0);
        for (let i = 0; i < st.dim; i++) expect(st.gram[i * st.dim + i]!).toBeGreaterThanOrEqual(0);
      }
    } finally {
      loaded.external.close();
    }
  });
});
