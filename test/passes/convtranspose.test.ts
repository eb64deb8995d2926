/**
 * The ConvTranspose passes: convtranspose-tucker2 (1x1 Conv → ConvTranspose core → 1x1
 * Conv) and convtranspose-svd (1x1 Conv → thinner ConvTranspose, or two 1x1 Convs for a
 * plain 1x1). Exact-rank kernels rewritten at their rank must match the original in ORT
 * over strides, pads (asymmetric), dilations, output_padding, output_shape, auto_pad,
 * groups, bias and 1-D/2-D/3-D; declines say why; costs are per input position; compose
 * (--stages) gives back the weight; optimizeModel and the CLI rewrite a decoder-like model.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelBuilder, type AttrValue } from '../../models/builder.js';
import { convTransposeSvd } from '../../passes/convtranspose-svd.js';
import { convTransposeTucker2 } from '../../passes/convtranspose-tucker2.js';
import { passesFor } from '../../passes/dispatch.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers, type LayerInfo } from '../../src/graph/layers.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { DataType, type ModelProto, type NodeProto } from '../../src/onnx/schema.js';
import { readTensorFloat } from '../../src/onnx/tensor.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { mergeStage, snapshotLayers } from '../../src/optimize/stages.js';
import { isSkip, type Applied, type LayerPass, type PassContext, type Skip } from '../../src/rewrite/pass.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { context, opCounts, randn, relL2, runOrt } from './conv-harness.js';

type PadMode = 'none' | 'sym' | 'asym' | 'SAME_UPPER' | 'SAME_LOWER' | 'VALID';

interface CtSpec {
  S: number;
  T: number;
  group: number;
  kernel: number[];
  size: number[];
  strides?: number[];
  dilations?: number[];
  pads?: number[];
  autoPad?: PadMode;
  outputPadding?: number[];
  outputShape?: number[];
  /** Write the kernel_shape attribute. */
  kernelShapeAttr?: boolean;
  bias: boolean;
}

const describeSpec = (s: CtSpec): string =>
  `${s.kernel.length}D k${s.kernel.join('x')} S${s.S} T${s.T} g${s.group} in[${s.size}] s[${s.strides ?? ''}] d[${s.dilations ?? ''}] p[${s.pads ?? ''}] ${s.autoPad ?? ''} op[${s.outputPadding ?? ''}] os[${s.outputShape ?? ''}] bias=${s.bias}`;

function ctAttrs(s: CtSpec): Record<string, AttrValue> {
  const a: Record<string, AttrValue> = {};
  if (s.kernelShapeAttr) a.kernel_shape = s.kernel;
  if (s.strides) a.strides = s.strides;
  if (s.dilations) a.dilations = s.dilations;
  if (s.pads) a.pads = s.pads;
  if (s.autoPad && s.autoPad !== 'none') a.auto_pad = s.autoPad;
  if (s.outputPadding) a.output_padding = s.outputPadding;
  if (s.outputShape) a.output_shape = s.outputShape;
  if (s.group !== 1) a.group = s.group;
  return a;
}

/** A model `y = ConvTranspose(x, W, b)` with W [S, T/g, k…]. */
function ctModel(s: CtSpec, w: Float32Array, rng: Rng): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, s.S, ...s.size]);
  const inputs = [x, b.init('w', [s.S, s.T / s.group, ...s.kernel], w)];
  if (s.bias) inputs.push(b.init('b', [s.T], randn(rng, s.T)));
  b.output(b.node('ConvTranspose', inputs, ctAttrs(s), { name: 'ct' }));
  return encodeModel(b.build());
}

/**
 * W_j[σ, τ, κ] = Σ U_S[σ, a]·C[a, b, κ]·U_T[τ, b] per group, written straight in the
 * ConvTranspose layout [S, T/g, K] (independent of the passes' layout helpers).
 */
function transposeTuckerKernel(rng: Rng, S: number, T: number, group: number, K: number, r1: number, r2: number): Float32Array {
  const s = S / group;
  const t = T / group;
  const w = new Float32Array(S * t * K);
  for (let j = 0; j < group; j++) {
    const uS = randn(rng, s * r1);
    const uT = randn(rng, t * r2);
    const core = randn(rng, r1 * r2 * K);
    for (let sg = 0; sg < s; sg++) for (let tg = 0; tg < t; tg++) for (let k = 0; k < K; k++) {
      let v = 0;
      for (let a = 0; a < r1; a++) for (let b = 0; b < r2; b++) v += uS[sg * r1 + a]! * core[(a * r2 + b) * K + k]! * uT[tg * r2 + b]!;
      w[((j * s + sg) * t + tg) * K + k] = v;
    }
  }
  return w;
}

/** W [S, T·K] = P [S, r]·Q [r, T·K]: rank r as the mode-S unfolding. */
function modeSRank(rng: Rng, S: number, TK: number, r: number): Float32Array {
  const P = randn(rng, S * r);
  const Q = randn(rng, r * TK);
  const w = new Float32Array(S * TK);
  for (let i = 0; i < S; i++) for (let j = 0; j < TK; j++) {
    let v = 0;
    for (let k = 0; k < r; k++) v += P[i * r + k]! * Q[k * TK + j]!;
    w[i * TK + j] = v;
  }
  return w;
}

function ctLayer(model: Model): LayerInfo {
  const ls = findLayers(model).filter((l) => l.op === 'ConvTranspose');
  if (ls.length !== 1) throw new Error(`expected one ConvTranspose, found ${ls.length}`);
  return ls[0]!;
}

function matchOnly<M>(bytes: Uint8Array, pass: LayerPass<M>): M | Skip {
  const model = new Model(decodeModel(bytes));
  return pass.match(ctLayer(model), context(model));
}

function rewrite<M>(bytes: Uint8Array, pass: LayerPass<M>, ranks: number[]): { bytes: Uint8Array; applied: Applied; proto: ModelProto; model: Model; cx: PassContext } {
  const model = new Model(decodeModel(bytes));
  const cx = context(model);
  const m = pass.match(ctLayer(model), cx);
  if (isSkip(m)) throw new Error(`match skipped: ${m.skip}`);
  const applied = pass.apply(m, ranks, cx);
  if (isSkip(applied)) throw new Error(`apply skipped: ${applied.skip}`);
  model.root.removeUnusedInitializers();
  return { bytes: encodeModel(model.proto), applied, proto: model.proto, model, cx };
}

async function compare(a: Uint8Array, b: Uint8Array, s: CtSpec, seed: number): Promise<{ rel: number; dimsA: readonly number[]; dimsB: readonly number[] }> {
  const dims = [1, s.S, ...s.size];
  const data = randn(createRng(seed + 1000), dims.reduce((p, q) => p * q, 1));
  const x = await runOrt(a, { x: { data, dims } });
  const y = await runOrt(b, { x: { data, dims } });
  return { rel: relL2(x.data, y.data), dimsA: x.dims, dimsB: y.dims };
}

const PLACEMENT = ['strides', 'pads', 'dilations', 'auto_pad', 'output_padding', 'output_shape'];
const placementOf = (n: NodeProto): string[] => n.attribute.map((a) => a.name ?? '').filter((x) => PLACEMENT.includes(x)).sort();
const attrsOf = (n: NodeProto): Record<string, unknown> =>
  Object.fromEntries(n.attribute.filter((a) => PLACEMENT.includes(a.name ?? '')).map((a) => [a.name, a.s?.length ? Buffer.from(a.s).toString() : a.ints.map(Number)]));

/** The window of a random case: input extent per axis and the attributes drawn. */
function windowOf(c: { spatial: number; k: number; stride: number; dilation: number; pad: PadMode; outPad: boolean; outShape: boolean; seed: number }): Pick<CtSpec, 'kernel' | 'size' | 'strides' | 'dilations' | 'pads' | 'autoPad' | 'outputPadding' | 'outputShape'> {
  const n = c.spatial;
  const kernel = Array.from({ length: n }, (_, i) => (i === 1 && c.k > 1 ? c.k - 1 : c.k)); // non-square when k > 1
  const size = Array.from({ length: n }, (_, i) => (n === 3 ? 3 : 4) + i);
  const out: ReturnType<typeof windowOf> = { kernel, size };
  if (c.stride !== 1) out.strides = Array.from({ length: n }, (_, i) => (i === 0 ? c.stride : Math.max(1, c.stride - 1)));
  if (c.dilation !== 1) out.dilations = new Array<number>(n).fill(c.dilation);
  const strides = out.strides ?? new Array<number>(n).fill(1);
  const eff = kernel.map((k) => (k - 1) * c.dilation + 1);
  switch (c.pad) {
    case 'none': break;
    case 'sym': out.pads = [...eff.map((e) => Math.floor((e - 1) / 2)), ...eff.map((e) => Math.floor((e - 1) / 2))]; break;
    // Asymmetric: begin and end differ, never more than the full output extent allows.
    case 'asym': out.pads = [...eff.map((e, i) => Math.min(e - 1, i % 2)), ...eff.map((e, i) => Math.min(e - 1, 1 - (i % 2)))]; break;
    default: out.autoPad = c.pad;
  }
  const explicit = c.pad === 'none' || c.pad === 'sym' || c.pad === 'asym';
  // ORT wants output_padding < stride.
  if (c.outPad && explicit && strides.some((s) => s > 1)) out.outputPadding = strides.map((s) => s - 1);
  if (c.outShape && (c.pad === 'none' || c.pad === 'SAME_UPPER' || c.pad === 'SAME_LOWER')) {
    // At most the full extent (ORT derives the pads from the difference).
    out.outputShape = size.map((x, i) => strides[i]! * (x - 1) + eff[i]! - ((c.seed + i) % eff[i]!));
  }
  return out;
}

const tuckerCases = fc.record({
  spatial: fc.constantFrom(1, 2, 3),
  k: fc.constantFrom(1, 2, 3),
  stride: fc.constantFrom(1, 2, 3),
  dilation: fc.constantFrom(1, 2),
  pad: fc.constantFrom<PadMode>('none', 'sym', 'asym', 'SAME_UPPER', 'SAME_LOWER', 'VALID'),
  outPad: fc.boolean(),
  outShape: fc.boolean(),
  bias: fc.boolean(),
  group: fc.constantFrom(1, 2),
  kernelShapeAttr: fc.boolean(),
  seed: fc.integer({ min: 0, max: 1_000_000 }),
}).filter((c) => !(c.k === 1 && c.group === 1)); // a group-1 1x1 is convtranspose-svd's

describe('convtranspose-tucker2', () => {
  it('exact Tucker rank: the rewritten model matches the original in ORT (1D/2D/3D, strides, pads, dilations, output_padding, output_shape, auto_pad, groups, bias)', async () => {
    let runs = 0;
    const seen = new Set<string>();
    await fc.assert(
      fc.asyncProperty(tuckerCases, async (c) => {
        const rng = createRng(c.seed);
        const S = c.group === 1 ? 8 : 12;
        const T = c.group === 1 ? 6 : 10;
        const s = S / c.group;
        const t = T / c.group;
        const spec: CtSpec = { S, T, group: c.group, bias: c.bias, kernelShapeAttr: c.kernelShapeAttr, ...windowOf(c) };
        const K = spec.kernel.reduce((a, b) => a * b, 1);
        // Multilinear ranks need r1 ≤ r2·K and r2 ≤ r1·K.
        const a0 = 1 + rng.int(s - 1);
        const b0 = 1 + rng.int(t - 1);
        const r1 = Math.min(a0, b0 * K);
        const r2 = Math.min(b0, r1 * K);
        const bytes = ctModel(spec, transposeTuckerKernel(rng, S, T, c.group, K, r1, r2), rng);
        const out = rewrite(bytes, convTransposeTucker2, [r1, r2]);
        const d = describeSpec(spec);
        expect(out.applied.relError, d).toBeLessThan(1e-5);
        expect(opCounts(out.proto), d).toEqual({ Conv: 2, ConvTranspose: 1 });
        const [a, core, last] = out.proto.graph!.node;
        expect(core!.opType).toBe('ConvTranspose');
        // Every spatial attribute on the core, verbatim; none on the 1x1 convs.
        const original = decodeModel(bytes).graph!.node[0]!;
        expect(attrsOf(core!), d).toEqual(attrsOf(original));
        expect(placementOf(a!)).toEqual([]);
        expect(placementOf(last!)).toEqual([]);
        expect(core!.input[2]).toBeUndefined();
        const ks = core!.attribute.find((x) => x.name === 'kernel_shape');
        expect(ks?.ints.map(Number)).toEqual(spec.kernel);
        expect(last!.input.length).toBe(c.bias ? 3 : 2);
        const inits = new Map(out.proto.graph!.initializer.map((x) => [x.name, x.dims.map(Number)]));
        expect(inits.get(core!.input[1])).toEqual([c.group * r1, r2, ...spec.kernel]);
        const cmp = await compare(bytes, out.bytes, spec, c.seed);
        expect(cmp.dimsB, d).toEqual(cmp.dimsA);
        expect(cmp.rel, d).toBeLessThan(1e-4);
        seen.add(`${c.spatial}:${spec.outputShape ? 'os' : ''}${spec.outputPadding ? 'op' : ''}${spec.autoPad ?? ''}`);
        runs++;
      }),
      { seed: 19, numRuns: 200 },
    );
    expect(runs).toBe(200);
    // The draw covered every dimensionality with output_shape, output_padding and both SAME modes.
    for (const n of [1, 2, 3]) {
      expect([...seen].some((x) => x.startsWith(`${n}:`) && x.includes('os')), `${n}D output_shape`).toBe(true);
      expect([...seen].some((x) => x.startsWith(`${n}:`) && x.includes('op')), `${n}D output_padding`).toBe(true);
    }
    expect([...seen].some((x) => x.endsWith('SAME_UPPER'))).toBe(true);
    expect([...seen].some((x) => x.endsWith('SAME_LOWER'))).toBe(true);
  });

  it('truncating below the true rank gives a larger, finite error; estimate agrees with apply', () => {
    const rng = createRng(3);
    const spec: CtSpec = { S: 8, T: 6, group: 1, kernel: [3, 3], size: [4, 5], strides: [2, 2], bias: false };
    const bytes = ctModel(spec, transposeTuckerKernel(rng, 8, 6, 1, 9, 5, 4), rng);
    const model = new Model(decodeModel(bytes));
    const cx = context(model);
    const m = convTransposeTucker2.match(ctLayer(model), cx);
    if (isSkip(m)) throw new Error(m.skip);
    const est = convTransposeTucker2.estimate!(m, [2, 2], cx);
    if (isSkip(est)) throw new Error(est.skip);
    expect(est.relError).toBeGreaterThan(0.05);
    expect(est.relError).toBeLessThan(1);
    const applied = convTransposeTucker2.apply(m, [2, 2], cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    expect(applied.relError).toBe(est.relError);
  });

  it('declines with reasons: one input channel per group, a group-1 1x1, integer and non-finite weights, bad attributes', () => {
    const rng = createRng(1);
    const dw: CtSpec = { S: 4, T: 8, group: 4, kernel: [3, 3], size: [4, 4], bias: false };
    expect(matchOnly(ctModel(dw, randn(rng, 4 * 2 * 9), rng), convTransposeTucker2)).toEqual({ skip: 'one input channel per group (group 4): nothing to factor' });
    const pw: CtSpec = { S: 8, T: 6, group: 1, kernel: [1, 1], size: [4, 4], bias: false };
    expect(matchOnly(ctModel(pw, randn(rng, 48), rng), convTransposeTucker2)).toEqual({ skip: '1x1 kernel: a matrix, convtranspose-svd handles it' });
    const nan = randn(rng, 8 * 6 * 9);
    nan[5] = Number.NaN;
    const k3: CtSpec = { S: 8, T: 6, group: 1, kernel: [3, 3], size: [4, 4], bias: false };
    expect(matchOnly(ctModel(k3, nan, rng), convTransposeTucker2)).toEqual({ skip: 'weight has NaN or infinite values' });
    // Attributes that do not fit the layer, and an integer weight.
    const g = new ModelBuilder({ opset: 13 });
    const gx = g.input('x', [1, 8, 4, 4]);
    g.output(g.node('ConvTranspose', [gx, g.init('w', [8, 6, 3, 3], randn(rng, 432))], { output_padding: [1], strides: [2, 2] }, { name: 'ct' }));
    expect(matchOnly(encodeModel(g.build()), convTransposeTucker2)).toEqual({ skip: 'output_padding [1] does not fit 2 spatial axes' });
    const h = new ModelBuilder({ opset: 13 });
    const hx = h.input('x', [1, 6, 4, 4]);
    h.output(h.node('ConvTranspose', [hx, h.init('w', [6, 4, 3, 3], randn(rng, 216))], { group: 4 }, { name: 'ct' }));
    expect(matchOnly(encodeModel(h.build()), convTransposeTucker2)).toEqual({ skip: 'input channels 6 are not divisible by group 4' });
    const proto = decodeModel(ctModel(k3, randn(rng, 432), rng));
    proto.graph!.initializer[0]!.dataType = DataType.INT32;
    proto.graph!.initializer[0]!.int32Data = new Int32Array(432).fill(1);
    proto.graph!.initializer[0]!.rawData = undefined;
    const im = new Model(decodeModel(encodeModel(proto)));
    expect(convTransposeTucker2.match(ctLayer(im), context(im))).toEqual({ skip: `weight type ${DataType.INT32} is not floating point` });
  });

  it('costs per input position: the last 1x1 runs ∏strides times per input position', () => {
    const rng = createRng(2);
    const spec: CtSpec = { S: 16, T: 12, group: 1, kernel: [3, 3], size: [4, 4], strides: [2, 2], bias: false };
    const m = matchOnly(ctModel(spec, randn(rng, 16 * 12 * 9), rng), convTransposeTucker2);
    if (isSkip(m)) throw new Error(m.skip);
    const c = convTransposeTucker2.cost(m, [4, 5]);
    expect(c.before).toEqual({ params: 16 * 12 * 9, macsPerPosition: 16 * 12 * 9 });
    expect(c.after).toEqual({ params: 4 * 16 + 4 * 5 * 9 + 12 * 5, macsPerPosition: 4 * 16 + 4 * 5 * 9 + 12 * 5 * 4 });
    // Grouped: ranks per group, g·r1 core input channels.
    const gs: CtSpec = { S: 16, T: 12, group: 2, kernel: [3, 3], size: [4, 4], bias: false };
    const mg = matchOnly(ctModel(gs, randn(rng, 16 * 6 * 9), rng), convTransposeTucker2);
    if (isSkip(mg)) throw new Error(mg.skip);
    expect(convTransposeTucker2.cost(mg, [3, 2]).after).toEqual({ params: 2 * 3 * 8 + 2 * 3 * 2 * 9 + 12 * 2, macsPerPosition: 2 * 3 * 8 + 2 * 3 * 2 * 9 + 12 * 2 });
    expect(convTransposeTucker2.rankLimits(mg)).toEqual([8, 6]);
    expect(convTransposeTucker2.checkRanks!(mg, [1, 10])).toMatch(/r2 ≤ r1·9/);
  });

  it('chooseRanks: fixed (clamped), energy (exact rank), ratio, align', () => {
    const rng = createRng(4);
    const spec: CtSpec = { S: 16, T: 12, group: 1, kernel: [3, 3], size: [4, 4], bias: false };
    const m = matchOnly(ctModel(spec, transposeTuckerKernel(rng, 16, 12, 1, 9, 5, 3), rng), convTransposeTucker2);
    if (isSkip(m)) throw new Error(m.skip);
    expect(convTransposeTucker2.chooseRanks(m, { kind: 'fixed', rank: 20 })).toEqual([16, 12]);
    expect(convTransposeTucker2.chooseRanks(m, { kind: 'energy', energy: 0.999999 })).toEqual([5, 3]);
    expect(convTransposeTucker2.chooseRanks(m, { kind: 'energy', energy: 0.999999, align: 4 })).toEqual([8, 4]);
    const r = convTransposeTucker2.chooseRanks(m, { kind: 'ratio', ratio: 0.25 }) as number[];
    const p = convTransposeTucker2.cost(m, r).after.params;
    expect(p).toBeLessThanOrEqual(0.25 * 16 * 12 * 9);
    expect(p).toBeGreaterThan(0.15 * 16 * 12 * 9);
  });
});

const svdCases = fc.record({
  spatial: fc.constantFrom(1, 2, 3),
  k: fc.constantFrom(1, 1, 2, 3),
  stride: fc.constantFrom(1, 1, 2, 3),
  dilation: fc.constantFrom(1, 2),
  pad: fc.constantFrom<PadMode>('none', 'none', 'sym', 'asym', 'SAME_UPPER', 'SAME_LOWER', 'VALID'),
  outPad: fc.boolean(),
  outShape: fc.boolean(),
  bias: fc.boolean(),
  seed: fc.integer({ min: 0, max: 1_000_000 }),
});

describe('convtranspose-svd', () => {
  it('exact rank of the [S, T·K] unfolding: matches the original in ORT (1x1 plain → two Convs; strided/padded/k×k → Conv + ConvTranspose)', async () => {
    let runs = 0;
    let plain = 0;
    let strided1x1 = 0;
    await fc.assert(
      fc.asyncProperty(svdCases, async (c) => {
        const rng = createRng(c.seed);
        const S = 10;
        const T = 8;
        const spec: CtSpec = { S, T, group: 1, bias: c.bias, ...windowOf({ ...c, dilation: c.k === 1 ? 1 : c.dilation }) };
        const K = spec.kernel.reduce((a, b) => a * b, 1);
        const r = 1 + rng.int(Math.min(S, T * K) - 1);
        const bytes = ctModel(spec, modeSRank(rng, S, T * K, r), rng);
        const out = rewrite(bytes, convTransposeSvd, [r]);
        const d = describeSpec(spec);
        expect(out.applied.relError, d).toBeLessThan(1e-5);
        const [a, b] = out.proto.graph!.node;
        expect(a!.opType).toBe('Conv');
        expect(placementOf(a!)).toEqual([]);
        expect(b!.input.length).toBe(c.bias ? 3 : 2);
        const original = decodeModel(bytes).graph!.node[0]!;
        const isPlain = K === 1 && !spec.strides && (spec.pads ?? []).every((x) => x === 0) && !spec.outputPadding && !spec.outputShape;
        if (isPlain) {
          plain++;
          expect(opCounts(out.proto), d).toEqual({ Conv: 2 });
          expect(placementOf(b!)).toEqual([]);
        } else {
          if (K === 1 && spec.strides) strided1x1++;
          expect(opCounts(out.proto), d).toEqual({ Conv: 1, ConvTranspose: 1 });
          // The stride and the rest of the window on the right factor, verbatim.
          expect(attrsOf(b!), d).toEqual(attrsOf(original));
        }
        const cmp = await compare(bytes, out.bytes, spec, c.seed);
        expect(cmp.dimsB, d).toEqual(cmp.dimsA);
        expect(cmp.rel, d).toBeLessThan(1e-4);
        runs++;
      }),
      { seed: 7, numRuns: 150 },
    );
    expect(runs).toBe(150);
    expect(plain).toBeGreaterThan(3);
    expect(strided1x1).toBeGreaterThan(3);
  });

  it('declines a grouped ConvTranspose with the reason; routes under every method', () => {
    const rng = createRng(5);
    const gs: CtSpec = { S: 8, T: 8, group: 2, kernel: [1, 1], size: [4, 4], bias: false };
    const bytes = ctModel(gs, randn(rng, 8 * 4), rng);
    expect(matchOnly(bytes, convTransposeSvd)).toEqual({ skip: 'grouped ConvTranspose (group 2) is not decomposed by convtranspose-svd (convtranspose-tucker2 handles it)' });
    const layerOf = (b: Uint8Array): LayerInfo => ctLayer(new Model(decodeModel(b)));
    const names = (r: ReturnType<typeof passesFor>): string[] | string => (typeof r === 'string' ? r : r.map((p) => p.name));
    expect(names(passesFor(layerOf(bytes), 'svd'))).toBe('--method svd applies to group-1 ConvTranspose only');
    expect(names(passesFor(layerOf(bytes), 'auto'))).toEqual(['convtranspose-tucker2']);
    const pw: CtSpec = { S: 8, T: 6, group: 1, kernel: [1, 1], size: [4, 4], bias: false };
    const pwl = layerOf(ctModel(pw, randn(rng, 48), rng));
    expect(names(passesFor(pwl, 'auto'))).toEqual(['convtranspose-svd']);
    expect(names(passesFor(pwl, 'tucker2'))).toBe('--method tucker2 applies to ConvTranspose kernels larger than 1x1 or grouped (a 1x1 is convtranspose-svd\'s)');
    const k2: CtSpec = { S: 8, T: 6, group: 1, kernel: [2, 2], strides: [2, 2], size: [4, 4], bias: false };
    const k2l = layerOf(ctModel(k2, randn(rng, 8 * 6 * 4), rng));
    expect(names(passesFor(k2l, 'auto'))).toEqual(['convtranspose-tucker2', 'convtranspose-svd']);
    expect(names(passesFor(k2l, 'svd'))).toEqual(['convtranspose-svd']);
    expect(names(passesFor(k2l, 'cp'))).toBe('--method cp does not apply to ConvTranspose');
  });

  it('costs per input position and the SVD rank policies on the [S, T·K] unfolding', () => {
    const rng = createRng(6);
    const spec: CtSpec = { S: 16, T: 12, group: 1, kernel: [2, 2], strides: [2, 2], size: [4, 4], bias: false };
    const m = matchOnly(ctModel(spec, modeSRank(rng, 16, 48, 5), rng), convTransposeSvd);
    if (isSkip(m)) throw new Error(m.skip);
    expect(convTransposeSvd.cost(m, [5])).toEqual({
      before: { params: 16 * 12 * 4, macsPerPosition: 16 * 12 * 4 },
      after: { params: 5 * 16 + 5 * 12 * 4, macsPerPosition: 5 * 16 + 5 * 12 * 4 },
    });
    expect(convTransposeSvd.rankLimits(m)).toEqual([16]);
    expect(convTransposeSvd.chooseRanks(m, { kind: 'energy', energy: 0.999999 })).toEqual([5]);
    expect(convTransposeSvd.chooseRanks(m, { kind: 'fixed', rank: 3 })).toEqual([3]);
    const est = convTransposeSvd.estimate!(m, [5], context(m.graph.model));
    if (isSkip(est)) throw new Error(est.skip);
    expect(est.relError).toBeLessThan(1e-5);
    expect(convTransposeSvd.estimate!(m, [17], context(m.graph.model))).toEqual({ skip: 'rank 17 is out of range for a 16x48 unfolding' });
    // Break-even: r < S·T·K/(S + T·K) = 768/64 = 12.
    const c11 = convTransposeSvd.cost(m, [11]);
    const c12 = convTransposeSvd.cost(m, [12]);
    expect(c11.after.params).toBeLessThan(c11.before.params);
    expect(c12.after.params).toBe(c12.before.params);
  });
});

describe('ConvTranspose compose (--stages)', () => {
  const merged = (bytes: Uint8Array, pass: LayerPass<unknown>, ranks: number[]): { w: Float32Array; w0: Float32Array; bytes: Uint8Array } => {
    const model = new Model(decodeModel(bytes));
    const snapshot = snapshotLayers(model);
    const cx = context(model);
    const layer = ctLayer(model);
    const m = pass.match(layer, cx);
    if (isSkip(m)) throw new Error(m.skip);
    const applied = pass.apply(m, ranks, cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    const problems = mergeStage(model, [{ name: 'ct', op: 'ConvTranspose', weightShape: layer.weightShape, where: 'initializer', paramsBefore: 0, paramsAfter: 0, ms: 0, pass: pass.name, nodes: applied.nodes }], snapshot, undefined);
    expect(problems).toEqual([]);
    const after = ctLayer(model);
    return { w: readTensorFloat(after.weight.tensor), w0: readTensorFloat(layer.weight.tensor), bytes: encodeModel(model.proto) };
  };

  it('merging a Tucker-2 chain (grouped, strided, output_shape) gives back the weight and the same model in ORT', async () => {
    const rng = createRng(8);
    const spec: CtSpec = { S: 12, T: 10, group: 2, kernel: [3, 2], size: [4, 5], strides: [2, 3], outputShape: [9, 13], bias: true };
    const bytes = ctModel(spec, transposeTuckerKernel(rng, 12, 10, 2, 6, 3, 2), rng);
    const out = merged(bytes, convTransposeTucker2 as LayerPass<unknown>, [3, 2]);
    expect(relL2(out.w0, out.w)).toBeLessThan(1e-5);
    const proto = decodeModel(out.bytes);
    expect(opCounts(proto)).toEqual({ ConvTranspose: 1 });
    expect(proto.graph!.node[0]!.input[2]).toBe('b');
    expect((await compare(bytes, out.bytes, spec, 1)).rel).toBeLessThan(1e-4);
  });

  it('compose refuses a chain that does not fit the weight, with the reason', () => {
    const rng = createRng(10);
    const spec: CtSpec = { S: 8, T: 6, group: 1, kernel: [3, 3], size: [4, 4], bias: false };
    const out = rewrite(ctModel(spec, transposeTuckerKernel(rng, 8, 6, 1, 9, 2, 2), rng), convTransposeTucker2, [2, 2]);
    const inits = new Map(out.proto.graph!.initializer.map((t) => [t.name!, t]));
    const chain = out.proto.graph!.node;
    const factors = chain.map((n) => {
      const t = inits.get(n.input[1]!)!;
      return { name: t.name!, dims: t.dims.map(Number), dataType: t.dataType ?? 1, read: () => readTensorFloat(t) };
    });
    const original = decodeModel(ctModel(spec, new Float32Array(8 * 6 * 9), rng)).graph!.node[0]!;
    const f = { name: 'ct', original, weightInput: 1, weightDims: [8, 6, 3, 3], nodes: [] };
    const w = convTransposeTucker2.compose(chain, factors, f, undefined);
    expect(w).toBeInstanceOf(Float32Array);
    expect(convTransposeTucker2.compose(chain, factors, { ...f, weightDims: [6, 8, 3, 3] }, undefined)).toMatch(/does not fit weight/);
    expect(convTransposeTucker2.compose(chain.slice(1), factors.slice(1), f, undefined)).toMatch(/does not fit weight/);
  });

  it('merging SVD pairs (plain two-Conv and strided Conv + ConvTranspose) gives back the weight', async () => {
    const rng = createRng(9);
    const plain: CtSpec = { S: 10, T: 8, group: 1, kernel: [1, 1], size: [4, 5], bias: true };
    const p = merged(ctModel(plain, modeSRank(rng, 10, 8, 3), rng), convTransposeSvd as LayerPass<unknown>, [3]);
    expect(relL2(p.w0, p.w)).toBeLessThan(1e-5);
    const strided: CtSpec = { S: 10, T: 8, group: 1, kernel: [3], size: [6], strides: [2], pads: [1, 0], outputPadding: [1], bias: false };
    const sb = ctModel(strided, modeSRank(rng, 10, 24, 4), rng);
    const s = merged(sb, convTransposeSvd as LayerPass<unknown>, [4]);
    expect(relL2(s.w0, s.w)).toBeLessThan(1e-5);
    expect((await compare(sb, s.bytes, strided, 2)).rel).toBeLessThan(1e-4);
  });
});

/** A decoder-like model: Conv 3x3 (downsample) → ReLU → ConvTranspose 4x4 stride 2 (upsample) → ReLU → ConvTranspose 1x1. */
function decoderModel(): Uint8Array {
  const rng = createRng(11);
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, 8, 16, 16]);
  const c = b.node('Conv', [x, b.init('wc', [32, 8, 3, 3], randn(rng, 32 * 8 * 9)), b.init('bc', [32], randn(rng, 32))], { strides: [2, 2], pads: [1, 1, 1, 1] }, { name: 'down' });
  const r = b.node('Relu', [c], {}, { name: 'relu1' });
  const up = b.node('ConvTranspose', [r, b.init('wu', [32, 48, 4, 4], transposeTuckerKernel(rng, 32, 48, 1, 16, 6, 8)), b.init('bu', [48], randn(rng, 48))],
    { strides: [2, 2], pads: [1, 1, 1, 1] }, { name: 'up' });
  const r2 = b.node('Relu', [up], {}, { name: 'relu2' });
  b.output(b.node('ConvTranspose', [r2, b.init('wh', [48, 96, 1, 1], modeSRank(rng, 48, 96, 6))], {}, { name: 'head' }));
  return encodeModel(b.build());
}

describe('ConvTranspose end to end', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-e2e-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('optimizeModel rewrites both ConvTranspose layers under auto (Tucker-2 and SVD) and the result matches in ORT', async () => {
    const bytes = decoderModel();
    const model = new Model(decodeModel(bytes));
    const records = optimizeModel(model, undefined, {
      method: 'auto', policy: { kind: 'energy', energy: 0.999999 }, minParams: 0, seed: 0,
    } as Parameters<typeof optimizeModel>[2]);
    const by = new Map(records.map((r) => [r.name, r]));
    expect(by.get('up')).toMatchObject({ pass: 'convtranspose-tucker2', ranks: [6, 8] });
    expect(by.get('head')).toMatchObject({ pass: 'convtranspose-svd', ranks: [6] });
    expect(by.get('up')!.skipped).toBeUndefined();
    expect(by.get('head')!.skipped).toBeUndefined();
    const out = encodeModel(model.proto);
    expect(opCounts(model.proto)).toEqual({ Conv: 5, Relu: 2, ConvTranspose: 1 });
    const data = randn(createRng(3), 8 * 256);
    const a = await runOrt(bytes, { x: { data, dims: [1, 8, 16, 16] } });
    const b = await runOrt(out, { x: { data, dims: [1, 8, 16, 16] } });
    expect(b.dims).toEqual(a.dims);
    expect(relL2(a.data, b.data)).toBeLessThan(1e-4);
  });

  it('under auto, the SVD pair challenges Tucker-2 and wins where the structure is in the input channels alone', async () => {
    const rng = createRng(12);
    // A k = stride upsampler whose [S, T·K] unfolding has rank 2: Tucker-2 needs [2, 8] and a last 1x1 at 4x the positions.
    const spec: CtSpec = { S: 16, T: 12, group: 1, kernel: [2, 2], strides: [2, 2], size: [6, 6], bias: true };
    const bytes = ctModel(spec, modeSRank(rng, 16, 48, 2), rng);
    const model = new Model(decodeModel(bytes));
    const opts = { method: 'auto', policy: { kind: 'energy', energy: 0.999999 }, minParams: 0, seed: 0 } as Parameters<typeof optimizeModel>[2];
    const [rec] = optimizeModel(model, undefined, opts);
    expect(rec).toMatchObject({ pass: 'convtranspose-svd', ranks: [2] });
    expect(rec!.note).toMatch(/^tucker2 2,8 err .* vs svd 2 err /);
    expect((await compare(bytes, encodeModel(model.proto), spec, 4)).rel).toBeLessThan(1e-4);
    // A full-rank Tucker core at the same size: the pair cannot match it, Tucker-2 stays.
    const tk: CtSpec = { ...spec, kernel: [3, 3], pads: [1, 1, 1, 1] };
    const m2 = new Model(decodeModel(ctModel(tk, transposeTuckerKernel(rng, 16, 12, 1, 9, 4, 4), rng)));
    const [rec2] = optimizeModel(m2, undefined, opts);
    expect(rec2).toMatchObject({ pass: 'convtranspose-tucker2', ranks: [4, 4] });
    expect(rec2!.note).toMatch(/no svd of rank ≤ \d+ \(its cost\) fits as well/);
  });

  it('the CLI rewrites them under --method tucker2 / svd, verifies in ORT, and --stages merges the chains back', () => {
    const inPath = join(dir, 'dec.onnx');
    writeFileSync(inPath, decoderModel());
    const cli = (args: string[]): { status: number | null; out: string } => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/fuzz/cli-child.ts', ...args], { encoding: 'utf8' });
      return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
    };
    const report = join(dir, 'r.json');
    const t = cli(['optimize', inPath, join(dir, 't.onnx'), '--method', 'tucker2', '--energy', '0.999999', '--min-params', '0', '--save', 'params', '--report', report]);
    expect(t.status, t.out).toBe(0);
    const rep = JSON.parse(readFileSync(report, 'utf8')) as { layers: { name: string; pass?: string; ranks?: number[]; skipped?: boolean; reason?: string; macsBefore?: number; macsAfter?: number }[] };
    const up = rep.layers.find((l) => l.name === 'up')!;
    // MACs as layerMacs counts them (8x8 input of 32 channels, each scattering 48·16), and the chain's
    // true count at ranks [6, 8]: 1x1 at 8x8 (64·6·32) + core per input (64·6·8·16) + 1x1 at 16x16 (256·48·8).
    expect(up).toMatchObject({ pass: 'convtranspose-tucker2', ranks: [6, 8], macsBefore: 64 * 48 * 32 * 16, macsAfter: 64 * 6 * 32 + 64 * 6 * 8 * 16 + 256 * 48 * 8 });
    expect(up.skipped).toBeFalsy();
    expect(rep.layers.find((l) => l.name === 'head')!.reason).toMatch(/1x1 is convtranspose-svd's/);
    const s = cli(['optimize', inPath, join(dir, 's.onnx'), '--method', 'svd', '--energy', '0.999999', '--min-params', '0', '--save', 'params', '--report', report]);
    expect(s.status, s.out).toBe(0);
    const rs = JSON.parse(readFileSync(report, 'utf8')) as typeof rep;
    expect(rs.layers.find((l) => l.name === 'head')).toMatchObject({ pass: 'convtranspose-svd', ranks: [6] });
    expect(rs.layers.find((l) => l.name === 'up')).toMatchObject({ pass: 'convtranspose-svd' });
    // Two stages: stage 2 merges the ConvTranspose chain back (compose) and splits it again.
    const st = cli(['optimize', inPath, join(dir, 'st.onnx'), '--target-params', '0.4', '--stages', '2', '--min-params', '0', '--no-latency', '--report', report]);
    expect(st.status, st.out).toBe(0);
    const rst = JSON.parse(readFileSync(report, 'utf8')) as typeof rep & { notes: string[]; budget: { met: boolean; stages: { layers: number }[] } };
    expect(rst.notes.filter((n) => /could not merge/.test(n))).toEqual([]);
    expect(rst.budget.met).toBe(true);
    expect(rst.budget.stages.map((x) => x.layers)).toEqual([1, 1]);
    expect(rst.layers.find((l) => l.name === 'up')).toMatchObject({ pass: 'convtranspose-tucker2', ranks: [6, 8] });
    const outModel = decodeModel(readFileSync(join(dir, 'st.onnx')));
    expect(opCounts(outModel)).toEqual({ Conv: 3, Relu: 2, ConvTranspose: 2 });
  }, 120_000);
});
