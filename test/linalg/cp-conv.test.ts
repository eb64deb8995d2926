import { describe, expect, it } from 'vitest';
import { randomNormal } from '../../src/linalg/matrix.js';
import { cpConv, cpError, whitenKernel } from '../../src/linalg/cp-conv.js';
import { createRng, type Rng } from '../../src/util/rng.js';
import { relDiff } from './helpers.js';

/** W[t, s, k] = Σ_r a_r[t]·b_r[s]·c_r[k] with random factors, fp32. */
function cpKernel(T: number, S: number, K: number, R: number, rng: Rng): Float32Array {
  const a = randomNormal(T, R, rng.normal).data;
  const b = randomNormal(S, R, rng.normal).data;
  const c = randomNormal(K, R, rng.normal).data;
  const w = new Float32Array(T * S * K);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let k = 0; k < K; k++) {
    let v = 0;
    for (let r = 0; r < R; r++) v += a[t * R + r]! * b[s * R + r]! * c[k * R + r]!;
    w[(t * S + s) * K + k] = v;
  }
  return w;
}

/** The chain's kernel by its documented layout: last [T, R], depth [R, K], first [R, S]. */
function chainKernel(T: number, S: number, K: number, f: { rank: number; first: Float32Array; depth: Float32Array; last: Float32Array }): Float64Array {
  const R = f.rank;
  const w = new Float64Array(T * S * K);
  for (let t = 0; t < T; t++) for (let s = 0; s < S; s++) for (let k = 0; k < K; k++) {
    let v = 0;
    for (let r = 0; r < R; r++) v += f.last[t * R + r]! * f.depth[r * K + k]! * f.first[r * S + s]!;
    w[(t * S + s) * K + k] = v;
  }
  return w;
}

const colNorm = (d: Float32Array, rows: number, cols: number, c: number, rowMajorByRank: boolean): number => {
  let s = 0;
  for (let i = 0; i < rows; i++) s += (rowMajorByRank ? d[c * rows + i]! : d[i * cols + c]!) ** 2;
  return Math.sqrt(s);
};

describe('cpConv (CP of a conv kernel as 1x1 → depthwise → 1x1 weights)', () => {
  it('recovers a kernel of exact CP rank, with each term balanced over its three factors', () => {
    const [T, S, K, R] = [10, 8, 9, 3];
    const data = cpKernel(T, S, K, R, createRng(1));
    const f = cpConv({ data, shape: [T, S, K] }, R, { rng: createRng(2), maxIter: 2000, tol: 1e-14 });
    expect(f.rank).toBe(R);
    expect([f.first.length, f.depth.length, f.last.length]).toEqual([R * S, R * K, T * R]);
    expect(f.relError).toBeLessThan(1e-4);
    expect(relDiff(chainKernel(T, S, K, f), data)).toBeLessThan(1e-4);
    for (let r = 0; r < R; r++) {
      const na = colNorm(f.last, T, R, r, false);
      expect(colNorm(f.first, S, R, r, true) / na).toBeCloseTo(1, 4);
      expect(colNorm(f.depth, K, R, r, true) / na).toBeCloseTo(1, 4);
    }
  });

  it('reports the weight error of the chain it returns and clamps the rank where a CP is exact', () => {
    const rng = createRng(3);
    const data = Float32Array.from(randomNormal(1, 6 * 4 * 3, rng.normal).data);
    const f = cpConv({ data, shape: [6, 4, 3] }, 2, { rng, maxIter: 50, tol: 1e-5 });
    expect(f.relError).toBeGreaterThan(0.1);
    expect(f.relError).toBeCloseTo(relDiff(chainKernel(6, 4, 3, f), data), 6);
    expect(cpError(data, 6, 4, 3, f.first, f.depth, f.last, f.rank)).toBe(f.relError);
    expect(cpConv({ data, shape: [6, 4, 3] }, 100, { rng: createRng(4), maxIter: 5 }).rank).toBe(12);
    expect(() => cpConv({ data, shape: [6, 4, 3] }, 0)).toThrow(/positive integer/);
  });

  it('with patch moments, refits the last factor (lower output error) and returns the bias correction (W − Ŵ)·E[p]', () => {
    const rng = createRng(5);
    const [T, S, K] = [8, 5, 3];
    const D = S * K;
    const data = Float32Array.from(randomNormal(1, T * D, rng.normal).data);
    const mix = randomNormal(D, D, rng.normal).data;
    const gram = new Float64Array(D * D);
    const mean = new Float64Array(D);
    const n = 200;
    for (let i = 0; i < n; i++) {
      const z = randomNormal(1, D, rng.normal).data;
      const p = new Float64Array(D);
      for (let a = 0; a < D; a++) { let v = 0.3; for (let b = 0; b < 4; b++) v += mix[a * D + b]! * z[b]!; p[a] = v + 0.05 * z[a]!; }
      for (let a = 0; a < D; a++) { mean[a] += p[a]! / n; for (let b = 0; b < D; b++) gram[a * D + b] += (p[a]! * p[b]!) / n; }
    }
    const outErr = (w: ArrayLike<number>): number => {
      let num = 0;
      let den = 0;
      for (let t = 0; t < T; t++) for (let x = 0; x < D; x++) for (let y = 0; y < D; y++) {
        num += (data[t * D + x]! - w[t * D + x]!) * (data[t * D + y]! - w[t * D + y]!) * gram[x * D + y]!;
        den += data[t * D + x]! * data[t * D + y]! * gram[x * D + y]!;
      }
      return Math.sqrt(num / den);
    };
    const opts = { maxIter: 50, tol: 1e-5 };
    const plain = cpConv({ data, shape: [T, S, K] }, 3, { rng: createRng(6), ...opts });
    const fit = cpConv({ data, shape: [T, S, K] }, 3, { rng: createRng(6), ...opts, patches: { gram, mean } });
    const wHat = chainKernel(T, S, K, fit);
    expect(fit.first).toEqual(plain.first);
    expect(fit.dataError!).toBeCloseTo(outErr(wHat), 6);
    expect(fit.dataError!).toBeLessThan(0.9 * outErr(chainKernel(T, S, K, plain)));
    for (let t = 0; t < T; t++) {
      let d = 0;
      for (let x = 0; x < D; x++) d += (data[t * D + x]! - wHat[t * D + x]!) * mean[x]!;
      expect(fit.biasDelta![t]).toBeCloseTo(d, 4);
    }
  });

  it('whitenKernel computes L_Sᵀ·W_t·L_K per output channel', () => {
    const rng = createRng(7);
    const [T, S, K] = [3, 4, 2];
    const w = randomNormal(1, T * S * K, rng.normal).data;
    const lower = (n: number): Float64Array => Float64Array.from(randomNormal(n, n, rng.normal).data, (v, i) => (i % n <= Math.floor(i / n) ? v : 0));
    const ls = lower(S);
    const lk = lower(K);
    const out = whitenKernel(w, T, S, K, { rows: S, cols: S, data: ls }, { rows: K, cols: K, data: lk });
    for (let t = 0; t < T; t++) for (let i = 0; i < S; i++) for (let k2 = 0; k2 < K; k2++) {
      let v = 0;
      for (let c = 0; c < S; c++) for (let k = 0; k < K; k++) v += ls[c * S + i]! * w[(t * S + c) * K + k]! * lk[k * K + k2]!;
      expect(out[(t * S + i) * K + k2]).toBeCloseTo(v, 10);
    }
  });
});
