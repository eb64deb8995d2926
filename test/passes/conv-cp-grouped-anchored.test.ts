/**
 * conv-cp on grouped convs with anchored statistics (per group: the original model's patch
 * moments X, the partly compressed model's X̂ and their cross term X̂ᵀX): each group's CP is
 * whitened by X̂'s covariance and its last factor fitted to the original outputs,
 * min ‖X·Wⱼᵀ − X̂·W′ⱼᵀ‖². The moments are built here from explicit per-group samples, so the
 * anchored objective of a rewritten kernel can be computed directly from them.
 */
import { describe, expect, it } from 'vitest';
import { convCp } from '../../passes/conv-cp.js';
import { decodeModel } from '../../src/onnx/codec.js';
import type { LayerInputStats } from '../../src/rewrite/pass.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { chainFactors } from './conv-e2e.js';
import { crossSums, rowMean } from '../helpers/moments.js';
import { compareInOrt, convModel, cpKernel, randn, rewrite, type ConvSpec } from './conv-harness.js';

const [G, s, t, K] = [2, 4, 3, 9];
const [S, T, D] = [G * s, G * t, s * K];
const spec: ConvSpec = { S, T, group: G, bias: true, kernel: [3, 3], pads: [1, 1, 1, 1], size: [7, 7] };

/** Per-group samples: X rows correlated (uneven scales, mixed), X̂ = X + a structured drift (as a compressed model's). */
function samples(rng: Rng, n: number, drift: number): { x: Float64Array[]; xh: Float64Array[] } {
  const x: Float64Array[] = [];
  const xh: Float64Array[] = [];
  for (let j = 0; j < G; j++) {
    const mix = randn(rng, D * D);
    const pert = randn(rng, D * D);
    const xj = new Float64Array(n * D);
    const hj = new Float64Array(n * D);
    for (let p = 0; p < n; p++) {
      const z = Array.from({ length: D }, (_, i) => rng.normal() * (i < D / 3 ? 1 : 0.1));
      for (let i = 0; i < D; i++) {
        let v = 0.5;
        for (let k = 0; k < D; k++) v += mix[i * D + k]! * z[k]! / Math.sqrt(D);
        xj[p * D + i] = v;
      }
      for (let i = 0; i < D; i++) {
        let d = 0;
        for (let k = 0; k < D; k++) d += pert[i * D + k]! * xj[p * D + k]! / Math.sqrt(D);
        hj[p * D + i] = xj[p * D + i]! + drift * d;
      }
    }
    x.push(xj);
    xh.push(hj);
  }
  return { x, xh };
}

const sums = (a: Float64Array, b: Float64Array, n: number): Float64Array => crossSums(a, b, n, D);
const mean = (a: Float64Array, n: number): Float64Array => rowMean(a, n, D);

/** Conv statistics as the collector stores them (raw sums), with the anchored moments when `anchored`. */
function stats(x: Float64Array[], xh: Float64Array[], n: number, anchored: boolean): LayerInputStats {
  const cat = (f: (j: number) => Float64Array): Float64Array => Float64Array.from(Array.from({ length: G }, (_, j) => [...f(j)]).flat());
  const chan = new Float64Array(G * s * s);
  for (let j = 0; j < G; j++) for (let i = 0; i < s; i++) chan[j * s * s + i * s + i] = n;
  const base: LayerInputStats = {
    kind: 'conv', gram: chan, dim: s, groups: G, count: n, mean: new Float64Array(G * s),
    patchGram: cat((j) => sums(x[j]!, x[j]!, n)), patchDim: D, patchMean: cat((j) => mean(x[j]!, n)), patchCount: n,
  };
  if (!anchored) return base;
  return {
    ...base,
    anchor: {
      gram: chan, cross: chan, mean: new Float64Array(G * s),
      patchGram: cat((j) => sums(xh[j]!, xh[j]!, n)), patchCross: cat((j) => sums(xh[j]!, x[j]!, n)), patchMean: cat((j) => mean(xh[j]!, n)),
    },
  };
}

/** Rewrites the grouped conv with `st` at rank R: its note and the composed kernel [T, s·K]. */
function fit(bytes: Uint8Array, st: LayerInputStats, R: number): { doc: string; kernel: Float32Array; out: Uint8Array } {
  const r = rewrite(bytes, convCp, [R], new Map([['conv', st]]));
  const nodes = r.proto.graph!.node;
  const doc = nodes[0]!.docString ?? '';
  const original = decodeModel(bytes).graph!.node[0]!;
  const composed = convCp.compose(nodes, chainFactors(r.proto.graph!), { name: 'conv', original, weightInput: 1, weightDims: [T, s, 3, 3], nodes: [] }, undefined);
  if (typeof composed === 'string') throw new Error(composed);
  return { doc, kernel: composed, out: r.bytes };
}

/** Mean over rows of ‖(x − x̄)·Wⱼᵀ − (x̂ − x̂̄)·W′ⱼᵀ‖² summed over groups, over the original's output energy (the bias takes the means). */
function anchoredError(w: Float32Array, w2: Float32Array, x: Float64Array[], xh: Float64Array[], n: number): number {
  let num = 0;
  let den = 0;
  for (let j = 0; j < G; j++) {
    const mx = mean(x[j]!, n);
    const mh = mean(xh[j]!, n);
    for (let p = 0; p < n; p++) for (let o = 0; o < t; o++) {
      let y = 0;
      let y2 = 0;
      const row = (j * t + o) * D;
      for (let i = 0; i < D; i++) {
        y += w[row + i]! * (x[j]![p * D + i]! - mx[i]!);
        y2 += w2[row + i]! * (xh[j]![p * D + i]! - mh[i]!);
      }
      num += (y - y2) ** 2;
      den += y * y;
    }
  }
  return Math.sqrt(num / den);
}

describe('conv-cp on grouped convs, anchored', () => {
  it('with x̂ = x the anchored fit is exact on an exact per-group CP kernel and matches the original in ORT', async () => {
    const rng = createRng(51);
    const w = new Float32Array(T * s * K);
    for (let j = 0; j < G; j++) w.set(cpKernel(rng, t, s, K, 2), j * t * s * K);
    const bytes = convModel(spec, w, rng);
    const n = 4 * D;
    const { x } = samples(rng, n, 0);
    const r = fit(bytes, stats(x, x, n, true), 2);
    expect(r.doc).toMatch(/last factor fitted to the original outputs \(anchored\)/);
    let e = 0;
    let z = 0;
    for (let i = 0; i < w.length; i++) { e += (w[i]! - r.kernel[i]!) ** 2; z += w[i]! ** 2; }
    expect(Math.sqrt(e / z)).toBeLessThan(1e-4);
    expect((await compareInOrt(bytes, r.out, spec, 52)).rel).toBeLessThan(1e-4);
  });

  it('with x̂ ≠ x each group is fitted to the original outputs: a lower anchored error than the independent fit at the same rank', () => {
    const rng = createRng(53);
    const w = Float32Array.from(randn(rng, T * s * K));
    const bytes = convModel(spec, w, rng);
    const n = 4 * D;
    const { x, xh } = samples(rng, n, 0.5);
    const anchored = fit(bytes, stats(x, xh, n, true), 3);
    const independent = fit(bytes, stats(x, xh, n, false), 3);
    expect(anchored.doc).toMatch(/\(anchored\)/);
    expect(independent.doc).toMatch(/last factor refitted on calibration patches/);
    const eA = anchoredError(w, anchored.kernel, x, xh, n);
    const eI = anchoredError(w, independent.kernel, x, xh, n);
    // The drift is half the signal: fitting to it must matter.
    expect(eI).toBeGreaterThan(0.1);
    expect(eA).toBeLessThan(0.9 * eI);
  });
});
