/**
 * Per-mode whitening (linalg/mode-whitening.ts): partial traces recover the factors of an
 * exact Kronecker Gram; whitening turns the patch-weighted error into the Frobenius norm;
 * unwhitening a mode inverts it.
 */
import { describe, expect, it } from 'vitest';
import { modeGrams, unwhitenMode, whitenModes } from '../../src/linalg/mode-whitening.js';
import { cholesky } from '../../src/linalg/cholesky.js';
import { gemm } from '../../src/linalg/gemm.js';
import { perModeWhitening } from '../../src/rewrite/conv-stats.js';
import { WHITEN_DAMP } from '../../src/rewrite/svd-pair.js';
import { createRng, type Rng } from '../../src/util/rng.js';

/** A random SPD n×n matrix. */
function spd(rng: Rng, n: number): Float64Array {
  const a = Array.from({ length: n * 2 * n }, () => rng.normal());
  const g = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    let v = i === j ? 0.1 : 0;
    for (let p = 0; p < 2 * n; p++) v += a[i * 2 * n + p]! * a[j * 2 * n + p]!;
    g[i * n + j] = v;
  }
  return g;
}

/** A ⊗ B (row-major, B's index fastest). */
function kron(a: Float64Array, n: number, b: Float64Array, m: number): Float64Array {
  const out = new Float64Array(n * m * n * m);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < m; k++) for (let l = 0; l < m; l++) out[(i * m + k) * n * m + j * m + l] = a[i * n + j]! * b[k * m + l]!;
  return out;
}

const unitMean = (g: Float64Array, n: number): Float64Array => {
  let tr = 0;
  for (let i = 0; i < n; i++) tr += g[i * n + i]!;
  return g.map((v) => (v * n) / tr);
};

describe('mode whitening', () => {
  it('partial traces give the factors of an exact Kronecker Gram (2 and 3 modes), each of mean diagonal 1', () => {
    const rng = createRng(1);
    const [a, b, c] = [spd(rng, 4), spd(rng, 3), spd(rng, 2)];
    const two = modeGrams(kron(a, 4, b, 3), [4, 3]);
    [[two[0]!, a, 4], [two[1]!, b, 3]].forEach(([got, want, n]) => {
      const w = unitMean(want as Float64Array, n as number);
      (got as Float64Array).forEach((v, i) => expect(v).toBeCloseTo(w[i]!, 10));
    });
    const three = modeGrams(kron(kron(a, 4, b, 3), 12, c, 2), [4, 3, 2]);
    [[three[0]!, a, 4], [three[1]!, b, 3], [three[2]!, c, 2]].forEach(([got, want, n]) => {
      const w = unitMean(want as Float64Array, n as number);
      (got as Float64Array).forEach((v, i) => expect(v).toBeCloseTo(w[i]!, 10));
    });
  });

  it('whitened, the Frobenius norm of a kernel change is its patch-weighted error; unwhitening each mode inverts it', () => {
    const rng = createRng(2);
    const [T, s, kh, kw] = [3, 4, 3, 2];
    const g = [spd(rng, s), spd(rng, kh), spd(rng, kw)];
    const ls = g.map((x, a) => cholesky({ rows: [s, kh, kw][a]!, cols: [s, kh, kw][a]!, data: x })!);
    const sigma = kron(kron(g[0]!, s, g[1]!, kh), s * kh, g[2]!, kw);
    const D = s * kh * kw;
    const dw = Float64Array.from({ length: T * D }, () => rng.normal());
    let weighted = 0;
    for (let t = 0; t < T; t++) for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) weighted += dw[t * D + i]! * sigma[i * D + j]! * dw[t * D + j]!;
    const wt = whitenModes(dw, [T, s, kh, kw], ls);
    const frob = wt.reduce((p, v) => p + v * v, 0);
    expect(frob / weighted).toBeCloseTo(1, 10);
    // Back, mode by mode (the layout [outer, n, inner] of each mode).
    let back: Float32Array = Float32Array.from(wt);
    back = unwhitenMode(back, T, s, kh * kw, ls[0]!);
    back = unwhitenMode(back, T * s, kh, kw, ls[1]!);
    back = unwhitenMode(back, T * s * kh, kw, 1, ls[2]!);
    back.forEach((v, i) => expect(v).toBeCloseTo(dw[i]!, 4));
  });

  it('a 3-D conv\'s patch Gram Σ_S ⊗ Σ_d ⊗ Σ_h ⊗ Σ_w: each axis\'s factor is recovered from the spatial part alone', () => {
    const rng = createRng(3);
    const [s, kd, kh, kw] = [3, 3, 2, 3];
    const g = [spd(rng, s), spd(rng, kd), spd(rng, kh), spd(rng, kw)];
    const spatial = kron(kron(g[1]!, kd, g[2]!, kh), kd * kh, g[3]!, kw);
    const got = modeGrams(kron(g[0]!, s, spatial, kd * kh * kw), [s, kd, kh, kw]);
    got.forEach((x, a) => {
      const n = [s, kd, kh, kw][a]!;
      const w = unitMean(g[a]!, n);
      x.forEach((v, i) => expect(v).toBeCloseTo(w[i]!, 10));
    });
    // The spatial Gram K×K alone, split per axis, gives the same spatial factors.
    modeGrams(spatial, [kd, kh, kw]).forEach((x, a) => x.forEach((v, i) => expect(v).toBeCloseTo(got[a + 1]![i]!, 10)));
  });

  it('perModeWhitening: undamped, the whitened norm is the patch-weighted error up to the factors\' scale; from the channel Gram alone only L_S, damped by default', () => {
    const rng = createRng(4);
    const [T, s, kh, kw] = [2, 3, 2, 3];
    const g = [spd(rng, s), spd(rng, kh), spd(rng, kw)];
    const sigma = kron(kron(g[0]!, s, g[1]!, kh), s * kh, g[2]!, kw);
    const D = s * kh * kw;
    const wl = perModeWhitening([s, kh, kw], sigma, undefined, 0)!;
    expect(wl.every((l) => l)).toBe(true);
    const trace = (a: Float64Array, n: number): number => Array.from({ length: n }, (_, i) => a[i * n + i]!).reduce((x, y) => x + y, 0);
    const scale = g.reduce((p, x, a) => p * trace(x, [s, kh, kw][a]!) / [s, kh, kw][a]!, 1);
    const dw = Float64Array.from({ length: T * D }, () => rng.normal());
    let weighted = 0;
    for (let t = 0; t < T; t++) for (let i = 0; i < D; i++) for (let j = 0; j < D; j++) weighted += dw[t * D + i]! * sigma[i * D + j]! * dw[t * D + j]!;
    expect((whitenModes(dw, [T, s, kh, kw], wl).reduce((p, v) => p + v * v, 0) * scale) / weighted).toBeCloseTo(1, 9);
    // Channel Gram alone: [L_S, none, none], L_S·L_Sᵀ the damped unit-mean Gram.
    const ch = perModeWhitening([s, kh, kw], undefined, g[0]!)!;
    expect(ch.length).toBe(3);
    expect(ch[1]).toBeUndefined();
    expect(ch[2]).toBeUndefined();
    const want = unitMean(g[0]!, s);
    for (let i = 0; i < s; i++) want[i * s + i] += WHITEN_DAMP;
    gemm(ch[0]!, ch[0]!, { transB: true }).data.forEach((v, i) => expect(v).toBeCloseTo(want[i]!, 9));
    // Nothing to whiten by: none.
    expect(perModeWhitening([s, kh, kw])).toBeUndefined();
    expect(perModeWhitening([s, kh, kw], undefined, new Float64Array(s * s))).toBeUndefined();
  });
});
