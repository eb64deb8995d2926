/**
 * Anchored sequential fitting (src/optimize/anchored.ts) in ORT: a synthetic two-layer
 * model whose second layer's fit is checked against the optimum computed here from the
 * stacked activations, conv chains (SVD pair, Tucker-2, CP) on a small conv net, and the
 * real PP-OCRv4 models at equal ranks with and without anchoring.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { collectStats } from '../../src/calib/stats.js';
import type { CalibSet } from '../../src/calib/load.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { gemm } from '../../src/linalg/gemm.js';
import type { Matrix } from '../../src/linalg/matrix.js';
import { createOrtGemmEngine } from '../../src/linalg/ort-gemm.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { readTensorFloat } from '../../src/onnx/tensor.js';
import { anchoredShrinkage } from '../../src/calib/anchor-shrink.js';
import { optimizeAnchored, anchorWaves, maxWavesFor, DEFAULT_MAX_WAVES, WAVE_MACS, type AnchorInputs } from '../../src/optimize/anchored.js';
import { optimizeModel, type OptimizeOptions } from '../../src/optimize/driver.js';
import type { PlanFile } from '../../src/optimize/plan.js';
import { captureModel } from '../../src/optimize/submodel.js';
import { ANCHOR_DAMP } from '../../src/rewrite/svd-pair.js';
import { createRng } from '../../src/util/rng.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';
import { REAL } from '../helpers/models.js';
import { reducedRankLs } from '../linalg/helpers.js';

function feedsOf(name: string, dims: number[], n: number, seed: number, shift = 0): Feeds[] {
  const r = createRng(seed);
  const size = dims.reduce((a, b) => a * b, 1);
  return Array.from({ length: n }, () => ({ [name]: { type: 'float32', dims, data: Float32Array.from({ length: size }, () => r.normal() + shift) } as HostTensor }));
}

const calibSet = (feeds: Feeds[]): CalibSet => ({
  source: { kind: 'random', seed: 0 }, samples: feeds.length, batches: feeds.length, batchSize: 1, calibrated: [], fixed: [], random: [], notes: [],
  *feeds() { yield* feeds; },
});

async function run(bytes: Uint8Array, feeds: Feeds[], names?: string[]): Promise<Record<string, Float32Array>[]> {
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1 });
  try {
    const out: Record<string, Float32Array>[] = [];
    for (const f of feeds) {
      const r = await s.run(Object.fromEntries(Object.entries(f).map(([k, t]) => [k, new ort.Tensor('float32', t.data as Float32Array, t.dims)])), names ?? s.outputNames);
      out.push(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v.data as Float32Array])));
    }
    return out;
  } finally {
    await s.release();
  }
}

/** Relative L2 of b against a over every feed, one output. */
function relErr(a: Record<string, Float32Array>[], b: Record<string, Float32Array>[], out: string): number {
  let num = 0;
  let den = 0;
  a.forEach((x, i) => x[out]!.forEach((v, j) => { num += (v - b[i]![out]![j]!) ** 2; den += v * v; }));
  return Math.sqrt(num / den);
}

/** Fits with and without anchoring at the same decisions; both models and their records. */
async function bothWays(bytes: Uint8Array, feeds: Feeds[], opts: OptimizeOptions, shapes?: Map<string, number[]>, inp: Partial<AnchorInputs> = {}) {
  const m0 = new Model(decodeModel(bytes));
  const st = await collectStats(m0, findLayers(m0, shapes), calibSet(feeds));
  if (!st.ok) throw st.error;
  const ctx = { stats: st.value.stats };
  const mi = new Model(decodeModel(bytes));
  const indep = optimizeModel(mi, shapes, opts, opts.plan, ctx);
  const ma = new Model(decodeModel(bytes));
  const anch = await optimizeAnchored(ma, shapes, opts, { ...inp, feeds }, opts.plan, ctx);
  return { indep: { records: indep, bytes: encodeModel(mi.proto) }, anch: { ...anch, bytes: encodeModel(ma.proto) } };
}

/** A plan that fixes pass and ranks per layer. */
function planOf(layers: [string, string, number[]][]): PlanFile {
  return {
    version: 1, model: '', policy: 'test',
    layers: layers.map(([name, pass, ranks]) => ({ name, pass, ranks, op: '', weightShape: [], where: 'initializer', paramsBefore: 0, paramsAfter: 0, ms: 0 })),
  };
}

const toMatrix = (rows: number, cols: number, data: ArrayLike<number>): Matrix => ({ rows, cols, data: Float64Array.from(data) });


describe('anchored fitting: two MatMul layers with a nonlinearity between them', () => {
  const ROWS = 24;
  const D0 = 16;
  const D1 = 20;
  const OUT = 12;
  const rng = createRng(31);
  const w1 = Float32Array.from({ length: D0 * D1 }, () => rng.normal() / Math.sqrt(D0));
  const w2 = Float32Array.from({ length: D1 * OUT }, () => rng.normal());
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, ROWS, D0]);
  const h = b.node('Tanh', [b.node('MatMul', [x, b.init('w1', [D0, D1], w1)], {}, { name: 'mm1' })], {}, { name: 'act' });
  b.output(b.node('MatMul', [h, b.init('w2', [D1, OUT], w2)], {}, { name: 'mm2' }));
  const bytes = encodeModel(b.build());
  const out = 'mm2_out0';
  // Correlated inputs with a mean: what layer 1 keeps tells something about what it drops.
  const mix = Float64Array.from({ length: D0 * D0 }, () => rng.normal());
  const correlated = (f: Feeds[]): Feeds[] => f.map((feed) => {
    const z = feed.x!.data as Float32Array;
    const y = new Float32Array(z.length);
    for (let r = 0; r < ROWS; r++) for (let j = 0; j < D0; j++) {
      let v = 0.5;
      for (let i = 0; i < D0; i++) v += z[r * D0 + i]! * mix[i * D0 + j]! * 0.6 ** i;
      y[r * D0 + j] = v;
    }
    return { x: { ...feed.x!, data: y } };
  });
  const calib = correlated(feedsOf('x', [1, ROWS, D0], 40, 1));
  const held = correlated(feedsOf('x', [1, ROWS, D0], 6, 2));

  it('the second layer is the reduced-rank least-squares optimum on the stacked activations, and beats the independent fit on held-out inputs', async () => {
    const plan = planOf([['mm1', 'matmul-svd', [3]], ['mm2', 'matmul-svd', [4]]]);
    const { indep, anch } = await bothWays(bytes, calib, { method: 'auto', policy: { kind: 'fixed', rank: 3 }, minParams: 0, seed: 0, plan });
    // Same decisions: same layers, passes and ranks.
    expect(anch.records.map((r) => [r.name, r.pass, r.ranks, r.skipped])).toEqual(indep.records.map((r) => [r.name, r.pass, r.ranks, r.skipped]));
    expect(anch.records.filter((r) => !r.skipped).map((r) => r.name)).toEqual(['mm1', 'mm2']);
    expect(anch.notes[0]).toMatch(/^anchored fitting: 2 layer\(s\) fitted to the original model's outputs in 2 wave\(s\)/);

    // The other route: layer 2's input in the original (H) and in the compressed model (Ĥ),
    // stacked over the calibration feeds. The fit is shrunk toward the original's inputs
    // (calib/anchor-shrink.ts: weight α = n / (n + κ·D1) on Ĥ, 1 − α on H), so it is
    // min α‖H·W2 − Ĥ·W'‖² + (1 − α)‖H·W2 − H·W'‖² + n·δ‖W2 − W'‖² at rank 4, as plain least
    // squares on [√α·Ĥ; √(1−α)·H; √(nδ)·I] (δ = λ·mean diag of the mixed Gram / n, the fit's
    // damping). (A MatMul with no bias Add after it fits second moments: no centering.)
    const hName = 'act_out0';
    const hOrig = await run(encodeModel(captureModel(decodeModel(bytes), [hName])), calib, [hName]);
    const hComp = await run(encodeModel(captureModel(decodeModel(anch.bytes), [hName])), calib, [hName]);
    const n = calib.length * ROWS;
    const alpha = anchoredShrinkage(n, D1);
    expect(alpha).toBeGreaterThan(0.5);
    expect(alpha).toBeLessThan(0.95);
    const stackOf = (hs: Record<string, Float32Array>[]): Matrix => toMatrix(n, D1, hs.flatMap((r) => Array.from(r[hName]!)));
    const hm = stackOf(hOrig);
    const hh = stackOf(hComp);
    const W2 = toMatrix(D1, OUT, w2);
    let tr = 0;
    for (let i = 0; i < n * D1; i++) tr += alpha * hh.data[i]! ** 2 + (1 - alpha) * hm.data[i]! ** 2;
    const a = Math.sqrt(n * ((ANCHOR_DAMP * tr) / n / D1));
    const A: Matrix = { rows: 2 * n + D1, cols: D1, data: new Float64Array((2 * n + D1) * D1) };
    A.data.set(hh.data.map((v) => Math.sqrt(alpha) * v));
    A.data.set(hm.data.map((v) => Math.sqrt(1 - alpha) * v), n * D1);
    for (let i = 0; i < D1; i++) A.data[(2 * n + i) * D1 + i] = a;
    const target = gemm(hm, W2);
    const T: Matrix = { rows: 2 * n + D1, cols: OUT, data: new Float64Array((2 * n + D1) * OUT) };
    T.data.set(target.data.map((v) => Math.sqrt(alpha) * v));
    T.data.set(target.data.map((v) => Math.sqrt(1 - alpha) * v), n * OUT);
    for (let i = 0; i < D1 * OUT; i++) T.data[2 * n * OUT + i] = a * W2.data[i]!;
    const optimum = reducedRankLs(A, T, 4);
    // The anchored model's layer 2: L·R from its factor initializers.
    const g = decodeModel(anch.bytes).graph!;
    const node = g.node.find((nd) => nd.name === 'mm2/lr_b')!;
    const init = (nm: string) => g.initializer.find((t) => t.name === nm)!;
    const first = g.node.find((nd) => nd.name === 'mm2/lr_a')!;
    const L = toMatrix(D1, 4, readTensorFloat(init(first.input[1]!)));
    const R = toMatrix(4, OUT, readTensorFloat(init(node.input[1]!)));
    const fitted = gemm(L, R);
    let num = 0;
    let den = 0;
    for (let i = 0; i < fitted.data.length; i++) { num += (fitted.data[i]! - optimum.data[i]!) ** 2; den += optimum.data[i]! ** 2; }
    expect(Math.sqrt(num / den)).toBeLessThan(1e-4);

    // Measured in ORT on held-out inputs: anchoring lowers the model's output error (0.404
    // against 0.420 here: what layer 1 drops is mostly lost, layer 2 can only undo the rest).
    const ref = await run(bytes, held);
    const eIndep = relErr(ref, await run(indep.bytes, held), out);
    const eAnch = relErr(ref, await run(anch.bytes, held), out);
    expect(eAnch).toBeLessThan(0.98 * eIndep);
  });

  it('waves: a layer waits for the rewritten layers upstream of its input', () => {
    const m = new Model(decodeModel(bytes));
    const layers = findLayers(m);
    const waves = anchorWaves(m, layers);
    expect(layers.map((l) => [l.name, waves.get(l)])).toEqual([['mm1', 1], ['mm2', 2]]);
    // Without mm1 among the rewritten layers, mm2 has nothing upstream to wait for.
    const only2 = anchorWaves(m, layers.filter((l) => l.name === 'mm2'));
    expect([...only2.values()]).toEqual([1]);
    // Capped at one wave, both share the first pass (mm2 is then fitted to the original's inputs).
    expect([...anchorWaves(m, layers, 1).values()]).toEqual([1, 1]);
    expect([...anchorWaves(m, layers, 2).values()]).toEqual([1, 2]);
  });
});

describe('how many waves', () => {
  it('a model whose runs are cheap gets a wave per layer depth; a costly one (or one of unknown MACs) is merged to DEFAULT_MAX_WAVES', async () => {
    expect(maxWavesFor(undefined, 3)).toBe(DEFAULT_MAX_WAVES);
    // ISNet: about 1.6e11 MACs per 1024² photo, three photos.
    expect(maxWavesFor(1.6e11, 3)).toBe(DEFAULT_MAX_WAVES);
    expect(maxWavesFor(1e6, 8)).toBe(Math.floor(WAVE_MACS / (2 * 1e6 * 8)));
    // A chain of 12 small MatMul layers: 12 waves, each layer fitted to what the ones before it feed it.
    const D = 8;
    const rng = createRng(12);
    const b = new ModelBuilder({ opset: 13 });
    let h = b.input('x', [6, D]);
    const names: string[] = [];
    for (let i = 0; i < 12; i++) {
      names.push(`mm${i}`);
      h = b.node('Tanh', [b.node('MatMul', [h, b.init(`w${i}`, [D, D], Float32Array.from({ length: D * D }, () => rng.normal() / Math.sqrt(D)))], {}, { name: `mm${i}` })]);
    }
    b.output(h);
    const bytes = encodeModel(b.build());
    const plan = planOf(names.map((n) => [n, 'matmul-svd', [3]]));
    const opts: OptimizeOptions = { method: 'auto', policy: { kind: 'fixed', rank: 3 }, minParams: 0, seed: 0, plan };
    const feeds = feedsOf('x', [6, D], 4, 3);
    // Every value is [6, D], as the CLI would learn them (graph/layer-shapes.ts): the layers' MACs are known.
    const shapes = new Map(decodeModel(bytes).graph!.node.flatMap((n) => [...n.input, ...n.output]).map((v) => [v, [6, D]]));
    const { anch } = await bothWays(bytes, feeds, opts, shapes);
    expect(anch.waves).toBe(12);
    expect(anch.notes.join('\n')).toMatch(/12 layer\(s\) fitted to the original model's outputs in 12 wave\(s\)/);
    const capped = await bothWays(bytes, feeds, opts, shapes, { maxWaves: DEFAULT_MAX_WAVES });
    expect(capped.anch.waves).toBe(DEFAULT_MAX_WAVES);
    // Without shapes the MACs are unknown: merged.
    expect((await bothWays(bytes, feeds, opts)).anch.waves).toBe(DEFAULT_MAX_WAVES);
  });
});

describe('anchored conv chains (SVD pair of 1x1 convs, Tucker-2, CP) on a small conv net', () => {
  const S = 8;
  const HW = 10;
  const rng = createRng(77);
  const randw = (n: number, fan: number) => Float32Array.from({ length: n }, () => rng.normal() / Math.sqrt(fan));
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, S, HW, HW]);
  const c1 = b.node('Relu', [b.node('Conv', [x, b.init('w1', [16, S, 3, 3], randw(16 * S * 9, S * 9)), b.init('b1', [16], randw(16, 4))], { pads: [1, 1, 1, 1] }, { name: 'conv1' })]);
  const c2 = b.node('Relu', [b.node('Conv', [c1, b.init('w2', [16, 16, 1, 1], randw(256, 16))], {}, { name: 'pw' })]);
  b.output(b.node('Conv', [c2, b.init('w3', [12, 16, 3, 3], randw(12 * 16 * 9, 16 * 9)), b.init('b3', [12], randw(12, 4))], { pads: [1, 1, 1, 1] }, { name: 'conv3' }));
  const bytes = encodeModel(b.build());
  const calib = feedsOf('x', [1, S, HW, HW], 10, 3, 0.3);
  const held = feedsOf('x', [1, S, HW, HW], 4, 4, 0.3);

  for (const method of ['tucker2', 'cp'] as const) {
    it(`${method}: lower held-out error in ORT than the independent fit at the same ranks, every layer anchored`, async () => {
      const pass = method === 'cp' ? 'conv-cp' : 'conv-tucker2';
      const k = method === 'cp' ? [6] : [4, 4];
      const plan = planOf([['conv1', pass, k], ['pw', 'conv1x1-svd', [4]], ['conv3', pass, k]]);
      const { indep, anch } = await bothWays(bytes, calib, { method: 'auto', policy: { kind: 'fixed', rank: 4 }, minParams: 0, seed: 0, plan });
      const kept = (r: typeof indep.records) => r.filter((l) => !l.skipped).map((l) => [l.name, l.pass, l.ranks]);
      expect(kept(anch.records)).toEqual(kept(indep.records));
      expect(kept(anch.records).map((l) => l[1])).toEqual([method === 'cp' ? 'conv-cp' : 'conv-tucker2', 'conv1x1-svd', method === 'cp' ? 'conv-cp' : 'conv-tucker2']);
      expect(anch.notes.join('\n')).not.toMatch(/fitted independently/);
      expect(anch.records.filter((l) => !l.skipped).every((l) => l.dataError !== undefined)).toBe(true);
      // Each chain says it was fitted anchored; the 1x1 pair (no bias before) got one for the mean error.
      const g = decodeModel(anch.bytes).graph!;
      expect(g.node.filter((nd) => /anchored/.test(nd.docString ?? '')).length).toBe(method === 'tucker2' ? 3 * 2 + 2 : 2 + 3 * 2);
      expect(g.node.find((nd) => nd.name === 'pw/lr_b')!.input[2]).toMatch(/lr_bias/);
      const ref = await run(bytes, held);
      const eIndep = relErr(ref, await run(indep.bytes, held), 'conv3_out0');
      const eAnch = relErr(ref, await run(anch.bytes, held), 'conv3_out0');
      expect(eAnch).toBeLessThan(0.9 * eIndep);
    });
  }
});

describe('the probe: only the last wave anchored', () => {
  const S = 8;
  const rng = createRng(78);
  const randw = (n: number, fan: number) => Float32Array.from({ length: n }, () => rng.normal() / Math.sqrt(fan));
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, S, 6, 6]);
  const c1 = b.node('Relu', [b.node('Conv', [x, b.init('w1', [16, S, 3, 3], randw(16 * S * 9, S * 9))], { pads: [1, 1, 1, 1] }, { name: 'conv1' })]);
  const c2 = b.node('Relu', [b.node('Conv', [c1, b.init('w2', [16, 16, 1, 1], randw(256, 16))], {}, { name: 'pw' })]);
  b.output(b.node('Conv', [c2, b.init('w3', [12, 16, 3, 3], randw(12 * 16 * 9, 16 * 9))], { pads: [1, 1, 1, 1] }, { name: 'conv3' }));
  const bytes = encodeModel(b.build());

  it('earlier waves are the independent fit byte for byte, the last wave is fitted anchored, and the note says so', async () => {
    const plan = planOf([['conv1', 'conv-tucker2', [4, 4]], ['pw', 'conv1x1-svd', [4]], ['conv3', 'conv-tucker2', [4, 4]]]);
    const opts: OptimizeOptions = { method: 'auto', policy: { kind: 'fixed', rank: 4 }, minParams: 0, seed: 0, plan };
    const { indep, anch } = await bothWays(bytes, feedsOf('x', [1, S, 6, 6], 6, 3, 0.3), opts, undefined, { lastWaveOnly: true });
    expect(anch.waves).toBe(3);
    const [gi, ga] = [decodeModel(indep.bytes).graph!, decodeModel(anch.bytes).graph!];
    const weightsOf = (g: typeof gi, prefix: string) => g.initializer.filter((t) => t.name!.startsWith(prefix)).map((t) => [t.name, [...readTensorFloat(t)]]);
    for (const name of ['conv1', 'pw']) {
      expect(weightsOf(ga, name).length).toBeGreaterThan(0);
      expect(weightsOf(ga, name)).toEqual(weightsOf(gi, name));
    }
    expect(weightsOf(ga, 'conv3')).not.toEqual(weightsOf(gi, 'conv3'));
    expect(ga.node.filter((nd) => /anchored/.test(nd.docString ?? '')).every((nd) => nd.name!.startsWith('conv3'))).toBe(true);
    expect(ga.node.some((nd) => /anchored/.test(nd.docString ?? ''))).toBe(true);
    expect(anch.notes).toEqual([expect.stringMatching(/^anchored fitting \(probe\): the last of 3 wave\(s\), 1 layer\(s\), fitted anchored, the other 2 independently/)]);
  });

  it('without anchoring, fits through the activation: one run of the original, every layer not refitted is the independent fit byte for byte', async () => {
    const plan = planOf([['conv1', 'conv-tucker2', [4, 4]], ['pw', 'conv1x1-svd', [4]], ['conv3', 'conv-tucker2', [4, 4]]]);
    const opts: OptimizeOptions = { method: 'auto', policy: { kind: 'fixed', rank: 4 }, minParams: 0, seed: 0, plan };
    const { indep, anch } = await bothWays(bytes, feedsOf('x', [1, S, 6, 6], 8, 3, 0.3), opts, undefined, { independent: true, throughActivations: true });
    const [gi, ga] = [decodeModel(indep.bytes).graph!, decodeModel(anch.bytes).graph!];
    const weightsOf = (g: typeof gi, prefix: string) => g.initializer.filter((t) => t.name!.startsWith(prefix)).map((t) => [t.name, [...readTensorFloat(t)]]);
    // conv3 is a graph output (no activation after it); conv1 and pw feed a Relu alone.
    expect(weightsOf(ga, 'conv3').length).toBeGreaterThan(0);
    expect(weightsOf(ga, 'conv3')).toEqual(weightsOf(gi, 'conv3'));
    const refitted = anch.records.filter((r) => /fitted through the Relu/.test(r.note ?? '')).map((r) => r.name);
    expect(refitted).toEqual(['conv1', 'pw']);
    for (const name of refitted) expect(weightsOf(ga, name)).not.toEqual(weightsOf(gi, name));
    expect(anch.records.map((r) => r.ranks)).toEqual(indep.records.map((r) => r.ranks));
    expect(ga.node.some((nd) => /anchored/.test(nd.docString ?? '') && !refitted.some((n) => nd.name!.startsWith(n)))).toBe(false);
    expect(anch.notes).toEqual([expect.stringMatching(new RegExp(`^fits through the activation: 2 of 2 conv\\(s\\) read by a Relu/Clip alone refitted through it .*\\(patch samples of the original model on 8 calibration feed\\(s\\)\\)$`))]);
  });
});

describe('anchored fitting on the real PP-OCRv4 models, at equal ranks (held-out inputs, ORT)', () => {
  /** Independent vs anchored at the same decisions; output rel. L2 on held-out and on calibration feeds. */
  async function measure(file: string, dims: number[], opts: OptimizeOptions, nCalib: number, judged?: string) {
    const bytes = new Uint8Array(readFileSync(file));
    const calib = feedsOf('x', dims, nCalib, 5);
    const held = feedsOf('x', dims, 3, 77);
    const shapes = new Map([['x', dims]]);
    const engine = createOrtGemmEngine();
    try {
      const m0 = new Model(decodeModel(bytes));
      const layers = findLayers(m0, shapes).filter((l) => l.params >= opts.minParams);
      const st = await collectStats(m0, layers, calibSet(calib), { engine });
      if (!st.ok) throw st.error;
      const ctx = { stats: st.value.stats };
      const mi = new Model(decodeModel(bytes));
      const indep = optimizeModel(mi, shapes, opts, opts.plan, ctx);
      const ma = new Model(decodeModel(bytes));
      const anch = await optimizeAnchored(ma, shapes, opts, { feeds: calib, engine }, opts.plan, ctx);
      expect(anch.records.map((r) => [r.name, r.pass, r.ranks, r.skipped])).toEqual(indep.map((r) => [r.name, r.pass, r.ranks, r.skipped]));
      // `judged`: a tensor to judge instead of the first output (exposed as an output of every model).
      const exposed = (m: Uint8Array): Uint8Array => (judged ? encodeModel(captureModel(decodeModel(m), [judged])) : m);
      const [bo, bi, ba] = [exposed(bytes), exposed(encodeModel(mi.proto)), exposed(encodeModel(ma.proto))];
      const out = judged ?? decodeModel(bytes).graph!.output[0]!.name!;
      const [refH, refC] = [await run(bo, held, [out]), await run(bo, calib, [out])];
      const e = {
        heldIndep: relErr(refH, await run(bi, held, [out]), out), heldAnch: relErr(refH, await run(ba, held, [out]), out),
        calibIndep: relErr(refC, await run(bi, calib, [out]), out), calibAnch: relErr(refC, await run(ba, calib, [out]), out),
      };
      // The figures the report quotes.
      console.log(`${path.basename(file)} ${JSON.stringify(e)} held-out ratio ${(e.heldAnch / e.heldIndep).toFixed(3)}, calibration ratio ${(e.calibAnch / e.calibIndep).toFixed(3)}; ${anch.notes.join(' | ')}`);
      return e;
    } finally {
      await engine.dispose();
    }
  }

  it('rec, every layer at rank ratio 0.5: anchoring lowers the held-out output error', { timeout: 600_000 }, async () => {
    const e = await measure(REAL.rec, [1, 3, 48, 160], { method: 'auto', policy: { kind: 'ratio', ratio: 0.5 }, minParams: 0, seed: 0 }, 8);
    // 0.840 and 0.928 here. The calibration ratio was 0.85 before the fits were shrunk by
    // rows per dimension (calib/anchor-shrink.ts): the shrinkage gives up fit on the
    // calibration feeds, where the compensation follows their own errors.
    expect(e.heldAnch).toBeLessThan(0.9 * e.heldIndep);
    expect(e.calibAnch).toBeLessThan(e.calibIndep);
  });

  it('det, its 10 heaviest layers at rank ratio 0.8: anchoring lowers the output error', { timeout: 600_000 }, async () => {
    // Judged on the logits (the Sigmoid's input): on inputs without text the probability map
    // is ~1e-8 everywhere, and its relative error says nothing (independent fits gave 1.0).
    const e = await measure(REAL.det, [1, 3, 320, 320], { method: 'auto', policy: { kind: 'ratio', ratio: 0.8 }, minParams: 0, seed: 0, heaviest: 10 }, 4, 'p2o.Add.281');
    // 0.924 held out and 0.722 on the calibration feeds here: a gain, far from issue 18's 0.7×.
    expect(e.heldAnch).toBeLessThan(0.97 * e.heldIndep);
    expect(e.calibAnch).toBeLessThan(0.8 * e.calibIndep);
  });
});
