/** Synthetic weights of known low rank, for tests that need a rewrite to be exact or to pay. */
import { createRng } from '../../src/util/rng.js';

/** A [C, C, 3, 3] kernel of Tucker-2 ranks (r, r): the default energy rule rewrites it. */
export function tuckerKernel(C: number, r: number, seed: number): Float32Array {
  const rng = createRng(seed);
  const K = 9;
  const core = Array.from({ length: r * r * K }, () => rng.normal());
  const ut = Array.from({ length: C * r }, () => rng.normal());
  const us = Array.from({ length: C * r }, () => rng.normal());
  const w = new Float32Array(C * C * K);
  for (let t = 0; t < C; t++) for (let s = 0; s < C; s++) for (let k = 0; k < K; k++) {
    let v = 0;
    for (let a = 0; a < r; a++) for (let b = 0; b < r; b++) v += ut[t * r + a]! * core[(a * r + b) * K + k]! * us[s * r + b]!;
    w[(t * C + s) * K + k] = v;
  }
  return w;
}

/** An [n, n] weight U·diag(1/(1+q)^p)·V with Gaussian U, V: a slowly decaying spectrum, so every rank costs some error. */
export function decayingWeight(n: number, seed: number, p: number): number[] {
  const rng = createRng(seed);
  const u = Array.from({ length: n * n }, () => rng.normal());
  const v = Array.from({ length: n * n }, () => rng.normal());
  return Array.from({ length: n * n }, (_, k) => {
    const i = Math.floor(k / n), j = k % n;
    let s = 0;
    for (let q = 0; q < n; q++) s += (u[i * n + q]! * v[q * n + j]!) / (1 + q) ** p;
    return s;
  });
}
