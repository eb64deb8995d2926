/**
 * conv-tt and conv-cp4 on 1-D and 3-D convs: one conv per spatial axis (1-D: 1x1 → k → 1x1;
 * 3-D: 1x1 → kd×1×1 → 1×kh×1 → 1×1×kw → 1x1), each carrying its axis's stride, dilation
 * and pads. Exact ranks match the original in ORT over strides, pads (incl. asymmetric and
 * auto_pad), dilations, bias and groups; spatial SVD declines 1-D convs (one axis: nothing
 * to split).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { convCp4, cp4Cost } from '../../passes/conv-cp4.js';
import { convSpatialSvd } from '../../passes/conv-spatial-svd.js';
import { convTt, ttCost } from '../../passes/conv-tt.js';
import { Model } from '../../src/graph/graph.js';
import { cpNdKernel } from '../../src/linalg/cpn-conv.js';
import { orthonormalize } from '../../src/linalg/qr.js';
import { ttNdKernel, ttNdSpectra, ttNdSvd } from '../../src/linalg/tt-nd.js';
import { decodeModel } from '../../src/onnx/codec.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { isSkip, type LayerPass } from '../../src/rewrite/pass.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { chainFactors, windowAttrs } from './conv-e2e.js';
import { compareInOrt, convModel, describe1, matchOnly, opCounts, ortRuns, PADS, randn, relL2, rewrite, windowSpec, type ConvSpec } from './conv-harness.js';

type Kind = 'tt' | 'cp4';
const PASS: Record<Kind, LayerPass<unknown>> = { tt: convTt as LayerPass<unknown>, cp4: convCp4 as LayerPass<unknown> };

/** Orthonormal columns where R fits the mode (a unique CP, where ALS from an SVD start converges: see conv-harness cpKernel). */
function factor(rng: Rng, n: number, R: number): Float64Array {
  const m = { rows: n, cols: R, data: Float64Array.from(randn(rng, n * R)) };
  return R <= n ? Float64Array.from(orthonormalize(m).data) : m.data;
}
const tr = (a: Float64Array, n: number, R: number): Float64Array => Float64Array.from({ length: n * R }, (_, i) => a[(i % n) * R + Math.floor(i / n)]!);

/** A kernel [t, s, k…] of exact TT ranks (random cores) or exact CP rank (well-separated factors, weights in [1, 3]). */
function exactKernel(kind: Kind, rng: Rng, t: number, s: number, k: number[], ranks: number[]): Float32Array {
  if (kind === 'tt') {
    const cores = k.map((ka, a) => randn(rng, ranks[a + 1]! * ranks[a]! * ka));
    return ttNdKernel(randn(rng, ranks[0]! * s), cores, randn(rng, t * ranks.at(-1)!), t, s, k, ranks);
  }
  const R = ranks[0]!;
  const A = factor(rng, t, R);
  for (let i = 0; i < t; i++) for (let r = 0; r < R; r++) A[i * R + r]! *= 1 + 2 * ((r + 1) / (R + 1));
  return cpNdKernel(tr(factor(rng, s, R), s, R), k.map((ka) => tr(factor(rng, ka, R), ka, R)), A, t, s, k, R);
}

/** Ranks the sizes make exact (TT: consistent neighbours; CP: R ≤ every extent, so its factors are orthonormal). */
function ranksFor(kind: Kind, rng: Rng, k: number[]): number[] {
  if (kind === 'cp4') return [1 + rng.int(Math.min(...k))];
  const r = [2 + rng.int(2)];
  for (let a = 0; a < k.length; a++) r.push(Math.min(2 + rng.int(3), r[a]! * k[a]!));
  return r;
}

describe('conv-tt and conv-cp4 on 1-D and 3-D convs', () => {
  it('exact ranks match the original in ORT (1-D/3-D × TT/CP × groups 1–2, strides, pads incl. asymmetric and auto_pad, dilations, bias)', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          kind: fc.constantFrom<Kind>('tt', 'cp4'),
          spatial: fc.constantFrom(1, 3),
          group: fc.constantFrom(1, 2),
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
          const spec: ConvSpec = { S: c.group * s, T: c.group * t, group: c.group, bias: c.bias, ...windowSpec(c.spatial, c.k, c.stride, c.dilation, c.pad) };
          const k = spec.kernel;
          const ranks = ranksFor(c.kind, rng, k);
          const per = t * s * k.reduce((a, b) => a * b, 1);
          const w = new Float32Array(c.group * per);
          for (let j = 0; j < c.group; j++) w.set(exactKernel(c.kind, rng, t, s, k, ranks), j * per);
          const bytes = convModel(spec, w, rng);
          const out = rewrite(bytes, PASS[c.kind], ranks);
          const what = `${c.kind} ${describe1(spec)} ranks ${ranks}`;
          expect(out.applied.relError, what).toBeLessThan(1e-5);
          expect(opCounts(out.proto)).toEqual({ Conv: c.spatial + 2 });
          const nodes = out.proto.graph!.node;
          // One conv per axis, each with its axis's kernel extent.
          nodes.slice(1, -1).forEach((n, a) => expect(windowAttrs(n, true).kernel_shape, what).toEqual(k.map((x, i) => (i === a ? x : 1))));
          expect(nodes.at(-1)!.input).toHaveLength(c.bias ? 3 : 2);
          const cmp = await compareInOrt(bytes, out.bytes, spec, c.seed);
          expect(cmp.b.dims, what).toEqual(cmp.a.dims);
          expect(cmp.rel, what).toBeLessThan(1e-4);
          runs++;
        },
      ),
      { seed: 37, numRuns: 90 },
    );
    expect(runs).toBe(90);
  });

  it('a non-square 3-D kernel with per-axis strides, dilations and asymmetric pads: each axis\'s placement on its own conv', async () => {
    for (const kind of ['tt', 'cp4'] as Kind[]) {
      const rng = createRng(3);
      const spec: ConvSpec = { S: 4, T: 5, kernel: [2, 3, 3], strides: [1, 2, 1], dilations: [2, 1, 1], pads: [1, 0, 2, 0, 1, 1], bias: true, size: [7, 8, 6] };
      const ranks = kind === 'tt' ? [3, 4, 4, 3] : [2];
      const bytes = convModel(spec, exactKernel(kind, rng, 5, 4, spec.kernel, ranks), rng);
      const out = rewrite(bytes, PASS[kind], ranks);
      const [, d, h, w] = out.proto.graph!.node;
      const group = kind === 'cp4' ? { group: 2 } : {};
      expect(windowAttrs(d!, true)).toEqual({ kernel_shape: [2, 1, 1], strides: [1, 1, 1], dilations: [2, 1, 1], pads: [1, 0, 0, 0, 0, 0], ...group });
      expect(windowAttrs(h!, true)).toEqual({ kernel_shape: [1, 3, 1], strides: [1, 2, 1], dilations: [1, 1, 1], pads: [0, 0, 0, 0, 1, 0], ...group });
      expect(windowAttrs(w!, true)).toEqual({ kernel_shape: [1, 1, 3], strides: [1, 1, 1], dilations: [1, 1, 1], pads: [0, 0, 2, 0, 0, 1], ...group });
      expect(out.applied.relError, kind).toBeLessThan(1e-5);
      expect((await compareInOrt(bytes, out.bytes, spec, 3)).rel, kind).toBeLessThan(1e-4);
    }
  });

  it('TT-SVD in n axes: the error² is the discarded energy; n + 1 unfoldings; compose (--stages) gives back the kernel', () => {
    const rng = createRng(8);
    for (const k of [[3], [2, 3, 3]]) {
      const w = randn(rng, 5 * 4 * k.reduce((a, b) => a * b, 1));
      const kernel = { data: w, shape: [5, 4, ...k] };
      expect(ttNdSpectra(kernel)).toHaveLength(k.length + 1);
      const ranks = [2, ...k.map(() => 2)];
      const f = ttNdSvd(kernel, ranks);
      expect(f.relError ** 2).toBeCloseTo(f.discarded.reduce((a, b) => a + b, 0), 6);
      const spec: ConvSpec = { S: 4, T: 5, kernel: k, size: k.map((x) => x + 3) };
      for (const kind of ['tt', 'cp4'] as Kind[]) {
        const out = rewrite(convModel(spec, w, rng), PASS[kind], kind === 'tt' ? ranks : [3]);
        const nodes = out.proto.graph!.node;
        const original = decodeModel(convModel(spec, w, createRng(1))).graph!.node[0]!;
        const composed = PASS[kind].compose(nodes, chainFactors(out.proto.graph!), { name: 'conv', original, weightInput: 1, weightDims: [5, 4, ...k], nodes: [] }, undefined);
        if (typeof composed === 'string') throw new Error(composed);
        expect(relL2(w, composed), `${kind} ${k}`).toBeCloseTo(out.applied.relError, 5);
        expect(PASS[kind].compose(nodes.slice(1), chainFactors(out.proto.graph!).slice(1), { name: 'conv', original, weightInput: 1, weightDims: [5, 4, ...k], nodes: [] }, undefined)).toMatch(/chain of \d convs/);
      }
    }
  });

  it('costs and limits in n axes: each axis\'s conv pays the strides of the axes after it', () => {
    const rng = createRng(2);
    const spec: ConvSpec = { S: 8, T: 12, kernel: [2, 3, 3], strides: [2, 3, 1], size: [9, 9, 9] };
    const { m } = matchOnly(convModel(spec, randn(rng, 12 * 8 * 18), rng), convTt);
    if (isSkip(m)) throw new Error(m.skip);
    // 1x1 at the input (∏strides 6), d conv × 3 (h's stride), h conv × 1, w conv, 1x1.
    expect(ttCost(m.geo, [2, 3, 4, 5])).toEqual({ params: 8 * 2 + 2 * 3 * 2 + 3 * 4 * 3 + 4 * 5 * 3 + 5 * 12, macsPerPosition: 8 * 2 * 6 + 2 * 3 * 2 * 3 + 3 * 4 * 3 + 4 * 5 * 3 + 5 * 12 });
    expect(cp4Cost(m.geo, 3)).toEqual({ params: 3 * (8 + 2 + 3 + 3 + 12), macsPerPosition: 3 * 8 * 6 + 3 * 2 * 3 + 3 * 3 + 3 * 3 + 12 * 3 });
    // TT limits: the unfoldings [8, 18·12], [16, 9·12], [48, 3·12], [144, 12].
    expect(convTt.rankLimits(m)).toEqual([8, 16, 36, 12]);
    expect(convTt.checkRanks!(m, [2, 5, 4, 5])).toMatch(/need r2 ≤ r1·2 and r1 ≤ r2·2 \(the kernel has extent 2 on axis 1\)/);
    expect(convTt.chooseRanks(m, { kind: 'fixed', rank: 4 })).toEqual([4, 4, 4, 4]);
    const one = matchOnly(convModel({ S: 8, T: 12, kernel: [3], size: [9] }, randn(rng, 12 * 8 * 3), rng), convTt).m;
    if (isSkip(one)) throw new Error(one.skip);
    expect(convTt.rankLimits(one)).toEqual([8, 12]);
    expect(ttCost(one.geo, [2, 3]).params).toBe(8 * 2 + 2 * 3 * 3 + 3 * 12);
  });

  it('spatial SVD declines 1-D convs (one axis: nothing to split) with the reason; 3-D convs are its three-conv chain (conv-spatial-svd-3d.test.ts)', () => {
    const rng = createRng(1);
    const one = matchOnly(convModel({ S: 4, T: 4, kernel: [3], size: [8] }, randn(rng, 48), rng), convSpatialSvd).m;
    expect(isSkip(one) && one.skip).toBe('spatial SVD applies to 2-D and 3-D convs only (this one has 1 spatial axis: nothing to split between two axes)');
    const three = matchOnly(convModel({ S: 4, T: 4, kernel: [3, 3, 3], size: [5, 5, 5] }, randn(rng, 4 * 4 * 27), rng), convSpatialSvd).m;
    expect(isSkip(three)).toBe(false);
  });

  it('end to end: --method tt on a 1-D conv and --method cp4 on a 3-D conv; auto does not compare them on 1-D (their chains are Tucker-2\'s and CP\'s)', () => {
    const rng = createRng(9);
    const oneD: ConvSpec = { S: 8, T: 8, kernel: [3], pads: [1, 1], size: [12] };
    const w1 = exactKernel('tt', rng, 8, 8, [3], [2, 3]);
    const [rt] = optimizeModel(new Model(decodeModel(convModel(oneD, w1, rng))), undefined, { method: 'tt', policy: { kind: 'energy', energy: 1 - 1e-9 }, minParams: 0, seed: 0 });
    expect(rt).toMatchObject({ pass: 'conv-tt', ranks: [2, 3] });
    expect(rt!.relError).toBeLessThan(1e-5);
    const threeD: ConvSpec = { S: 6, T: 6, kernel: [3, 3, 3], pads: [1, 1, 1, 1, 1, 1], size: [5, 5, 5] };
    const w3 = exactKernel('cp4', rng, 6, 6, [3, 3, 3], [2]);
    const model = new Model(decodeModel(convModel(threeD, w3, rng)));
    const [rc] = optimizeModel(model, undefined, { method: 'cp4', policy: { kind: 'fixed', rank: 2 }, minParams: 0, seed: 0 });
    expect(rc).toMatchObject({ pass: 'conv-cp4', ranks: [2] });
    expect(rc!.relError).toBeLessThan(1e-5);
    expect(model.root.nodes.find((n) => n.opType === 'Conv')!.docString).toMatch(/rank 2 of 6x6x3x3x3 /);
    // Under auto with --save params a 1-D conv meets no TT or CP-4 challenge.
    const [ra] = optimizeModel(new Model(decodeModel(convModel(oneD, w1, rng))), undefined, { method: 'auto', policy: { kind: 'energy', energy: 0.999 }, minParams: 0, seed: 0, saves: 'params' });
    expect(ra!.note ?? '').not.toMatch(/\btt\b|cp4/);
  });
});
