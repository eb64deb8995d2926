/**
 * Scaffolding the tests of the axis-split conv passes (conv-spatial-svd, conv-tt,
 * conv-cp4) share: 2-D window cases and the attributes their split carries, composing a
 * chain back, the CLI on a one-Conv model, patch statistics written by hand, and the
 * data-aware and anchored last-factor checks in ORT.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { expect } from 'vitest';
import { ModelBuilder, type AttrValue } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import type { GraphProto, ModelProto } from '../../src/onnx/schema.js';
import { readTensorFloat } from '../../src/onnx/tensor.js';
import { isSkip, type ChainFactor, type FactoredLayer, type LayerInputStats, type LayerPass } from '../../src/rewrite/pass.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { route } from '../../src/rewrite/registry.js';
import { PASSES } from '../../passes/dispatch.js';
import { compareInOrt, context, convLayer, convModel, describe1, matchOnly, randn, relL2, rewrite, type ConvSpec, type PadMode } from './conv-harness.js';

/** A 2-D window case: per-axis kernel, stride and dilation, a padding mode, bias. */
export interface Window2d { kh: number; kw: number; sh: number; sw: number; dh: number; dw: number; pad: PadMode; bias: boolean }

/** Window cases for the exactness properties (no dilation with SAME_*: ORT 1.30 refuses it). */
export const windowCases = fc.record({
  k: fc.constantFrom([3, 3], [3, 5], [5, 3], [2, 3]),
  sh: fc.constantFrom(1, 2), sw: fc.constantFrom(1, 2),
  dh: fc.constantFrom(1, 2), dw: fc.constantFrom(1, 2),
  pad: fc.constantFrom<PadMode>('none', 'sym', 'asym', 'SAME_UPPER', 'SAME_LOWER', 'VALID'),
  bias: fc.boolean(),
  seed: fc.integer({ min: 0, max: 1_000_000 }),
}).filter((c) => !((c.dh > 1 || c.dw > 1) && c.pad.startsWith('SAME')));

/**
 * Runs `check` on 100 window cases (fast-check seed `seed`), each with a generator seeded
 * by the case: it rewrites a model of the case and returns both, which must then agree in
 * ORT (same output dims, relative error below 1e-4). Every case must run.
 */
export async function forWindowCases(seed: number, check: (c: Window2d & { seed: number }, rng: Rng) => { spec: ConvSpec; bytes: Uint8Array; out: Uint8Array }): Promise<void> {
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(windowCases, async (c) => {
      const [kh, kw] = c.k as [number, number];
      const { spec, bytes, out } = check({ ...c, kh, kw }, createRng(c.seed));
      const cmp = await compareInOrt(bytes, out, spec, c.seed);
      expect(cmp.b.dims, describe1(spec)).toEqual(cmp.a.dims);
      expect(cmp.rel, describe1(spec)).toBeLessThan(1e-4);
      runs++;
    }),
    { seed, numRuns: 100 },
  );
  expect(runs).toBe(100);
}

/**
 * The screen of the split passes (conv-tt, conv-cp4): 1-D and 3-D convs (unless `anyAxes`),
 * 1x1 and 1xk / kx1 kernels (`oneAxis`) and depthwise convs are declined by match and accepts
 * alike with the reason, prefixed by `prefix`; routing --method `method` says so.
 */
export function expectSplitDeclines<M>(pass: LayerPass<M>, method: string, prefix: RegExp, oneAxis: [number[], RegExp], anyAxes = false): void {
  const rng = createRng(1);
  const cases: [ConvSpec, RegExp][] = [
    ...(anyAxes ? [
      // A chain of one conv per axis: 1-D and 3-D convs are taken; kernels with an extent 1 are not.
      [{ S: 4, T: 4, kernel: [1], size: [8] }, /does not apply to pointwise convs \(kernel 1\)/],
      [{ S: 4, T: 4, kernel: [3, 1, 3], size: [5, 5, 5] }, /applies to kernels with every extent > 1 only \(3x1x3: /],
      [{ S: 4, T: 4, kernel: [1, 1, 1], size: [5, 5, 5] }, /does not apply to pointwise convs \(kernel 1x1x1\)/],
    ] as [ConvSpec, RegExp][] : [
      [{ S: 4, T: 4, kernel: [3], size: [8] }, /applies to 2-D convs only \(this one has 1 spatial axis/],
      [{ S: 4, T: 4, kernel: [3, 3, 3], size: [5, 5, 5] }, /applies to 2-D convs only \(this one has 3 spatial axes/],
    ] as [ConvSpec, RegExp][]),
    [{ S: 4, T: 4, kernel: [1, 1], size: [5, 5] }, /does not apply to 1x1 convs/],
    [{ S: 4, T: 4, kernel: oneAxis[0], size: [5, 5] }, oneAxis[1]],
    [{ S: 8, T: 8, group: 8, kernel: [3, 3], size: [5, 5] }, /does not apply to depthwise convs/],
  ];
  for (const [spec, why] of cases) {
    const n = spec.T * (spec.S / (spec.group ?? 1)) * spec.kernel.reduce((a, b) => a * b, 1);
    const { m, model } = matchOnly(convModel(spec, randn(rng, n), rng), pass);
    expect(isSkip(m) && m.skip, describe1(spec)).toMatch(why);
    expect(isSkip(m) && m.skip).toMatch(prefix);
    const acc = pass.accepts!(convLayer(model));
    expect(acc !== true && acc.skip).toMatch(why);
    expect(route(PASSES, convLayer(model), method)).toMatch(new RegExp(`^--method ${method} `));
  }
}

/** A 2-D spec with per-axis kernel, stride, dilation and padding, the input large enough for the window. */
export function spec2d(c: Window2d, S: number, T: number): ConvSpec {
  const eff = [(c.kh - 1) * c.dh + 1, (c.kw - 1) * c.dw + 1];
  const spec: ConvSpec = { S, T, kernel: [c.kh, c.kw], bias: c.bias, size: [eff[0]! + 4, eff[1]! + 3] };
  if (c.sh !== 1 || c.sw !== 1) spec.strides = [c.sh, c.sw];
  if (c.dh !== 1 || c.dw !== 1) spec.dilations = [c.dh, c.dw];
  if (c.pad === 'sym') spec.pads = [eff[0]! >> 1, eff[1]! >> 1, eff[0]! >> 1, eff[1]! >> 1];
  else if (c.pad === 'asym') spec.pads = [0, 2, 1, 0];
  else if (c.pad !== 'none') spec.autoPad = c.pad;
  return spec;
}

type AttrNode = { attribute: { name?: string | null; i?: number | bigint | null; ints: (number | bigint)[]; s?: Uint8Array | null }[] };

/** A node's window attributes as plain values (auto_pad, strides, pads, dilations; with `shape`, also kernel_shape and group). */
export function windowAttrs(n: AttrNode, shape: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const lists = shape ? ['strides', 'pads', 'dilations', 'kernel_shape'] : ['strides', 'pads', 'dilations'];
  for (const a of n.attribute) {
    if (a.name === 'auto_pad') out[a.name] = new TextDecoder().decode(a.s!);
    else if (shape && a.name === 'group') out[a.name] = Number(a.i);
    else if (lists.includes(a.name ?? '')) out[a.name!] = a.ints.map(Number);
  }
  return out;
}

/**
 * The placement the kh×1 conv (`rows`: axis 0's stride, dilation and pads) and the 1×kw
 * conv (`cols`: axis 1's) of a split must carry for window `c` and its spec: the original
 * auto_pad on both.
 */
export function splitPlacementOf(c: Window2d, spec: ConvSpec): { rows: Record<string, unknown>; cols: Record<string, unknown> } {
  const auto = spec.autoPad ? { auto_pad: spec.autoPad } : {};
  return {
    rows: { ...(spec.strides && { strides: [c.sh, 1] }), ...(spec.dilations && { dilations: [c.dh, 1] }), ...(spec.pads && { pads: [spec.pads[0], 0, spec.pads[2], 0] }), ...auto },
    cols: { ...(spec.strides && { strides: [1, c.sw] }), ...(spec.dilations && { dilations: [1, c.dw] }), ...(spec.pads && { pads: [0, spec.pads[1], 0, spec.pads[3]] }), ...auto },
  };
}

/** The chain factors (initializers) of a rewritten graph's convs, as merge.ts hands them to compose. */
export function chainFactors(g: GraphProto): ChainFactor[] {
  const inits = new Map(g.initializer.map((t) => [t.name!, t]));
  return g.node.map((n) => {
    const t = inits.get(n.input[1]!)!;
    return { name: t.name!, dims: t.dims.map(Number), dataType: t.dataType ?? 1, read: () => readTensorFloat(t) };
  });
}

/**
 * Rewrites a random [5, 6, 3, 5] kernel at `ranks` and composes the chain back (--stages):
 * the composed kernel is off the original by exactly the reported weight error. Returns the
 * chain, its factors and the layer record, for the caller's negative cases.
 */
export function composeBack<M>(pass: LayerPass<M>, ranks: number[]): { nodes: GraphProto['node']; factors: ChainFactor[]; f: FactoredLayer } {
  const rng = createRng(4);
  const spec: ConvSpec = { S: 6, T: 5, kernel: [3, 5], pads: [1, 2, 1, 2], size: [8, 9] };
  const w = randn(rng, 5 * 6 * 15);
  const out = rewrite(convModel(spec, w, rng), pass, ranks);
  const nodes = out.proto.graph!.node;
  const factors = chainFactors(out.proto.graph!);
  const f = { name: 'conv', original: nodes[0]!, weightInput: 1, weightDims: [5, 6, 3, 5], nodes: [] };
  const composed = pass.compose(nodes, factors, f, undefined);
  if (typeof composed === 'string') throw new Error(composed);
  expect(relL2(w, composed)).toBeCloseTo(out.applied.relError, 5);
  return { nodes, factors, f };
}

/** What the CLI wrote: its --report JSON and the output model. */
export interface CliResult {
  /** The parts of the report the tests read. */
  rep: { layers: { relError: number; [k: string]: unknown }[]; verify: { pass: boolean; outputs: { relL2: number }[] } };
  proto: ModelProto;
}

/**
 * Writes `y = Conv(x [1, 16, 12, 12], w [24, 16, 3, 3], bias; attrs)` and runs
 * `optimize in out ARGS… --min-params 0 --save params --report` on it (--save params: no
 * latency screen); expects exit 0.
 */
export function optimizeCli(tag: string, w: Float32Array, bias: Float32Array, attrs: Record<string, AttrValue>, args: string[]): CliResult {
  const dir = mkdtempSync(path.join(tmpdir(), `onnx-lr-${tag}-cli-`));
  const inp = path.join(dir, 'in.onnx');
  const outp = path.join(dir, 'out.onnx');
  const report = path.join(dir, 'report.json');
  const mb = new ModelBuilder({ opset: 13 });
  const x = mb.input('x', [1, 16, 12, 12]);
  mb.output(mb.node('Conv', [x, mb.init('w', [24, 16, 3, 3], w), mb.init('bias', [24], bias)], attrs, { name: 'conv' }));
  writeFileSync(inp, encodeModel(mb.build()));
  const res = spawnSync(process.execPath, ['--import', 'tsx', 'test/fuzz/cli-child.ts', 'optimize', inp, outp, ...args, '--min-params', '0', '--save', 'params', '--report', report], { encoding: 'utf8' });
  expect(res.status, res.stderr).toBe(0);
  return { rep: JSON.parse(readFileSync(report, 'utf8')), proto: decodeModel(readFileSync(outp)) };
}

/** The verdicts of an exact chain: near-zero weight error, and the CLI's own ORT verification passed. */
export function expectExactVerified(rep: CliResult['rep']): void {
  expect(rep.layers[0].relError).toBeLessThan(1e-5);
  expect(rep.verify.pass).toBe(true);
  expect(rep.verify.outputs[0].relL2).toBeLessThan(1e-5);
}

/** Covariance X·Xᵀ/m of m random D-vectors (D×D, row-major). */
export function sampleCov(rng: Rng, D: number, m: number): Float64Array {
  const x = Array.from({ length: D * m }, () => rng.normal());
  const cov = new Float64Array(D * D);
  for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) {
    let v = 0;
    for (let p = 0; p < m; p++) v += x[i * m + p]! * x[j * m + p]!;
    cov[i * D + j] = v / m;
  }
  return cov;
}

/**
 * Group-1 conv statistics over n patches of dimension D = S·∏k: correlated patches
 * (Σ = X·Xᵀ/n for uneven row scales) with a non-zero mean, identity channel Gram.
 */
export function patchStats(rng: Rng, S: number, D: number, n: number): LayerInputStats {
  const x = Array.from({ length: D * n }, (_, i) => rng.normal() * (1 + ((i / n) % 4)));
  const gram = new Float64Array(D * D);
  for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) {
    let v = 0;
    for (let p = 0; p < n; p++) v += x[i * n + p]! * x[j * n + p]!;
    gram[i * D + j] = v / n;
  }
  const chan = new Float64Array(S * S);
  for (let i = 0; i < S; i++) chan[i * S + i] = 1;
  return {
    kind: 'conv', gram: chan, dim: S, groups: 1, count: n, patchGram: gram, patchDim: D, patchCount: n,
    patchMean: Float64Array.from({ length: D }, () => 0.2 * rng.normal()),
  };
}

/**
 * Anchored statistics with x̂ = x over n patches of dimension D: second moments
 * n·(Σ + μμᵀ) of covariance `cov` and mean `mean`, channel sums n·I.
 */
export function anchoredStats(S: number, D: number, n: number, mean: Float64Array, cov: Float64Array): LayerInputStats {
  const sum = new Float64Array(D * D);
  for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) sum[i * D + j] = n * (cov[i * D + j]! + mean[i]! * mean[j]!);
  const chSum = new Float64Array(S * S);
  for (let i = 0; i < S; i++) chSum[i * S + i] = n;
  return {
    kind: 'conv', gram: chSum, dim: S, groups: 1, count: n, mean: new Float64Array(S),
    patchGram: sum, patchDim: D, patchMean: mean, patchCount: n,
    anchor: { gram: chSum, cross: chSum, mean: new Float64Array(S), patchGram: sum, patchCross: sum, patchMean: mean },
  };
}

/**
 * Match and apply `pass` at `ranks` on the one conv of `bytes` with `stats`: the weight and
 * data errors are below 1e-4, the doc string matches `doc`, and the rewritten model
 * matches the original in ORT (input seed `seed`).
 */
export async function expectExactWithStats<M extends { anchor?: unknown }>(
  pass: LayerPass<M>, bytes: Uint8Array, spec: ConvSpec, stats: LayerInputStats, ranks: number[], doc: RegExp, seed: number,
): Promise<void> {
  const model = new Model(decodeModel(bytes));
  const cx = { ...context(model), stats: new Map([['conv', stats]]) };
  const m = pass.match(convLayer(model), cx);
  if (isSkip(m)) throw new Error(m.skip);
  if (stats.anchor) expect(m.anchor).toBeDefined();
  const applied = pass.apply(m, ranks, cx);
  if (isSkip(applied)) throw new Error(applied.skip);
  expect(applied.relError).toBeLessThan(1e-4);
  expect(applied.dataError!).toBeLessThan(1e-4);
  expect(model.root.nodes[0]!.docString).toMatch(doc);
  model.root.removeUnusedInitializers();
  expect((await compareInOrt(bytes, encodeModel(model.proto), spec, seed)).rel).toBeLessThan(1e-4);
}

/**
 * The last-factor refit on well-determined patch statistics (conv-tt, conv-cp4): the
 * kernel `exact` stays exact at `exactRanks` (ORT); on a random kernel the refit's output
 * error on the statistics at `ranks` is below that of `plain`, the weight-only fit's
 * kernel; with fewer than two rows per patch dimension there is no refit. Draws from `rng`
 * in a fixed order.
 */
export async function expectLastFactorRefit<M>(
  pass: LayerPass<M>, rng: Rng, spec: ConvSpec, exact: Float32Array, exactRanks: number[], plain: (w: Float32Array) => Float32Array, ranks: number[],
): Promise<void> {
  const S = spec.S;
  const D = S * spec.kernel.reduce((a, b) => a * b, 1);
  const exactBytes = convModel(spec, exact, rng);
  const model = new Model(decodeModel(exactBytes));
  const cx = { ...context(model), stats: new Map([['conv', patchStats(rng, S, D, 3 * D)]]) };
  const m = pass.match(convLayer(model), cx);
  if (isSkip(m)) throw new Error(m.skip);
  const applied = pass.apply(m, exactRanks, cx);
  if (isSkip(applied)) throw new Error(applied.skip);
  expect(applied.relError).toBeLessThan(1e-5);
  expect(applied.dataError!).toBeLessThan(1e-5);
  expect(model.root.nodes[0]!.docString).toMatch(/last factor refitted on calibration patches/);
  model.root.removeUnusedInitializers();
  expect((await compareInOrt(exactBytes, encodeModel(model.proto), spec, 11)).rel).toBeLessThan(1e-4);

  // A random kernel: the refit lowers the output error on the statistics below the weight-only fit's.
  const w = randn(rng, spec.T * D);
  const bytes = convModel(spec, w, rng);
  const st = patchStats(rng, S, D, 3 * D);
  const fresh = () => context(new Model(decodeModel(bytes)));
  const m2 = pass.match(convLayer(new Model(decodeModel(bytes))), { ...fresh(), stats: new Map([['conv', st]]) });
  if (isSkip(m2)) throw new Error(m2.skip);
  const aware = pass.estimate!(m2, ranks, fresh());
  if (isSkip(aware)) throw new Error(aware.skip);
  const wp = plain(w);
  const quad = (dw: ArrayLike<number>): number => {
    let s = 0;
    for (let t = 0; t < spec.T; t++) for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) s += dw[t * D + i]! * st.patchGram![i * D + j]! * dw[t * D + j]!;
    return s;
  };
  expect(aware.dataError!).toBeLessThan(Math.sqrt(quad(Float64Array.from(w, (v, i) => v - wp[i]!)) / quad(w)));
  // Too few rows per patch dimension: no refit (weight-only), as conv-cp.
  const m3 = pass.match(convLayer(new Model(decodeModel(bytes))), { ...fresh(), stats: new Map([['conv', patchStats(rng, S, D, 2 * D - 1)]]) });
  if (isSkip(m3)) throw new Error(m3.skip);
  const few = pass.estimate!(m3, ranks, fresh());
  expect(!isSkip(few) && few.dataError).toBeUndefined();
}
