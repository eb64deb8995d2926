import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { convTt, ttCost } from '../../passes/conv-tt.js';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { ttKernel, ttSpectra, ttSvd } from '../../src/linalg/tt.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { readTensorFloat } from '../../src/onnx/tensor.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import { isSkip, type ChainFactor, type LayerInputStats } from '../../src/rewrite/pass.js';
import { route } from '../../src/rewrite/registry.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { PASSES } from '../../passes/index.js';
import {
  compareInOrt, context, convLayer, convModel, describe1, matchOnly, opCounts, randn, relL2, rewrite, type ConvSpec,
} from './conv-harness.js';

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

type Pad = 'none' | 'sym' | 'asym' | 'SAME_UPPER' | 'SAME_LOWER' | 'VALID';

/** A 2-D spec with per-axis kernel, stride, dilation and padding, the input large enough for the window. */
function spec2d(c: { kh: number; kw: number; sh: number; sw: number; dh: number; dw: number; pad: Pad; bias: boolean }, S: number, T: number): ConvSpec {
  const eff = [(c.kh - 1) * c.dh + 1, (c.kw - 1) * c.dw + 1];
  const spec: ConvSpec = { S, T, kernel: [c.kh, c.kw], bias: c.bias, size: [eff[0]! + 4, eff[1]! + 3] };
  if (c.sh !== 1 || c.sw !== 1) spec.strides = [c.sh, c.sw];
  if (c.dh !== 1 || c.dw !== 1) spec.dilations = [c.dh, c.dw];
  if (c.pad === 'sym') spec.pads = [eff[0]! >> 1, eff[1]! >> 1, eff[0]! >> 1, eff[1]! >> 1];
  else if (c.pad === 'asym') spec.pads = [0, 2, 1, 0];
  else if (c.pad !== 'none') spec.autoPad = c.pad;
  return spec;
}

const placement = (n: { attribute: { name?: string; ints: (number | bigint)[]; s?: Uint8Array }[] }): Record<string, unknown> => {
  const out: Record<string, unknown> = {};
  for (const a of n.attribute) {
    if (a.name === 'auto_pad') out[a.name] = new TextDecoder().decode(a.s);
    else if (['strides', 'pads', 'dilations'].includes(a.name ?? '')) out[a.name!] = a.ints.map(Number);
  }
  return out;
};

describe('conv-tt', () => {
  it('exact TT ranks: 1x1 → kh×1 → 1×kw → 1x1 matches the original in ORT (strides, pads incl. asymmetric and auto_pad, dilations, bias, non-square kernels)', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          k: fc.constantFrom([3, 3], [3, 5], [5, 3], [2, 3]),
          sh: fc.constantFrom(1, 2), sw: fc.constantFrom(1, 2),
          dh: fc.constantFrom(1, 2), dw: fc.constantFrom(1, 2),
          pad: fc.constantFrom<Pad>('none', 'sym', 'asym', 'SAME_UPPER', 'SAME_LOWER', 'VALID'),
          bias: fc.boolean(),
          seed: fc.integer({ min: 0, max: 1_000_000 }),
        }).filter((c) => !((c.dh > 1 || c.dw > 1) && c.pad.startsWith('SAME'))), // ORT 1.30 refuses dilations with SAME_*
        async (c) => {
          const rng = createRng(c.seed);
          const [kh, kw] = c.k as [number, number];
          const S = 4 + rng.int(4);
          const T = 4 + rng.int(4);
          const R1 = 2 + rng.int(2);
          const R2 = 2 + rng.int(3);
          const R3 = 2 + rng.int(2);
          const spec = spec2d({ ...c, kh, kw }, S, T);
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
          expect(placement(a!)).toEqual({});
          expect(placement(e!)).toEqual({});
          const auto = spec.autoPad ? { auto_pad: spec.autoPad } : {};
          expect(placement(b!)).toEqual({
            ...(spec.strides && { strides: [c.sh, 1] }), ...(spec.dilations && { dilations: [c.dh, 1] }),
            ...(spec.pads && { pads: [spec.pads[0], 0, spec.pads[2], 0] }), ...auto,
          });
          expect(placement(d!)).toEqual({
            ...(spec.strides && { strides: [1, c.sw] }), ...(spec.dilations && { dilations: [1, c.dw] }),
            ...(spec.pads && { pads: [0, spec.pads[1], 0, spec.pads[3]] }), ...auto,
          });
          expect(e!.input).toHaveLength(c.bias ? 3 : 2);
          expect(e!.output[0]).toBe(decodeModel(bytes).graph!.node[0]!.output[0]);
          const cmp = await compareInOrt(bytes, out.bytes, spec, c.seed);
          expect(cmp.b.dims, describe1(spec)).toEqual(cmp.a.dims);
          expect(cmp.rel, describe1(spec)).toBeLessThan(1e-4);
          runs++;
        },
      ),
      { seed: 19, numRuns: 100 },
    );
    expect(runs).toBe(100);
  });

  it('compose (--stages) returns the kernel the chain computes', () => {
    const rng = createRng(4);
    const spec: ConvSpec = { S: 6, T: 5, kernel: [3, 5], pads: [1, 2, 1, 2], size: [8, 9] };
    const w = randn(rng, 5 * 6 * 15);
    const out = rewrite(convModel(spec, w, rng), convTt, [3, 4, 3]);
    const inits = new Map(out.proto.graph!.initializer.map((t) => [t.name!, t]));
    const factors: ChainFactor[] = out.proto.graph!.node.map((n) => {
      const t = inits.get(n.input[1]!)!;
      return { name: t.name!, dims: t.dims.map(Number), dataType: t.dataType!, read: () => readTensorFloat(t) };
    });
    const composed = convTt.compose(out.proto.graph!.node, factors, { name: 'conv', original: out.proto.graph!.node[0]!, weightInput: 1, weightDims: [5, 6, 3, 5], nodes: [] }, undefined);
    if (typeof composed === 'string') throw new Error(composed);
    // The composed kernel is off the original by exactly the reported weight error.
    expect(relL2(w, composed)).toBeCloseTo(out.applied.relError, 5);
    expect(convTt.compose(out.proto.graph!.node.slice(1), factors.slice(1), { name: 'conv', original: out.proto.graph!.node[0]!, weightInput: 1, weightDims: [5, 6, 3, 5], nodes: [] }, undefined)).toMatch(/chain of 4 convs/);
  });

  it('declines 1-D, 3-D, 1x1, 1xk, grouped and depthwise convs with reasons (match and accepts agree)', () => {
    const rng = createRng(1);
    const cases: [ConvSpec, RegExp][] = [
      [{ S: 4, T: 4, kernel: [3], size: [8] }, /applies to 2-D convs only \(this one has 1 spatial axis/],
      [{ S: 4, T: 4, kernel: [3, 3, 3], size: [5, 5, 5] }, /applies to 2-D convs only \(this one has 3 spatial axes/],
      [{ S: 4, T: 4, kernel: [1, 1], size: [5, 5] }, /does not apply to 1x1 convs/],
      [{ S: 4, T: 4, kernel: [1, 3], size: [5, 5] }, /kh, kw > 1 only \(1x3/],
      [{ S: 8, T: 8, group: 2, kernel: [3, 3], size: [5, 5] }, /does not apply to grouped convs \(group 2/],
      [{ S: 8, T: 8, group: 8, kernel: [3, 3], size: [5, 5] }, /does not apply to depthwise convs/],
    ];
    for (const [spec, why] of cases) {
      const n = spec.T * (spec.S / (spec.group ?? 1)) * spec.kernel.reduce((a, b) => a * b, 1);
      const { m, model } = matchOnly(convModel(spec, randn(rng, n), rng), convTt);
      expect(isSkip(m) && m.skip, describe1(spec)).toMatch(why);
      expect(isSkip(m) && m.skip).toMatch(/^tensor-train /);
      const acc = convTt.accepts!(convLayer(model));
      expect(acc !== true && acc.skip).toMatch(why);
      expect(route(PASSES, convLayer(model), 'tt')).toMatch(/^--method tt /);
    }
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
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-tt-cli-'));
    const inp = path.join(dir, 'in.onnx');
    const outp = path.join(dir, 'out.onnx');
    const report = path.join(dir, 'report.json');
    const rng = createRng(41);
    const mb = new ModelBuilder({ opset: 13 });
    const x = mb.input('x', [1, 16, 12, 12]);
    const w = exactTtKernel(rng, 24, 16, 3, 3, [6, 8, 6]);
    mb.output(mb.node('Conv', [x, mb.init('w', [24, 16, 3, 3], w), mb.init('bias', [24], randn(rng, 24))], { pads: [1, 1, 1, 1], strides: [1, 2] }, { name: 'conv' }));
    writeFileSync(inp, encodeModel(mb.build()));
    // Energy ranks of an exactly TT-(6, 8, 6) kernel; --save params: no latency screen.
    const res = spawnSync(process.execPath, ['--import', 'tsx', 'test/fuzz/cli-child.ts', 'optimize', inp, outp, '--method', 'tt', '--energy', '0.999999', '--min-params', '0', '--save', 'params', '--report', report], { encoding: 'utf8' });
    expect(res.status, res.stderr).toBe(0);
    const rep = JSON.parse(readFileSync(report, 'utf8'));
    expect(rep.layers).toMatchObject([{ name: 'conv', pass: 'conv-tt', method: 'tt', ranks: [6, 8, 6], paramsAfter: 16 * 6 + 6 * 8 * 3 + 8 * 6 * 3 + 6 * 24 }]);
    expect(rep.layers[0].relError).toBeLessThan(1e-5);
    expect(rep.verify.pass).toBe(true);
    expect(rep.verify.outputs[0].relL2).toBeLessThan(1e-5);
    expect(opCounts(decodeModel(readFileSync(outp)))).toEqual({ Conv: 4 });
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
    const D = S * kh * kw;
    const spec: ConvSpec = { S, T, kernel: [kh, kw], pads: [1, 1, 1, 1], bias: true, size: [7, 7] };
    const statsFor = (n: number): LayerInputStats => {
      // Correlated patches with a non-zero mean: Σ = X·Xᵀ/n for uneven row scales.
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
    };
    const exact = convModel(spec, exactTtKernel(rng, T, S, kh, kw, [2, 3, 2]), rng);
    const model = new Model(decodeModel(exact));
    const cx = { ...context(model), stats: new Map([['conv', statsFor(3 * D)]]) };
    const m = convTt.match(convLayer(model), cx);
    if (isSkip(m)) throw new Error(m.skip);
    const applied = convTt.apply(m, [2, 3, 2], cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    expect(applied.relError).toBeLessThan(1e-5);
    expect(applied.dataError!).toBeLessThan(1e-5);
    expect(model.root.nodes[0]!.docString).toMatch(/last factor refitted on calibration patches/);
    model.root.removeUnusedInitializers();
    expect((await compareInOrt(exact, encodeModel(model.proto), spec, 11)).rel).toBeLessThan(1e-4);

    // A random kernel: the refit lowers the output error on the statistics below the weight-only fit's.
    const w = randn(rng, T * S * kh * kw);
    const bytes = convModel(spec, w, rng);
    const st = statsFor(3 * D);
    const m2 = convTt.match(convLayer(new Model(decodeModel(bytes))), { ...context(new Model(decodeModel(bytes))), stats: new Map([['conv', st]]) });
    if (isSkip(m2)) throw new Error(m2.skip);
    const aware = convTt.estimate!(m2, [2, 3, 2], context(new Model(decodeModel(bytes))));
    if (isSkip(aware)) throw new Error(aware.skip);
    const plain = ttSvd({ data: w, shape: [T, S, kh, kw] }, [2, 3, 2]);
    const wp = ttKernel(plain.first, plain.rows, plain.cols, plain.last, T, S, kh, kw, plain.ranks);
    const quad = (dw: ArrayLike<number>): number => {
      let s = 0;
      for (let t = 0; t < T; t++) for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) s += dw[t * D + i]! * st.patchGram![i * D + j]! * dw[t * D + j]!;
      return s;
    };
    const plainData = Math.sqrt(quad(Float64Array.from(w, (v, i) => v - wp[i]!)) / quad(w));
    expect(aware.dataError!).toBeLessThan(plainData);
    // Too few rows per patch dimension: no refit (weight-only), as conv-cp.
    const m3 = convTt.match(convLayer(new Model(decodeModel(bytes))), { ...context(new Model(decodeModel(bytes))), stats: new Map([['conv', statsFor(2 * D - 1)]]) });
    if (isSkip(m3)) throw new Error(m3.skip);
    const few = convTt.estimate!(m3, [2, 3, 2], context(new Model(decodeModel(bytes))));
    expect(!isSkip(few) && few.dataError).toBeUndefined();
  });
});

describe('conv-tt anchored', () => {
  it('with x̂ = x the anchored last-factor fit is exact on an exact kernel and matches ORT', async () => {
    const rng = createRng(12);
    const [S2, T2, kh, kw] = [4, 5, 3, 3];
    const D = S2 * kh * kw;
    const spec: ConvSpec = { S: S2, T: T2, kernel: [kh, kw], pads: [1, 1, 1, 1], bias: true, size: [7, 7] };
    const bytes = convModel(spec, exactTtKernel(rng, T2, S2, kh, kw, [2, 3, 2]), rng);
    const n = 4 * D;
    const mean = Float64Array.from({ length: D }, () => 0.2 * rng.normal());
    // Second moments n·(Σ + μμᵀ) of a random covariance Σ.
    const x = Array.from({ length: D * 2 * D }, () => rng.normal());
    const sum = new Float64Array(D * D);
    for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) {
      let v = 0;
      for (let p = 0; p < 2 * D; p++) v += x[i * 2 * D + p]! * x[j * 2 * D + p]!;
      sum[i * D + j] = n * (v / (2 * D) + mean[i]! * mean[j]!);
    }
    const chSum = new Float64Array(S2 * S2);
    for (let i = 0; i < S2; i++) chSum[i * S2 + i] = n;
    const stats: LayerInputStats = {
      kind: 'conv', gram: chSum, dim: S2, groups: 1, count: n, mean: new Float64Array(S2),
      patchGram: sum, patchDim: D, patchMean: mean, patchCount: n,
      anchor: { gram: chSum, cross: chSum, mean: new Float64Array(S2), patchGram: sum, patchCross: sum, patchMean: mean },
    };
    const model = new Model(decodeModel(bytes));
    const cx = { ...context(model), stats: new Map([['conv', stats]]) };
    const m = convTt.match(convLayer(model), cx);
    if (isSkip(m)) throw new Error(m.skip);
    expect(m.anchor).toBeDefined();
    const applied = convTt.apply(m, [2, 3, 2], cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    expect(applied.relError).toBeLessThan(1e-4);
    expect(applied.dataError!).toBeLessThan(1e-4);
    expect(model.root.nodes[0]!.docString).toMatch(/fitted to the original outputs \(anchored\)/);
    model.root.removeUnusedInitializers();
    expect((await compareInOrt(bytes, encodeModel(model.proto), spec, 12)).rel).toBeLessThan(1e-4);
  });
});
