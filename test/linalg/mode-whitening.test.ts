/**
 * Per-mode whitening (linalg/mode-whitening.ts): partial traces recover the factors of an
 * exact Kronecker Gram; whitening turns the patch-weighted error into the Frobenius norm;
 * unwhitening a mode inverts it.
 */
import { describe, expect, it } from 'vitest';
import { modeGrams, unwhitenMode, whitenModes } from '../../src/linalg/mode-whitening.js';
import { cholesky } from '../../src/linalg/cholesky.js';
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
});
