import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { convTucker2 } from '../../passes/conv-tucker2.js';
import * as ort from 'onnxruntime-node';
import { floatTensor, GraphBuilder, ModelBuilder } from '../../models/builder.js';
import { tensorAttr } from '../../src/graph/attrs.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { AttributeType, DataType, newAttribute } from '../../src/onnx/schema.js';
import { isSkip } from '../../src/rewrite/pass.js';
import { createRng } from '../../src/util/rng.js';
import type { CalibSet } from '../../src/calib/load.js';
import { collectStats } from '../../src/calib/stats.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';
import {
  compareInOrt, context, convModel, describe1, matchOnly, opCounts, randn, relL2, rewrite, tuckerKernel, windowSpec,
  type ConvSpec,
  PADS, ortRuns,
} from './conv-harness.js';


const caseArb = fc.record({
  spatial: fc.constantFrom(1, 2, 3),
  k: fc.constantFrom(1, 3, 5),
  stride: fc.constantFrom(1, 2),
  dilation: fc.constantFrom(1, 2),
  pad: fc.constantFrom(...PADS),
  bias: fc.boolean(),
  group: fc.constantFrom(1, 2),
  kernelShapeAttr: fc.boolean(),
  seed: fc.integer({ min: 0, max: 1_000_000 }),
}).filter((c) => !(c.k === 1 && c.group === 1) && ortRuns(c)); // a group-1 1x1 conv is conv1x1-svd's

describe('conv-tucker2', () => {
  it('exact Tucker rank: the rewritten model matches the original in ORT (1D/2D/3D, strides, pads, dilations, groups, bias)', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const rng = createRng(c.seed);
        const S = 8 * c.group / 2 + 4; // 8 (g1) or 12 (g2)
        const T = c.group === 1 ? 6 : 10;
        const s = S / c.group;
        const t = T / c.group;
        const r1 = 1 + rng.int(s - 1); // < s
        const r2 = 1 + rng.int(t - 1); // < t
        const spec: ConvSpec = { S, T, group: c.group, bias: c.bias, kernelShapeAttr: c.kernelShapeAttr, ...windowSpec(c.spatial, c.k, c.stride, c.dilation, c.pad) };
        const K = spec.kernel.reduce((a, b) => a * b, 1);
        const w = tuckerKernel(rng, T, S, c.group, K, r1, r2);
        const bytes = convModel(spec, w, rng);
        const out = rewrite(bytes, convTucker2, [r1, r2]);
        expect(out.applied.relError, describe1(spec)).toBeLessThan(1e-5);
        expect(out.applied.nodes).toHaveLength(3);
        expect(opCounts(out.proto)).toEqual({ Conv: 3 });
        const [a, core, last] = out.proto.graph!.node;
        // The window lives on the core only.
        const names = (n: typeof a): string[] => n.attribute.map((x) => x.name ?? '').sort();
        for (const n of [a, last]) expect(names(n).filter((x) => ['strides', 'pads', 'dilations', 'auto_pad'].includes(x))).toEqual([]);
        expect(core.input[2]).toBeUndefined();
        expect(last.input.length).toBe(c.bias ? 3 : 2);
        const cmp = await compareInOrt(bytes, out.bytes, spec, c.seed);
        expect(cmp.b.dims, describe1(spec)).toEqual(cmp.a.dims);
        expect(cmp.rel, describe1(spec)).toBeLessThan(1e-4);
        runs++;
      }),
      { seed: 4, numRuns: 150 },
    );
    expect(runs).toBeGreaterThanOrEqual(150);
  });

  it('per-group ranks: a group-2 chain has 2·r1 and 2·r2 channels and group 2 on every conv', () => {
    const rng = createRng(7);
    const spec: ConvSpec = { S: 8, T: 12, group: 2, ...windowSpec(2, 3, 1, 1, 'sym') };
    const bytes = convModel(spec, tuckerKernel(rng, 12, 8, 2, 9, 2, 3), rng);
    const out = rewrite(bytes, convTucker2, [2, 3]);
    const inits = new Map(out.proto.graph!.initializer.map((t) => [t.name, t.dims]));
    const [a, core, last] = out.proto.graph!.node;
    expect(inits.get(a.input[1])).toEqual([4, 4, 1, 1]);
    expect(inits.get(core.input[1])).toEqual([6, 2, 3, 3]);
    expect(inits.get(last.input[1])).toEqual([12, 3, 1, 1]);
    for (const n of [a, core, last]) expect(Number(n.attribute.find((x) => x.name === 'group')!.i)).toBe(2);
  });

  it('truncating below the true rank gives a larger, finite error', () => {
    const rng = createRng(3);
    const spec: ConvSpec = { S: 8, T: 8, ...windowSpec(2, 3, 1, 1, 'sym') };
    const bytes = convModel(spec, tuckerKernel(rng, 8, 8, 1, 9, 5, 5), rng);
    const out = rewrite(bytes, convTucker2, [2, 2]);
    expect(out.applied.relError).toBeGreaterThan(1e-3);
    expect(out.applied.relError).toBeLessThan(1);
  });

  it('weight behind a Constant node and an Identity chain', async () => {
    const rng = createRng(11);
    const spec: ConvSpec = { S: 8, T: 6, bias: true, ...windowSpec(2, 3, 2, 1, 'asym') };
    const w = tuckerKernel(rng, 6, 8, 1, 9, 3, 2);
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 8, ...spec.size]);
    const wt = b.node('Constant', [], { value: tensorAttr('value', floatTensor('', [6, 8, 3, 3], w)) }, { name: 'wconst' });
    const wi = b.node('Identity', [wt], {}, { name: 'wid' });
    const bias = b.init('bias', [6], randn(rng, 6));
    b.output(b.node('Conv', [x, wi, bias], { strides: spec.strides!, pads: spec.pads! }, { name: 'conv' }));
    const bytes = encodeModel(b.build());
    const out = rewrite(bytes, convTucker2, [3, 2]);
    expect(out.applied.relError).toBeLessThan(1e-5);
    const cmp = await compareInOrt(bytes, out.bytes, spec, 11);
    expect(cmp.rel).toBeLessThan(1e-4);
  });

  it('weight from the outer scope of an If branch', async () => {
    const rng = createRng(12);
    const size = [9, 10];
    const w = tuckerKernel(rng, 6, 8, 1, 9, 2, 3);
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 8, ...size]);
    const cond = b.input('cond', [], DataType.BOOL);
    b.init('w', [6, 8, 3, 3], w);
    const branch = (name: string, pads: number[]): ReturnType<typeof newAttribute> => {
      const gb = new GraphBuilder(name);
      gb.output(gb.node('Conv', [x, 'w'], { pads }, { name: `${name}_conv` }));
      return newAttribute({ name: `${name}_branch`, type: AttributeType.GRAPH, g: gb.graph });
    };
    const y = b.node('If', [cond], { then_branch: branch('then', [1, 1, 1, 1]), else_branch: branch('else', [0, 2, 2, 0]) }, { name: 'if' });
    b.output(y);
    const bytes = encodeModel(b.build());
    const model = new Model(decodeModel(bytes));
    const cx = context(model);
    const layers = findLayers(model).filter((l) => l.op === 'Conv');
    expect(layers.map((l) => l.where)).toEqual(['outer-initializer', 'outer-initializer']);
    for (const l of layers) {
      const m = convTucker2.match(l, cx);
      if (isSkip(m)) throw new Error(m.skip);
      const a = convTucker2.apply(m, [2, 3], cx);
      if (isSkip(a)) throw new Error(a.skip);
      expect(a.relError).toBeLessThan(1e-5);
    }
    model.root.removeUnusedInitializers();
    expect(model.root.initializer('w')).toBeUndefined();
    const rewritten = encodeModel(model.proto);
    const data = randn(createRng(5), 8 * 90);
    for (const c of [true, false]) {
      const feeds = { x: { data, dims: [1, 8, ...size] } };
      const run = async (bb: Uint8Array): Promise<Float32Array> => {
        const sess = await ort.InferenceSession.create(bb);
        const r = await sess.run({ x: new ort.Tensor('float32', feeds.x.data, feeds.x.dims), cond: new ort.Tensor('bool', [c], []) });
        await sess.release();
        return Float32Array.from(r[sess.outputNames[0]].data as Float32Array);
      };
      expect(relL2(await run(bytes), await run(rewritten))).toBeLessThan(1e-4);
    }
  });

  it('declines depthwise, a group-1 1x1 conv, integer and non-finite weights, with reasons', () => {
    const rng = createRng(1);
    const dw = convModel({ S: 8, T: 8, group: 8, ...windowSpec(2, 3, 1, 1, 'sym') }, randn(rng, 8 * 9), rng);
    const m1 = matchOnly(dw, convTucker2).m;
    expect(isSkip(m1) && m1.skip).toMatch(/^depthwise: nothing to gain/);
    const pw = convModel({ S: 8, T: 8, ...windowSpec(2, 1, 1, 1, 'none') }, randn(rng, 64), rng);
    const m2 = matchOnly(pw, convTucker2).m;
    expect(isSkip(m2) && m2.skip).toMatch(/1x1 kernel/);
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 4, 6, 6]);
    b.output(b.node('Conv', [x, b.initInt64('w', [4, 4, 3, 3], new Array<number>(144).fill(1))], {}, { name: 'conv' }));
    const m3 = matchOnly(encodeModel(b.build()), convTucker2).m;
    expect(isSkip(m3) && m3.skip).toMatch(/not floating point/);
    const nanW = randn(rng, 8 * 8 * 9);
    nanW[5] = NaN;
    const m4 = matchOnly(convModel({ S: 8, T: 8, ...windowSpec(2, 3, 1, 1, 'sym') }, nanW, rng), convTucker2).m;
    expect(isSkip(m4) && m4.skip).toMatch(/NaN/);
  });

  it('costs: params and MACs per output position, with the stride factor on the first 1x1', () => {
    const rng = createRng(2);
    const spec: ConvSpec = { S: 16, T: 32, ...windowSpec(2, 3, 2, 1, 'sym') };
    const { m } = matchOnly(convModel(spec, randn(rng, 32 * 16 * 9), rng), convTucker2);
    if (isSkip(m)) throw new Error(m.skip);
    const c = convTucker2.cost(m, [4, 8]);
    expect(c.before).toEqual({ params: 32 * 16 * 9, macsPerPosition: 32 * 16 * 9 });
    expect(c.after.params).toBe(16 * 4 + 8 * 4 * 9 + 32 * 8);
    expect(c.after.macsPerPosition).toBe(4 * 16 * 4 + 8 * 4 * 9 + 32 * 8);
  });

  it('chooseRanks: fixed, energy (exact rank), ratio (≈ the parameter budget), align, vbmf', () => {
    const rng = createRng(9);
    const spec: ConvSpec = { S: 16, T: 24, ...windowSpec(2, 3, 1, 1, 'sym') };
    const { m } = matchOnly(convModel(spec, tuckerKernel(rng, 24, 16, 1, 9, 5, 7), rng), convTucker2);
    if (isSkip(m)) throw new Error(m.skip);
    expect(convTucker2.chooseRanks(m, { kind: 'fixed', rank: 100 })).toEqual([16, 24]);
    expect(convTucker2.chooseRanks(m, { kind: 'fixed', rank: 4 })).toEqual([4, 4]);
    expect(convTucker2.chooseRanks(m, { kind: 'energy', energy: 1 - 1e-9 })).toEqual([5, 7]);
    expect(convTucker2.chooseRanks(m, { kind: 'energy', energy: 1 - 1e-9, align: 4 })).toEqual([8, 8]);
    const r = convTucker2.chooseRanks(m, { kind: 'ratio', ratio: 0.25 });
    if (isSkip(r)) throw new Error(r.skip);
    const { before, after } = convTucker2.cost(m, r);
    expect(after.params).toBeLessThanOrEqual(0.25 * before.params);
    expect(after.params).toBeGreaterThan(0.15 * before.params);
    // VBMF on the two unfoldings of an exact Tucker-(5,7) kernel finds its ranks.
    expect(convTucker2.chooseRanks(m, { kind: 'vbmf' })).toEqual([5, 7]);
  });
});

describe('conv-tucker2 at several ranks on one match (sensitivity\'s rungs)', () => {
  it('the data-aware fits share their rank-independent work on the match, with the results of fresh matches', async () => {
    // 70 input channels and t·K = 180: the rungs cross the whitened SVD's randomized and exact ranges.
    const rng = createRng(31);
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 70, 6, 6]);
    b.output(b.node('Conv', [x, b.init('w', [20, 70, 3, 3], randn(rng, 20 * 70 * 9))], { pads: [1, 1, 1, 1] }, { name: 'conv' }));
    const bytes = encodeModel(b.build());
    const feeds: Feeds[] = Array.from({ length: 2 }, () => ({ x: { type: 'float32', dims: [1, 70, 6, 6], data: Float32Array.from(randn(rng, 70 * 36)) } as HostTensor }));
    const calib: CalibSet = {
      source: { kind: 'random', seed: 0 }, samples: 2, batches: 2, batchSize: 1, calibrated: [], fixed: [], random: [], notes: [],
      *feeds() { yield* feeds; },
    };
    const model = new Model(decodeModel(bytes));
    const st = await collectStats(model, findLayers(model), calib);
    if (!st.ok) throw st.error;
    const cx = { ...context(model), stats: st.value.stats };
    const layer = findLayers(model).find((l) => l.op === 'Conv')!;
    const m = convTucker2.match(layer, cx);
    if (isSkip(m)) throw new Error(m.skip);
    expect(m.channelGram && m.patches).toBeTruthy();
    let work;
    for (const ranks of [[8, 8], [30, 16], [30, 20], [12, 10]]) {
      const got = convTucker2.estimate!(m, ranks, cx);
      work ??= m.shared?.work;
      expect(work).toBeDefined();
      expect(m.shared!.work).toBe(work);
      const fresh = convTucker2.match(layer, cx);
      if (isSkip(fresh)) throw new Error(fresh.skip);
      expect(got).toEqual(convTucker2.estimate!(fresh, ranks, cx));
      expect(m.fitted).toEqual(fresh.fitted);
    }
  });

  it('weight-only fits keep no shared work', () => {
    const { m, cx } = matchOnly(convModel({ T: 12, S: 8, kernel: [3, 3], size: [6, 6] }, randn(createRng(32), 12 * 8 * 9), createRng(33)), convTucker2);
    if (isSkip(m)) throw new Error(m.skip);
    convTucker2.estimate!(m, [3, 3], cx);
    expect(m.fitted).toBeDefined();
    expect(m.shared).toBeUndefined();
  });
});
