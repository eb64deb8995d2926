/**
 * convtranspose-tucker2 with calibration statistics: the input-side 1x1 mixes X's channels
 * at each input position, so the input-channel Gram of X (what a 1x1 conv on X collects,
 * per group) whitens it, as for a Conv Tucker-2. The statistics here come from the real
 * collector (src/calib) run on a twin model: the same input x read by a 1x1 conv with the
 * ConvTranspose's group count. convtranspose-svd whitens its [S, T·K] pair on the same
 * statistics (X enters on the rows side).
 */
import { describe, expect, it } from 'vitest';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { optimizeModel } from '../../src/optimize/driver.js';
import type { LayerInputStats } from '../../src/rewrite/pass.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { isSkip, type PassContext } from '../../src/rewrite/pass.js';
import { findLayers } from '../../src/graph/layers.js';
import { convTransposeTucker2 } from '../../passes/convtranspose-tucker2.js';
import { statsFromSamples } from '../helpers/calib.js';
import { randn, relL2, runOrt } from './conv-harness.js';

const S = 16;
const T = 12;
const HW = 6;
/** A stride-2 upsampler with output_padding: the attributes survive on the core. */
const ATTRS = { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 1] };

function ctModel(w: Float32Array, group: number, rng: Rng): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, S, HW, HW]);
  const y = b.node('ConvTranspose', [x, b.init('w', [S, T / group, 3, 3], w), b.init('b', [T], randn(rng, T))], { ...ATTRS, ...(group > 1 && { group }) }, { name: 'ct' });
  b.output(y);
  return encodeModel(b.build());
}

/** The twin: a 1x1 conv on the same x, whose statistics are the channel Gram of x per group. */
function twinModel(group: number): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [1, S, HW, HW]);
  b.output(b.node('Conv', [x, b.init('w1', [group, S / group, 1, 1], new Float32Array(S).fill(1))], group > 1 ? { group } : {}, { name: 'conv' }));
  return encodeModel(b.build());
}

/** n samples whose channels are mixed from few strong and many weak sources (anisotropic channel covariance). */
function correlatedInputs(n: number, seed: number): Float32Array {
  const mix = randn(createRng(99), S * S);
  const rng = createRng(seed);
  const P = HW * HW;
  const out = new Float32Array(n * S * P);
  for (let i = 0; i < n; i++) {
    const z = Array.from({ length: S * P }, (_, k) => rng.normal() * (Math.floor(k / P) < 3 ? 1 : 0.02));
    for (let c = 0; c < S; c++) for (let p = 0; p < P; p++) {
      let v = 0;
      for (let j = 0; j < S; j++) v += mix[c * S + j]! * z[j * P + p]!;
      out[(i * S + c) * P + p] = v;
    }
  }
  return out;
}

async function outputs(bytes: Uint8Array, data: Float32Array, n: number): Promise<Float32Array> {
  const per = S * HW * HW;
  const ys: number[] = [];
  for (let i = 0; i < n; i++) ys.push(...(await runOrt(bytes, { x: { data: data.subarray(i * per, (i + 1) * per), dims: [1, S, HW, HW] } })).data);
  return Float32Array.from(ys);
}

function rewriteWith(bytes: Uint8Array, ranks: number, stats?: LayerInputStats, method: 'tucker2' | 'svd' = 'tucker2'): { bytes: Uint8Array; rec: ReturnType<typeof optimizeModel>[number]; doc: string } {
  const model = new Model(decodeModel(bytes));
  const [rec] = optimizeModel(model, undefined, { method, policy: { kind: 'fixed', rank: ranks }, minParams: 0, seed: 0 }, undefined,
    stats ? { stats: new Map([['ct', stats]]) } : {});
  expect(rec!.skipped, rec!.reason).toBeUndefined();
  expect(rec!.pass).toBe(`convtranspose-${method}`);
  return { bytes: encodeModel(model.proto), rec: rec!, doc: model.proto.graph!.node[0]!.docString ?? '' };
}

describe('convtranspose-tucker2 data-aware', () => {
  it('with the input-channel Gram, the truncated rewrite has a lower output error on held-out inputs in ORT than the weight-only fit', async () => {
    const rng = createRng(7);
    // Rank 3 on the output side, full on the input side: at ranks [3, 3] only the input
    // side is truncated, where the data (3 strong channel directions) decides what to keep.
    const core = randn(rng, S * 3 * 9);
    const uT = randn(rng, T * 3);
    const w = new Float32Array(S * T * 9);
    for (let a = 0; a < S; a++) for (let c = 0; c < T; c++) for (let k = 0; k < 9; k++) {
      let v = 0;
      for (let q = 0; q < 3; q++) v += core[(a * 3 + q) * 9 + k]! * uT[c * 3 + q]!;
      w[(a * T + c) * 9 + k] = v;
    }
    const bytes = ctModel(w, 1, rng);
    const stats = (await statsFromSamples(twinModel(1), correlatedInputs(24, 1), [24, S, HW, HW], 'ct-aware')).get('conv')!;
    expect(stats).toMatchObject({ kind: 'conv', dim: S, groups: 1 });
    const held = correlatedInputs(3, 2);
    const ref = await outputs(bytes, held, 3);
    const plain = rewriteWith(bytes, 3);
    const aware = rewriteWith(bytes, 3, stats);
    expect(aware.rec.ranks).toEqual([3, 3]);
    expect(aware.doc).toMatch(/data-aware input factor/);
    expect(plain.doc).not.toMatch(/data-aware|anchored/);
    const ePlain = relL2(ref, await outputs(plain.bytes, held, 3));
    const eAware = relL2(ref, await outputs(aware.bytes, held, 3));
    expect(eAware).toBeLessThan(0.2 * ePlain);
    // Weight error goes the other way: the fit spends its rank where the data is.
    expect(aware.rec.relError!).toBeGreaterThan(plain.rec.relError!);
  });

  it('rungs on one match share the rank-independent work (as conv-tucker2) and fit as fresh matches do', async () => {
    const rng = createRng(31);
    const bytes = ctModel(randn(rng, S * T * 9), 1, rng);
    const stats = (await statsFromSamples(twinModel(1), correlatedInputs(24, 5), [24, S, HW, HW], 'ct-shared')).get('conv')!;
    const matchOf = () => {
      const model = new Model(decodeModel(bytes));
      const cx: PassContext = { model, rng: createRng(0), shared: new Map(), stats: new Map([['ct', stats]]) };
      const m = convTransposeTucker2.match(findLayers(model).find((l) => l.name === 'ct')!, cx);
      if (isSkip(m)) throw new Error(m.skip);
      return { m, cx };
    };
    const one = matchOf();
    let work: unknown;
    for (const r of [[2, 2], [5, 4], [8, 6]]) {
      const got = convTransposeTucker2.estimate!(one.m, r, one.cx);
      const fresh = matchOf();
      const want = convTransposeTucker2.estimate!(fresh.m, r, fresh.cx);
      if (isSkip(got) || isSkip(want)) throw new Error('estimate skipped');
      // The work is made once, by the first rung, and reused by the others.
      work ??= one.m.shared?.work;
      expect(work).toBeDefined();
      expect(one.m.shared!.work).toBe(work);
      expect(got.relError).toBeCloseTo(want.relError, 5);
      expect(one.m.fitted!.r1).toBe(r[0]);
      const [a, b] = [one.m.fitted!.first, fresh.m.fitted!.first];
      // The input factor is the whitened SVD's: equal up to each column's sign.
      for (let c = 0; c < one.m.fitted!.r1; c++) {
        let dot = 0, na = 0;
        for (let i = c * S; i < (c + 1) * S; i++) { dot += a[i]! * b[i]!; na += a[i]! ** 2; }
        expect(Math.abs(dot) / na).toBeCloseTo(1, 4);
      }
    }
  });

  it('an exact-rank kernel stays exact with channel statistics (group 1 and 2) and with anchored ones (x̂ = x)', async () => {
    for (const group of [1, 2]) {
      const rng = createRng(20 + group);
      const s = S / group;
      const t = T / group;
      const [r1, r2] = [3, 2];
      // W_j[σ, τ, κ] = Σ U_S[σ, a]·C[a, b, κ]·U_T[τ, b] per group, in the ConvTranspose layout [S, T/g, 9].
      const w = new Float32Array(S * t * 9);
      for (let j = 0; j < group; j++) {
        const uS = randn(rng, s * r1);
        const uT = randn(rng, t * r2);
        const core = randn(rng, r1 * r2 * 9);
        for (let a = 0; a < s; a++) for (let c = 0; c < t; c++) for (let k = 0; k < 9; k++) {
          let v = 0;
          for (let p = 0; p < r1; p++) for (let q = 0; q < r2; q++) v += uS[a * r1 + p]! * core[(p * r2 + q) * 9 + k]! * uT[c * r2 + q]!;
          w[((j * s + a) * t + c) * 9 + k] = v;
        }
      }
      const bytes = ctModel(w, group, rng);
      const st = (await statsFromSamples(twinModel(group), correlatedInputs(8, 3), [8, S, HW, HW], 'ct-exact')).get('conv')!;
      expect(st).toMatchObject({ dim: s, groups: group });
      const anchored: LayerInputStats = { ...st, anchor: { gram: st.gram, cross: st.gram, mean: st.mean! } };
      const held = correlatedInputs(2, 4);
      const ref = await outputs(bytes, held, 2);
      for (const [stats, doc] of [[st, /data-aware input factor/], [anchored, /anchored input factor/]] as const) {
        const r = rewriteWith(bytes, Math.max(r1, r2), stats);
        expect(r.doc).toMatch(doc);
        // Ranks [3, 3] cover the true [3, 2]: still exact.
        expect(r.rec.relError!).toBeLessThan(1e-4);
        expect(relL2(ref, await outputs(r.bytes, held, 2))).toBeLessThan(1e-4);
      }
    }
  });
});

describe('convtranspose-svd data-aware', () => {
  it('whitened on the rows side ([S, T·K]: X enters through S): lower held-out output error in ORT than the weight-only pair, exact rank stays exact', async () => {
    const rng = createRng(8);
    const bytes = ctModel(randn(rng, S * T * 9), 1, rng);
    const stats = (await statsFromSamples(twinModel(1), correlatedInputs(24, 1), [24, S, HW, HW], 'ct-svd')).get('conv')!;
    const held = correlatedInputs(3, 2);
    const ref = await outputs(bytes, held, 3);
    const plain = rewriteWith(bytes, 3, undefined, 'svd');
    const aware = rewriteWith(bytes, 3, stats, 'svd');
    expect(aware.rec.ranks).toEqual([3]);
    expect(aware.doc).toMatch(/, data-aware\)/);
    expect(plain.doc).not.toMatch(/data-aware|anchored/);
    expect(aware.rec.dataError).toBeDefined();
    const eAware = relL2(ref, await outputs(aware.bytes, held, 3));
    expect(eAware).toBeLessThan(0.2 * relL2(ref, await outputs(plain.bytes, held, 3)));
    // The reported data error is on the damped calibration Gram (svd-pair.ts WHITEN_DAMP), which weighs the weak directions up.
    expect(aware.rec.dataError!).toBeGreaterThan(eAware / 2);
    expect(aware.rec.dataError!).toBeLessThan(1);
    // W [S, T·K] of rank 3 stays exact with channel and with anchored statistics.
    const P = randn(rng, S * 3);
    const Q = randn(rng, 3 * T * 9);
    const w3 = new Float32Array(S * T * 9);
    for (let i = 0; i < S; i++) for (let j = 0; j < T * 9; j++) for (let k = 0; k < 3; k++) w3[i * T * 9 + j] += P[i * 3 + k]! * Q[k * T * 9 + j]!;
    const exact = ctModel(w3, 1, rng);
    const refExact = await outputs(exact, held, 3);
    const anchored: LayerInputStats = { ...stats, anchor: { gram: stats.gram, cross: stats.gram, mean: stats.mean! } };
    for (const [st, doc] of [[stats, /, data-aware\)/], [anchored, /, anchored\)/]] as const) {
      const r = rewriteWith(exact, 3, st, 'svd');
      expect(r.doc).toMatch(doc);
      expect(relL2(refExact, await outputs(r.bytes, held, 3))).toBeLessThan(1e-4);
    }
  });
});
