/**
 * The split passes (conv-spatial-svd, conv-tt, conv-cp4) on grouped convs: each group's
 * kernel factorized on its own at the same ranks, the chain's convs all grouped
 * (conv-split-groups.ts). Exact per-group ranks match the original in ORT over group
 * counts, strides, pads (incl. asymmetric and auto_pad), dilations and bias; costs,
 * compose, rank choice, data-aware fits and auto stay as they were on ungrouped convs.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { convCp4, cp4Cost } from '../../passes/conv-cp4.js';
import { convSpatialSvd, spatialSvdCost } from '../../passes/conv-spatial-svd.js';
import { convTt, ttCost } from '../../passes/conv-tt.js';
import { Model } from '../../src/graph/graph.js';
import { cp4Kernel } from '../../src/linalg/cp4-conv.js';
import { orthonormalize } from '../../src/linalg/qr.js';
import { spatialKernel } from '../../src/linalg/spatial-svd.js';
import { ttKernel } from '../../src/linalg/tt.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { isSkip, type LayerInputStats, type LayerPass } from '../../src/rewrite/pass.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { chainFactors, spec2d, splitPlacementOf, windowAttrs, windowCases } from './conv-e2e.js';
import { compareInOrt, context, convLayer, convModel, describe1, matchOnly, opCounts, randn, relL2, rewrite, type ConvSpec } from './conv-harness.js';

type Kind = 'spatial-svd' | 'tt' | 'cp4';
const PASS: Record<Kind, LayerPass<unknown>> = { 'spatial-svd': convSpatialSvd as LayerPass<unknown>, tt: convTt as LayerPass<unknown>, cp4: convCp4 as LayerPass<unknown> };

/** Orthonormal columns where R fits the mode (a unique CP, where ALS from an SVD start converges: see conv-harness cpKernel). */
function factor(rng: Rng, n: number, R: number): Float64Array {
  const m = { rows: n, cols: R, data: Float64Array.from(randn(rng, n * R)) };
  return R <= n ? Float64Array.from(orthonormalize(m).data) : m.data;
}

/** Transposes an [n, R] factor to [R, n]. */
const tr = (a: Float64Array, n: number, R: number): Float64Array => Float64Array.from({ length: n * R }, (_, i) => a[(i % n) * R + Math.floor(i / n)]!);

/** One group's kernel [t, s, kh, kw] of exact rank(s) `ranks` for `kind`. */
function groupKernel(kind: Kind, rng: Rng, t: number, s: number, kh: number, kw: number, ranks: number[]): Float32Array {
  if (kind === 'spatial-svd') return spatialKernel(randn(rng, ranks[0]! * s * kh), randn(rng, t * ranks[0]! * kw), t, s, kh, kw, ranks[0]!);
  if (kind === 'tt') {
    const [R1, R2, R3] = ranks as [number, number, number];
    return ttKernel(randn(rng, R1 * s), randn(rng, R2 * R1 * kh), randn(rng, R3 * R2 * kw), randn(rng, t * R3), t, s, kh, kw, [R1, R2, R3]);
  }
  const R = ranks[0]!;
  const lambda = Float64Array.from({ length: R }, () => 1 + 2 * rng.next());
  const A = factor(rng, t, R);
  for (let i = 0; i < t; i++) for (let r = 0; r < R; r++) A[i * R + r]! *= lambda[r]!;
  return cp4Kernel(tr(factor(rng, s, R), s, R), tr(factor(rng, kh, R), kh, R), tr(factor(rng, kw, R), kw, R), A, t, s, kh, kw, R);
}

/** A grouped kernel [T, S/g, kh, kw] whose every group has exact rank(s) `ranks`. */
function groupedKernel(kind: Kind, rng: Rng, G: number, t: number, s: number, kh: number, kw: number, ranks: number[]): Float32Array {
  const per = t * s * kh * kw;
  const w = new Float32Array(G * per);
  for (let j = 0; j < G; j++) w.set(groupKernel(kind, rng, t, s, kh, kw, ranks), j * per);
  return w;
}

/** Ranks of `kind` that the group's sizes make exact and unique enough for the fits. */
function ranksFor(kind: Kind, rng: Rng, kh: number, kw: number): number[] {
  if (kind === 'spatial-svd') return [2 + rng.int(3)];
  if (kind === 'tt') return [2 + rng.int(2), 2 + rng.int(3), 2 + rng.int(2)];
  return [2 + rng.int(Math.min(kh, kw) - 1)];
}

const attrInt = (n: { attribute: { name?: string | null; i?: number | bigint | null }[] }, name: string): number | undefined => {
  const a = n.attribute.find((x) => x.name === name);
  return a ? Number(a.i) : undefined;
};

/** The chain's weight dims for `kind` at per-group ranks on G groups. */
function chainDims(kind: Kind, G: number, T: number, s: number, kh: number, kw: number, r: number[]): number[][] {
  if (kind === 'spatial-svd') return [[G * r[0]!, s, kh, 1], [T, r[0]!, 1, kw]];
  if (kind === 'tt') return [[G * r[0]!, s, 1, 1], [G * r[1]!, r[0]!, kh, 1], [G * r[2]!, r[1]!, 1, kw], [T, r[2]!, 1, 1]];
  return [[G * r[0]!, s, 1, 1], [G * r[0]!, 1, kh, 1], [G * r[0]!, 1, 1, kw], [T, r[0]!, 1, 1]];
}

/** Each conv's group attribute (absent: 1). */
function chainGroups(kind: Kind, G: number, r: number[]): number[] {
  if (kind === 'spatial-svd') return [G, G];
  if (kind === 'tt') return [G, G, G, G];
  return [G, G * r[0]!, G * r[0]!, G];
}

describe('split passes on grouped convs (one factorization per group)', () => {
  it('exact per-group ranks match the original in ORT (spatial SVD, TT, CP-4 × groups 2–4, strides, pads incl. asymmetric and auto_pad, dilations, bias)', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(windowCases, fc.constantFrom<Kind>('spatial-svd', 'tt', 'cp4'), fc.constantFrom(2, 3, 4), async (c0, kind, G) => {
        const [kh, kw] = c0.k as [number, number];
        const c = { ...c0, kh, kw };
        const rng = createRng(c.seed);
        const s = 4 + rng.int(3);
        const t = 4 + rng.int(3);
        const ranks = ranksFor(kind, rng, kh, kw);
        const spec: ConvSpec = { ...spec2d(c, G * s, G * t), group: G };
        const T = G * t;
        const bytes = convModel(spec, groupedKernel(kind, rng, G, t, s, kh, kw, ranks), rng);
        const out = rewrite(bytes, PASS[kind], ranks);
        const what = `${kind} g${G} ${describe1(spec)}`;
        expect(out.applied.relError, what).toBeLessThan(1e-5);
        const nodes = out.proto.graph!.node;
        expect(opCounts(out.proto)).toEqual({ Conv: kind === 'spatial-svd' ? 2 : 4 });
        const inits = new Map(out.proto.graph!.initializer.map((x) => [x.name, x.dims.map(Number)]));
        expect(nodes.map((n) => inits.get(n.input[1]!)), what).toEqual(chainDims(kind, G, T, s, kh, kw, ranks));
        expect(nodes.map((n) => attrInt(n, 'group')), what).toEqual(chainGroups(kind, G, ranks));
        // The window split by axis as on ungrouped convs.
        const { rows, cols } = splitPlacementOf(c, spec);
        const [first, second] = kind === 'spatial-svd' ? [nodes[0]!, nodes[1]!] : [nodes[1]!, nodes[2]!];
        expect(windowAttrs(first, false)).toEqual(rows);
        expect(windowAttrs(second, false)).toEqual(cols);
        expect(nodes.at(-1)!.input).toHaveLength(c.bias ? 3 : 2);
        const cmp = await compareInOrt(bytes, out.bytes, spec, c.seed);
        expect(cmp.b.dims, what).toEqual(cmp.a.dims);
        expect(cmp.rel, what).toBeLessThan(1e-4);
        runs++;
      }),
      { seed: 29, numRuns: 90 },
    );
    expect(runs).toBe(90);
  });

  it('compose (--stages) returns the grouped kernel the chain computes, off by exactly the reported error', () => {
    for (const [kind, ranks] of [['spatial-svd', [3]], ['tt', [2, 3, 2]], ['cp4', [3]]] as [Kind, number[]][]) {
      const rng = createRng(4);
      const spec: ConvSpec = { S: 12, T: 8, group: 2, kernel: [3, 3], pads: [1, 1, 1, 1], size: [7, 7] };
      const w = randn(rng, 8 * 6 * 9);
      const out = rewrite(convModel(spec, w, rng), PASS[kind], ranks);
      const nodes = out.proto.graph!.node;
      const original = decodeModel(convModel(spec, w, createRng(4))).graph!.node[0]!;
      const f = { name: 'conv', original, weightInput: 1, weightDims: [8, 6, 3, 3], nodes: [] };
      const composed = PASS[kind].compose(nodes, chainFactors(out.proto.graph!), f, undefined);
      if (typeof composed === 'string') throw new Error(`${kind}: ${composed}`);
      expect(out.applied.relError, kind).toBeGreaterThan(0.05);
      expect(relL2(w, composed), kind).toBeCloseTo(out.applied.relError, 5);
    }
  });

  it('costs: the stacked chains; each is its ungrouped cost at group 1', () => {
    const rng = createRng(2);
    const [G, S, T] = [4, 16, 32];
    const spec: ConvSpec = { S, T, group: G, kernel: [3, 5], strides: [2, 3], size: [12, 16] };
    const bytes = convModel(spec, randn(rng, T * (S / G) * 15), rng);
    const geo = (() => { const { m } = matchOnly(bytes, convTt); if (isSkip(m)) throw new Error(m.skip); return m.geo; })();
    // Spatial SVD: H [g·R, S/g, kh, 1] and V [T, R, 1, kw]: R·(S·kh + T·kw) as at group 1.
    expect(spatialSvdCost(geo, 3)).toEqual({ params: 3 * (S * 3 + T * 5), macsPerPosition: 3 * S * 3 * 3 + T * 3 * 5 });
    // TT: S·R1 + g·R1·R2·kh + g·R2·R3·kw + R3·T.
    expect(ttCost(geo, [2, 3, 4])).toEqual({ params: S * 2 + G * 2 * 3 * 3 + G * 3 * 4 * 5 + 4 * T, macsPerPosition: S * 2 * 6 + G * 2 * 3 * 3 * 3 + G * 3 * 4 * 5 + 4 * T });
    // CP-4: R·(S + g·kh + g·kw + T).
    expect(cp4Cost(geo, 3)).toEqual({ params: 3 * (S + G * 3 + G * 5 + T), macsPerPosition: 3 * S * 6 + G * 3 * 3 * 3 + G * 3 * 5 + T * 3 });
    const g1 = { ...geo, group: 1 };
    expect(ttCost(g1, [2, 3, 4]).params).toBe(S * 2 + 2 * 3 * 3 + 3 * 4 * 5 + 4 * T);
    expect(cp4Cost(g1, 3).params).toBe(3 * (S + 3 + 5 + T));
    // The rank limits are per group (s = 4, t = 8).
    const lim = (p: LayerPass<unknown>) => { const { m } = matchOnly(bytes, p); if (isSkip(m)) throw new Error(m.skip); return p.rankLimits(m); };
    expect(lim(PASS['spatial-svd'])).toEqual([Math.min(4 * 3, 8 * 5)]);
    expect(lim(PASS.tt)).toEqual([Math.min(4, 15 * 8), Math.min(12, 40), Math.min(60, 8)]);
    expect(lim(PASS.cp4)).toEqual([(8 * 4 * 15) / 8]);
  });

  it('chooseRanks reads every group: the largest of the groups\' energy ranks', () => {
    const rng = createRng(5);
    const [G, s, t] = [2, 6, 6];
    const spec: ConvSpec = { S: G * s, T: G * t, group: G, kernel: [3, 3], pads: [1, 1, 1, 1], size: [7, 7] };
    // Group 0 of spatial rank 2, group 1 of rank 4: energy picks 4.
    const w = new Float32Array(G * t * s * 9);
    w.set(groupKernel('spatial-svd', rng, t, s, 3, 3, [2]), 0);
    w.set(groupKernel('spatial-svd', rng, t, s, 3, 3, [4]), t * s * 9);
    const { m } = matchOnly(convModel(spec, w, rng), convSpatialSvd);
    if (isSkip(m)) throw new Error(m.skip);
    expect(convSpatialSvd.chooseRanks(m, { kind: 'energy', energy: 1 - 1e-9 })).toEqual([4]);
    expect(convSpatialSvd.chooseRanks(m, { kind: 'fixed', rank: 3 })).toEqual([3]);
    const tw = new Float32Array(G * t * s * 9);
    tw.set(groupKernel('tt', rng, t, s, 3, 3, [2, 2, 2]), 0);
    tw.set(groupKernel('tt', rng, t, s, 3, 3, [3, 4, 3]), t * s * 9);
    const mt = matchOnly(convModel(spec, tw, rng), convTt).m;
    if (isSkip(mt)) throw new Error(mt.skip);
    expect(convTt.chooseRanks(mt, { kind: 'energy', energy: 1 - 1e-9 })).toEqual([3, 4, 3]);
  });

  it('data-aware per group: each group fitted on its own statistics, an exact kernel stays exact in ORT, errors combine over groups', async () => {
    const rng = createRng(31);
    const [G, s, t] = [3, 4, 3];
    const spec: ConvSpec = { S: G * s, T: G * t, group: G, bias: true, kernel: [3, 3], pads: [0, 1, 2, 1], size: [7, 8] };
    const D = s * 9;
    const cov = (n: number): Float64Array => {
      const x = randn(rng, n * 3 * n);
      const g = new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { let v = 0; for (let p = 0; p < 3 * n; p++) v += x[i * 3 * n + p]! * x[j * 3 * n + p]!; g[i * n + j] = v / (3 * n) + (i === j ? 0.01 : 0); }
      return g;
    };
    // Statistics as collected: sums over n patches, Σ p·pᵀ = n·(C + μ·μᵀ) per group.
    const n = 3 * D;
    const gram = new Float64Array(G * s * s);
    const patchGram = new Float64Array(G * D * D);
    const patchMean = Float64Array.from({ length: G * D }, () => 0.3 * rng.normal());
    for (let j = 0; j < G; j++) {
      gram.set(cov(s).map((v) => n * v), j * s * s);
      const c = cov(D);
      const mu = patchMean.subarray(j * D, (j + 1) * D);
      patchGram.set(c.map((v, i) => n * (v + mu[Math.floor(i / D)]! * mu[i % D]!)), j * D * D);
    }
    const stats: LayerInputStats = { kind: 'conv', gram, dim: s, groups: G, count: n, patchCount: n, patchGram, patchDim: D, patchMean };
    for (const [kind, ranks, lossy] of [['spatial-svd', [2], [1]], ['tt', [2, 2, 2], [1, 1, 1]], ['cp4', [2], [1]]] as [Kind, number[], number[]][]) {
      const bytes = convModel(spec, groupedKernel(kind, rng, G, t, s, 3, 3, ranks), rng);
      const model = new Model(decodeModel(bytes));
      const cx = { ...context(model), stats: new Map([['conv', stats]]) };
      const pass = PASS[kind];
      const m = pass.match(convLayer(model), cx);
      if (isSkip(m)) throw new Error(m.skip);
      const applied = pass.apply(m, ranks, cx);
      if (isSkip(applied)) throw new Error(applied.skip);
      expect(applied.relError, kind).toBeLessThan(1e-4);
      expect(applied.dataError, kind).toBeLessThan(1e-4);
      model.root.removeUnusedInitializers();
      expect((await compareInOrt(bytes, encodeModel(model.proto), spec, 31)).rel, kind).toBeLessThan(1e-4);
      // A lossy rank: a data error between the best and the worst group's (a weighted mean of them).
      const m2 = pass.match(convLayer(new Model(decodeModel(bytes))), cx);
      if (isSkip(m2)) throw new Error(m2.skip);
      const e = pass.estimate!(m2, lossy, cx);
      if (isSkip(e)) throw new Error(e.skip);
      expect(e.dataError, kind).toBeGreaterThan(1e-3);
      const perGroup = Array.from({ length: G }, (_, j) => {
        const one: ConvSpec = { ...spec, S: s, T: t, group: 1 };
        const wj = decodeModel(bytes).graph!.initializer.find((x) => x.name === 'w')!;
        const data = new Float32Array(new Float32Array(wj.rawData!.slice().buffer).subarray(j * t * s * 9, (j + 1) * t * s * 9));
        const mj = new Model(decodeModel(convModel(one, data, createRng(1))));
        const st: LayerInputStats = { kind: 'conv', gram: gram.slice(j * s * s, (j + 1) * s * s), dim: s, count: n, patchCount: n, patchGram: patchGram.slice(j * D * D, (j + 1) * D * D), patchDim: D, patchMean: stats.patchMean!.slice(j * D, (j + 1) * D) };
        const cj = { ...context(mj), stats: new Map([['conv', st]]) };
        const mm = pass.match(convLayer(mj), cj);
        if (isSkip(mm)) throw new Error(mm.skip);
        const ej = pass.estimate!(mm, lossy, cj);
        if (isSkip(ej)) throw new Error(ej.skip);
        // The group's output energy on its statistics: tr(W_j·P_j·W_jᵀ).
        let den = 0;
        const P = patchGram.subarray(j * D * D, (j + 1) * D * D);
        for (let r = 0; r < t; r++) for (let a = 0; a < D; a++) for (let b = 0; b < D; b++) den += data[r * D + a]! * P[a * D + b]! * data[r * D + b]!;
        return { e: ej.dataError!, den };
      });
      // Each group fitted on its own statistics, exactly as alone; the layer's error is theirs weighted by output energy.
      const num = perGroup.reduce((a, g) => a + g.e ** 2 * g.den, 0);
      const den = perGroup.reduce((a, g) => a + g.den, 0);
      expect(e.dataError!, kind).toBeCloseTo(Math.sqrt(num / den), 6);
      expect(new Set(perGroup.map((g) => g.e.toFixed(6))).size, kind).toBe(G);
    }
  });

  it('under auto, spatial SVD per group competes on a grouped conv whatever the run saves (where latency counts, the screen then times it: test/optimize/latency-screen-contenders.test.ts)', () => {
    const rng = createRng(12);
    const [G, s, t] = [2, 8, 8];
    const spec: ConvSpec = { S: G * s, T: G * t, group: G, kernel: [3, 3], pads: [1, 1, 1, 1], size: [8, 8] };
    const bytes = convModel(spec, groupedKernel('spatial-svd', rng, G, t, s, 3, 3, [2]), rng);
    const run = (saves?: 'params') => optimizeModel(new Model(decodeModel(bytes)), undefined, { method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0, ...(saves && { saves }) })[0]!;
    for (const rec of [run(), run('params')]) {
      expect(rec).toMatchObject({ pass: 'conv-spatial-svd', ranks: [2] });
      expect(rec.paramsAfter).toBe(2 * (G * s * 3 + G * t * 3));
      expect(rec.note).not.toMatch(/spatial-svd \S+ not compared/);
    }
  });

  it('end to end: --method spatial-svd / tt / cp4 rewrite a grouped conv exactly; the doc string says per group', () => {
    for (const [kind, ranks] of [['spatial-svd', [3]], ['tt', [2, 3, 2]], ['cp4', [2]]] as [Kind, number[]][]) {
      const rng = createRng(9);
      const [G, s, t] = [2, 8, 8];
      const spec: ConvSpec = { S: G * s, T: G * t, group: G, kernel: [3, 3], pads: [1, 1, 1, 1], size: [8, 8] };
      const model = new Model(decodeModel(convModel(spec, groupedKernel(kind, rng, G, t, s, 3, 3, ranks), rng)));
      const policy = kind === 'tt' ? { kind: 'energy' as const, energy: 1 - 1e-9 } : { kind: 'fixed' as const, rank: ranks[0]! };
      const [rec] = optimizeModel(model, undefined, { method: kind, policy, minParams: 0, seed: 0 });
      expect(rec, kind).toMatchObject({ pass: `conv-${kind}`, ranks });
      expect(rec!.relError, kind).toBeLessThan(1e-5);
      expect(model.root.nodes.find((n) => n.opType === 'Conv')!.docString).toMatch(/ per group \(2 groups\) of 16x16x3x3 /);
    }
  });
});
