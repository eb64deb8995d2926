/**
 * conv-spatial-svd on 3-D convs: kd×1×1 (S→R1) → 1×kh×1 (R1→R2) → 1×1×kw (R2→T), each
 * conv carrying its axis's stride, dilation and pads (linalg/spatial-svd-3d.ts). Exact
 * ranks match the original in ORT over strides, pads (incl. asymmetric and auto_pad),
 * dilations, bias and groups; data-aware fits beat the weight-only fit on held-out inputs.
 */
import fc from 'fast-check';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { convSpatialSvd, spatialSvd3dCost } from '../../passes/conv-spatial-svd.js';
import { Model } from '../../src/graph/graph.js';
import { spatialKernel3d, spatialSplitSpectra, spatialSvd3d } from '../../src/linalg/spatial-svd-3d.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { isSkip, type LayerInputStats } from '../../src/rewrite/pass.js';
import { route } from '../../src/rewrite/registry.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { PASSES } from '../../passes/dispatch.js';
import { statsFromSamples } from '../helpers/calib.js';
import { runModel } from '../helpers/ort.js';
import { anchoredStats, chainFactors, expectExactWithStats, sampleCov, windowAttrs } from './conv-e2e.js';
import {
  compareInOrt, convLayer, convModel, describe1, matchOnly, opCounts, ortRuns, PADS, randn, relL2, rewrite, windowSpec, type ConvSpec,
} from './conv-harness.js';

/** A kernel [t, s, kd, kh, kw] the chain computes exactly at ranks [R1, R2] (random factors). */
function exactKernel(rng: Rng, t: number, s: number, k: number[], [R1, R2]: number[]): Float32Array {
  return spatialKernel3d(randn(rng, R1! * s * k[0]!), randn(rng, R2! * R1! * k[1]!), randn(rng, t * R2! * k[2]!), t, s, k, [R1!, R2!]);
}

/** tr(ΔW·Σ·ΔWᵀ) / tr(W·Σ·Wᵀ), square-rooted, for W [T, D]. */
function dataRel(w: ArrayLike<number>, wHat: ArrayLike<number>, sigma: Float64Array, T: number, D: number): number {
  let num = 0;
  let den = 0;
  for (let t = 0; t < T; t++) for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) {
    const di = w[t * D + i]! - wHat[t * D + i]!;
    const dj = w[t * D + j]! - wHat[t * D + j]!;
    num += di * sigma[i * D + j]! * dj;
    den += w[t * D + i]! * sigma[i * D + j]! * w[t * D + j]!;
  }
  return Math.sqrt(num / den);
}

describe('conv-spatial-svd on 3-D convs', () => {
  it('exact ranks match the original in ORT (groups 1–2, kernels 2/3, strides, pads incl. asymmetric and auto_pad, dilations, bias)', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
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
          const s = 2 + rng.int(3);
          const t = 2 + rng.int(3);
          const spec: ConvSpec = { S: c.group * s, T: c.group * t, group: c.group, bias: c.bias, ...windowSpec(3, c.k, c.stride, c.dilation, c.pad) };
          const k = spec.kernel;
          // Consistent neighbours (R2 ≤ R1·kh, R1 ≤ R2·kh), within the unfoldings.
          const R2 = Math.min(1 + rng.int(4), t * k[2]!);
          const R1 = Math.min(1 + rng.int(4), s * k[0]!, R2 * k[1]!);
          if (R2 > R1 * k[1]!) return; // inconsistent: the kernel would not have rank R2 (checkRanks)
          const per = t * s * k[0]! * k[1]! * k[2]!;
          const w = new Float32Array(c.group * per);
          for (let j = 0; j < c.group; j++) w.set(exactKernel(rng, t, s, k, [R1, R2]), j * per);
          const bytes = convModel(spec, w, rng);
          const out = rewrite(bytes, convSpatialSvd, [R1, R2]);
          const what = `${describe1(spec)} ranks ${R1},${R2}`;
          expect(out.applied.relError, what).toBeLessThan(1e-5);
          expect(opCounts(out.proto)).toEqual({ Conv: 3 });
          const nodes = out.proto.graph!.node;
          nodes.forEach((n, a) => expect(windowAttrs(n, true).kernel_shape, what).toEqual(k.map((x, i) => (i === a ? x : 1))));
          const inits = new Map(out.proto.graph!.initializer.map((x) => [x.name, x.dims.map(Number)]));
          expect(nodes.map((n) => inits.get(n.input[1]!))).toEqual([
            [c.group * R1, s, k[0], 1, 1], [c.group * R2, R1, 1, k[1], 1], [c.group * t, R2, 1, 1, k[2]],
          ]);
          expect(nodes.slice(0, 2).every((n) => n.input.length === 2)).toBe(true);
          expect(nodes.at(-1)!.input).toHaveLength(c.bias ? 3 : 2);
          const cmp = await compareInOrt(bytes, out.bytes, spec, c.seed);
          expect(cmp.b.dims, what).toEqual(cmp.a.dims);
          expect(cmp.rel, what).toBeLessThan(1e-4);
          runs++;
        },
      ),
      { seed: 41, numRuns: 50 },
    );
    expect(runs).toBeGreaterThan(40);
  });

  it('a non-square kernel with per-axis strides, dilations and asymmetric pads: each axis\'s placement on its own conv', async () => {
    const rng = createRng(3);
    const spec: ConvSpec = { S: 4, T: 5, kernel: [2, 3, 4], strides: [1, 2, 1], dilations: [2, 1, 1], pads: [1, 0, 2, 0, 1, 1], bias: true, size: [7, 8, 6] };
    const bytes = convModel(spec, exactKernel(rng, 5, 4, spec.kernel, [3, 4]), rng);
    const out = rewrite(bytes, convSpatialSvd, [3, 4]);
    const [d, h, w] = out.proto.graph!.node;
    expect(windowAttrs(d!, true)).toEqual({ kernel_shape: [2, 1, 1], strides: [1, 1, 1], dilations: [2, 1, 1], pads: [1, 0, 0, 0, 0, 0] });
    expect(windowAttrs(h!, true)).toEqual({ kernel_shape: [1, 3, 1], strides: [1, 2, 1], dilations: [1, 1, 1], pads: [0, 0, 0, 0, 1, 0] });
    expect(windowAttrs(w!, true)).toEqual({ kernel_shape: [1, 1, 4], strides: [1, 1, 1], dilations: [1, 1, 1], pads: [0, 0, 2, 0, 0, 1] });
    expect(out.applied.relError).toBeLessThan(1e-5);
    expect((await compareInOrt(bytes, out.bytes, spec, 3)).rel).toBeLessThan(1e-4);
    expect(d!.docString).toMatch(/conv-spatial-svd.*ranks \[3, 4\] of 5x4x2x3x4 /);
    // A rank below the kernel's is not exact.
    expect(rewrite(bytes, convSpatialSvd, [2, 4]).applied.relError).toBeGreaterThan(1e-3);
    expect(rewrite(bytes, convSpatialSvd, [3, 3]).applied.relError).toBeGreaterThan(1e-3);
  });

  it('weight-only: the error is the discarded energy of the outer split when the inner is exact; compose (--stages) gives back the kernel', () => {
    const rng = createRng(8);
    const [T, S, k] = [5, 4, [2, 3, 3]];
    const w = randn(rng, T * S * 18);
    const sp = spatialSplitSpectra({ data: w, shape: [T, S, ...k] });
    expect(sp.map((x) => x.sigma.length)).toEqual([Math.min(S * 2, 9 * T), Math.min(S * 6, 3 * T)]);
    // Inner at full rank (R1 = S·kd = 8 ≤ R2·kh): the error is the outer truncation's, Eckart–Young.
    const f = spatialSvd3d({ data: w, shape: [T, S, 2, 3, 3] }, [8, 6]);
    const tail = sp[1]!.sigma.slice(6).reduce((a, x) => a + x * x, 0);
    expect(f.relError).toBeCloseTo(Math.sqrt(tail / sp[1]!.total), 5);
    const spec: ConvSpec = { S, T, kernel: k, size: [5, 6, 6] };
    const bytes = convModel(spec, w, rng);
    const out = rewrite(bytes, convSpatialSvd, [4, 5]);
    const g = out.proto.graph!;
    const original = decodeModel(bytes).graph!.node[0]!;
    const f0 = { name: 'conv', original, weightInput: 1, weightDims: [T, S, ...k], nodes: [] };
    const composed = convSpatialSvd.compose(g.node, chainFactors(g), f0, undefined);
    if (typeof composed === 'string') throw new Error(composed);
    expect(relL2(w, composed)).toBeCloseTo(out.applied.relError, 5);
    expect(convSpatialSvd.compose(g.node.slice(1), chainFactors(g).slice(1), f0, undefined)).toMatch(/chain of 3 convs/);
    expect(convSpatialSvd.compose(g.node, chainFactors(g), { ...f0, weightDims: [T, S, 3, 2, 3] }, undefined)).toMatch(/do not fit/);
  });

  it('costs, limits, rank checks and rank policies', () => {
    const rng = createRng(2);
    const spec: ConvSpec = { S: 8, T: 12, kernel: [2, 3, 3], strides: [2, 3, 1], size: [9, 9, 9] };
    const { m } = matchOnly(convModel(spec, exactKernel(rng, 12, 8, [2, 3, 3], [3, 5]), rng), convSpatialSvd);
    if (isSkip(m)) throw new Error(m.skip);
    // kd×1×1 at the input positions of h and w (× 3·1), 1×kh×1 at w's (× 1), the last at the output.
    expect(spatialSvd3dCost(m.geo, [3, 5])).toEqual({ params: 3 * 8 * 2 + 5 * 3 * 3 + 12 * 5 * 3, macsPerPosition: 3 * 8 * 2 * 3 + 5 * 3 * 3 + 12 * 5 * 3 });
    expect(convSpatialSvd.cost(m, [3, 5]).after).toEqual(spatialSvd3dCost(m.geo, [3, 5]));
    // The splits' unfoldings [16, 9·12], [48, 3·12].
    expect(convSpatialSvd.rankLimits(m)).toEqual([16, 36]);
    expect(convSpatialSvd.checkRanks!(m, [2, 7])).toMatch(/need r2 ≤ r1·3 and r1 ≤ r2·3/);
    expect(convSpatialSvd.checkRanks!(m, [3, 5])).toBeUndefined();
    expect(convSpatialSvd.chooseRanks(m, { kind: 'fixed', rank: 4 })).toEqual([4, 4]);
    expect(convSpatialSvd.chooseRanks(m, { kind: 'fixed', rank: 1000 })).toEqual([16, 36]);
    expect(convSpatialSvd.chooseRanks(m, { kind: 'energy', energy: 1 - 1e-9 })).toEqual([3, 5]);
    expect(convSpatialSvd.chooseRanks(m, { kind: 'vbmf' })).toEqual([3, 5]);
    expect(convSpatialSvd.chooseRanks(m, { kind: 'fixed', rank: 3, align: 4 })).toEqual([4, 4]);
    const half = convSpatialSvd.chooseRanks(m, { kind: 'ratio', ratio: 0.5 });
    if (isSkip(half)) throw new Error(half.skip);
    expect(spatialSvd3dCost(m.geo, half).params).toBeLessThanOrEqual(0.5 * 12 * 8 * 18);
    expect(spatialSvd3dCost(m.geo, half.map((r) => r + 2)).params).toBeGreaterThan(0.5 * 12 * 8 * 18);
    expect(convSpatialSvd.chooseRanks(m, { kind: 'fixed', rank: 0 })).toEqual({ skip: 'rank 0 is not a positive integer' });
  });

  it('declines 1-D convs, 4-D convs, kernels with an extent 1 and depthwise convs with the reason (match, accepts and routing)', () => {
    const rng = createRng(1);
    const cases: [ConvSpec, RegExp][] = [
      [{ S: 4, T: 4, kernel: [3], size: [8] }, /^spatial SVD applies to 2-D and 3-D convs only \(this one has 1 spatial axis: nothing to split between two axes\)$/],
      [{ S: 4, T: 4, kernel: [2, 2, 2, 2], size: [3, 3, 3, 3] }, /^spatial SVD applies to 2-D and 3-D convs only \(this one has 4 spatial axes: not fitted past 3\)$/],
      [{ S: 4, T: 4, kernel: [3, 1, 3], size: [5, 5, 5] }, /every extent > 1 only \(3x1x3: nothing to split\)/],
      [{ S: 4, T: 4, kernel: [1, 1, 1], size: [5, 5, 5] }, /every extent > 1 only \(1x1x1/],
      [{ S: 4, T: 4, group: 4, kernel: [3, 3, 3], size: [5, 5, 5] }, /depthwise/],
    ];
    for (const [spec, why] of cases) {
      const n = spec.T * (spec.S / (spec.group ?? 1)) * spec.kernel.reduce((a, b) => a * b, 1);
      const { m, model } = matchOnly(convModel(spec, randn(rng, n), rng), convSpatialSvd);
      expect(isSkip(m) && m.skip, describe1(spec)).toMatch(why);
      const acc = convSpatialSvd.accepts!(convLayer(model));
      expect(acc !== true && `spatial SVD ${acc.skip}`).toMatch(why);
      const r = route(PASSES, convLayer(model), 'spatial-svd');
      expect(typeof r === 'string' && r, describe1(spec)).toMatch(/^--method spatial-svd /);
    }
  });

  it('on patch moments: the fit beats the weight-only one on the data objective; an exact kernel stays exact (with mean: zero bias correction)', () => {
    for (const seed of [1, 2]) {
      const rng = createRng(seed);
      const [T, S, k] = [6, 3, [2, 3, 3]];
      const D = S * 18;
      const w = randn(rng, T * D);
      // Uneven scales per patch dimension: a covariance far from the identity.
      const x = Array.from({ length: D * (D + 6) }, (_, i) => rng.normal() * (1 + 3 * ((Math.floor(i / (D + 6)) * 7) % 5)));
      const gram = new Float64Array(D * D);
      for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) {
        let v = 0;
        for (let p = 0; p < D + 6; p++) v += x[i * (D + 6) + p]! * x[j * (D + 6) + p]!;
        gram[i * D + j] = v / (D + 6);
      }
      const kernel = { data: w, shape: [T, S, 2, 3, 3] as const };
      const plain = spatialSvd3d(kernel, [3, 4]);
      const aware = spatialSvd3d(kernel, [3, 4], { patches: { gram }, sweeps: 4 });
      const e = (f: typeof plain): number => dataRel(w, spatialKernel3d(f.first, f.middle, f.last, T, S, k, f.ranks), gram, T, D);
      expect(aware.dataError!).toBeCloseTo(e(aware), 6);
      expect(e(aware), `seed ${seed}`).toBeLessThan(0.9 * e(plain));
      expect(plain.dataError).toBeUndefined();
    }
    const rng = createRng(7);
    const [T, S, k] = [5, 3, [3, 2, 3]];
    const D = S * 18;
    const w = exactKernel(rng, T, S, k, [2, 3]);
    const mean = Float64Array.from({ length: D }, () => 0.3 * rng.normal());
    const cov = sampleCov(rng, D, 2 * D);
    const n = 50;
    const gram = Float64Array.from(cov, (v, i) => n * (v + mean[Math.floor(i / D)]! * mean[i % D]!));
    const f = spatialSvd3d({ data: w, shape: [T, S, 3, 2, 3] }, [2, 3], { patches: { gram, mean, count: n }, damp: 0.03 });
    expect(f.relError).toBeLessThan(1e-5);
    expect(f.dataError!).toBeLessThan(1e-5);
    for (const d of f.biasDelta!) expect(Math.abs(d)).toBeLessThan(1e-4);
  });

  it('with x̂ = x the anchored fit is exact on an exactly low-rank kernel and matches ORT', async () => {
    const rng = createRng(12);
    const [S, T] = [3, 4];
    const D = S * 27;
    const spec: ConvSpec = { S, T, kernel: [3, 3, 3], pads: [1, 1, 1, 1, 1, 1], bias: true, size: [5, 5, 5] };
    const bytes = convModel(spec, exactKernel(rng, T, S, [3, 3, 3], [2, 3]), rng);
    const mean = Float64Array.from({ length: D }, () => 0.2 * rng.normal());
    await expectExactWithStats(convSpatialSvd, bytes, spec, anchoredStats(S, D, 4 * D, mean, sampleCov(rng, D, 2 * D)), [2, 3], /ranks \[2, 3\].*anchored/, 12);
  });

  it('end to end: --method spatial-svd on a 3-D conv (energy: the exact ranks); under auto it competes whatever the run saves (the latency screen then times it: test/optimize/latency-screen-contenders.test.ts)', () => {
    const rng = createRng(9);
    const spec: ConvSpec = { S: 12, T: 12, kernel: [3, 3, 3], pads: [1, 1, 1, 1, 1, 1], size: [5, 5, 5] };
    const w = exactKernel(rng, 12, 12, [3, 3, 3], [3, 4]);
    const bytes = convModel(spec, w, rng);
    const model = new Model(decodeModel(bytes));
    const [rec] = optimizeModel(model, undefined, { method: 'spatial-svd', policy: { kind: 'energy', energy: 1 - 1e-9 }, minParams: 0, seed: 0 });
    expect(rec).toMatchObject({ pass: 'conv-spatial-svd', ranks: [3, 4] });
    expect(rec!.relError).toBeLessThan(1e-5);
    expect(rec!.paramsAfter).toBe(3 * 12 * 3 + 4 * 3 * 3 + 12 * 4 * 3);
    const auto = (saves?: 'params') => optimizeModel(new Model(decodeModel(bytes)), undefined, { method: 'auto', policy: { kind: 'ratio', ratio: 0.3 }, minParams: 0, seed: 0, ...(saves && { saves }) })[0]!;
    // Exact at [3, 4], far below Tucker-2's error at 0.3 of the params: spatial SVD wins.
    for (const rec of [auto(), auto('params')]) {
      expect(rec.note).toMatch(/vs spatial-svd \d+,\d+ err/);
      expect(rec.pass).toBe('conv-spatial-svd');
    }
  });
});

// ---- data-aware through the calibration pipeline and ORT ------------------------------

const S = 4;
const T = 6;
const N = 6;
const mixRng = createRng(19);
const mixing = Float64Array.from({ length: S * 2 }, () => mixRng.normal());

/** n inputs [S, N, N, N]: channels mix 2 latent fields correlated along different axes, plus noise and an offset. */
function inputs(n: number, seed: number): Float32Array {
  const r = createRng(seed);
  const V = N * N * N;
  const x = new Float32Array(n * S * V);
  for (let b = 0; b < n; b++) {
    const raw = Array.from({ length: 2 * V }, () => r.normal());
    const z = raw.map((v, i) => {
      const p = i % V;
      const [d, col] = [Math.floor(p / (N * N)), p % N];
      if (i < V) return v + (col > 0 ? 0.9 * raw[i - 1]! : 0) + (col > 1 ? 0.5 * raw[i - 2]! : 0);
      return v + (d > 0 ? 0.9 * raw[i - N * N]! : 0) - (col > 0 ? 0.6 * raw[i - 1]! : 0);
    });
    for (let c = 0; c < S; c++) for (let p = 0; p < V; p++) {
      let v = 0.05 * r.normal() + 0.3;
      for (let l = 0; l < 2; l++) v += mixing[c * 2 + l]! * z[l * V + p]!;
      x[(b * S + c) * V + p] = v;
    }
  }
  return x;
}

describe('conv-spatial-svd 3-D data-aware, end to end', () => {
  it('fitted to the patch statistics, the rewrite has a lower output error on held-out inputs in ORT than the weight-only fit', async () => {
    const rng = createRng(31);
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, S, N, N, N]);
    b.output(b.node('Conv', [x, b.init('w', [T, S, 3, 3, 3], randn(rng, T * S * 27)), b.init('bias', [T], new Array(T).fill(0.1))], { pads: [1, 1, 1, 1, 1, 1] }, { name: 'conv' }));
    const bytes = encodeModel(b.build());
    const stats = await statsFromSamples(bytes, inputs(8, 1), [8, S, N, N, N], 'ssvd3');
    const st = stats.get('conv') as LayerInputStats;
    expect(st.patchCount!).toBeGreaterThanOrEqual(2 * S * 27);
    const held = inputs(4, 77);
    const V = S * N * N * N;
    const outputs = async (model: Uint8Array): Promise<number[]> => {
      const ys: number[] = [];
      for (let i = 0; i < 4; i++) ys.push(...(await runModel(model, { x: new ort.Tensor('float32', held.subarray(i * V, (i + 1) * V), [1, S, N, N, N]) })).conv_out0!);
      return ys;
    };
    const ref = Float32Array.from(await outputs(bytes));
    const run = async (s?: typeof stats) => {
      const model = new Model(decodeModel(bytes));
      const [rec] = optimizeModel(model, undefined, { method: 'spatial-svd', policy: { kind: 'fixed', rank: 3 }, minParams: 0, seed: 0 }, undefined, { stats: s });
      expect(rec!.skipped, rec!.reason).toBeUndefined();
      return { out: relL2(ref, Float32Array.from(await outputs(encodeModel(model.proto)))), rec: rec!, doc: model.proto.graph!.node[0]!.docString ?? '' };
    };
    const plain = await run();
    const aware = await run(stats);
    expect(aware.rec.ranks).toEqual([3, 3]);
    expect(aware.doc).toMatch(/whitened start, fitted on calibration patches \([1-9] ALS sweeps\)/);
    expect(aware.out).toBeLessThan(0.8 * plain.out);
    expect(aware.rec.dataError!).toBeGreaterThan(aware.out / 2);
    expect(aware.rec.dataError!).toBeLessThan(aware.out * 2);
  });
});
