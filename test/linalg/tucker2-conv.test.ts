import { describe, expect, it } from 'vitest';
import { randomNormal } from '../../src/linalg/matrix.js';
import { createTucker2Shared, tucker2Conv, tucker2Error, type ConvKernel, type Tucker2ConvOptions } from '../../src/linalg/tucker2-conv.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { randomOrthonormal, relDiff } from './helpers.js';

/** W_j = G_j ×_T U_T ×_S U_S per group, fp32: Tucker ranks exactly (r1, r2) in each group. */
function lowRankKernel(T: number, s: number, K: number, groups: number, r1: number, r2: number, rng: Rng): ConvKernel {
  const t = T / groups;
  const data = new Float32Array(T * s * K);
  for (let j = 0; j < groups; j++) {
    const uT = randomOrthonormal(t, r2, rng);
    const uS = randomOrthonormal(s, r1, rng);
    const g = randomNormal(r2, r1 * K, rng.normal).data;
    for (let a = 0; a < t; a++) for (let c = 0; c < s; c++) for (let k = 0; k < K; k++) {
      let v = 0;
      for (let p = 0; p < r2; p++) for (let q = 0; q < r1; q++) v += uT.data[a * r2 + p]! * g[(p * r1 + q) * K + k]! * uS.data[c * r1 + q]!;
      data[((j * t + a) * s + c) * K + k] = v;
    }
  }
  return { data, shape: [T, s, K], groups };
}

/** The chain's kernel by its documented layout, one naive sum per element. */
function chainKernel(kernel: ConvKernel, f: { r1: number; r2: number; first: Float32Array; core: Float32Array; last: Float32Array }): Float64Array {
  const [T, s, K] = kernel.shape;
  const t = T / kernel.groups;
  const { r1, r2 } = f;
  const out = new Float64Array(T * s * K);
  for (let j = 0; j < kernel.groups; j++) for (let a = 0; a < t; a++) for (let c = 0; c < s; c++) for (let k = 0; k < K; k++) {
    let v = 0;
    for (let p = 0; p < r2; p++) for (let q = 0; q < r1; q++) v += f.last[(j * t + a) * r2 + p]! * f.core[((j * r2 + p) * r1 + q) * K + k]! * f.first[(j * r1 + q) * s + c]!;
    out[((j * t + a) * s + c) * K + k] = v;
  }
  return out;
}

/** Patch moments of n random correlated patches (group-wise, D = s·K): Σ p·pᵀ, mean, and the patches. */
function patchMoments(groups: number, D: number, n: number, rng: Rng): { gram: Float64Array[]; mean: Float64Array[] } {
  const gram: Float64Array[] = [];
  const mean: Float64Array[] = [];
  for (let j = 0; j < groups; j++) {
    const mix = randomNormal(D, D, rng.normal).data;
    const g = new Float64Array(D * D);
    const mu = new Float64Array(D);
    for (let i = 0; i < n; i++) {
      const z = randomNormal(1, D, rng.normal).data;
      const p = new Float64Array(D);
      for (let a = 0; a < D; a++) { let v = 0.5; for (let b = 0; b < D; b++) v += mix[a * D + b]! * z[b]! * (b < D / 4 ? 1 : 0.05); p[a] = v; }
      for (let a = 0; a < D; a++) { mu[a] += p[a]! / n; for (let b = 0; b < D; b++) g[a * D + b] += (p[a]! * p[b]!) / n; }
    }
    gram.push(g);
    mean.push(mu);
  }
  return { gram, mean };
}

/** E‖(W − Ŵ)p‖² / E‖W·p‖² per the moments, over all groups, square-rooted. */
function outputError(kernel: ConvKernel, wHat: ArrayLike<number>, gram: Float64Array[]): number {
  const [T, s, K] = kernel.shape;
  const t = T / kernel.groups;
  const D = s * K;
  let num = 0;
  let den = 0;
  for (let j = 0; j < kernel.groups; j++) for (let a = 0; a < t; a++) {
    const row = (j * t + a) * D;
    for (let x = 0; x < D; x++) for (let y = 0; y < D; y++) {
      const g = gram[j]![x * D + y]!;
      num += (kernel.data[row + x]! - wHat[row + x]!) * (kernel.data[row + y]! - wHat[row + y]!) * g;
      den += kernel.data[row + x]! * kernel.data[row + y]! * g;
    }
  }
  return Math.sqrt(num / den);
}

describe('tucker2Conv (Tucker-2 of a conv kernel as chain weights)', () => {
  it('recovers a grouped kernel of exact per-group Tucker ranks, in the documented layout', () => {
    const kernel = lowRankKernel(12, 8, 9, 2, 3, 4, createRng(1));
    const f = tucker2Conv(kernel, [3, 4], { rng: createRng(2) });
    expect([f.r1, f.r2, f.first.length, f.core.length, f.last.length]).toEqual([3, 4, 2 * 3 * 8, 2 * 4 * 3 * 9, 12 * 4]);
    expect(f.relError).toBeLessThan(1e-5);
    expect(relDiff(chainKernel(kernel, f), kernel.data)).toBeLessThan(1e-5);
    expect(f.dataError).toBeUndefined();
    expect(f.biasDelta).toBeUndefined();
  });

  it('reports the weight error of the chain it returns (checked against a naive reconstruction)', () => {
    const rng = createRng(3);
    const kernel: ConvKernel = { data: Float32Array.from(randomNormal(1, 16 * 6 * 9, rng.normal).data), shape: [16, 6, 9], groups: 1 };
    const f = tucker2Conv(kernel, [2, 3], { rng });
    expect(f.relError).toBeGreaterThan(0.3);
    expect(f.relError).toBeCloseTo(relDiff(chainKernel(kernel, f), kernel.data), 6);
    expect(tucker2Error(kernel, f.first, f.core, f.last, f.r1, f.r2)).toBe(f.relError);
  });

  it('clamps ranks past the multilinear limit (r2 ≤ r1·K) and refuses ranks out of range', () => {
    const rng = createRng(4);
    const kernel: ConvKernel = { data: Float32Array.from(randomNormal(1, 8 * 4 * 2, rng.normal).data), shape: [8, 4, 2], groups: 1 };
    const f = tucker2Conv(kernel, [1, 8], { rng });
    expect([f.r1, f.r2]).toEqual([1, 2]);
    expect(() => tucker2Conv(kernel, [5, 2])).toThrow(/out of range/);
    expect(() => tucker2Conv(kernel, [1.5, 2])).toThrow(/out of range/);
  });

  it('with patch moments, the refitted last factor lowers the output error, and the bias correction is (W − Ŵ)·E[p]', () => {
    const rng = createRng(5);
    const kernel: ConvKernel = { data: Float32Array.from(randomNormal(1, 2 * 10 * 6 * 3, rng.normal).data), shape: [20, 6, 3], groups: 2 };
    const patches = patchMoments(2, 18, 400, rng);
    const plain = tucker2Conv(kernel, [3, 4], { rng: createRng(6) });
    const fit = tucker2Conv(kernel, [3, 4], { rng: createRng(6), patches });
    const wHat = chainKernel(kernel, fit);
    expect(fit.dataError!).toBeCloseTo(outputError(kernel, wHat, patches.gram), 6);
    expect(fit.dataError!).toBeLessThan(0.9 * outputError(kernel, chainKernel(kernel, plain), patches.gram));
    // The first two convs are unchanged by the refit.
    expect(fit.first).toEqual(plain.first);
    for (let o = 0; o < 20; o++) {
      const j = Math.floor(o / 10);
      let d = 0;
      for (let x = 0; x < 18; x++) d += (kernel.data[o * 18 + x]! - wHat[o * 18 + x]!) * patches.mean[j]![x]!;
      expect(fit.biasDelta![o]).toBeCloseTo(d, 4);
    }
  });

  it('with input-channel whitening, fits the directions the inputs excite better than the weight-only fit', () => {
    const rng = createRng(7);
    const [T, s, K] = [12, 8, 3];
    const kernel: ConvKernel = { data: Float32Array.from(randomNormal(1, T * s * K, rng.normal).data), shape: [T, s, K], groups: 1 };
    // Inputs on channels 0 and 1 only (plus a little elsewhere): channel Gram and the matching patch Gram.
    const scale = [1, 1, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01];
    const gram = new Float64Array(s * s);
    const patch = new Float64Array(s * K * s * K);
    for (let c = 0; c < s; c++) {
      gram[c * s + c] = scale[c]! ** 2;
      for (let k = 0; k < K; k++) patch[(c * K + k) * s * K + c * K + k] = scale[c]! ** 2;
    }
    const plain = tucker2Conv(kernel, [2, 4], { rng: createRng(8) });
    const aware = tucker2Conv(kernel, [2, 4], { rng: createRng(8), channel: [{ gram, damp: 0 }] });
    const eAware = outputError(kernel, chainKernel(kernel, aware), [patch]);
    expect(eAware).toBeLessThan(0.5 * outputError(kernel, chainKernel(kernel, plain), [patch]));
    expect(aware.relError).toBeCloseTo(relDiff(chainKernel(kernel, aware), kernel.data), 6);
  });

  it('anchored with identical original and compressed inputs: the output error and bias correction of the chain it returns', () => {
    const rng = createRng(9);
    const [T, s, K] = [10, 6, 3];
    const D = s * K;
    const kernel: ConvKernel = { data: Float32Array.from(randomNormal(1, T * s * K, rng.normal).data), shape: [T, s, K], groups: 1 };
    const pm = patchMoments(1, D, 300, rng);
    const mean = pm.mean[0]!;
    const cov = Float64Array.from(pm.gram[0]!, (v, i) => v - mean[Math.floor(i / D)]! * mean[i % D]!);
    // Channel covariance: the partial trace over kernel offsets.
    const ch = new Float64Array(s * s);
    for (let a = 0; a < s; a++) for (let b = 0; b < s; b++) for (let k = 0; k < K; k++) ch[a * s + b] += cov[(a * K + k) * D + b * K + k]!;
    const f = tucker2Conv(kernel, [3, 4], {
      anchor: { channel: [{ gram: ch, cross: ch, damp: 0 }], patch: [{ gram: cov, gramHat: cov, cross: cov, mean, meanHat: mean }], patchDamp: 0 },
    });
    const wHat = chainKernel(kernel, f);
    // Centered moments: the error relative to the uncentered output energy.
    let num = 0;
    let den = 0;
    for (let o = 0; o < T; o++) for (let x = 0; x < D; x++) for (let y = 0; y < D; y++) {
      num += (kernel.data[o * D + x]! - wHat[o * D + x]!) * (kernel.data[o * D + y]! - wHat[o * D + y]!) * cov[x * D + y]!;
      den += kernel.data[o * D + x]! * kernel.data[o * D + y]! * pm.gram[0]![x * D + y]!;
    }
    expect(f.dataError!).toBeCloseTo(Math.sqrt(num / den), 5);
    for (let o = 0; o < T; o++) {
      let d = 0;
      for (let x = 0; x < D; x++) d += (kernel.data[o * D + x]! - wHat[o * D + x]!) * mean[x]!;
      expect(f.biasDelta![o]).toBeCloseTo(d, 4);
    }
    // Core and last factor are jointly optimal for the first factor: no worse than the refit of the last alone.
    const centeredError = (w: ArrayLike<number>): number => {
      let e = 0;
      for (let o = 0; o < T; o++) for (let x = 0; x < D; x++) for (let y = 0; y < D; y++) e += (kernel.data[o * D + x]! - w[o * D + x]!) * (kernel.data[o * D + y]! - w[o * D + y]!) * cov[x * D + y]!;
      return e;
    };
    const refit = tucker2Conv(kernel, [3, 4], { channel: [{ gram: ch, damp: 0 }], patches: { gram: [cov] } });
    expect(centeredError(wHat)).toBeLessThanOrEqual(centeredError(chainKernel(kernel, refit)) * (1 + 1e-6));
  });

  it('anchored with compressed inputs that differ, damped, in two groups: its data error and bias are the per-sample ones', () => {
    const rng = createRng(10);
    const [G, t, s, K] = [2, 7, 5, 4];
    const [T, D, n] = [G * t, s * K, 400];
    const kernel: ConvKernel = { data: Float32Array.from(randomNormal(1, T * s * K, rng.normal).data), shape: [T, s, K], groups: G };
    // Per group: patches p of the original model and p̂ = p·M + noise + shift of the compressed one.
    const samples = Array.from({ length: G }, () => {
      const mix = randomNormal(D, D, rng.normal).data;
      const p: Float64Array[] = [];
      const pHat: Float64Array[] = [];
      for (let i = 0; i < n; i++) {
        const x = Float64Array.from(randomNormal(1, D, rng.normal).data, (v, a) => v * (a < D / 3 ? 1 : 0.1) + 0.3);
        p.push(x);
        pHat.push(Float64Array.from(x, (_, a) => { let v = 0.2 + 0.05 * rng.normal(); for (let b = 0; b < D; b++) v += (a === b ? 0.9 : 0.05 * mix[a * D + b]!) * x[b]!; return v; }));
      }
      return { p, pHat };
    });
    const meanOf = (xs: Float64Array[]) => Float64Array.from({ length: D }, (_, a) => xs.reduce((acc, x) => acc + x[a]!, 0) / n);
    const cov = (u: Float64Array[], mu: Float64Array, v: Float64Array[], mv: Float64Array) => {
      const out = new Float64Array(D * D);
      for (let i = 0; i < n; i++) for (let a = 0; a < D; a++) for (let b = 0; b < D; b++) out[a * D + b] += ((u[i]![a]! - mu[a]!) * (v[i]![b]! - mv[b]!)) / n;
      return out;
    };
    const patch = samples.map(({ p, pHat }) => {
      const mean = meanOf(p);
      const meanHat = meanOf(pHat);
      return { gram: cov(p, mean, p, mean), gramHat: cov(pHat, meanHat, pHat, meanHat), cross: cov(pHat, meanHat, p, mean), mean, meanHat };
    });
    const channelOf = (g: Float64Array) => {
      const ch = new Float64Array(s * s);
      for (let a = 0; a < s; a++) for (let b = 0; b < s; b++) for (let k = 0; k < K; k++) ch[a * s + b] += g[(a * K + k) * D + b * K + k]!;
      return ch;
    };
    const channel = patch.map((m) => ({ gram: channelOf(m.gramHat), cross: channelOf(m.cross), damp: 0.05 }));
    const f = tucker2Conv(kernel, [3, 4], { anchor: { channel, patch, patchDamp: 0.05 } });
    const wHat = chainKernel(kernel, f);
    // E‖W·p − (Ŵ·p̂ + bias correction)‖² / E‖W·p‖², summed over the samples: the bias correction
    // makes the output means agree, so the error is the centered one the fit reports.
    let num = 0;
    let den = 0;
    for (let j = 0; j < G; j++) for (let i = 0; i < n; i++) for (let o = j * t; o < (j + 1) * t; o++) {
      let y = 0;
      let yHat = f.biasDelta![o]!;
      for (let x = 0; x < D; x++) {
        y += kernel.data[o * D + x]! * samples[j]!.p[i]![x]!;
        yHat += wHat[o * D + x]! * samples[j]!.pHat[i]![x]!;
      }
      num += (y - yHat) ** 2;
      den += y * y;
    }
    expect(f.dataError!).toBeGreaterThan(0.01);
    expect(f.dataError!).toBeCloseTo(Math.sqrt(num / den), 6);
  });
});

describe('tucker2Conv fits of one layer at several ranks, sharing their rank-independent work', () => {
  // Per group s = 72 input channels and t·K = 90: the whitened unfolding [72, 90] takes the
  // randomized SVD below rank 26 and the exact one from 26 on (whitened-svd.ts), so the
  // ladder crosses both, repeats an r1 with another r2, and comes back down.
  const rng = createRng(21);
  const [G, t, s, K] = [2, 30, 72, 3];
  const D = s * K;
  const kernel: ConvKernel = { data: Float32Array.from(randomNormal(1, G * t * s * K, rng.normal).data), shape: [G * t, s, K], groups: G };
  const pm = patchMoments(G, D, 300, rng);
  const channelOf = (g: Float64Array): Float64Array => {
    const ch = new Float64Array(s * s);
    for (let a = 0; a < s; a++) for (let b = 0; b < s; b++) for (let k = 0; k < K; k++) ch[a * s + b] += g[(a * K + k) * D + b * K + k]!;
    return ch;
  };
  const channel = pm.gram.map((g) => ({ gram: channelOf(g), damp: 0.03 }));
  const ladder: [number, number][] = [[4, 4], [20, 18], [26, 26], [26, 12], [40, 30], [72, 30], [10, 9]];
  const kinds: [string, Tucker2ConvOptions][] = [
    ['channel whitening', { channel }],
    ['channel whitening and patch refit', { channel, patches: pm }],
    ['anchored', {
      anchor: {
        channel: channel.map((c) => ({ ...c, cross: c.gram })), patchDamp: 0.01,
        patch: pm.gram.map((g, j) => ({ gram: g, gramHat: g, cross: g, mean: pm.mean[j]!, meanHat: pm.mean[j]! })),
      },
    }],
  ];

  it.each(kinds)('%s: every rung gives the bytes of its fit without sharing', (_, opts) => {
    const shared = createTucker2Shared();
    let work;
    for (const r of ladder) {
      const alone = tucker2Conv(kernel, r, opts);
      const got = tucker2Conv(kernel, r, { ...opts, shared });
      expect(got).toEqual(alone);
      expect(Number.isFinite(got.relError)).toBe(true);
      // One work for the ladder: the whitening of each group made once, kept.
      work ??= shared.work;
      expect(shared.work).toBe(work);
    }
    // The exact SVD was taken (ranks 26 and up) and kept for the ranks after.
    expect(shared.work!.groups.every((g) => g.svd?.full !== undefined)).toBe(true);
  });

  it('work made for another kernel or other statistics is replaced, never used', () => {
    const shared = createTucker2Shared();
    tucker2Conv(kernel, [26, 20], { channel, patches: pm, shared });
    const first = shared.work;
    const other: ConvKernel = { ...kernel, data: kernel.data.map((v) => v * 0.5 + 0.1) };
    expect(tucker2Conv(other, [26, 20], { channel, patches: pm, shared })).toEqual(tucker2Conv(other, [26, 20], { channel, patches: pm }));
    expect(shared.work).not.toBe(first);
    const damped = channel.map((c) => ({ ...c, damp: 0.1 }));
    expect(tucker2Conv(other, [26, 20], { channel: damped, patches: pm, shared })).toEqual(tucker2Conv(other, [26, 20], { channel: damped, patches: pm }));
    const patches = { gram: pm.gram.map((g) => g.map((v) => 2 * v)), mean: pm.mean };
    expect(tucker2Conv(other, [26, 20], { channel: damped, patches, shared })).toEqual(tucker2Conv(other, [26, 20], { channel: damped, patches }));
  });

  it('the core is U_Tᵀ·Q_T rounded to fp32 once (summed in fp64): the chain reconstructs an exact-rank kernel to fp32 precision', () => {
    // 256 output channels: a core summed in fp32 term by term left 2.8e-7 (5e-8 summed in fp64).
    const exact = lowRankKernel(256, 8, 9, 1, 4, 6, createRng(22));
    const x = randomNormal(100, 8, createRng(23).normal);
    const gram = new Float64Array(64);
    for (let i = 0; i < 100; i++) for (let a = 0; a < 8; a++) for (let b = 0; b < 8; b++) gram[a * 8 + b] += x.data[i * 8 + a]! * x.data[i * 8 + b]!;
    const f = tucker2Conv(exact, [4, 6], { channel: [{ gram, damp: 0 }] });
    expect(f.relError).toBeLessThan(1e-7);
  });
});
