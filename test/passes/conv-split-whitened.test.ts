/**
 * conv-tt and conv-cp4 with calibration statistics: the TT-SVD (the 4-way CP-ALS) runs on
 * the kernel whitened mode by mode (channel, each kernel axis; linalg/mode-whitening.ts),
 * then the last factor is refitted on the patches as before. Inputs here are spatially smooth and channel-correlated (few
 * strong sources), the statistics come from the real collector, and the comparison is in
 * ORT on held-out inputs of the same distribution against the fit without whitening (the
 * weight-only TT-SVD with the same last-factor refit, built here from the library's parts).
 */
import { describe, expect, it } from 'vitest';
import { convTt, type ConvTtMatch } from '../../passes/conv-tt.js';
import { convCp4, startFit, type ConvCp4Match } from '../../passes/conv-cp4.js';
import { cpNdConv, cpNdKernel, cpNdPrefix } from '../../src/linalg/cpn-conv.js';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { fitLastFactor } from '../../src/linalg/last-factor.js';
import { ttNdKernel, ttNdPrefix, ttNdSvd } from '../../src/linalg/tt-nd.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { isSkip, type LayerPass } from '../../src/rewrite/pass.js';
import { createRng } from '../../src/util/rng.js';
import { statsFromSamples } from '../helpers/calib.js';
import { context, convLayer, convModel, randn, relL2, runOrt, type ConvSpec } from './conv-harness.js';

const [S, T, HW] = [8, 8, 12];
const spec: ConvSpec = { S, T, kernel: [3, 3], pads: [1, 1, 1, 1], size: [HW, HW] };

/**
 * n inputs: 2 strong smooth sources mixed into the channels, plus weak white noise. With
 * `rough`, the second source is not blurred: the patch covariance is then a sum of two
 * Kronecker products (channel mix ⊗ spatial correlation), which mode-by-mode whitening
 * cannot match.
 */
function inputs(n: number, seed: number, rough = false): Float32Array {
  const mix = randn(createRng(77), S * 2);
  const rng = createRng(seed);
  const P = HW * HW;
  const out = new Float32Array(n * S * P);
  for (let i = 0; i < n; i++) {
    const src = [0, 1].map((k) => {
      const z = Float64Array.from({ length: P }, () => rng.normal());
      // A 3x3 box blur twice: neighbouring pixels correlate (the kernel axes' statistics are not white).
      let a = z;
      for (let r = 0; r < (rough && k === 1 ? 0 : 2); r++) {
        const b = new Float64Array(P);
        for (let y = 0; y < HW; y++) for (let x = 0; x < HW; x++) {
          let v = 0;
          for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) v += a[Math.min(HW - 1, Math.max(0, y + dy)) * HW + Math.min(HW - 1, Math.max(0, x + dx))]!;
          b[y * HW + x] = v / 3;
        }
        a = b;
      }
      return a;
    });
    for (let c = 0; c < S; c++) for (let p = 0; p < P; p++) {
      out[(i * S + c) * P + p] = mix[c * 2]! * src[0]![p]! + mix[c * 2 + 1]! * src[1]![p]! + 0.05 * rng.normal();
    }
  }
  return out;
}

/** y = Conv(x, W, b) with the spec's window, b the given bias (or none). */
function denseModel(w: Float32Array, bias: Float64Array | undefined): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, S, HW, HW]);
  const ins = [x, b.init('w', [T, S, 3, 3], w)];
  if (bias) ins.push(b.init('b', [T], Float32Array.from(bias)));
  b.output(b.node('Conv', ins, { pads: [1, 1, 1, 1] }, { name: 'conv' }));
  return encodeModel(b.build());
}

async function outputs(bytes: Uint8Array, data: Float32Array, n: number): Promise<Float32Array> {
  const per = S * HW * HW;
  const ys: number[] = [];
  for (let i = 0; i < n; i++) ys.push(...(await runOrt(bytes, { x: { data: data.subarray(i * per, (i + 1) * per), dims: [1, S, HW, HW] } })).data);
  return Float32Array.from(ys);
}

/** The unwhitened fit with the same last-factor refit (what the passes did before), as a dense kernel and its bias correction. */
function plainFit(method: 'tt' | 'cp4', w: Float32Array, ranks: number[], patches: { gram: Float64Array; mean?: Float64Array }): { kernel: Float32Array; bias?: Float64Array } {
  const wm = { rows: T, cols: S * 9, data: Float64Array.from(w) };
  if (method === 'tt') {
    const f = ttNdSvd({ data: w, shape: [T, S, 3, 3] }, ranks);
    const lf = fitLastFactor(wm, ttNdPrefix(f.first, f.cores, S, [3, 3], f.ranks), { patches })!;
    return { kernel: ttNdKernel(f.first, f.cores, Float32Array.from(lf.last), T, S, [3, 3], f.ranks), bias: lf.biasDelta };
  }
  const f = cpNdConv({ data: w, shape: [T, S, 3, 3] }, ranks[0]!, { rng: createRng(0), maxIter: 100, tol: 1e-6 });
  const lf = fitLastFactor(wm, cpNdPrefix(f.first, f.spatial, S, [3, 3], f.rank), { patches })!;
  return { kernel: cpNdKernel(f.first, f.spatial, Float32Array.from(lf.last), T, S, [3, 3], f.rank), bias: lf.biasDelta };
}

describe('conv-tt and conv-cp4: whitened fits', () => {
  for (const [method, pass, ranks, doc] of [
    ['tt', convTt, [3, 4, 3], /whitened TT-SVD, last factor refitted on calibration patches/],
    ['cp4', convCp4, [6], /whitened ALS, last factor refitted on calibration patches/],
  ] as const) {
    it(`${method} on correlated inputs at fixed ranks: a lower held-out output error in ORT than the unwhitened fit with the same refit; the note says so`, async () => {
      const rng = createRng(3);
      const w = randn(rng, T * S * 9);
      const bytes = convModel(spec, w, rng);
      const stats = await statsFromSamples(bytes, inputs(6, 1), [6, S, HW, HW], `${method}-white`);
      expect(stats.get('conv')!.patchDim).toBe(S * 9);
      const model = new Model(decodeModel(bytes));
      const cx = { ...context(model), stats };
      const m = (pass as LayerPass<ConvTtMatch | ConvCp4Match>).match(convLayer(model), cx);
      if (isSkip(m)) throw new Error(m.skip);
      const applied = (pass as LayerPass<ConvTtMatch | ConvCp4Match>).apply(m, [...ranks], cx);
      if (isSkip(applied)) throw new Error(applied.skip);
      expect(model.root.nodes[0]!.docString).toMatch(doc);
      model.root.removeUnusedInitializers();
      const plain = plainFit(method, w, [...ranks], { gram: m.patches!.gram[0]!, mean: m.patches!.mean?.[0] });
      const held = inputs(3, 2);
      const ref = await outputs(bytes, held, 3);
      const eWhite = relL2(ref, await outputs(encodeModel(model.proto), held, 3));
      const ePlain = relL2(ref, await outputs(denseModel(plain.kernel, plain.bias), held, 3));
      expect(ePlain).toBeGreaterThan(0.02);
      expect(eWhite).toBeLessThan(0.8 * ePlain);
      // The reported data error (on the statistics) is near the held-out one.
      expect(applied.dataError!).toBeLessThan(2 * eWhite + 1e-3);
      expect(applied.dataError!).toBeGreaterThan(eWhite / 2);
    });
  }

  it('an exact TT kernel stays exact through the whitening (ORT)', async () => {
    const rng = createRng(4);
    // W = Σ C[s,a]·Y[a,y,b]·X[b,x,c]·Tf[c,t] at ranks (2, 3, 2).
    const [R1, R2, R3] = [2, 3, 2];
    const [C, Y, X, Tf] = [randn(rng, S * R1), randn(rng, R1 * 3 * R2), randn(rng, R2 * 3 * R3), randn(rng, R3 * T)];
    const w = new Float32Array(T * S * 9);
    for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let y = 0; y < 3; y++) for (let x = 0; x < 3; x++) {
      let v = 0;
      for (let a = 0; a < R1; a++) for (let b = 0; b < R2; b++) for (let c = 0; c < R3; c++) v += C[s * R1 + a]! * Y[(a * 3 + y) * R2 + b]! * X[(b * 3 + x) * R3 + c]! * Tf[c * T + t]!;
      w[((t * S + s) * 3 + y) * 3 + x] = v;
    }
    const bytes = convModel(spec, w, rng);
    const stats = await statsFromSamples(bytes, inputs(6, 5), [6, S, HW, HW], 'tt-white-exact');
    const model = new Model(decodeModel(bytes));
    const cx = { ...context(model), stats };
    const m = convTt.match(convLayer(model), cx);
    if (isSkip(m)) throw new Error(m.skip);
    const applied = convTt.apply(m, [R1, R2, R3], cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    expect(model.root.nodes[0]!.docString).toMatch(/whitened TT-SVD/);
    expect(applied.relError).toBeLessThan(1e-4);
    model.root.removeUnusedInitializers();
    const held = inputs(2, 6);
    expect(relL2(await outputs(bytes, held, 2), await outputs(encodeModel(model.proto), held, 2))).toBeLessThan(1e-4);
  });

  it('cp4: every factor is refined on the statistics after the whitened fit; lower held-out output error in ORT than the whitened fit with its last factor refitted alone', async () => {
    const rng = createRng(3);
    const w = randn(rng, T * S * 9);
    const bytes = convModel(spec, w, rng);
    const stats = await statsFromSamples(bytes, inputs(6, 1, true), [6, S, HW, HW], 'cp4-sweeps');
    const model = new Model(decodeModel(bytes));
    const cx = { ...context(model), stats };
    const m = convCp4.match(convLayer(model), cx);
    if (isSkip(m)) throw new Error(m.skip);
    const R = 6;
    const applied = convCp4.apply(m, [R], cx);
    if (isSkip(applied)) throw new Error(applied.skip);
    expect(model.root.nodes[0]!.docString).toMatch(/whitened ALS, last factor refitted on calibration patches, all factors refined on them \(\d ALS sweeps\)/);
    model.root.removeUnusedInitializers();
    // The same whitened fit without the sweeps (the pass's start, with its rng seed).
    const f = startFit(m, 0, R, { rng: context(new Model(decodeModel(bytes))).rng });
    expect(f.whitened).toBe(true);
    const { first, spatial } = f;
    const wm = { rows: T, cols: S * 9, data: Float64Array.from(w) };
    const lf = fitLastFactor(wm, cpNdPrefix(first, spatial, S, [3, 3], R), { patches: { gram: m.patches!.gram[0]!, mean: m.patches!.mean?.[0] } })!;
    const held = inputs(3, 2, true);
    const ref = await outputs(bytes, held, 3);
    const eSweeps = relL2(ref, await outputs(encodeModel(model.proto), held, 3));
    const eAlone = relL2(ref, await outputs(denseModel(cpNdKernel(first, spatial, Float32Array.from(lf.last), T, S, [3, 3], R), lf.biasDelta), held, 3));
    expect(eAlone).toBeGreaterThan(0.01);
    expect(eSweeps).toBeLessThan(0.97 * eAlone);
    // The pass's data error is on the statistics, of the factors it shipped: below the fit without sweeps.
    expect(applied.dataError!).toBeLessThan(lf.dataError);
  });
});
