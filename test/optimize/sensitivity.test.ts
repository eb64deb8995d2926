import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { floatTensor, ModelBuilder } from '../../models/builder.js';
import { tensorAttr } from '../../src/graph/attrs.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { newGraph, newNode, type NodeProto } from '../../src/onnx/schema.js';
import { makeFloatTensor } from '../../src/onnx/tensor.js';
import type { Graph } from '../../src/graph/graph.js';
import type { LayerInfo } from '../../src/graph/layers.js';
import type { PassContext } from '../../src/rewrite/pass.js';
import type { RankPolicy } from '../../src/rewrite/rank-policy.js';
import { measureSensitivity, type LayerSensitivity, type PredictedCandidate } from '../../src/optimize/sensitivity.js';
import { outputErr2, runAll } from '../../src/optimize/output-error.js';
import { captureModel, downstreamOf, subModel } from '../../src/optimize/submodel.js';
import { passFor } from '../../src/optimize/driver.js';
import { isSkip } from '../../src/rewrite/pass.js';
import type { LayerRewrite } from '../../src/rewrite/pass.js';

type AnyPass = LayerRewrite<unknown>;
import { createRng } from '../../src/util/rng.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';
import { REAL } from '../helpers/models.js';
import { ok } from '../../src/errors.js';
import type { ChainsTimer } from '../../src/optimize/layer-latency.js';

/** A weight of low numerical rank (so several ladder ranks pay) plus some noise. */
function lowRank(rows: number, cols: number, seed: number): number[] {
  const rng = createRng(seed);
  const r = 4;
  const a = Array.from({ length: rows * r }, () => rng.normal());
  const b = Array.from({ length: r * cols }, () => rng.normal());
  return Array.from({ length: rows * cols }, (_, k) => {
    const i = Math.floor(k / cols), j = k % cols;
    let s = 0;
    for (let t = 0; t < r; t++) s += a[i * r + t]! * b[t * cols + j]! / (t + 1);
    return s + 0.2 * rng.normal();
  });
}

/**
 * x → mm0 → Relu = r; mm1(r) · Constant + r (a skip connection); an If whose then-branch
 * holds a layer and reads r from outside; mm2 → out1. out2 = Sigmoid(mm0) does not
 * depend on mm1.
 */
function skipModel(): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [2, 16]);
  const cond = b.input('cond', [], 9);
  const h = b.node('MatMul', [x, b.init('w0', [16, 32], lowRank(16, 32, 1))], {}, { name: 'mm0' });
  const r = b.node('Relu', [h], {}, { name: 'relu' });
  const c = b.node('Constant', [], { value: tensorAttr('value', floatTensor('', [32], lowRank(1, 32, 2))) }, { name: 'cst' });
  const a = b.node('MatMul', [r, b.init('w1', [32, 32], lowRank(32, 32, 3))], {}, { name: 'mm1' });
  const y = b.node('Add', [b.node('Mul', [a, c], {}, { name: 'scale' }), r], {}, { name: 'skip' });
  b.init('w3', [32, 32], lowRank(32, 32, 4));
  const then = newGraph({
    name: 'then',
    node: [
      newNode({ opType: 'MatMul', name: 'inner', input: [y, 'w3'], output: ['t0'] }),
      newNode({ opType: 'Add', name: 'inner_skip', input: ['t0', r], output: ['t1'] }),
    ],
    output: [{ name: 't1', metadataProps: [] }],
  });
  const els = newGraph({ name: 'else', node: [newNode({ opType: 'Identity', name: 'e', input: [y], output: ['e0'] })], output: [{ name: 'e0', metadataProps: [] }] });
  const z = b.node('If', [cond], { then_branch: then, else_branch: els }, { name: 'if' });
  const out1 = b.node('MatMul', [z, b.init('w2', [32, 8], lowRank(32, 8, 5))], {}, { name: 'mm2' });
  b.output(b.node('Identity', [out1], {}, { name: 'o1' }));
  b.output(b.node('Sigmoid', [h], {}, { name: 'o2' }));
  return encodeModel(b.build());
}

function floatFeed(dims: number[], seed: number): HostTensor {
  const rng = createRng(seed);
  return { type: 'float32', dims, data: Float32Array.from({ length: dims.reduce((p, q) => p * q, 1) }, () => rng.normal()) };
}

/** Sensitivity of the named layers measured both ways on fresh copies of the model. */
async function bothWays(
  bytes: Uint8Array, names: readonly string[] | undefined, feeds: Feeds[], maxCandidates = 4, events?: string[],
): Promise<[LayerSensitivity[], LayerSensitivity[]]> {
  const ref = await runAll({ bytes }, feeds);
  if (!ref.ok) throw ref.error;
  const measure = async (wholeModel: boolean): Promise<LayerSensitivity[]> => {
    const model = new Model(decodeModel(bytes));
    for (const g of model.allGraphs()) g.topoSort();
    const layers = findLayers(model).filter((l) => !names || names.includes(l.name));
    const cx = { model, rng: createRng(7), shared: new Map() };
    const onProgress = (done: number, total: number, what: string): void => { events?.push(`${done}/${total} ${what}`); };
    // Every rung run: the two ways are compared measurement by measurement.
    return measureSensitivity(model, layers, { method: 'auto', feeds, reference: ref.value, cx, maxCandidates, wholeModel, onProgress, allRungs: true });
  };
  return [await measure(true), await measure(false)];
}

/** Largest relative difference of outErr2 between the two measurements (same layers, same candidates). */
function maxRelDiff(slow: LayerSensitivity[], fast: LayerSensitivity[]): number {
  expect(fast.map((l) => [l.name, l.candidates.map((c) => c.ranks.join('x'))])).toEqual(slow.map((l) => [l.name, l.candidates.map((c) => c.ranks.join('x'))]));
  let worst = 0;
  slow.forEach((l, i) => l.candidates.forEach((c, k) => {
    const f = fast[i]!.candidates[k]!;
    expect(f.relError).toBe(c.relError);
    worst = Math.max(worst, Math.abs(f.outErr2 - c.outErr2) / Math.max(c.outErr2, 1e-30));
  }));
  return worst;
}

describe('downstream parts', () => {
  it('finds what the part after a layer reads: the skip tensor, Constant nodes, outer references of an If', () => {
    const model = new Model(decodeModel(skipModel()));
    const g = model.root;
    const mm1 = g.nodes.find((n) => n.name === 'mm1')!;
    const part = downstreamOf(g, mm1);
    expect([...part.nodes].map((n) => n.name).sort()).toEqual(['if', 'mm1', 'mm2', 'o1', 'scale', 'skip']);
    // Relu's output is read by mm1, by the skip Add and from inside the If.
    expect(part.boundary).toEqual(['relu_out0']);
    expect([...part.constants].map((n) => n.name)).toEqual(['cst']);
    expect(part.outputs).toEqual(['o1_out0']);
  });

  it('runs a rewritten layer\'s part on captured tensors exactly as the whole rewritten model', async () => {
    const model = new Model(decodeModel(skipModel()));
    const g = model.root;
    const layer = findLayers(model).find((l) => l.name === 'mm1')!;
    const part = downstreamOf(g, layer.node);
    const feeds: Feeds[] = [{ x: floatFeed([2, 16], 1), cond: { type: 'bool', dims: [], data: Uint8Array.of(1) } }];
    const captured = await runAll({ bytes: encodeModel(captureModel(model.proto, part.boundary)) }, feeds);
    if (!captured.ok) throw captured.error;
    const before = new Set(g.nodes);
    const cx = { model, rng: createRng(7), shared: new Map() };
    const pass = passFor(layer, 'auto') as AnyPass;
    const m = pass.match(layer, cx);
    expect(isSkip(m)).toBe(false);
    expect(isSkip(pass.apply(m, [3], cx))).toBe(false);
    const sm = subModel(model.proto, g, part, before, feeds, captured.value);
    if (typeof sm === 'string') throw new Error(sm);
    const kept = sm.model.graph!.node.filter((n) => before.has(n)).map((n) => n.name);
    expect(kept).toEqual(['cst', 'scale', 'skip', 'if', 'mm2', 'o1']);
    expect(sm.model.graph!.input.map((i) => i.name).sort()).toEqual(['cond', 'relu_out0']);
    expect(sm.model.graph!.output.map((o) => o.name)).toEqual(['o1_out0']);
    const whole = await runAll({ bytes: encodeModel(model.proto) }, feeds);
    const cut = await runAll({ bytes: encodeModel(sm.model) }, sm.feeds);
    if (!whole.ok || !cut.ok) throw new Error('run failed');
    expect(cut.value[0]!.o1_out0!.data).toEqual(whole.value[0]!.o1_out0!.data);
    // Without the captured skip tensor the part cannot be cut out (the caller runs the whole model).
    expect(subModel(model.proto, g, part, before, feeds, [{}])).toMatch(/relu_out0/);
  });
});

describe('sensitivity: the downstream part against the whole model', () => {
  it('a synthetic model with a skip connection, a Constant node and a layer inside If', async () => {
    const feeds: Feeds[] = [1, 2].map((s) => ({ x: floatFeed([2, 16], s), cond: { type: 'bool', dims: [], data: Uint8Array.of(1) } }));
    const events: string[] = [];
    const [slow, fast] = await bothWays(skipModel(), undefined, feeds, 4, events);
    expect(slow.map((l) => l.name).sort()).toEqual(['inner', 'mm0', 'mm1', 'mm2']);
    for (const l of slow) expect(l.candidates.length).toBeGreaterThan(0);
    // Progress names each candidate as it is tried (a large layer's trials take minutes).
    slow.forEach((l, i) => {
      for (const c of l.candidates) expect(events).toContain(`${i}/${slow.length} ${l.name} at rank ${c.ranks.join('x')}`);
    });
    expect(maxRelDiff(slow, fast)).toBeLessThanOrEqual(1e-6);
  });

  it('PP-OCRv4 recogniser: convs (SVD and Tucker-2) and a MatMul of the transformer agree', async () => {
    const names = ['p2o.Conv.12', 'p2o.Conv.33', 'p2o.MatMul.20'];
    const [slow, fast] = await bothWays(new Uint8Array(readFileSync(REAL.rec)), names, [{ x: floatFeed([1, 3, 48, 96], 3) }], 2);
    expect(slow.map((l) => l.name)).toEqual(names);
    for (const l of slow) expect(l.candidates.length).toBe(2);
    expect(maxRelDiff(slow, fast)).toBeLessThanOrEqual(1e-6);
  }, 120_000);
});

describe('outputErr2', () => {
  it('the worst output\'s squared difference over its energy, each summed over the feeds', () => {
    const t = (type: 'float32' | 'int64', v: number[]): HostTensor =>
      type === 'int64' ? { type, dims: [v.length], data: BigInt64Array.from(v.map(BigInt)) } : { type, dims: [v.length], data: Float32Array.from(v) };
    const ref = [{ a: t('float32', [3, 4]), b: t('int64', [0, 2]) }];
    // a: 1/25, b: 1/4; pooled it would read 2/29 and hide b's error.
    expect(outputErr2(ref, [{ a: t('float32', [3, 5]), b: t('int64', [0, 1]) }])).toBeCloseTo(1 / 4, 12);
    expect(outputErr2(ref, [{ a: t('float32', [3, 5]), b: t('int64', [0, 2]) }])).toBeCloseTo(1 / 25, 12);
    // Two feeds: sums over both before the ratio.
    const ref2 = [{ a: t('float32', [3, 4]) }, { a: t('float32', [0, 5]) }];
    expect(outputErr2(ref2, [{ a: t('float32', [3, 4]) }, { a: t('float32', [0, 3]) }])).toBeCloseTo(4 / 50, 12);
    expect(outputErr2(ref, [{ a: t('float32', [3, NaN]), b: t('int64', [0, 2]) }])).toBe(Infinity);
    expect(outputErr2([{ a: t('float32', [0]) }], [{ a: t('float32', [0]) }])).toBe(0);
  });
});

describe('per-layer latency in sensitivity', () => {
  /**
   * A stand-in pass whose chain is cheap at rank 1 and r full products at rank r ≥ 2
   * (r times the layer's work): rank 2 is slower, and ranks 3 and 4, larger in
   * every rank, must then be passed over without being applied.
   */
  function slowChainPass(applied: number[]): AnyPass {
    const n = 256;
    return {
      name: 'slow-chain', method: 'svd', ops: ['MatMul'],
      match: (layer: LayerInfo) => ({ layer, node: layer.node, graph: layer.graph }),
      chooseRanks: (_m: unknown, p: RankPolicy) => [p.kind === 'energy' ? (p.energy < 0.6 ? 1 : p.energy < 0.75 ? 2 : p.energy < 0.85 ? 3 : 4) : 1],
      cost: (_m: unknown, r: readonly number[]) => ({ before: { params: n * n, macsPerPosition: n * n }, after: { params: r[0]!, macsPerPosition: r[0]! } }),
      rankLimits: () => [n],
      apply: (m: { node: NodeProto; graph: Graph }, ranks: readonly number[], cx: PassContext) => {
        const r = ranks[0]!;
        applied.push(r);
        const rng = createRng(r);
        const w = (name: string, dims: number[]): string => {
          const t = cx.model.uniqueName(name);
          m.graph.addInitializer(makeFloatTensor(t, dims, Float32Array.from({ length: dims[0]! * dims[1]! }, () => rng.normal() / 16)));
          return t;
        };
        const x = m.node.input[0]!;
        const y = m.node.output[0]!;
        const nodes: NodeProto[] = [];
        const steps = r === 1 ? [[n, 1], [1, n]] : Array.from({ length: r }, () => [n, n]);
        let cur = x;
        steps.forEach((dims, k) => {
          const out = k === steps.length - 1 ? y : cx.model.uniqueName(`z${k}`);
          nodes.push(newNode({ opType: 'MatMul', name: cx.model.uniqueName(`c${k}`), input: [cur, w('f', dims)], output: [out] }));
          cur = out;
        });
        m.graph.replaceNode(m.node, nodes);
        return { relError: 0.1, nodes: nodes.map((q) => q.name!) };
      },
    };
  }

  /**
   * Stands in for ORT's timing of a layer and its chain (timeRewrite): milliseconds in
   * proportion to the MACs of the MatMuls on a 256-row input, so which candidate is slower
   * does not depend on the machine's load (ORT's own timings are tested in layer-latency).
   */
  /** Times a layer and its chains by their MACs (256 rows through each MatMul), not in ORT. */
  const macsClock: ChainsTimer = async (_model, layer, chains) => {
    const ms = (nodes: readonly NodeProto[], inits: readonly { name?: string; dims: (number | bigint)[] }[]): number =>
      nodes.reduce((a, n) => a + 256 * inits.find((t) => t.name === n.input[1])!.dims.map(Number).reduce((p, q) => p * q, 1), 0) / 1e6;
    return ok({ originalMs: ms([layer.node], layer.graph.proto.initializer), candidateMs: chains.map((c) => ms(c.graph!.node, c.graph!.initializer)) });
  };

  /** A model of 256×256 MatMuls on input x, its reference outputs on one seeded feed, its layers, and every activation's shape. */
  async function matmulSetup(b: ModelBuilder) {
    const bytes = encodeModel(b.build());
    const feeds: Feeds[] = [{ x: floatFeed([256, 256], 1) }];
    const ref = await runAll({ bytes }, feeds);
    if (!ref.ok) throw ref.error;
    const model = new Model(decodeModel(bytes));
    const layers = findLayers(model);
    const shapes = new Map([['x', [256, 256]], ...layers.map((l) => [l.node.output[0]!, [256, 256]] as [string, number[]])]);
    return { feeds, ref, model, layers, shapes };
  }

  it('a chain of the same pass, ranks and layer shape is timed once: two identical layers, one timing per rank', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [256, 256]);
    const w = lowRank(256, 256, 12);
    const h = b.node('MatMul', [x, b.init('W1', [256, 256], w)], {}, { name: 'mm1' });
    b.output(b.node('MatMul', [h, b.init('W2', [256, 256], w)], {}, { name: 'mm2' }));
    const { feeds, ref, model, layers, shapes } = await matmulSetup(b);
    const timedFor: string[] = [];
    const time: ChainsTimer = (m, layer, chains, ...rest) => { timedFor.push(...chains.map(() => layer.name)); return macsClock(m, layer, chains, ...rest); };
    const sens = await measureSensitivity(model, layers, {
      method: 'auto', feeds, reference: ref.value, cx: { model, rng: createRng(1), shared: new Map() }, maxCandidates: 4, latency: { threads: 1, shapes, time },
    });
    const [s1, s2] = sens;
    expect(s1!.candidates.length).toBeGreaterThan(1);
    expect(s2!.candidates.map((c) => c.ranks)).toEqual(s1!.candidates.map((c) => c.ranks));
    // Every candidate of both layers carries its chain's time, but only mm1's were timed.
    expect(timedFor).toEqual(s1!.candidates.map(() => 'mm1'));
    expect(s2!.candidates.map((c) => c.ms)).toEqual(s1!.candidates.map((c) => c.ms));
    expect(s2!.ms).toBe(s1!.ms);
  });

  it('a layer and all its candidate chains are timed together once; a candidate measured slower is dropped', async () => {
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [256, 256]);
    b.output(b.node('MatMul', [x, b.init('W', [256, 256], lowRank(256, 256, 9))], {}, { name: 'mm' }));
    const { feeds, ref, model, layers, shapes } = await matmulSetup(b);
    const applied: number[] = [];
    const pass = slowChainPass(applied);
    const calls: number[] = [];
    const time: ChainsTimer = (m, layer, chains, ...rest) => { calls.push(chains.length); return macsClock(m, layer, chains, ...rest); };
    const [s] = await measureSensitivity(model, layers, {
      method: 'auto', feeds, reference: ref.value, cx: { model, rng: createRng(1), shared: new Map() },
      maxCandidates: 4, latency: { threads: 1, shapes, time }, passFor: () => pass,
    });
    // Ranks 1 to 4 were each factorized once and timed in one call; rank 1 (2·256² MACs
    // per row block) ran faster than the layer, ranks 2 to 4 (r·256³) slower.
    expect(calls).toEqual([4]);
    // Rank 1 is not among the rungs run first (the middle and the most accurate); with the
    // others dropped nothing anchors its prediction, so it is applied again and run.
    expect(applied).toEqual([1, 2, 3, 4, 1]);
    expect(s!.candidates.map((c) => c.ranks)).toEqual([[1]]);
    expect((s!.candidates[0] as PredictedCandidate).measured).toBe(true);
    expect(s!.ms).toBeCloseTo(256 ** 3 / 1e6, 9);
    expect(s!.candidates[0]!.ms).toBeCloseTo(2 * 256 * 256 / 1e6, 9);
    // The graph is as it was.
    expect(model.root.proto.node.map((q) => q.name)).toEqual(['mm']);
  });
});
