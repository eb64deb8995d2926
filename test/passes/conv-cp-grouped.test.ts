import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { challengeCp, convCp, cpGroupCost, GROUPED_CP_SLOW_PATH } from '../../passes/conv-cp.js';
import { convTucker2 } from '../../passes/conv-tucker2.js';
import { bind } from '../../src/rewrite/registry.js';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { cpCost } from '../../src/rewrite/conv-geometry.js';
import { isSkip, type LayerInputStats } from '../../src/rewrite/pass.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { chainFactors } from './conv-e2e.js';
import {
  compareInOrt, context, convLayer, convModel, cpKernel, describe1, matchOnly, opCounts, ortRuns, PADS, randn, relL2, rewrite, windowSpec, type ConvSpec,
} from './conv-harness.js';

/** A grouped kernel [T, S/g, K] whose every group is an exact CP of rank R (per-group factors). */
function groupedCpKernel(rng: Rng, T: number, S: number, group: number, K: number, R: number): Float32Array {
  const t = T / group;
  const s = S / group;
  const w = new Float32Array(T * s * K);
  for (let j = 0; j < group; j++) w.set(cpKernel(rng, t, s, K, R), j * t * s * K);
  return w;
}

const attr = (n: { attribute: { name?: string | null; i?: number | bigint | null }[] }, name: string): number | undefined => {
  const a = n.attribute.find((x) => x.name === name);
  return a ? Number(a.i) : undefined;
};

describe('conv-cp on grouped convs (one CP per group)', () => {
  it('exact per-group CP rank: grouped 1x1 → depthwise → grouped 1x1 matches the original in ORT (groups, 1D/2D/3D, strides, pads incl. asymmetric, dilations, auto_pad, bias)', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          group: fc.constantFrom(2, 3, 4),
          spatial: fc.constantFrom(1, 2, 3),
          k: fc.constantFrom(2, 3),
          stride: fc.constantFrom(1, 2),
          dilation: fc.constantFrom(1, 2),
          pad: fc.constantFrom(...PADS),
          bias: fc.boolean(),
          seed: fc.integer({ min: 0, max: 1_000_000 }),
        }).filter(ortRuns),
        async (c) => {
          const rng = createRng(c.seed);
          const s = 3 + rng.int(3);
          const t = 3 + rng.int(3);
          const R = 2 + rng.int(2); // ≤ t, s: orthonormal factors, a unique CP per group
          const [S, T] = [s * c.group, t * c.group];
          const spec: ConvSpec = { S, T, group: c.group, bias: c.bias, ...windowSpec(c.spatial, c.k, c.stride, c.dilation, c.pad) };
          const K = spec.kernel.reduce((a, b) => a * b, 1);
          const bytes = convModel(spec, groupedCpKernel(rng, T, S, c.group, K, R), rng);
          const out = rewrite(bytes, convCp, [R]);
          expect(out.applied.relError, describe1(spec)).toBeLessThan(1e-5);
          expect(opCounts(out.proto)).toEqual({ Conv: 3 });
          const [a, dw, last] = out.proto.graph!.node;
          const inits = new Map(out.proto.graph!.initializer.map((x) => [x.name, x.dims.map(Number)]));
          const ones = new Array<number>(c.spatial).fill(1);
          expect(inits.get(a!.input[1])).toEqual([c.group * R, s, ...ones]);
          expect(inits.get(dw!.input[1])).toEqual([c.group * R, 1, ...spec.kernel]);
          expect(inits.get(last!.input[1])).toEqual([T, R, ...ones]);
          expect([attr(a!, 'group'), attr(dw!, 'group'), attr(last!, 'group')]).toEqual([c.group, c.group * R, c.group]);
          expect(last!.input).toHaveLength(c.bias ? 3 : 2);
          const cmp = await compareInOrt(bytes, out.bytes, spec, c.seed);
          expect(cmp.b.dims, describe1(spec)).toEqual(cmp.a.dims);
          expect(cmp.rel, describe1(spec)).toBeLessThan(1e-4);
          runs++;
        },
      ),
      { seed: 19, numRuns: 80 },
    );
    expect(runs).toBe(80);
  });

  it('composes back (--stages) to the grouped kernel, off by exactly the reported error', () => {
    const rng = createRng(4);
    const spec: ConvSpec = { S: 8, T: 6, group: 2, kernel: [3, 3], pads: [1, 1, 1, 1], size: [7, 7] };
    const w = randn(rng, 6 * 4 * 9);
    const out = rewrite(convModel(spec, w, rng), convCp, [3]);
    const nodes = out.proto.graph!.node;
    // compose reads the original's group: the chain's first conv carries the same group (2).
    expect(attr(nodes[0]!, 'group')).toBe(2);
    const f = { name: 'conv', original: nodes[0]!, weightInput: 1, weightDims: [6, 4, 3, 3], nodes: [] };
    const composed = convCp.compose(nodes, chainFactors(out.proto.graph!), f, undefined);
    if (typeof composed === 'string') throw new Error(composed);
    expect(out.applied.relError).toBeGreaterThan(0.05);
    expect(relL2(w, composed)).toBeCloseTo(out.applied.relError, 5);
  });

  it('costs: R·S + g·R·K + T·R params; the first 1x1 pays the stride factor; group 1 is the plain CP chain', () => {
    const rng = createRng(2);
    const { m } = matchOnly(convModel({ S: 16, T: 32, group: 4, ...windowSpec(2, 3, 2, 1, 'sym') }, randn(rng, 32 * 4 * 9), rng), convCp);
    if (isSkip(m)) throw new Error(m.skip);
    const c = convCp.cost(m, [3]);
    expect(c.before.params).toBe(32 * 4 * 9);
    expect(c.after.params).toBe(3 * 16 + 4 * 3 * 9 + 32 * 3);
    expect(c.after.macsPerPosition).toBe(4 * 3 * 16 + 4 * 3 * 9 + 32 * 3);
    // The generic rank bound is per group: t·s·K / max(t, s, K) = 8·4·9 / 9.
    expect(convCp.rankLimits(m)).toEqual([32]);
    for (const r of [1, 5, 17]) expect(cpGroupCost({ ...m.geo, group: 1, S: 16 }, r)).toEqual(cpCost({ ...m.geo, group: 1, S: 16 }, r));
  });

  it('chooseRanks on a grouped conv: fixed, ratio per group, energy over all groups (declined when no CP that pays meets it)', () => {
    const rng = createRng(5);
    const [S, T, G] = [12, 16, 2];
    const { m } = matchOnly(convModel({ S, T, group: G, ...windowSpec(2, 3, 1, 1, 'sym') }, groupedCpKernel(rng, T, S, G, 9, 3), rng), convCp);
    if (isSkip(m)) throw new Error(m.skip);
    expect(convCp.chooseRanks(m, { kind: 'fixed', rank: 4 })).toEqual([4]);
    // ρ·T·(S/g)·K / (S + T + g·K): params R(S + T + gK) = ρ × dense.
    expect(convCp.chooseRanks(m, { kind: 'ratio', ratio: 0.5 })).toEqual([Math.floor((0.5 * T * (S / G) * 9) / (S + T + G * 9))]);
    expect(convCp.chooseRanks(m, { kind: 'energy', energy: 1 - 1e-9 })).toEqual([3]);
    const noisy = matchOnly(convModel({ S, T, group: G, ...windowSpec(2, 3, 1, 1, 'sym') }, randn(rng, T * (S / G) * 9), rng), convCp).m;
    if (isSkip(noisy)) throw new Error(noisy.skip);
    const no = convCp.chooseRanks(noisy, { kind: 'energy', energy: 0.999 });
    expect(isSkip(no) && no.skip).toMatch(/^energy 0\.999 needs a CP rank above \d+ \(break-even\)/);
  });

  it('declines depthwise and grouped 1x1 convs with reasons', () => {
    const rng = createRng(1);
    const dw = matchOnly(convModel({ S: 6, T: 12, group: 6, ...windowSpec(2, 3, 1, 1, 'sym') }, randn(rng, 12 * 9), rng), convCp).m;
    expect(isSkip(dw) && dw.skip).toBe('depthwise: nothing to gain (one input channel per group, group 6)');
    const pw = matchOnly(convModel({ S: 8, T: 8, group: 4, ...windowSpec(2, 1, 1, 1, 'none') }, randn(rng, 16), rng), convCp).m;
    expect(isSkip(pw) && pw.skip).toBe('1x1 kernel: a matrix per group (group 4), conv-tucker2 handles it');
  });

  it('data-aware per group: each group whitened by its own statistics, an exact kernel stays exact (ORT), errors combine over groups', async () => {
    const rng = createRng(31);
    const [G, s, t, R] = [3, 4, 3, 2];
    const [S, T, K] = [G * s, G * t, 9];
    const spec: ConvSpec = { S, T, group: G, bias: true, ...windowSpec(2, 3, 1, 1, 'asym') };
    const bytes = convModel(spec, groupedCpKernel(rng, T, S, G, K, R), rng);
    const D = s * K;
    const cov = (n: number) => { const x = randn(rng, n * 3 * n); const g = new Float64Array(n * n); for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { let v = 0; for (let p = 0; p < 3 * n; p++) v += x[i * 3 * n + p]! * x[j * 3 * n + p]!; g[i * n + j] = v / (3 * n) + (i === j ? 0.01 : 0); } return g; };
    const gram = new Float64Array(G * s * s);
    const patchGram = new Float64Array(G * D * D);
    for (let j = 0; j < G; j++) { gram.set(cov(s), j * s * s); patchGram.set(cov(D), j * D * D); }
    const stats: LayerInputStats = { kind: 'conv', gram, dim: s, groups: G, count: 3 * D, patchGram, patchDim: D, patchMean: Float64Array.from({ length: G * D }, () => 0.3 * rng.normal()) };
    const model = new Model(decodeModel(bytes));
    const cx = { ...context(model), stats: new Map([['conv', stats]]) };
    const m = convCp.match(convLayer(model), cx);
    if (isSkip(m)) throw new Error(m.skip);
    const applied = convCp.apply(m, [R], cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    expect(m.whitening).toHaveLength(G);
    expect(m.whitening!.every((x) => x?.lk)).toBe(true);
    expect(m.fitted?.parts).toHaveLength(G);
    expect(applied.relError).toBeLessThan(1e-4);
    expect(applied.dataError).toBeLessThan(1e-4);
    model.root.removeUnusedInitializers();
    const cmp = await compareInOrt(bytes, encodeModel(model.proto), spec, 31);
    expect(cmp.rel).toBeLessThan(1e-4);
    // A lossy rank: the layer's data error is the groups' output-error traces summed, over theirs.
    const m2 = convCp.match(convLayer(new Model(decodeModel(bytes))), cx);
    if (isSkip(m2)) throw new Error(m2.skip);
    const lossy = convCp.estimate!(m2, [1], cx);
    if (isSkip(lossy)) throw new Error(lossy.skip);
    const parts = m2.fitted!.parts;
    const num = parts.reduce((a, p) => a + p.dataError! ** 2 * p.dataDen!, 0);
    const den = parts.reduce((a, p) => a + p.dataDen!, 0);
    expect(lossy.dataError).toBeCloseTo(Math.sqrt(num / den), 12);
    expect(lossy.dataError).toBeGreaterThan(1e-3);
  });

  it('end to end: --method cp rewrites a grouped conv, the record carries the CP sensitivity note', () => {
    const rng = createRng(9);
    const [G, S, T] = [2, 16, 16];
    const spec: ConvSpec = { S, T, group: G, ...windowSpec(2, 3, 1, 1, 'sym') };
    const bytes = convModel(spec, groupedCpKernel(rng, T, S, G, 9, 3), rng);
    const model = new Model(decodeModel(bytes));
    const [rec] = optimizeModel(model, undefined, { method: 'cp', policy: { kind: 'fixed', rank: 3 }, minParams: 0, seed: 0 });
    expect(rec).toMatchObject({ pass: 'conv-cp', ranks: [3] });
    expect(rec!.relError).toBeLessThan(1e-5);
    expect(rec!.paramsAfter).toBe(3 * S + G * 3 * 9 + T * 3);
    const doc = model.root.nodes.find((n) => n.opType === 'Conv')!.docString;
    expect(doc).toMatch(/rank 3 per group \(2 groups\) of 16x16x3x3 .*CP sensitivity ss \d\.\d\de[+-]\d+ \(ratio \d+\.\d\d to a non-cancelling CP's\)/);
  });

  it('under auto, CP per group beats Tucker-2 on a grouped CP kernel at equal cost when the run saves params or MACs; where latency counts, at equal error Tucker-2 stays', () => {
    const rng = createRng(12);
    const [G, S, T, R] = [2, 16, 16, 3];
    const bytes = convModel({ S, T, group: G, ...windowSpec(2, 3, 1, 1, 'sym') }, groupedCpKernel(rng, T, S, G, 9, R), rng);
    const model = new Model(decodeModel(bytes));
    const cx = context(model);
    const layer = convLayer(model);
    const tucker = bind(convTucker2, layer, cx);
    if (isSkip(tucker)) throw new Error(tucker.skip);
    const ranksT = tucker.chooseRanks({ kind: 'energy', energy: 0.999 });
    expect(ranksT).toEqual([R, R]);
    const equal = `(equal: cp's chains ${GROUPED_CP_SLOW_PATH}, so tucker2 stays where latency counts)`;
    const byDefault = challengeCp(layer, tucker, ranksT as number[], cx);
    expect(byDefault?.use).toBeUndefined();
    expect(byDefault?.note).toMatch(/^tucker2 3,3 err \S+ vs cp \d+ err \S+ \(equal: /);
    expect(byDefault?.note?.endsWith(equal)).toBe(true);
    const saving = challengeCp(layer, tucker, ranksT as number[], { ...cx, saves: 'params' });
    expect(saving?.note).toMatch(/^tucker2 3,3 err \S+ vs cp \d+ err \S+; cp 3 err \S+, the smallest within it$/);
    expect(saving?.use?.bound.name).toBe('conv-cp');
    expect(saving?.use?.ranks).toEqual([R]);
    // Per group: Tucker-2 [3, 3] is 16·3 + 2·3·3·9 + 16·3 = 258 params, CP 3 is 3·16 + 2·3·9 + 16·3 = 150.
    expect(saving!.use!.bound.cost([R]).after.params).toBe(150);
    // The driver under auto (latency counts): Tucker-2 stays, the comparison is noted.
    const [rec] = optimizeModel(new Model(decodeModel(bytes)), undefined, { method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0 });
    expect(rec).toMatchObject({ pass: 'conv-tucker2', ranks: [R, R] });
    expect(rec!.note).toContain(equal);
  });
});
