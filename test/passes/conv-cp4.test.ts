import { describe, expect, it } from 'vitest';
import { convCp4, cp4Cost } from '../../passes/conv-cp4.js';
import { Model } from '../../src/graph/graph.js';
import { cp4Conv, cp4Kernel } from '../../src/linalg/cp4-conv.js';
import { orthonormalize } from '../../src/linalg/qr.js';
import { smallestRankWithin } from '../../src/linalg/rank-search.js';
import { decodeModel } from '../../src/onnx/codec.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { isSkip } from '../../src/rewrite/pass.js';
import { route } from '../../src/rewrite/registry.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { PASSES } from '../../passes/dispatch.js';
import {
  convLayer, convModel, describe1, matchOnly, opCounts, randn, relL2, rewrite, type ConvSpec,
} from './conv-harness.js';
import {
  anchoredStats, composeBack, expectExactVerified, expectExactWithStats, expectLastFactorRefit, expectSplitDeclines, forWindowCases, optimizeCli,
  sampleCov, spec2d, splitPlacementOf, windowAttrs,
} from './conv-e2e.js';

/**
 * W[t, s, y, x] = Σ_r λ_r A[t, r]·B[s, r]·Y[y, r]·X[x, r], λ_r ∈ [1, 3], factor columns
 * orthonormalised where R fits the mode (well-separated components, where ALS from an SVD
 * start converges reliably; see conv-harness cpKernel). Written out directly.
 */
function cp4Kernel4(rng: Rng, T: number, S: number, kh: number, kw: number, R: number): Float32Array {
  const factor = (n: number): Float64Array => {
    const m = { rows: n, cols: R, data: Float64Array.from(randn(rng, n * R)) };
    return R <= n ? Float64Array.from(orthonormalize(m).data) : m.data;
  };
  const [A, B, Y, X] = [factor(T), factor(S), factor(kh), factor(kw)];
  const lambda = Array.from({ length: R }, () => 1 + 2 * rng.next());
  const w = new Float32Array(T * S * kh * kw);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) {
    let v = 0;
    for (let r = 0; r < R; r++) v += lambda[r]! * A[t * R + r]! * B[s * R + r]! * Y[y * R + r]! * X[x * R + r]!;
    w[((t * S + s) * kh + y) * kw + x] = v;
  }
  return w;
}

describe('conv-cp4', () => {
  it('exact 4-way CP rank: 1x1 → depthwise kh×1 → depthwise 1×kw → 1x1 matches the original in ORT (strides, pads incl. asymmetric and auto_pad, dilations, bias, non-square kernels)', async () => {
    await forWindowCases(23, (c, rng) => {
      const { kh, kw } = c;
      const S = 5 + rng.int(4);
      const T = 5 + rng.int(4);
      const R = 2 + rng.int(Math.min(kh, kw) - 1); // R ≤ min(kh, kw): orthonormal spatial factors
      const spec = spec2d(c, S, T);
      const bytes = convModel(spec, cp4Kernel4(rng, T, S, kh, kw, R), rng);
      const out = rewrite(bytes, convCp4, [R]);
      expect(out.applied.relError, describe1(spec)).toBeLessThan(1e-5);
      expect(opCounts(out.proto)).toEqual({ Conv: 4 });
      const [a, b, d, e] = out.proto.graph!.node;
      const inits = new Map(out.proto.graph!.initializer.map((t) => [t.name, t.dims.map(Number)]));
      expect(inits.get(a!.input[1]!)).toEqual([R, S, 1, 1]);
      expect(inits.get(b!.input[1]!)).toEqual([R, 1, kh, 1]);
      expect(inits.get(d!.input[1]!)).toEqual([R, 1, 1, kw]);
      expect(inits.get(e!.input[1]!)).toEqual([T, R, 1, 1]);
      const { rows, cols } = splitPlacementOf(c, spec);
      expect(windowAttrs(a!, true)).toEqual({ kernel_shape: [1, 1] });
      expect(windowAttrs(e!, true)).toEqual({ kernel_shape: [1, 1] });
      expect(windowAttrs(b!, true)).toEqual({ kernel_shape: [kh, 1], group: R, ...rows });
      expect(windowAttrs(d!, true)).toEqual({ kernel_shape: [1, kw], group: R, ...cols });
      expect(e!.input).toHaveLength(c.bias ? 3 : 2);
      return { spec, bytes, out: out.bytes };
    });
  });

  it('compose (--stages) returns the kernel the chain computes', () => {
    const { nodes, factors, f } = composeBack(convCp4, [4]);
    expect(convCp4.compose(nodes, [factors[0]!, factors[2]!, factors[1]!, factors[3]!], f, undefined)).toMatch(/do not fit weight/);
  });

  it('declines 1x1, 1xk and depthwise convs and kernels with an extent 1 with reasons (match and accepts agree); 1-D and 3-D convs are taken', () => {
    expectSplitDeclines(convCp4, 'cp4', /^4-way CP /, [[3, 1], /kh, kw > 1 only \(3x1/], true);
  });

  it('costs: R(S + kh + kw + T) params; the first 1x1 pays ∏strides, the kh×1 depthwise conv sw', () => {
    const rng = createRng(2);
    const spec: ConvSpec = { S: 16, T: 32, kernel: [3, 5], strides: [2, 3], size: [12, 15] };
    const { m, model } = matchOnly(convModel(spec, randn(rng, 32 * 16 * 15), rng), convCp4);
    if (isSkip(m)) throw new Error(m.skip);
    const c = convCp4.cost(m, [10]);
    expect(c.before.params).toBe(32 * 16 * 15);
    expect(c.after.params).toBe(10 * (16 + 3 + 5 + 32));
    expect(c.after.macsPerPosition).toBe(6 * 10 * 16 + 3 * 10 * 3 + 10 * 5 + 32 * 10);
    expect(cp4Cost(m.geo, 10)).toEqual(c.after);
    // Lowest benefit: --method auto still prefers conv-tucker2.
    const r = route(PASSES, convLayer(model), 'auto');
    expect(Array.isArray(r) && r[0]!.name).toBe('conv-tucker2');
    expect(Array.isArray(r) && r.findIndex((p) => p.name === 'conv-cp4')).toBe(Array.isArray(r) ? r.length - 1 : -1);
  });

  it('ranks: fixed, ratio, energy (exact rank on an exact kernel), align, clamped to the exact rank', () => {
    const rng = createRng(5);
    const [S, T, kh, kw] = [12, 10, 3, 3];
    const { m } = matchOnly(convModel({ S, T, kernel: [kh, kw], size: [6, 6] }, cp4Kernel4(rng, T, S, kh, kw, 3), rng), convCp4);
    if (isSkip(m)) throw new Error(m.skip);
    expect(convCp4.rankLimits(m)).toEqual([10 * 3 * 3]);
    expect(convCp4.chooseRanks(m, { kind: 'fixed', rank: 7 })).toEqual([7]);
    expect(convCp4.chooseRanks(m, { kind: 'fixed', rank: 7, align: 8 })).toEqual([8]);
    expect(convCp4.chooseRanks(m, { kind: 'fixed', rank: 1000 })).toEqual([90]);
    expect(convCp4.chooseRanks(m, { kind: 'ratio', ratio: 0.5 })).toEqual([Math.floor((0.5 * 10 * 12 * 9) / (12 + 10 + 3 + 3))]);
    expect(convCp4.chooseRanks(m, { kind: 'energy', energy: 1 - 1e-9 })).toEqual([3]);
  });

  it('--energy E: the 4-way CP meets E on a random kernel (smallest such rank, within 1/16), or the layer is declined', () => {
    const rng = createRng(3);
    const [S, T] = [8, 12];
    const bytes = convModel({ S, T, kernel: [3, 3], pads: [1, 1, 1, 1], size: [6, 6] }, randn(rng, T * S * 9), rng);
    const { m, cx } = matchOnly(bytes, convCp4);
    if (isSkip(m)) throw new Error(m.skip);
    const r = convCp4.chooseRanks(m, { kind: 'energy', energy: 0.8 });
    if (isSkip(r)) throw new Error(r.skip);
    const [R] = r as [number];
    const misses = [...m.weightErr2!].filter(([k, e]) => k < R && e > 0.2).map(([k]) => k);
    expect(Math.max(...misses)).toBeGreaterThanOrEqual(R - Math.ceil(R / 16));
    const applied = convCp4.apply(m, r, cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    expect(applied.relError ** 2).toBeLessThanOrEqual(0.2);
    const { m: m2 } = matchOnly(bytes, convCp4);
    if (isSkip(m2)) throw new Error(m2.skip);
    // Break-even: largest R with R·(8 + 3 + 3 + 12) < 864 is 33.
    expect(convCp4.chooseRanks(m2, { kind: 'energy', energy: 0.999 })).toMatchObject({ skip: expect.stringMatching(/^energy 0\.999 needs a 4-way CP rank above 33 \(break-even\): rank 33 keeps energy 0\.\d+$/) });
  });

  it('the CLI: optimize --method cp4 writes a model that verifies in ORT', () => {
    const rng = createRng(41);
    const w = cp4Kernel4(rng, 24, 16, 3, 3, 3);
    const { rep, proto } = optimizeCli('cp4', w, randn(rng, 24), { pads: [1, 1, 1, 1], strides: [2, 1] }, ['--method', 'cp4', '--rank', '3']);
    expect(rep.layers).toMatchObject([{ name: 'conv', pass: 'conv-cp4', method: 'cp4', ranks: [3], paramsAfter: 3 * (16 + 3 + 3 + 24) }]);
    expectExactVerified(rep);
    expect(opCounts(proto)).toEqual({ Conv: 4 });
  }, 120_000);

  it('optimizeModel: --method cp4 under a rank ratio', () => {
    const rng = createRng(7);
    const bytes = convModel({ S: 16, T: 16, kernel: [3, 3], pads: [1, 1, 1, 1], size: [8, 8] }, randn(rng, 16 * 16 * 9), rng);
    const [rec] = optimizeModel(new Model(decodeModel(bytes)), undefined, { method: 'cp4', policy: { kind: 'ratio', ratio: 0.3 }, minParams: 0, seed: 0 });
    expect(rec).toMatchObject({ pass: 'conv-cp4', method: 'cp4', ranks: [Math.floor((0.3 * 16 * 16 * 9) / 38)] });
    expect(rec!.skipped, rec!.reason).toBeUndefined();
  });
});

describe('4-way CP numerics (linalg/cp4-conv.ts) and the rank search', () => {
  it('recovers an exact 4-way CP kernel and composes back; factors balanced', () => {
    for (const seed of [1, 2, 3]) {
      const rng = createRng(seed);
      const [T, S, kh, kw] = [7, 6, 3, 5];
      const w = cp4Kernel4(rng, T, S, kh, kw, 3);
      const f = cp4Conv({ data: w, shape: [T, S, kh, kw] }, 3, { rng: createRng(0) });
      expect(f.rank).toBe(3);
      expect(f.relError).toBeLessThan(1e-5);
      expect(relL2(w, cp4Kernel(f.first, f.rows, f.cols, f.last, T, S, kh, kw, 3))).toBeLessThan(1e-5);
      // λ^¼ per factor: each component's four factor columns have equal norms.
      for (let r = 0; r < 3; r++) {
        const n = (a: Float32Array, len: number, at: (i: number) => number) => Math.sqrt(Array.from({ length: len }, (_, i) => a[at(i)]! ** 2).reduce((p, q) => p + q, 0));
        const norms = [n(f.first, S, (i) => r * S + i), n(f.rows, kh, (i) => r * kh + i), n(f.cols, kw, (i) => r * kw + i), n(f.last, T, (i) => i * 3 + r)];
        for (const x of norms) expect(x / norms[0]!).toBeCloseTo(1, 5);
      }
    }
  });

  it('smallestRankWithin: gallops up from the lower bound, bisects, fits each rank once, reuses known errors; `above` when the top fails', () => {
    const tried: number[] = [];
    const err = (r: number): number => { tried.push(r); return 1 / r; };
    const known = new Map<number, number>();
    expect(smallestRankWithin(2, 40, 1 / 17, err, known)).toEqual({ rank: 17 });
    expect(tried.slice(0, 5)).toEqual([2, 4, 8, 16, 32]);
    expect(new Set(tried).size).toBe(tried.length);
    expect(tried).not.toContain(40);
    // A second search on the same layer starts from what the first one fitted.
    tried.length = 0;
    expect(smallestRankWithin(2, 40, 1 / 20, err, known)).toEqual({ rank: 20 });
    expect(tried.every((r) => r > 17 && r < 32)).toBe(true);
    expect(tried.length).toBeLessThanOrEqual(4);
    // Within a relative tolerance: stops once the bracket is narrower than 1/4 of the rank.
    const t2: number[] = [];
    const r = smallestRankWithin(2, 40, 1 / 17, (x) => { t2.push(x); return 1 / x; }, new Map(), 1 / 4);
    expect('rank' in r && r.rank).toBeGreaterThanOrEqual(17);
    expect('rank' in r && r.rank).toBeLessThanOrEqual(Math.ceil(17 / 0.75));
    const exact: number[] = [];
    smallestRankWithin(2, 40, 1 / 17, (x) => { exact.push(x); return 1 / x; });
    expect(t2.length).toBeLessThan(exact.length);
    expect(smallestRankWithin(5, 9, 0.3, () => 0.1)).toEqual({ rank: 5 });
    expect(smallestRankWithin(5, 9, 0.01, (r) => 1 / r)).toEqual({ above: 9, err2: 1 / 9 });
    expect(smallestRankWithin(5, 9, 0.01, () => NaN)).toMatchObject({ above: 9 });
  });
});

describe('conv-cp4 data-aware', () => {
  it('refits the last factor on well-determined patch statistics: exact kernels stay exact (ORT), random ones get a lower output error', async () => {
    const rng = createRng(11);
    const [S, T, kh, kw] = [4, 6, 3, 3];
    const spec: ConvSpec = { S, T, kernel: [kh, kw], pads: [1, 1, 1, 1], bias: true, size: [7, 7] };
    const plain = (w: Float32Array): Float32Array => {
      const f = cp4Conv({ data: w, shape: [T, S, kh, kw] }, 4, { rng: createRng(0), maxIter: 50, tol: 1e-5 });
      return cp4Kernel(f.first, f.rows, f.cols, f.last, T, S, kh, kw, 4);
    };
    await expectLastFactorRefit(convCp4, rng, spec, cp4Kernel4(rng, T, S, kh, kw, 3), [3], plain, [4]);
  });
});

describe('conv-cp4 anchored', () => {
  it('with x̂ = x the anchored last-factor fit is exact on an exact kernel and matches ORT', async () => {
    const rng = createRng(12);
    const [S2, T2, kh, kw] = [4, 5, 3, 3];
    const D = S2 * kh * kw;
    const spec: ConvSpec = { S: S2, T: T2, kernel: [kh, kw], pads: [1, 1, 1, 1], bias: true, size: [7, 7] };
    const bytes = convModel(spec, cp4Kernel4(rng, T2, S2, kh, kw, 3), rng);
    const mean = Float64Array.from({ length: D }, () => 0.2 * rng.normal());
    const stats = anchoredStats(S2, D, 4 * D, mean, sampleCov(rng, D, 2 * D));
    await expectExactWithStats(convCp4, bytes, spec, stats, [3], /fitted to the original outputs \(anchored\)/, 12);
  });
});
