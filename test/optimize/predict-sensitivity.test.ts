/**
 * Predicted sensitivity (src/optimize/predict-sensitivity.ts): the gain model itself, and
 * measureSensitivity on a model where every rung's output error is known exactly.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import type { Report } from '../../src/report/report.js';
import { REAL } from '../helpers/models.js';
import { calibFile } from '../helpers/calib.js';
import { ModelBuilder } from '../../models/builder.js';
import { Model } from '../../src/graph/graph.js';
import { findLayers } from '../../src/graph/layers.js';
import { householderQr } from '../../src/linalg/qr.js';
import { decodeModel, encodeModel } from '../../src/onnx/codec.js';
import { firstRungs, GAIN_SPREAD, gainSpread, needsMoreRungs, predictErr2 } from '../../src/optimize/predict-sensitivity.js';
import { measureSensitivity, type PredictedCandidate } from '../../src/optimize/sensitivity.js';
import { channelWeightedErr2, runAll } from '../../src/optimize/output-error.js';
import { measureOutputSensitivity } from '../../src/optimize/output-sensitivity.js';
import { createRng } from '../../src/util/rng.js';
import type { Feeds, HostTensor } from '../../src/verify/tensor.js';

describe('the gain model', () => {
  it('scales one measured rung by the layer error (one gain for every rung)', () => {
    const rungs = [{ layerErr2: 0.04, measuredErr2: 0.01 }, { layerErr2: 0.16 }, { layerErr2: 0.01 }];
    expect(predictErr2(rungs, 0.16)).toBeCloseTo(0.04, 15);
    expect(predictErr2(rungs, 0.01)).toBeCloseTo(0.0025, 15);
    expect(predictErr2(rungs, 0)).toBe(0);
  });

  it('follows the power law through two measured rungs between them, and the nearest gain outside', () => {
    // err² = 2·ε⁴ at both measured rungs: between them the law is exact.
    const rungs = [{ layerErr2: 0.1, measuredErr2: 0.02 }, { layerErr2: 0.4, measuredErr2: 0.32 }];
    expect(predictErr2(rungs, 0.2)).toBeCloseTo(2 * 0.2 ** 2, 12);
    expect(predictErr2(rungs, 0.05)).toBeCloseTo(0.02 * 0.5, 15);
    expect(predictErr2(rungs, 0.8)).toBeCloseTo(0.32 * 2, 15);
    expect(gainSpread(rungs)).toBeCloseTo(4, 12);
  });

  it('cannot predict without a usable measured rung', () => {
    expect(predictErr2([{ layerErr2: 0.1 }], 0.1)).toBeNaN();
    expect(predictErr2([{ layerErr2: 0.1, measuredErr2: Infinity }], 0.1)).toBeNaN();
    expect(predictErr2([{ layerErr2: 0.1, measuredErr2: 0.1 }], NaN)).toBeNaN();
  });

  it('asks for another rung when nothing anchors the prediction, a layer error is unknown, or the gains disagree widely', () => {
    expect(needsMoreRungs([{ layerErr2: 0.1 }, { layerErr2: 0.2 }])).toBe(true);
    expect(needsMoreRungs([{ layerErr2: 0.1, measuredErr2: Infinity }, { layerErr2: 0.2 }])).toBe(true);
    expect(needsMoreRungs([{ layerErr2: NaN }, { layerErr2: 0.2, measuredErr2: 0.1 }])).toBe(true);
    expect(needsMoreRungs([{ layerErr2: 0.1, measuredErr2: 0.01 }, { layerErr2: 0.2 }])).toBe(false);
    expect(needsMoreRungs([{ layerErr2: 0.1, measuredErr2: 0.01 }, { layerErr2: 0.2, measuredErr2: 0.03 }])).toBe(false);
    expect(needsMoreRungs([{ layerErr2: 0.1, measuredErr2: 0.001 }, { layerErr2: 0.2, measuredErr2: 0.05 }])).toBe(true);
    expect(GAIN_SPREAD).toBeLessThan(25);
    // A gain of zero (the layer does not reach the judged outputs) beside a non-zero one disagrees.
    expect(gainSpread([{ layerErr2: 0.1, measuredErr2: 0 }, { layerErr2: 0.2, measuredErr2: 0.05 }])).toBe(Infinity);
  });

  it('runs the most accurate rung and the middle one first (the most accurate of two)', () => {
    expect(firstRungs(0)).toEqual([]);
    expect(firstRungs(1)).toEqual([0]);
    expect(firstRungs(2)).toEqual([1]);
    expect(firstRungs(3)).toEqual([1, 2]);
    expect(firstRungs(4)).toEqual([1, 3]);
  });
});

/** A random n×n orthogonal matrix (row-major). */
function orthogonal(n: number, seed: number): ArrayLike<number> {
  const rng = createRng(seed);
  const a = { rows: n, cols: n, data: Float64Array.from({ length: n * n }, () => rng.normal()) };
  return householderQr(a).q.data;
}

/**
 * y = (x·W1)·(c·Q): W1 [n, m] = U·diag(σ)·Vᵀ with known singular values, Q orthogonal.
 * Fed the identity (n rows of x), the output error of any W1' is c²‖W1 − W1'‖², and the
 * output's energy c²‖W1‖², so with W1 truncated at rank r (weight-only SVD, the
 * Eckart–Young optimum) the model's err² is Σ_{i>r} σ_i² / Σ σ_i² exactly.
 */
function knownModel(n: number, m: number, sigma: readonly number[]): Uint8Array {
  const u = orthogonal(n, 1);
  const v = orthogonal(m, 2);
  const w1 = new Float32Array(n * m);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      let s = 0;
      sigma.forEach((sk, k) => { s += u[i * n + k]! * sk * v[j * m + k]!; });
      w1[i * m + j] = s;
    }
  }
  const q = orthogonal(m, 3);
  const b = new ModelBuilder({ opset: 13 });
  const x = b.input('x', [n, n]);
  const h = b.node('MatMul', [x, b.init('w1', [n, m], w1)], {}, { name: 'mm1' });
  b.output(b.node('MatMul', [h, b.init('q', [m, m], Array.from(q, (t) => 3 * t))], {}, { name: 'mix' }));
  return encodeModel(b.build());
}

describe('predicted sensitivity on a model whose errors are known', () => {
  const n = 16;
  const m = 24;
  const sigma = Array.from({ length: n }, (_, k) => 0.75 ** k);
  const tail = (r: number): number => sigma.slice(r).reduce((a, s) => a + s * s, 0) / sigma.reduce((a, s) => a + s * s, 0);
  const identity: Feeds[] = [{ x: { type: 'float32', dims: [n, n], data: Float32Array.from({ length: n * n }, (_, k) => (k % (n + 1) === 0 ? 1 : 0)) } }];

  async function sensitivity(allRungs: boolean): Promise<PredictedCandidate[]> {
    const bytes = knownModel(n, m, sigma);
    const ref = await runAll({ bytes }, identity);
    if (!ref.ok) throw ref.error;
    const model = new Model(decodeModel(bytes));
    const layers = findLayers(model).filter((l) => l.name === 'mm1');
    const cx = { model, rng: createRng(7), shared: new Map() };
    const [s] = await measureSensitivity(model, layers, { method: 'auto', feeds: identity, reference: ref.value, cx, allRungs });
    return s!.candidates as PredictedCandidate[];
  }

  it('runs two rungs, predicts the others, and every rung matches the exact error', async () => {
    const cands = await sensitivity(false);
    expect(cands.length).toBeGreaterThanOrEqual(3);
    // The middle and the most accurate rung run, the others predicted.
    expect(cands.map((c) => c.measured)).toEqual(cands.map((_, k) => firstRungs(cands.length).includes(k)));
    for (const c of cands) {
      const exact = tail(c.ranks[0]!);
      expect(c.layerError ** 2).toBeCloseTo(exact, 6);
      expect(Math.abs(c.outErr2 - exact) / exact).toBeLessThan(1e-4);
    }
  });

  it('with every rung run, each measurement carries the prediction beside it, and they agree', async () => {
    const cands = await sensitivity(true);
    expect(cands.every((c) => c.measured)).toBe(true);
    for (const c of cands) {
      const exact = tail(c.ranks[0]!);
      expect(Math.abs(c.outErr2 - exact) / exact).toBeLessThan(1e-4);
      expect(Math.abs(c.predictedErr2! - c.outErr2) / c.outErr2).toBeLessThan(1e-4);
    }
  });
});

describe('a budget on a real model with predicted rungs', () => {
  it('--max-error holds when the allocation is re-measured; each layer runs one or two rungs in ORT and predicts the rest', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'onnx-lr-predict-'));
    // Data-aware on seeded random inputs (rec's heaviest layers have no error budget to
    // spare on random inputs weight-only); --no-anchor keeps the run short: anchoring
    // changes the fit of the allocation, not the sensitivity.
    const dims = [4, 3, 48, 320];
    const calib = calibFile(dir, dims, 11);
    let out = '';
    let err = '';
    const code = await main(['optimize', REAL.rec, path.join(dir, 'o.onnx'), '--shape', 'x:1x3x48x320', '--max-error', 'cosine:0.995', '--min-params', '20000',
      '--calib', calib, '--no-anchor', '--no-latency', '--no-verify', '--json'], { out: (s) => { out += s; }, err: (s) => { err += s; } });
    expect(err).not.toMatch(/internal error/);
    const report = JSON.parse(out) as Report;
    const b = report.budget!;
    // What the allocation predicted and what the re-measured model gave are both reported;
    // the budget holds on the measurement.
    expect(b.predictedError).toBeGreaterThan(0);
    expect(b.met).toBe(true);
    expect(code).toBe(0);
    expect(b.measuredError).toBeLessThanOrEqual(Math.sqrt(2 * 0.005) + 1e-9);
    expect(report.output.params).toBeLessThan(report.input.params);
    const layers = report.sensitivity!.filter((s) => s.candidates.length > 0);
    expect(layers.length).toBeGreaterThan(3);
    let predicted = 0;
    for (const s of layers) {
      const cands = s.candidates as PredictedCandidate[];
      const runs = cands.filter((c) => c.measured).length;
      // Every layer anchors its prediction on at least one rung run in ORT, its most accurate.
      expect(runs).toBeGreaterThanOrEqual(1);
      expect(cands[cands.length - 1]!.measured).toBe(true);
      predicted += cands.length - runs;
      for (const c of cands) {
        expect(Number.isFinite(c.outErr2)).toBe(true);
        expect(c.layerError).toBeGreaterThanOrEqual(0);
      }
    }
    expect(predicted).toBeGreaterThan(layers.length);
  }, 240_000);
});

describe('a layer error weighted by output sensitivities', () => {
  it('weighs each element by its channel along the axis, over every feed', () => {
    const t = (data: number[]): HostTensor => ({ type: 'float32', dims: [1, 2, 3], data: Float32Array.from(data) });
    // Channels on axis 1 (rows of 3); the error sits in channel 1 only.
    const ref = [{ y: t([1, 1, 1, 2, 2, 2]) }];
    const got = [{ y: t([1, 1, 1, 2, 2, 3]) }];
    expect(channelWeightedErr2(ref, got, [1, 1], 1)).toBeCloseTo(1 / 15, 12);
    expect(channelWeightedErr2(ref, got, [3, 1], 1)).toBeCloseTo(1 / (3 * 3 + 12), 12);
    expect(channelWeightedErr2(ref, got, [1, 0], 1)).toBe(0);
    // On the last axis the channels cycle every element.
    expect(channelWeightedErr2(ref, got, [1, 2, 4], -1)).toBeCloseTo(4 / (1 + 2 + 4 + 4 + 8 + 16), 12);
    // Two feeds pool numerator and denominator.
    expect(channelWeightedErr2([...ref, ...ref], [...got, ...ref], [1, 1], 1)).toBeCloseTo(1 / 30, 12);
    // A channel count that does not match says so.
    expect(channelWeightedErr2(ref, got, [1, 1, 1], 1)).toBeUndefined();
  });

  /**
   * y = (x·W1)·diag(s)·Q with s spanning 1000× and Q orthogonal: the model's error of a
   * truncated W1 is Σ_c s_c²‖ΔW1[:,c]‖² / Σ_c s_c²‖W1[:,c]‖² exactly, and the gradients'
   * h_c ∝ s_c² exactly (a linear tail), so the weighted layer error is the model's up to
   * the weights' floor; unweighted, the gain from layer to model error changes by rung.
   */
  it('predicts every rung of a layer read unevenly by the rest of the model; unweighted it does not', async () => {
    const n = 16;
    const m = 24;
    const sigma = Array.from({ length: n }, (_, k) => 0.8 ** k);
    const u = orthogonal(n, 1);
    const v = orthogonal(m, 2);
    const q = orthogonal(m, 3);
    const s = Array.from({ length: m }, (_, c) => 10 ** (-3 * c / (m - 1) / 2));
    const w1 = new Float32Array(n * m);
    for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) sigma.forEach((sk, k) => { w1[i * m + j] += u[i * n + k]! * sk * v[j * m + k]!; });
    const mix = Float32Array.from({ length: m * m }, (_, k) => s[Math.floor(k / m)]! * q[k]!);
    const b = new ModelBuilder({ opset: 13 });
    const x = b.input('x', [n, n]);
    const h = b.node('MatMul', [x, b.init('w1', [n, m], w1)], {}, { name: 'mm1' });
    b.output(b.node('MatMul', [h, b.init('mix', [m, m], mix)], {}, { name: 'mix' }));
    const bytes = encodeModel(b.build());
    const identity: Feeds[] = [{ x: { type: 'float32', dims: [n, n], data: Float32Array.from({ length: n * n }, (_, k) => (k % (n + 1) === 0 ? 1 : 0)) } }];
    const ref = await runAll({ bytes }, identity);
    if (!ref.ok) throw ref.error;
    const model = new Model(decodeModel(bytes));
    const layers = findLayers(model).filter((l) => l.name === 'mm1');
    const hs = await measureOutputSensitivity(model, undefined, layers, identity, { method: 'gradients', seed: 1 });
    expect(hs.sensitivity.get('mm1')?.length).toBe(m);
    const spread = async (outputSensitivity?: Map<string, Float64Array>): Promise<number> => {
      const cx = { model, rng: createRng(7), shared: new Map(), ...(outputSensitivity && { outputSensitivity }) };
      const [r] = await measureSensitivity(model, layers, { method: 'auto', feeds: identity, reference: ref.value, cx, allRungs: true });
      const cands = r!.candidates as PredictedCandidate[];
      expect(cands.length).toBeGreaterThanOrEqual(3);
      return Math.max(...cands.map((c) => Math.abs(Math.log(c.predictedErr2! / c.outErr2))));
    };
    const weighted = await spread(hs.sensitivity);
    const plain = await spread();
    // Measured: 1.003 weighted, 1.22 unweighted (the worst rung's predicted over measured).
    expect(Math.exp(weighted)).toBeLessThan(1.02);
    expect(Math.exp(plain)).toBeGreaterThan(1.15);
  });
});
