/**
 * rnn-input-svd: LSTM / GRU / RNN input weights W [dirs, G·H, I] through rank r, a
 * MatMul(X, P [I, r]) before the op and W' [dirs, G·H, r]. Exact-rank weights match in ORT
 * (every output) across direction, layout, sequence_lens, initial states, peepholes,
 * linear_before_reset, activations and clip; structured weights lose exactly the discarded
 * energy; declines say why; layers.ts lists the ops with their MACs.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { ModelBuilder, type AttrValue } from '../../models/builder.js';
import { intAttr, stringAttr } from '../../src/graph/attrs.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers, type LayerInfo } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { AttributeType, DataType, newAttribute, type ModelProto } from '../../src/onnx/schema.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { planLayer } from '../../src/calib/stats-plan.js';
import { encodeNpy } from '../../src/io/npy.js';
import { isSkip, type PassContext } from '../../src/rewrite/pass.js';
import { route } from '../../src/rewrite/registry.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { RNN_GATES, rnnInputSvd } from '../../passes/rnn-input-svd.js';
import { PASSES } from '../../passes/dispatch.js';
import { lowRank, relL2 } from '../helpers/ort.js';

type Op = 'LSTM' | 'GRU' | 'RNN';

interface RnnCase {
  op: Op;
  direction: 'forward' | 'reverse' | 'bidirectional';
  layout: 0 | 1;
  seqLens: boolean;
  initial: boolean;
  peepholes: boolean;
  linearBeforeReset: boolean;
  /** Non-default activations (with alpha/beta where the function takes them) and clip. */
  custom: boolean;
  bias: boolean;
  seed: number;
}

const randn = (rng: Rng, n: number, s = 1): Float32Array => Float32Array.from({ length: n }, () => s * rng.normal());
const strings = (name: string, v: string[]): AttrValue => newAttribute({ name, type: AttributeType.STRINGS, strings: v.map((x) => new TextEncoder().encode(x)) });
const floats = (name: string, v: number[]): AttrValue => newAttribute({ name, type: AttributeType.FLOATS, floats: v });

interface Built { bytes: Uint8Array; feeds: Record<string, ort.Tensor>; dims: { seq: number; batch: number; I: number; H: number; dirs: number } }

/** One recurrent op with W = `w` (or an exact rank-r W), every optional input the case names, every output a graph output. */
function rnnModel(c: RnnCase, opts: { I?: number; H?: number; r?: number; w?: Float32Array } = {}): Built {
  const rng = createRng(c.seed);
  const G = RNN_GATES[c.op]!;
  const dirs = c.direction === 'bidirectional' ? 2 : 1;
  const I = opts.I ?? 10 + rng.int(8);
  const H = opts.H ?? 3 + rng.int(4);
  const seq = 2 + rng.int(4);
  const batch = 1 + rng.int(3);
  const r = opts.r ?? 1 + rng.int(Math.min(I, dirs * G * H) - 1);
  const b = new ModelBuilder({ opset: 14 });
  const xDims = c.layout === 0 ? [seq, batch, I] : [batch, seq, I];
  const x = b.input('x', xDims);
  const w = opts.w ?? lowRank(dirs * G * H, I, r, c.seed + 1).map((v) => v * 0.3);
  const inputs = [x, b.init('w', [dirs, G * H, I], w), b.init('r', [dirs, G * H, H], randn(rng, dirs * G * H * H, 0.3))];
  const feeds: Record<string, ort.Tensor> = { x: new ort.Tensor('float32', randn(rng, seq * batch * I), xDims) };
  const hasInitC = c.op === 'LSTM' && c.initial;
  const hasP = c.op === 'LSTM' && c.peepholes;
  // Optional inputs are positional: an absent one before a present one is the empty name.
  const wantB = c.bias || c.seqLens || c.initial || hasP;
  if (wantB) inputs.push(c.bias ? b.init('b', [dirs, 2 * G * H], randn(rng, dirs * 2 * G * H, 0.3)) : '');
  if (c.seqLens || c.initial || hasP) {
    if (c.seqLens) {
      inputs.push(b.input('lens', [batch], DataType.INT32));
      feeds.lens = new ort.Tensor('int32', Int32Array.from({ length: batch }, () => 1 + rng.int(seq)), [batch]);
    } else inputs.push('');
  }
  const hDims = c.layout === 0 ? [dirs, batch, H] : [batch, dirs, H];
  if (c.initial || hasP) {
    if (c.initial) {
      inputs.push(b.input('h0', hDims));
      feeds.h0 = new ort.Tensor('float32', randn(rng, dirs * batch * H), hDims);
    } else inputs.push('');
  }
  if (c.op === 'LSTM' && (hasInitC || hasP)) {
    if (hasInitC) {
      inputs.push(b.input('c0', hDims));
      feeds.c0 = new ort.Tensor('float32', randn(rng, dirs * batch * H), hDims);
    } else inputs.push('');
  }
  if (hasP) inputs.push(b.init('p', [dirs, 3 * H], randn(rng, dirs * 3 * H, 0.3)));
  const attrs: Record<string, AttrValue> = { hidden_size: H, direction: c.direction };
  if (c.layout === 1) attrs.layout = 1;
  if (c.op === 'GRU' && c.linearBeforeReset) attrs.linear_before_reset = 1;
  if (c.custom) {
    // Per direction: LSTM f, g, h; GRU f, g; RNN f. Functions with parameters take them in order.
    const per: Record<Op, [string[], number[], number[]]> = {
      LSTM: [['HardSigmoid', 'Tanh', 'LeakyRelu'], [0.3, 0.05], [0.4]],
      GRU: [['HardSigmoid', 'Softsign'], [0.25], [0.5]],
      RNN: [['LeakyRelu'], [0.1], []],
    };
    const [acts, alpha, beta] = per[c.op];
    const rep = <T>(xs: T[]): T[] => (dirs === 2 ? [...xs, ...xs] : xs);
    attrs.activations = strings('activations', rep(acts));
    attrs.activation_alpha = floats('activation_alpha', rep(alpha));
    if (beta.length > 0) attrs.activation_beta = floats('activation_beta', rep(beta));
    attrs.clip = { float: 2.5 };
  }
  const outs = b.nodeMulti(c.op, inputs, attrs, { name: 'rnn', outputs: c.op === 'LSTM' ? 3 : 2 });
  for (const o of outs) b.output(o);
  return { bytes: encodeModel(b.build()), feeds, dims: { seq, batch, I, H, dirs } };
}

const cxOf = (model: Model): PassContext => ({ model, rng: createRng(0), shared: new Map() });
const rnnLayer = (model: Model): LayerInfo => {
  const ls = findLayers(model).filter((l) => l.op in RNN_GATES);
  if (ls.length !== 1) throw new Error(`expected one recurrent layer, found ${ls.length}`);
  return ls[0]!;
};

function rewrite(bytes: Uint8Array, r: number): { proto: ModelProto; relError: number } {
  const model = new Model(decodeModel(bytes));
  const cx = cxOf(model);
  const m = rnnInputSvd.match(rnnLayer(model), cx);
  if (isSkip(m)) throw new Error(m.skip);
  const a = rnnInputSvd.apply(m, [r], cx);
  if (isSkip(a)) throw new Error(a.skip);
  model.root.removeUnusedInitializers();
  return { proto: model.proto, relError: a.relError };
}

/**
 * ORT's CPU kernels refuse layout 1 ("Batchwise recurrent operations (layout == 1) are not
 * supported"), so a layout-1 model runs as its layout-0 equivalent: Transposes bring X and
 * the initial states to [seq, batch, …] / [dirs, batch, H] right before the op and its
 * outputs back to [batch, seq, dirs, H] / [batch, dirs, H]; everything before the op (the
 * rewrite's MatMul on X [batch, seq, I]) stays in layout-1 shapes.
 */
function asLayout0(bytes: Uint8Array): Uint8Array {
  const p = decodeModel(bytes);
  const g = p.graph!;
  const at = g.node.findIndex((n) => n.opType! in RNN_GATES);
  const n = g.node[at]!;
  const layout = n.attribute.find((a) => a.name === 'layout');
  if (!layout || Number(layout.i) === 0) return bytes;
  n.attribute = n.attribute.filter((a) => a !== layout);
  const b = new ModelBuilder();
  const before: typeof g.node = [];
  const after: typeof g.node = [];
  const transpose = (into: typeof g.node, from: string, to: string, perm: number[]): void => {
    b.graph.node.length = 0;
    b.node('Transpose', [from], { perm }, { name: `${to}/t` });
    const t = b.graph.node[0]!;
    t.output = [to];
    into.push(t);
  };
  for (const i of [0, 5, 6]) {
    const v = n.input[i];
    if (!v) continue;
    transpose(before, v, `${v}/l0`, [1, 0, 2]);
    n.input[i] = `${v}/l0`;
  }
  n.output.forEach((v, i) => {
    if (!v) return;
    n.output[i] = `${v}/l0`;
    transpose(after, `${v}/l0`, v, i === 0 ? [2, 0, 1, 3] : [1, 0, 2]);
  });
  g.node.splice(at, 1, ...before, n, ...after);
  return encodeModel(p);
}

async function runAll(model: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<{ name: string; data: Float32Array; dims: readonly number[] }[]> {
  const bytes = asLayout0(model);
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1 });
  try {
    const out = await s.run(feeds);
    return s.outputNames.map((k) => ({ name: k, data: out[k]!.data as Float32Array, dims: out[k]!.dims }));
  } finally {
    await s.release();
  }
}

const caseArb = fc.record({
  op: fc.constantFrom<Op>('LSTM', 'GRU', 'RNN'),
  direction: fc.constantFrom<RnnCase['direction']>('forward', 'reverse', 'bidirectional'),
  layout: fc.constantFrom<0 | 1>(0, 1),
  seqLens: fc.boolean(),
  initial: fc.boolean(),
  peepholes: fc.boolean(),
  linearBeforeReset: fc.boolean(),
  custom: fc.boolean(),
  bias: fc.boolean(),
  seed: fc.integer({ min: 0, max: 1_000_000 }),
});

describe('rnn-input-svd', () => {
  it('exact rank: MatMul(X, P) → op(W\') matches every output in ORT across direction, layout, sequence_lens, initial states, peepholes, linear_before_reset, activations and clip', async () => {
    const seen = new Set<string>();
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const G = RNN_GATES[c.op]!;
        const rng = createRng(c.seed + 7);
        const dirs = c.direction === 'bidirectional' ? 2 : 1;
        const H = 3 + rng.int(4);
        const I = 10 + rng.int(8);
        const r = 1 + rng.int(Math.min(I, dirs * G * H) - 1);
        const m = rnnModel(c, { I, H, r });
        const { proto, relError } = rewrite(m.bytes, r);
        const what = JSON.stringify(c);
        expect(relError, what).toBeLessThan(1e-5);
        const nodes = proto.graph!.node;
        expect(nodes.map((n) => n.opType)).toEqual(['MatMul', c.op]);
        const dims = new Map(proto.graph!.initializer.map((t) => [t.name, t.dims]));
        expect(dims.get(nodes[0]!.input[1]!)).toEqual([I, r]);
        expect(dims.get(nodes[1]!.input[1]!)).toEqual([dirs, G * H, r]);
        // Only X and W change: every other input and every attribute is the original's.
        const orig = decodeModel(m.bytes).graph!.node[0]!;
        expect(nodes[1]!.input.slice(2)).toEqual(orig.input.slice(2));
        expect(nodes[1]!.input[0]).toBe(nodes[0]!.output[0]);
        expect(nodes[1]!.attribute).toEqual(orig.attribute);
        expect(nodes[1]!.output).toEqual(orig.output);
        const a = await runAll(m.bytes, m.feeds);
        const b = await runAll(encodeModel(proto), m.feeds);
        for (let i = 0; i < a.length; i++) {
          expect(b[i]!.dims, `${what} ${a[i]!.name}`).toEqual(a[i]!.dims);
          expect(relL2(a[i]!.data, b[i]!.data), `${what} ${a[i]!.name}`).toBeLessThan(1e-4);
        }
        seen.add(`${c.op}|${c.direction}|${c.layout}`);
        runs++;
      }),
      { seed: 20, numRuns: 90 },
    );
    expect(runs).toBe(90);
    // Every op met every direction and both layouts.
    expect(seen.size).toBe(18);
  });

  it('bidirectional: one projection shared by both directions, of the stacked weights\' SVD (exact when their joint rank is r)', () => {
    const c: RnnCase = { op: 'LSTM', direction: 'bidirectional', layout: 0, seqLens: false, initial: false, peepholes: false, linearBeforeReset: false, custom: false, bias: true, seed: 4 };
    // Each direction of rank 2, with different row spaces: jointly rank 4.
    const I = 12;
    const H = 3;
    const w = new Float32Array([...lowRank(12, I, 2, 1), ...lowRank(12, I, 2, 2)]);
    const m = rnnModel(c, { I, H, w });
    expect(rewrite(m.bytes, 4).relError).toBeLessThan(1e-5);
    expect(rewrite(m.bytes, 2).relError).toBeGreaterThan(0.1);
    expect(rewrite(m.bytes, 4).proto.graph!.node.filter((n) => n.opType === 'MatMul')).toHaveLength(1);
  });

  it('structured weights: the weight error is the discarded energy of the stacked SVD, and the output error follows it', async () => {
    const c: RnnCase = { op: 'GRU', direction: 'bidirectional', layout: 0, seqLens: false, initial: true, peepholes: false, linearBeforeReset: true, custom: false, bias: true, seed: 9 };
    const rng = createRng(11);
    const I = 16;
    const H = 5;
    const rows = 2 * 3 * H;
    // W = Q₁·diag(σ)·Q₂ᵀ with orthonormal Q₁ [rows, I], Q₂ [I, I]: a known spectrum.
    const sigma = Array.from({ length: I }, (_, k) => 0.8 * 0.7 ** k);
    const ortho = (n: number, k: number): Float64Array[] => {
      const cols: Float64Array[] = [];
      while (cols.length < k) {
        const v = Float64Array.from({ length: n }, () => rng.normal());
        for (const q of cols) { let d = 0; for (let i = 0; i < n; i++) d += v[i]! * q[i]!; for (let i = 0; i < n; i++) v[i] -= d * q[i]!; }
        const norm = Math.hypot(...v);
        cols.push(v.map((x) => x / norm));
      }
      return cols;
    };
    const q1 = ortho(rows, I);
    const q2 = ortho(I, I);
    const w = new Float32Array(rows * I);
    sigma.forEach((s, k) => { for (let i = 0; i < rows; i++) for (let j = 0; j < I; j++) w[i * I + j] += s * q1[k]![i]! * q2[k]![j]!; });
    const m = rnnModel(c, { I, H, w });
    const base = await runAll(m.bytes, m.feeds);
    let prevOut = Infinity;
    for (const r of [3, 6, 10]) {
      const discarded = Math.sqrt(sigma.slice(r).reduce((s, x) => s + x * x, 0) / sigma.reduce((s, x) => s + x * x, 0));
      const { proto, relError } = rewrite(m.bytes, r);
      expect(relError / discarded).toBeCloseTo(1, 3);
      const out = await runAll(encodeModel(proto), m.feeds);
      const err = relL2(base[0]!.data, out[0]!.data);
      // The output error shrinks with the discarded energy (the gates are contractive: it stays below it).
      expect(err).toBeLessThan(prevOut);
      expect(err).toBeLessThan(discarded);
      prevOut = err;
    }
  });

  it('declines with reasons: inconsistent directions, wrong hidden_size, constant X, non-float W', () => {
    const base: RnnCase = { op: 'LSTM', direction: 'forward', layout: 0, seqLens: false, initial: false, peepholes: false, linearBeforeReset: false, custom: false, bias: false, seed: 1 };
    const layerOf = (bytes: Uint8Array): { layer: LayerInfo; cx: PassContext } => {
      const model = new Model(decodeModel(bytes));
      return { layer: rnnLayer(model), cx: cxOf(model) };
    };
    const withAttr = (bytes: Uint8Array, name: string, v: number | string): Uint8Array => {
      const p = decodeModel(bytes);
      const n = p.graph!.node[0]!;
      n.attribute = [...n.attribute.filter((x) => x.name !== name), typeof v === 'number' ? intAttr(name, v) : stringAttr(name, v)];
      return encodeModel(p);
    };
    const m = rnnModel(base, { I: 8, H: 4, r: 2 });
    const dirs = layerOf(withAttr(m.bytes, 'direction', 'bidirectional'));
    expect(rnnInputSvd.match(dirs.layer, dirs.cx)).toEqual({ skip: 'W has 1 direction(s) but direction is bidirectional' });
    expect(route(PASSES, dirs.layer, 'svd')).toBe('--method svd W has 1 direction(s) but direction is bidirectional');
    const hid = layerOf(withAttr(m.bytes, 'hidden_size', 5));
    expect(rnnInputSvd.match(hid.layer, hid.cx)).toEqual({ skip: 'W has 16 rows per direction, not 4·hidden_size 5' });
    // X from a constant.
    const p = decodeModel(m.bytes);
    p.graph!.initializer.push({ ...p.graph!.initializer[0]!, name: 'xc', dims: [2, 1, 8], rawData: new Uint8Array(new Float32Array(16).buffer) });
    p.graph!.node[0]!.input[0] = 'xc';
    const cx = layerOf(encodeModel(p));
    expect(rnnInputSvd.match(cx.layer, cx.cx)).toEqual({ skip: 'X is a constant: nothing to project' });
    const d = decodeModel(m.bytes);
    const wt = d.graph!.initializer.find((t) => t.name === 'w')!;
    wt.dataType = DataType.INT32;
    const ints = layerOf(encodeModel(d));
    expect(rnnInputSvd.match(ints.layer, ints.cx)).toEqual({ skip: `weight type ${DataType.INT32} is not floating point` });
    expect(route(PASSES, ints.layer, 'tucker2')).toBe('--method tucker2 does not apply to LSTM');
  });

  it('layers.ts lists LSTM, GRU and RNN with the input part\'s MACs (seq·batch·dirs·G·H·I); stats-plan reads X\'s rows of I', () => {
    for (const op of ['LSTM', 'GRU', 'RNN'] as const) {
      const c: RnnCase = { op, direction: 'bidirectional', layout: 1, seqLens: false, initial: false, peepholes: false, linearBeforeReset: false, custom: false, bias: true, seed: 3 };
      const m = rnnModel(c, { I: 9, H: 4, r: 3 });
      const model = new Model(decodeModel(m.bytes));
      const G = RNN_GATES[op]!;
      const shapes = new Map([['x', [m.dims.batch, m.dims.seq, 9]]]);
      const [l] = findLayers(model, shapes);
      expect(l).toMatchObject({ op, weightName: 'w', weightShape: [2, G * 4, 9], params: 2 * G * 4 * 9, weightInput: 1 });
      expect(l!.macs).toBe(m.dims.seq * m.dims.batch * 2 * G * 4 * 9);
      expect(findLayers(model)[0]!.macs).toBeUndefined();
      // Data-aware: the second moments of X's rows of I (X·Wᵀ), whatever the layout.
      expect(planLayer(model, l!)).toEqual({ kind: 'rows', tensor: 'x', k: 9 });
      // Cost per input position: the SVD pair's.
      const bound = rnnInputSvd.match(l!, cxOf(model));
      if (isSkip(bound)) throw new Error(bound.skip);
      expect(rnnInputSvd.cost(bound, [3])).toEqual({ before: { params: 2 * G * 4 * 9, macsPerPosition: 2 * G * 4 * 9 }, after: { params: 3 * (9 + 2 * G * 4), macsPerPosition: 3 * (9 + 2 * G * 4) } });
    }
  });

  it('the driver rewrites at the rank the energy finds, and skips a rank that does not pay with the reason', () => {
    const c: RnnCase = { op: 'LSTM', direction: 'forward', layout: 0, seqLens: false, initial: false, peepholes: false, linearBeforeReset: false, custom: false, bias: true, seed: 5 };
    const m = rnnModel(c, { I: 32, H: 8, r: 3 });
    const model = new Model(decodeModel(m.bytes));
    const [rec] = optimizeModel(model, undefined, { method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0 });
    expect(rec).toMatchObject({ name: 'rnn', pass: 'rnn-input-svd', ranks: [3], paramsBefore: 32 * 32, paramsAfter: 3 * 64 });
    expect(model.proto.graph!.node.map((n) => n.opType)).toEqual(['MatMul', 'LSTM']);
    const again = new Model(decodeModel(m.bytes));
    const [no] = optimizeModel(again, undefined, { method: 'svd', policy: { kind: 'fixed', rank: 20 }, minParams: 0, seed: 0 });
    expect(no!.reason).toBe('ranks 20 do not pay: params 1024→1280, MACs/position 1024→1280');
  });

  it('composes back to W for --stages', () => {
    const c: RnnCase = { op: 'GRU', direction: 'bidirectional', layout: 0, seqLens: false, initial: false, peepholes: false, linearBeforeReset: false, custom: false, bias: false, seed: 6 };
    const m = rnnModel(c, { I: 10, H: 3, r: 4 });
    const w = decodeModel(m.bytes).graph!.initializer.find((t) => t.name === 'w')!;
    const original = new Float32Array(w.rawData!.slice().buffer);
    const { proto } = rewrite(m.bytes, 4);
    const inits = new Map(proto.graph!.initializer.map((t) => [t.name!, t]));
    const factors = proto.graph!.node.map((n) => {
      const t = inits.get(n.input[1]!)!;
      const data = new Float32Array(t.rawData!.slice().buffer);
      return { name: t.name!, dims: t.dims.map(Number), dataType: 1, read: () => data };
    });
    const back = rnnInputSvd.compose(proto.graph!.node, factors, { name: 'rnn', original: decodeModel(m.bytes).graph!.node[0]!, weightInput: 1, weightDims: [2, 9, 10], nodes: [] }, undefined);
    if (typeof back === 'string') throw new Error(back);
    expect(relL2(original, back)).toBeLessThan(1e-5);
  });
});

/** Σ_k s·0.8^k·u_k·v_kᵀ over `k` random rank-one terms: a trained-like decaying spectrum. */
function decaying(rng: Rng, m: number, n: number, k: number, scale: number): Float32Array {
  const w = new Float32Array(m * n);
  for (let t = 0; t < k; t++) {
    const u = randn(rng, m);
    const v = randn(rng, n);
    const s = (scale * 0.8 ** t) / Math.sqrt(m * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) w[i * n + j] += s * u[i]! * v[j]!;
  }
  return w;
}

describe('an embedding and an LSTM through the CLI', () => {
  // ids [T, 1] → Gather(E [500, 64]) → X [T, 1, 64] → LSTM(hidden 32): Y and Y_h are the outputs.
  const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-rnn-e2e-'));
  const inp = path.join(dir, 'in.onnx');
  const idsFile = path.join(dir, 'ids.npy');
  const rng = createRng(1);
  const V = 500, D = 64, H = 32, T = 12;
  const b = new ModelBuilder({ opset: 13 });
  const ids = b.input('ids', [T, 1], DataType.INT64);
  const x = b.node('Gather', [b.init('embedding', [V, D], decaying(rng, V, D, 40, 30)), ids], {}, { name: 'embed' });
  const outs = b.nodeMulti('LSTM', [x, b.init('lstm_w', [1, 4 * H, D], decaying(rng, 4 * H, D, 40, 40)), b.init('lstm_r', [1, 4 * H, H], decaying(rng, 4 * H, H, 32, 8)),
    b.init('lstm_b', [1, 8 * H], randn(rng, 8 * H, 0.1))], { hidden_size: H }, { name: 'lstm', outputs: 3 });
  b.output(outs[0]!);
  b.output(outs[1]!);
  writeFileSync(inp, encodeModel(b.build()));
  // Verification's own integer inputs are 0…3: feed ids across the whole table instead.
  writeFileSync(idsFile, encodeNpy({ dtype: 'i8', shape: [T, 1], data: BigInt64Array.from({ length: T }, () => BigInt(rng.int(V))) }));
  const cli = (...args: string[]): { status: number | null; stdout: string; stderr: string } =>
    spawnSync(process.execPath, ['--import', 'tsx', 'test/fuzz/cli-child.ts', ...args], { encoding: 'utf8' });

  it('inspect lists the Gather and the LSTM with their MACs', () => {
    const res = cli('inspect', inp, '--no-profile', '--json');
    expect(res.status, res.stderr).toBe(0);
    const layers = (JSON.parse(res.stdout) as { layers: { name: string; op: string; weightShape: number[]; macs: number }[] }).layers;
    expect(layers.map((l) => [l.name, l.op, l.weightShape, l.macs])).toEqual([['embed', 'Gather', [V, D], 0], ['lstm', 'LSTM', [1, 4 * H, D], T * 4 * H * D]]);
  });

  it('optimize --save params rewrites both, and the output verifies in ORT', () => {
    const out = path.join(dir, 'out.onnx');
    const report = path.join(dir, 'report.json');
    const res = cli('optimize', inp, out, '--save', 'params', '--input', `ids:${idsFile}`, '--report', report);
    expect(res.status, res.stderr).toBe(0);
    const rep = JSON.parse(readFileSync(report, 'utf8')) as { layers: { name: string; pass?: string; ranks?: number[]; skipped?: boolean; paramsAfter: number; relError: number }[]; verify: { pass: boolean } };
    expect(rep.verify.pass).toBe(true);
    expect(rep.layers.map((l) => [l.name, l.pass, l.skipped])).toEqual([['embed', 'gather-svd', undefined], ['lstm', 'rnn-input-svd', undefined]]);
    for (const l of rep.layers) expect(l.relError).toBeLessThan(0.05);
    const [embed, lstm] = rep.layers as [typeof rep.layers[0], typeof rep.layers[0]];
    expect(embed.paramsAfter).toBe(embed.ranks![0]! * (V + D));
    expect(lstm.paramsAfter).toBe(lstm.ranks![0]! * (D + 4 * H));
    // The report says why R is left as it is.
    expect((lstm as { note?: string }).note).toMatch(/recurrent weights R kept: they act on the hidden state inside the op's loop/);
    const proto = decodeModel(readFileSync(out));
    expect(proto.graph!.node.map((n) => n.opType)).toEqual(['Gather', 'MatMul', 'MatMul', 'LSTM']);
  });

  it('the default run reports each layer rewritten or skipped with its reason', () => {
    // Which rewrites the latency screen keeps depends on this machine's timings: only the reasons are checked.
    const report = path.join(dir, 'report-default.json');
    const res = cli('optimize', inp, path.join(dir, 'out-default.onnx'), '--input', `ids:${idsFile}`, '--report', report);
    expect(res.status, res.stderr).toBe(0);
    const rep = JSON.parse(readFileSync(report, 'utf8')) as { layers: { name: string; skipped?: boolean; reason?: string; nodes?: string[] }[] };
    expect(rep.layers.map((l) => l.name)).toEqual(['embed', 'lstm']);
    for (const l of rep.layers) expect(l.skipped ? l.reason : l.nodes?.length, l.name).toBeTruthy();
  });
});
