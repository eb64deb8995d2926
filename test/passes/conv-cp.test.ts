import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { optimizeModel } from '../../src/optimize/driver.js';
import { challengeCp, convCp } from '../../passes/conv-cp.js';
import { convTucker2 } from '../../passes/conv-tucker2.js';
import { bind } from '../../src/rewrite/registry.js';
import { whitenKernel } from '../../src/linalg/cp-conv.js';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { kroneckerWhitening } from '../../src/rewrite/conv-stats.js';
import { gemm } from '../../src/linalg/gemm.js';
import { WHITEN_DAMP } from '../../src/rewrite/svd-pair.js';
import { isSkip, type LayerInputStats } from '../../src/rewrite/pass.js';
import { createRng } from '../../src/util/rng.js';
import {
  compareInOrt, context, convLayer, convModel, cpKernel, describe1, matchOnly, opCounts, randn, rewrite, windowSpec, type ConvSpec,
  PADS, ortRuns,
} from './conv-harness.js';


describe('conv-cp', () => {
  it('exact CP rank: 1x1 → depthwise → 1x1 matches the original in ORT (1D/2D/3D, strides, pads, dilations, bias)', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          spatial: fc.constantFrom(1, 2, 3),
          k: fc.constantFrom(3, 5),
          stride: fc.constantFrom(1, 2),
          dilation: fc.constantFrom(1, 2),
          pad: fc.constantFrom(...PADS),
          bias: fc.boolean(),
          kernelShapeAttr: fc.boolean(),
          seed: fc.integer({ min: 0, max: 1_000_000 }),
        }).filter(ortRuns),
        async (c) => {
          const rng = createRng(c.seed);
          const S = 5 + rng.int(4);
          const T = 5 + rng.int(4);
          const R = 2 + rng.int(3); // 2..4: generic factors make the CP unique (Kruskal)
          const spec: ConvSpec = { S, T, bias: c.bias, kernelShapeAttr: c.kernelShapeAttr, ...windowSpec(c.spatial, c.k, c.stride, c.dilation, c.pad) };
          const K = spec.kernel.reduce((a, b) => a * b, 1);
          const bytes = convModel(spec, cpKernel(rng, T, S, K, R), rng);
          const out = rewrite(bytes, convCp, [R]);
          expect(out.applied.relError, describe1(spec)).toBeLessThan(1e-5);
          expect(opCounts(out.proto)).toEqual({ Conv: 3 });
          const [a, dw, last] = out.proto.graph!.node;
          const inits = new Map(out.proto.graph!.initializer.map((t) => [t.name, t.dims]));
          const ones = new Array<number>(c.spatial).fill(1);
          expect(inits.get(a.input[1])).toEqual([R, S, ...ones]);
          expect(inits.get(dw.input[1])).toEqual([R, 1, ...spec.kernel]);
          expect(inits.get(last.input[1])).toEqual([T, R, ...ones]);
          expect(Number(dw.attribute.find((x) => x.name === 'group')!.i)).toBe(R);
          const placement = (n: typeof a): string[] => n.attribute.map((x) => x.name ?? '').filter((x) => ['strides', 'pads', 'auto_pad', 'dilations'].includes(x));
          expect(placement(a)).toEqual([]);
          expect(placement(last)).toEqual([]);
          expect(last.input).toHaveLength(c.bias ? 3 : 2);
          const cmp = await compareInOrt(bytes, out.bytes, spec, c.seed);
          expect(cmp.b.dims, describe1(spec)).toEqual(cmp.a.dims);
          expect(cmp.rel, describe1(spec)).toBeLessThan(1e-4);
          runs++;
        },
      ),
      { seed: 2, numRuns: 100 },
    );
    expect(runs).toBeGreaterThanOrEqual(100);
  });

  it('declines depthwise, 1x1 (grouped too) and integer weights with reasons', () => {
    const rng = createRng(1);
    const dw = matchOnly(convModel({ S: 8, T: 8, group: 8, ...windowSpec(2, 3, 1, 1, 'sym') }, randn(rng, 72), rng), convCp).m;
    expect(isSkip(dw) && dw.skip).toMatch(/^depthwise: nothing to gain/);
    // Grouped convs are taken (one CP per group: conv-cp-grouped.test.ts), grouped 1x1 kernels are not.
    const g2 = matchOnly(convModel({ S: 8, T: 8, group: 2, ...windowSpec(2, 1, 1, 1, 'none') }, randn(rng, 8 * 4), rng), convCp).m;
    expect(isSkip(g2) && g2.skip).toBe('1x1 kernel: a matrix per group (group 2), conv-tucker2 handles it');
    const pw = matchOnly(convModel({ S: 8, T: 8, ...windowSpec(2, 1, 1, 1, 'none') }, randn(rng, 64), rng), convCp).m;
    expect(isSkip(pw) && pw.skip).toMatch(/1x1 kernel/);
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [1, 4, 6, 6]);
    b.output(b.node('Conv', [x, b.initInt64('w', [4, 4, 3, 3], new Array<number>(144).fill(1))], {}, { name: 'conv' }));
    const q = matchOnly(encodeModel(b.build()), convCp).m;
    expect(isSkip(q) && q.skip).toMatch(/not floating point/);
  });

  it('costs: R(S + T + K) params; the first 1x1 pays the stride factor', () => {
    const rng = createRng(2);
    const { m } = matchOnly(convModel({ S: 16, T: 32, ...windowSpec(2, 3, 2, 1, 'sym') }, randn(rng, 32 * 16 * 9), rng), convCp);
    if (isSkip(m)) throw new Error(m.skip);
    const c = convCp.cost(m, [10]);
    expect(c.before.params).toBe(32 * 16 * 9);
    expect(c.after.params).toBe(10 * (16 + 32 + 9));
    expect(c.after.macsPerPosition).toBe(4 * 10 * 16 + 10 * 9 + 32 * 10);
  });

  it('chooseRanks: fixed, ratio, energy from the Tucker ranks, align', () => {
    const rng = createRng(5);
    const { m } = matchOnly(convModel({ S: 16, T: 24, ...windowSpec(2, 3, 1, 1, 'sym') }, cpKernel(rng, 24, 16, 9, 6), rng), convCp);
    if (isSkip(m)) throw new Error(m.skip);
    expect(convCp.chooseRanks(m, { kind: 'fixed', rank: 7 })).toEqual([7]);
    expect(convCp.chooseRanks(m, { kind: 'ratio', ratio: 0.5 })).toEqual([Math.floor((0.5 * 24 * 16 * 9) / (16 + 24 + 9))]);
    expect(convCp.chooseRanks(m, { kind: 'energy', energy: 1 - 1e-9 })).toEqual([6]);
    expect(convCp.chooseRanks(m, { kind: 'fixed', rank: 7, align: 8 })).toEqual([8]);
  });

  it('--rank N under auto: the CP challenger competes at rank N, not at the rank of the Tucker-2 size', () => {
    // Regression: the challenger took the largest CP no larger than Tucker-2 [6, 6] (rank 12
    // here), so --rank 6 wrote a CP of another rank. The driver is to pass the policy (5th argument).
    const rng = createRng(8);
    const [S, T] = [16, 16];
    const bytes = convModel({ S, T, ...windowSpec(2, 3, 1, 1, 'sym') }, cpKernel(rng, T, S, 9, 6), rng);
    const model = new Model(decodeModel(bytes));
    const cx = context(model);
    const layer = convLayer(model);
    const tucker = bind(convTucker2, layer, cx);
    if (isSkip(tucker)) throw new Error(tucker.skip);
    const policy = { kind: 'fixed', rank: 6 } as const;
    const ranksT = tucker.chooseRanks(policy);
    expect(ranksT).toEqual([6, 6]);
    const c = challengeCp(layer, tucker, ranksT as number[], cx, policy);
    expect(c?.note).toMatch(/vs cp 6 err/);
    expect(c?.use?.ranks).toEqual([6]);
    // Aligned as --method cp aligns it.
    const c8 = challengeCp(layer, tucker, [8, 8], cx, { ...policy, align: 8 });
    expect(c8?.use?.ranks).toEqual([8]);
    // Without a fixed policy the CP still competes at equal size.
    expect(challengeCp(layer, tucker, ranksT as number[], cx)?.note).toMatch(/vs cp 12 err/);
    // End to end: the driver hands the policy over, so auto with --rank 6 writes CP rank 6.
    const [rec] = optimizeModel(new Model(decodeModel(bytes)), undefined, { method: 'auto', policy, minParams: 0, seed: 0 });
    expect(rec).toMatchObject({ pass: 'conv-cp', ranks: [6] });
  });

  it('--energy E: the CP meets E on a kernel without CP structure (smallest such rank, within 1/16), or the layer is declined', () => {
    // Regression: the CP rank was the Tucker-2 energy rank, max(R1, R2) = 10 here, which left
    // weight error 0.64 (energy 0.59) when 0.9 was asked.
    const rng = createRng(3);
    const [S, T] = [8, 12];
    const bytes = convModel({ S, T, ...windowSpec(2, 3, 1, 1, 'sym') }, randn(rng, T * S * 9), rng);
    const { m, cx } = matchOnly(bytes, convCp);
    if (isSkip(m)) throw new Error(m.skip);
    const r = convCp.chooseRanks(m, { kind: 'energy', energy: 0.9 });
    if (isSkip(r)) throw new Error(r.skip);
    const [R] = r as [number];
    expect(R).toBeGreaterThan(10);
    // Smallest to within 1/16: a fitted rank that far below R (or nearer) misses the energy.
    const misses = [...m.weightErr2!].filter(([k, e]) => k < R && e > 0.1).map(([k]) => k);
    expect(Math.max(...misses)).toBeGreaterThanOrEqual(R - Math.ceil(R / 16));
    const applied = convCp.apply(m, r, cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    expect(applied.relError ** 2).toBeLessThanOrEqual(0.1);
    // No CP below break-even (29, the largest R with R·(8 + 12 + 9) < 864) reaches 0.99 on this kernel.
    const { m: m2 } = matchOnly(bytes, convCp);
    if (isSkip(m2)) throw new Error(m2.skip);
    const no = convCp.chooseRanks(m2, { kind: 'energy', energy: 0.99 });
    expect(isSkip(no) && no.skip).toMatch(/^energy 0\.99 needs a CP rank above 29 \(break-even\): CP rank 29 keeps energy 0\.9\d+$/);
  });
});

/** Random symmetric positive definite [n, n]: X·Xᵀ/m for X [n, m] with uneven row scales, plus a little I. */
function spd(rng: ReturnType<typeof createRng>, n: number, m: number): Float64Array {
  const x = Array.from({ length: n * m }, (_, i) => rng.normal() * (1 + 3 * ((i / m) % 3)));
  const g = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    let v = 0;
    for (let p = 0; p < m; p++) v += x[i * m + p] * x[j * m + p];
    g[i * n + j] = v / m + (i === j ? 0.01 : 0);
  }
  return g;
}

/** (A ⊗ B) in the patch layout c·K + k: entry (cK + k, c'K + k') = A[c, c']·B[k, k']. */
function kron(a: Float64Array, S: number, b: Float64Array, K: number): Float64Array {
  const D = S * K;
  const out = new Float64Array(D * D);
  for (let c = 0; c < S; c++) for (let c2 = 0; c2 < S; c2++) for (let k = 0; k < K; k++) for (let k2 = 0; k2 < K; k2++) out[(c * K + k) * D + c2 * K + k2] = a[c * S + c2] * b[k * K + k2];
  return out;
}

/** tr(W·Σ·Wᵀ) for W [T, D]. */
function quad(w: ArrayLike<number>, T: number, sigma: Float64Array, D: number): number {
  let s = 0;
  for (let t = 0; t < T; t++) for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) s += w[t * D + i] * sigma[i * D + j] * w[t * D + j];
  return s;
}

const trace = (a: Float64Array, n: number): number => Array.from({ length: n }, (_, i) => a[i * n + i]).reduce((p, q) => p + q, 0);
const sumSq = (a: ArrayLike<number>): number => Array.from(a).reduce((p, q) => p + q * q, 0);

describe('conv-cp data-aware (Kronecker whitening of the channel and kernel modes)', () => {
  it('turns the patch-weighted error into the Frobenius norm of the whitened kernel when Σ = Σ_S ⊗ Σ_K', () => {
    for (const seed of [1, 2, 3]) {
      const rng = createRng(seed);
      const S = 3 + rng.int(5);
      const K = [3, 5, 9][rng.int(3)];
      const T = 2 + rng.int(4);
      const gs = spd(rng, S, S + 2);
      const gk = spd(rng, K, K + 2);
      const sigma = kron(gs, S, gk, K);
      // Undamped (λ = 0): the identity is exact; the passes damp (WHITEN_DAMP), checked below.
      const wh = kroneckerWhitening(S, K, sigma, undefined, 0);
      if (!wh?.lk) throw new Error('no whitening');
      // Partial traces normalise each factor to mean diagonal 1: Σ = (trΣ_S/S)(trΣ_K/K)·(L_S L_Sᵀ ⊗ L_K L_Kᵀ).
      const scale = (trace(gs, S) / S) * (trace(gk, K) / K);
      for (let rep = 0; rep < 3; rep++) {
        const dw = randn(rng, T * S * K);
        const lhs = sumSq(whitenKernel(dw, T, S, K, wh.ls, wh.lk)) * scale;
        expect(lhs / quad(dw, T, sigma, S * K)).toBeCloseTo(1, 9);
      }
      // Channel Gram alone: Σ_S ⊗ I.
      const ch = kroneckerWhitening(S, K, undefined, gs, 0);
      if (!ch) throw new Error('no whitening');
      expect(ch.lk).toBeUndefined();
      const eye = Float64Array.from({ length: K * K }, (_, i) => (i % (K + 1) === 0 ? 1 : 0));
      const dw = randn(rng, T * S * K);
      expect((sumSq(whitenKernel(dw, T, S, K, ch.ls)) * trace(gs, S) / S) / quad(dw, T, kron(gs, S, eye, K), S * K)).toBeCloseTo(1, 9);
      // Damped by default: each factor is the Cholesky of its damped Gram (unit mean diagonal, so + λ·I).
      const d = kroneckerWhitening(S, K, undefined, gs);
      const g1 = Float64Array.from(gs);
      const t = trace(gs, S) / S;
      for (let i = 0; i < S * S; i++) g1[i] /= t;
      for (let i = 0; i < S; i++) g1[i * S + i] += WHITEN_DAMP;
      const llt = gemm(d!.ls, d!.ls, { transB: true }).data;
      for (let i = 0; i < S * S; i++) expect(llt[i]).toBeCloseTo(g1[i], 9);
    }
  });

  it('an exactly rank-R kernel stays exact through the whitening and refit (non-Kronecker statistics), in ORT', async () => {
    for (const seed of [11, 12, 13]) {
      const rng = createRng(seed);
      const S = 6 + rng.int(3);
      const T = 5 + rng.int(4);
      const R = 2 + rng.int(3);
      const spec: ConvSpec = { S, T, bias: seed % 2 === 0, ...windowSpec(2, 3, 1, 1, 'sym') };
      const K = 9;
      const bytes = convModel(spec, cpKernel(rng, T, S, K, R), rng);
      const D = S * K;
      const patchGram = spd(rng, D, 3 * D);
      const stats: LayerInputStats = {
        kind: 'conv', gram: spd(rng, S, S + 3), dim: S, groups: 1, count: 3 * D,
        patchGram, patchDim: D, patchMean: Float64Array.from({ length: D }, () => 0.3 * rng.normal()),
      };
      const model = new Model(decodeModel(bytes));
      const cx = { ...context(model), stats: new Map([['conv', stats]]) };
      const m = convCp.match(convLayer(model), cx);
      if (isSkip(m)) throw new Error(m.skip);
      const applied = convCp.apply(m, [R], cx);
      if (isSkip(applied)) throw new Error(applied.skip);
      expect(m.whitening?.[0]?.lk).toBeDefined();
      expect(m.fitted?.whitened).toBe(true);
      expect(applied.relError).toBeLessThan(1e-4);
      expect(applied.dataError).toBeLessThan(1e-4);
      expect(model.root.nodes.find((n) => n.opType === 'Conv')?.docString).toMatch(/Kronecker-whitened/);
      model.root.removeUnusedInitializers();
      const cmp = await compareInOrt(bytes, encodeModel(model.proto), spec, seed);
      expect(cmp.rel).toBeLessThan(1e-4);
    }
  });

  it('statistics from too few rows (under 2 per dimension) are not used to whiten: patch, then channel, then none', () => {
    const rng = createRng(21);
    const [S, T, K] = [6, 5, 9];
    const spec: ConvSpec = { S, T, ...windowSpec(2, 3, 1, 1, 'sym') };
    const bytes = convModel(spec, cpKernel(rng, T, S, K, 3), rng);
    const D = S * K;
    const whiteningAt = (count: number) => {
      const stats: LayerInputStats = { kind: 'conv', gram: spd(rng, S, S + 3), dim: S, groups: 1, count, patchGram: spd(rng, D, 3 * D), patchDim: D };
      const model = new Model(decodeModel(bytes));
      const cx = { ...context(model), stats: new Map([['conv', stats]]) };
      const m = convCp.match(convLayer(model), cx);
      if (isSkip(m)) throw new Error(m.skip);
      const applied = convCp.apply(m, [3], cx);
      if (isSkip(applied)) throw new Error(applied.skip);
      return m.whitening === null ? null : m.whitening?.[0];
    };
    expect(whiteningAt(2 * D)?.lk).toBeDefined();
    const channelOnly = whiteningAt(2 * D - 1);
    expect(channelOnly?.ls).toBeDefined();
    expect(channelOnly?.lk).toBeUndefined();
    expect(whiteningAt(2 * S - 1)).toBeNull();
  });
});
