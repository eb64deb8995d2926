/**
 * Whitening a conv kernel mode by mode, for decompositions whose factors each own one mode
 * of the input patch (c, y1, …, yn): Tensor-Train (one core per axis), 4-way CP.
 *
 * The output error of a kernel change ΔW on patches x with Gram Σ = E[x·xᵀ] is
 * Σ_t ΔW_tᵀ·Σ·ΔW_t. With Σ ≈ Σ_0 ⊗ Σ_1 ⊗ … ⊗ Σ_n (one factor per patch mode) and
 * Σ_a = L_a·L_aᵀ, that is ‖ΔW ×_0 L_0ᵀ ×_1 L_1ᵀ … ×_n L_nᵀ‖²_F (×_a: the mode-a product),
 * so a decomposition fitted to W̃ = W ×_a L_aᵀ in the plain Frobenius norm is fitted to the
 * outputs, and each factor maps back on its own mode: a mode-a vector v of W̃'s factor is
 * L_a⁻ᵀ·v in W's. The factors come from partial traces, Σ_a[i, i'] = Σ over the other
 * modes' equal indices of Σ[(…i…), (…i'…)]: for an exact Kronecker product they are its
 * factors up to scale (each is scaled to mean diagonal 1), and each is positive
 * semidefinite whenever Σ is. Two modes (channel ⊗ kernel) is rewrite/conv-stats.ts
 * kroneckerFactors; this is the same with the kernel split per axis.
 */
import { transpose, type Matrix } from './matrix.js';
import { solveUpperLeft } from './triangular.js';

/** Per-mode factors of a Gram over the multi-index of sizes `dims` (row-major, last fastest), each of mean diagonal 1. */
export function modeGrams(gram: ArrayLike<number>, dims: readonly number[]): Float64Array[] {
  const D = dims.reduce((a, b) => a * b, 1);
  if (gram.length !== D * D) throw new Error(`modeGrams: Gram has ${gram.length} entries, expected ${D}x${D}`);
  return dims.map((n, a) => {
    const inner = dims.slice(a + 1).reduce((p, q) => p * q, 1);
    const outer = D / (n * inner);
    const g = new Float64Array(n * n);
    for (let o = 0; o < outer; o++) for (let u = 0; u < inner; u++) {
      for (let i = 0; i < n; i++) {
        const row = (o * n + i) * inner + u;
        for (let i2 = 0; i2 < n; i2++) g[i * n + i2] += gram[row * D + (o * n + i2) * inner + u]!;
      }
    }
    return unitDiagonalMean(g, n);
  });
}

/** Scales an n×n matrix in place to mean diagonal 1 (left as it is when its trace is zero or not finite). */
export function unitDiagonalMean(a: Float64Array, n: number): Float64Array {
  let tr = 0;
  for (let i = 0; i < n; i++) tr += a[i * n + i]!;
  if (tr > 0 && Number.isFinite(tr)) for (let i = 0; i < a.length; i++) a[i]! *= n / tr;
  return a;
}

/**
 * W ×_a L_aᵀ over the modes a ≥ 1 of a row-major tensor of `shape` (mode 0, the outputs,
 * is left alone): W̃[…, j, …] = Σ_i W[…, i, …]·L_a[i, j]. `ls[a − 1]` is mode a's lower
 * factor, or undefined to leave that mode as it is.
 */
export function whitenModes(w: ArrayLike<number>, shape: readonly number[], ls: readonly (Matrix | undefined)[]): Float64Array {
  let cur = Float64Array.from(w);
  for (let a = 1; a < shape.length; a++) {
    const l = ls[a - 1];
    if (!l) continue;
    const n = shape[a]!;
    const inner = shape.slice(a + 1).reduce((p, q) => p * q, 1);
    const outer = cur.length / (n * inner);
    const next = new Float64Array(cur.length);
    for (let o = 0; o < outer; o++) for (let i = 0; i < n; i++) {
      const src = (o * n + i) * inner;
      for (let j = 0; j <= i; j++) {
        // L is lower triangular: L[i, j] = 0 for j > i.
        const v = l.data[i * n + j]!;
        if (v === 0) continue;
        const dst = (o * n + j) * inner;
        for (let u = 0; u < inner; u++) next[dst + u]! += v * cur[src + u]!;
      }
    }
    cur = next;
  }
  return cur;
}

/**
 * Maps vectors fitted in whitened coordinates back: each length-n vector of `data` along
 * its mode (laid out as [outer, n, inner], row-major) becomes L⁻ᵀ·v.
 */
export function unwhitenMode(data: Float32Array, outer: number, n: number, inner: number, l: Matrix): Float32Array {
  // Columns of M [n, outer·inner] are the vectors; Lᵀ·X = M by back substitution.
  const m: Matrix = { rows: n, cols: outer * inner, data: new Float64Array(n * outer * inner) };
  for (let o = 0; o < outer; o++) for (let i = 0; i < n; i++) for (let u = 0; u < inner; u++) m.data[i * m.cols + o * inner + u] = data[(o * n + i) * inner + u]!;
  const x = solveUpperLeft(transpose(l), m);
  const out = new Float32Array(data.length);
  for (let o = 0; o < outer; o++) for (let i = 0; i < n; i++) for (let u = 0; u < inner; u++) out[(o * n + i) * inner + u] = x.data[i * m.cols + o * inner + u]!;
  return out;
}
