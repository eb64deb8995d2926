import { describe, expect, it } from 'vitest';
import { convTt, ttCost } from '../../passes/conv-tt.js';
import { Model } from '../../src/graph/graph.js';
import { ttKernel, ttSpectra, ttSvd } from '../../src/linalg/tt.js';
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
 * W[t, s, y, x] = Σ C[s, r1]·Y[r1, y, r2]·X[r2, x, r3]·Tf[r3, t] from random cores: TT ranks
 * (R1, R2, R3) for generic cores when they fit the unfoldings. Written out directly
 * (not through linalg/tt.ts, which it checks).
 */
function exactTtKernel(rng: Rng, T: number, S: number, kh: number, kw: number, [R1, R2, R3]: readonly number[]): Float32Array {
  const C = randn(rng, S * R1);
  const Y = randn(rng, R1 * kh * R2);
  const X = randn(rng, R2 * kw * R3!);
  const Tf = randn(rng, R3! * T);
  const w = new Float32Array(T * S * kh * kw);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) {
    let v = 0;
    for (let a = 0; a < R1!; a++) for (let b = 0; b < R2!; b++) for (let c = 0; c < R3!; c++) {
      v += C[s * R1! + a]! * Y[(a * kh + y) * R2! + b]! * X[(b * kw + x) * R3! + c]! * Tf[c * T + t]!;
    }
    w[((t * S + s) * kh + y) * kw + x] = v;
  }
  return w;
}

describe('conv-tt', () => {
  it('exact TT ranks: 1x1 → kh×1 → 1×kw → 1x1 matches the original in ORT (strides, pads incl. asymmetric and auto_pad, dilations, bias, non-square kernels)', async () => {
    await forWindowCases(19, (c, rng) => {
      const { kh, kw } = c;
      const S = 4 + rng.int(4);
      const T = 4 + rng.int(4);
      const R1 = 2 + rng.int(2);
      const R2 = 2 + rng.int(3);
      const R3 = 2 + rng.int(2);
      const spec = spec2d(c, S, T);
      const bytes = convModel(spec, exactTtKernel(rng, T, S, kh, kw, [R1, R2, R3]), rng);
      const out = rewrite(bytes, convTt, [R1, R2, R3]);
      expect(out.applied.relError, describe1(spec)).toBeLessThan(1e-5);
      expect(opCounts(out.proto)).toEqual({ Conv: 4 });
      const [a, b, d, e] = out.proto.graph!.node;
      const inits = new Map(out.proto.graph!.initializer.map((t) => [t.name, t.dims.map(Number)]));
      expect(inits.get(a!.input[1]!)).toEqual([R1, S, 1, 1]);
      expect(inits.get(b!.input[1]!)).toEqual([R2, R1, kh, 1]);
      expect(inits.get(d!.input[1]!)).toEqual([R3, R2, 1, kw]);
      expect(inits.get(e!.input[1]!)).toEqual([T, R3, 1, 1]);
      // Axis 0's window on the kh×1 conv, axis 1's on the 1×kw conv, none on the 1x1s.
      const { rows, cols } = splitPlacementOf(c, spec);
      expect(windowAttrs(a!, false)).toEqual({});
      expect(windowAttrs(e!, false)).toEqual({});
      expect(windowAttrs(b!, false)).toEqual(rows);
      expect(windowAttrs(d!, false)).toEqual(cols);
      expect(e!.input).toHaveLength(c.bias ? 3 : 2);
      expect(e!.output[0]).toBe(decodeModel(bytes).graph!.node[0]!.output[0]);
      return { spec, bytes, out: out.bytes };
    });
  });

  it('compose (--stages) returns the kernel the chain computes', () => {
    // The composed kernel is off the original by exactly the reported weight error.
    const { nodes, factors, f } = composeBack(convTt, [3, 4, 3]);
    expect(convTt.compose(nodes.slice(1), factors.slice(1), f, undefined)).toMatch(/chain of 4 convs/);
  });

  it('declines 1x1, 1xk and depthwise convs and kernels with an extent 1 with reasons (match and accepts agree); 1-D and 3-D convs are taken', () => {
    expectSplitDeclines(convTt, 'tt', /^tensor-train /, [[1, 3], /kh, kw > 1 only \(1x3/], true);
  });

  it('costs: S·R1 + R1·R2·kh + R2·R3·kw + R3·T params; the first 1x1 pays ∏strides, the kh×1 conv sw', () => {
    const rng = createRng(2);
    const spec: ConvSpec = { S: 16, T: 32, kernel: [3, 5], strides: [2, 3], size: [12, 15] };
    const { m } = matchOnly(convModel(spec, randn(rng, 32 * 16 * 15), rng), convTt);
    if (isSkip(m)) throw new Error(m.skip);
    const c = convTt.cost(m, [6, 7, 8]);
    expect(c.before).toEqual({ params: 32 * 16 * 15, macsPerPosition: 32 * 16 * 15 });
    expect(c.after.params).toBe(16 * 6 + 6 * 7 * 3 + 7 * 8 * 5 + 8 * 32);
    expect(c.after.macsPerPosition).toBe(6 * 16 * 6 + 6 * 7 * 3 * 3 + 7 * 8 * 5 + 8 * 32);
    expect(ttCost(m.geo, [6, 7, 8])).toEqual(c.after);
    // The benefit keeps --method auto's routing: conv-tucker2 first, conv-tt after conv-cp.
    const r = route(PASSES, convLayer(matchOnly(convModel(spec, randn(rng, 32 * 16 * 15), rng), convTt).model), 'auto');
    const names = Array.isArray(r) ? r.map((p) => p.name) : [];
    expect(names[0]).toBe('conv-tucker2');
    expect(names.indexOf('conv-tt')).toBeGreaterThan(names.indexOf('conv-cp'));
  });

  it('ranks: limits, neighbour constraints, fixed/energy/ratio/vbmf policies and align', () => {
    const rng = createRng(5);
    const [S, T, kh, kw] = [8, 10, 3, 3];
    const spec: ConvSpec = { S, T, kernel: [kh, kw], pads: [1, 1, 1, 1], size: [6, 6] };
    const { m } = matchOnly(convModel(spec, exactTtKernel(rng, T, S, kh, kw, [4, 6, 5]), rng), convTt);
    if (isSkip(m)) throw new Error(m.skip);
    expect(convTt.rankLimits(m)).toEqual([8, 24, 10]);
    expect(convTt.checkRanks!(m, [2, 7, 5])).toMatch(/r2 ≤ r1·3/);
    expect(convTt.checkRanks!(m, [4, 6, 1])).toMatch(/r2 ≤ r3·3/);
    expect(convTt.checkRanks!(m, [4, 6, 5])).toBeUndefined();
    expect(convTt.chooseRanks(m, { kind: 'fixed', rank: 6 })).toEqual([6, 6, 6]);
    expect(convTt.chooseRanks(m, { kind: 'fixed', rank: 30 })).toEqual([8, 24, 10]);
    // The exact TT ranks are the ranks of the three unfoldings.
    expect(convTt.chooseRanks(m, { kind: 'energy', energy: 1 - 1e-9 })).toEqual([4, 6, 5]);
    expect(convTt.chooseRanks(m, { kind: 'energy', energy: 1 - 1e-9, align: 8 })).toEqual([8, 8, 8]);
    const ratio = convTt.chooseRanks(m, { kind: 'ratio', ratio: 0.3 });
    if (isSkip(ratio)) throw new Error(ratio.skip);
    expect(convTt.cost(m, ratio).after.params).toBeLessThanOrEqual(0.3 * T * S * kh * kw);
    expect(convTt.cost(m, ratio.map((r) => r + 1)).after.params).toBeGreaterThan(0.3 * T * S * kh * kw);
    const vb = convTt.chooseRanks(m, { kind: 'vbmf' });
    expect(isSkip(vb) || vb.every((r, i) => r >= 1 && r <= convTt.rankLimits(m)[i]!)).toBe(true);
  });

  it('energy ranks: the TT-SVD error² stays within 3·(1 − e) of ‖W‖² on a random kernel', () => {
    const rng = createRng(6);
    const [S, T, kh, kw] = [10, 12, 3, 3];
    const { m, cx } = matchOnly(convModel({ S, T, kernel: [kh, kw], size: [6, 6] }, randn(rng, T * S * kh * kw), rng), convTt);
    if (isSkip(m)) throw new Error(m.skip);
    for (const e of [0.7, 0.9, 0.99]) {
      const r = convTt.chooseRanks(m, { kind: 'energy', energy: e });
      if (isSkip(r)) throw new Error(r.skip);
      const est = convTt.estimate!(m, r, cx);
      if (isSkip(est)) throw new Error(est.skip);
      expect(est.relError ** 2, `energy ${e}`).toBeLessThanOrEqual(3 * (1 - e) + 1e-6);
    }
  });

  it('the CLI: optimize --method tt writes a model that verifies in ORT', () => {
    const rng = createRng(41);
    const w = exactTtKernel(rng, 24, 16, 3, 3, [6, 8, 6]);
    // Energy ranks of an exactly TT-(6, 8, 6) kernel.
    const { rep, proto } = optimizeCli('tt', w, randn(rng, 24), { pads: [1, 1, 1, 1], strides: [1, 2] }, ['--method', 'tt', '--energy', '0.999999']);
    expect(rep.layers).toMatchObject([{ name: 'conv', pass: 'conv-tt', method: 'tt', ranks: [6, 8, 6], paramsAfter: 16 * 6 + 6 * 8 * 3 + 8 * 6 * 3 + 6 * 24 }]);
    expectExactVerified(rep);
    expect(opCounts(proto)).toEqual({ Conv: 4 });
  }, 120_000);

  it('optimizeModel: --method tt under a rank ratio; --method auto still routes to conv-tucker2 or conv-cp', () => {
    const rng = createRng(7);
    const spec: ConvSpec = { S: 16, T: 16, kernel: [3, 3], pads: [1, 1, 1, 1], size: [8, 8] };
    const bytes = convModel(spec, randn(rng, 16 * 16 * 9), rng);
    const [rec] = optimizeModel(new Model(decodeModel(bytes)), undefined, { method: 'tt', policy: { kind: 'ratio', ratio: 0.4 }, minParams: 0, seed: 0 });
    expect(rec).toMatchObject({ pass: 'conv-tt', method: 'tt' });
    expect(rec!.skipped, rec!.reason).toBeUndefined();
    expect(rec!.paramsAfter).toBeLessThanOrEqual(0.4 * 16 * 16 * 9);
    const [auto] = optimizeModel(new Model(decodeModel(bytes)), undefined, { method: 'auto', policy: { kind: 'ratio', ratio: 0.4 }, minParams: 0, seed: 0 });
    expect(['conv-tucker2', 'conv-cp']).toContain(auto!.pass);
  });
});

describe('TT-SVD numerics (linalg/tt.ts)', () => {
  it('recovers an exact TT kernel at its ranks, and its factors compose back', () => {
    for (const seed of [1, 2, 3]) {
      const rng = createRng(seed);
      const [T, S, kh, kw] = [7, 6, 3, 5];
      const ranks: [number, number, number] = [3, 5, 4];
      const w = exactTtKernel(rng, T, S, kh, kw, ranks);
      const f = ttSvd({ data: w, shape: [T, S, kh, kw] }, ranks);
      expect(f.ranks).toEqual(ranks);
      expect(f.relError).toBeLessThan(1e-6);
      expect(f.discarded.every((d) => d < 1e-12)).toBe(true);
      expect(relL2(w, ttKernel(f.first, f.rows, f.cols, f.last, T, S, kh, kw, f.ranks))).toBeLessThan(1e-6);
    }
  });

  it('the error² is the energy the three SVDs discarded, each at most its unfolding tail past the rank', () => {
    for (const seed of [4, 5, 6]) {
      const rng = createRng(seed);
      const [T, S, kh, kw] = [9, 8, 3, 3];
      const w = randn(rng, T * S * kh * kw);
      const spectra = ttSpectra({ data: w, shape: [T, S, kh, kw] });
      for (const ranks of [[4, 6, 5], [2, 3, 2], [8, 20, 9]] as [number, number, number][]) {
        const f = ttSvd({ data: w, shape: [T, S, kh, kw] }, ranks);
        const sum = f.discarded[0] + f.discarded[1] + f.discarded[2];
        expect(f.relError ** 2 / sum, `ranks ${ranks}`).toBeCloseTo(1, 5);
        spectra.forEach((sp, i) => {
          let tail = 0;
          for (let j = ranks[i]!; j < sp.sigma.length; j++) tail += sp.sigma[j]! ** 2;
          expect(f.discarded[i]!).toBeLessThanOrEqual(tail / sp.total + 1e-12);
        });
      }
    }
  });

  it('clamps ranks past a step\'s matrix and refuses non-ranks', () => {
    const rng = createRng(8);
    const w = randn(rng, 4 * 3 * 2 * 2);
    const f = ttSvd({ data: w, shape: [4, 3, 2, 2] }, [10, 10, 10]);
    expect(f.ranks).toEqual([3, 6, 4]);
    expect(f.relError).toBeLessThan(1e-6);
    expect(() => ttSvd({ data: w, shape: [4, 3, 2, 2] }, [0, 1, 1])).toThrow(/not a positive integer/);
  });
});

describe('conv-tt data-aware', () => {
  it('refits the last factor on well-determined patch statistics: exact kernels stay exact, and a lower output error on them than weight-only', async () => {
    const rng = createRng(11);
    const [S, T, kh, kw] = [4, 6, 3, 3];
    const spec: ConvSpec = { S, T, kernel: [kh, kw], pads: [1, 1, 1, 1], bias: true, size: [7, 7] };
    const plain = (w: Float32Array): Float32Array => {
      const f = ttSvd({ data: w, shape: [T, S, kh, kw] }, [2, 3, 2]);
      return ttKernel(f.first, f.rows, f.cols, f.last, T, S, kh, kw, f.ranks);
    };
    await expectLastFactorRefit(convTt, rng, spec, exactTtKernel(rng, T, S, kh, kw, [2, 3, 2]), [2, 3, 2], plain, [2, 3, 2]);
  });
});

describe('conv-tt anchored', () => {
  it('with x̂ = x the anchored last-factor fit is exact on an exact kernel and matches ORT', async () => {
    const rng = createRng(12);
    const [S2, T2, kh, kw] = [4, 5, 3, 3];
    const D = S2 * kh * kw;
    const spec: ConvSpec = { S: S2, T: T2, kernel: [kh, kw], pads: [1, 1, 1, 1], bias: true, size: [7, 7] };
    const bytes = convModel(spec, exactTtKernel(rng, T2, S2, kh, kw, [2, 3, 2]), rng);
    const mean = Float64Array.from({ length: D }, () => 0.2 * rng.normal());
    const stats = anchoredStats(S2, D, 4 * D, mean, sampleCov(rng, D, 2 * D));
    await expectExactWithStats(convTt, bytes, spec, stats, [2, 3, 2], /fitted to the original outputs \(anchored\)/, 12);
  });
});
