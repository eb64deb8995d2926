import { describe, expect, it } from 'vitest';
import { cholesky, choleskyWithRidge } from '../../src/linalg/cholesky.js';
import { eigSym } from '../../src/linalg/eig-sym.js';
import { gemm } from '../../src/linalg/gemm.js';
import { asFloat32, diffNorm, fromRows, frobeniusNorm, orthonormalityError, randomNormal, scaleCols, transpose } from '../../src/linalg/matrix.js';
import { runAsync, runSync } from '../../src/linalg/engine.js';
import { cholQrRowsF32, householderQr, orthonormalize } from '../../src/linalg/qr.js';
import { createOrtGemmEngine } from '../../src/linalg/ort-gemm.js';
import { createSyncOrtGemm } from '../../src/linalg/ort-gemm-sync.js';
import { invertUpper, solveLowerLeft, solveUpperLeft, solveUpperRight } from '../../src/linalg/triangular.js';
import { createRng } from '../../src/util/rng.js';
import { withSpectrum } from './helpers.js';

describe('Householder QR', () => {
  it('A = QR with orthonormal Q and upper-triangular R (tall and wide)', () => {
    const rng = createRng(1);
    for (const [m, n] of [[40, 12], [12, 40], [9, 9]] as const) {
      const a = randomNormal(m, n, rng.normal);
      const { q, r } = householderQr(a);
      expect(orthonormalityError(q)).toBeLessThan(1e-13);
      for (let i = 0; i < r.rows; i++) for (let j = 0; j < Math.min(i, r.cols); j++) expect(r.data[i * r.cols + j]).toBe(0);
      expect(diffNorm(gemm(q, r), a) / frobeniusNorm(a)).toBeLessThan(1e-14);
    }
  });
});

describe('CholeskyQR2', () => {
  it('is orthonormal to ~1e-14 for well and badly conditioned blocks', () => {
    const rng = createRng(2);
    for (const cond of [1, 1e6, 1e12]) {
      const s = Array.from({ length: 15 }, (_, i) => Math.pow(cond, -i / 14));
      const y = withSpectrum(300, 15, s, rng);
      const q = orthonormalize(y);
      expect(orthonormalityError(q)).toBeLessThan(1e-13);
      // Same range: projecting Y onto Q loses nothing.
      const proj = gemm(q, gemm(q, y, { transA: true }));
      expect(diffNorm(proj, y) / frobeniusNorm(y)).toBeLessThan(1e-10);
    }
  });

  it('still returns a complete orthonormal basis for a rank-deficient block', () => {
    const rng = createRng(3);
    const y = withSpectrum(100, 10, [3, 2, 1, 0, 0, 0, 0, 0, 0, 0], rng);
    const q = orthonormalize(y);
    expect(q.cols).toBe(10);
    expect(orthonormalityError(q)).toBeLessThan(1e-12);
    const proj = gemm(q, gemm(q, y, { transA: true }));
    expect(diffNorm(proj, y) / frobeniusNorm(y)).toBeLessThan(1e-12);
  });
});

describe('row CholeskyQR in fp32 (cholQrRowsF32)', () => {
  it('on an fp32 engine: two passes give fp32-orthonormal rows spanning the same row space', async () => {
    const engine = createOrtGemmEngine({ minFlops: 0 });
    try {
      const rng = createRng(4);
      const s = Array.from({ length: 20 }, (_, i) => Math.pow(30, -i / 19)); // cond 30
      const w = asFloat32(transpose(withSpectrum(400, 20, s, rng))); // 20×400
      const q = (await runAsync(cholQrRowsF32(w, 2), engine))!;
      expect(q.data).toBeInstanceOf(Float32Array);
      expect([q.rows, q.cols]).toEqual([20, 400]);
      expect(orthonormalityError(transpose(q))).toBeLessThan(1e-5);
      const proj = gemm(gemm(w, q, { transB: true }), q); // W·Qᵀ·Q
      expect(diffNorm(proj, w) / frobeniusNorm(w)).toBeLessThan(1e-5);
      // One pass: not orthonormal to fp32 precision, but well conditioned.
      const once = (await runAsync(cholQrRowsF32(w, 1), engine))!;
      expect(orthonormalityError(transpose(once))).toBeLessThan(0.1);
    } finally {
      await engine.dispose();
    }
  });

  it('declines (null) blocks too ill-conditioned for an fp32 Gram, so callers use fp64', () => {
    const rng = createRng(5);
    const s = Array.from({ length: 10 }, (_, i) => Math.pow(1e4, -i / 9));
    expect(runSync(cholQrRowsF32(asFloat32(transpose(withSpectrum(200, 10, s, rng))), 1))).toBeNull();
    const deficient = asFloat32(transpose(withSpectrum(200, 10, [3, 2, 1, 0, 0, 0, 0, 0, 0, 0], rng)));
    expect(runSync(cholQrRowsF32(deficient, 2))).toBeNull();
    expect(() => runSync(cholQrRowsF32(transpose(deficient), 1))).toThrowError(/wide/);
  });
});

describe('Cholesky and triangular solves', () => {
  it('factors an SPD matrix and solves with it', () => {
    const rng = createRng(4);
    const x = randomNormal(30, 8, rng.normal);
    const g = gemm(x, x, { transA: true });
    const l = cholesky(g)!;
    expect(l).not.toBeNull();
    expect(diffNorm(gemm(l, l, { transB: true }), g) / frobeniusNorm(g)).toBeLessThan(1e-14);
    const b = randomNormal(8, 3, rng.normal);
    const y = solveUpperLeft(transpose(l), solveLowerLeft(l, b)); // g⁻¹ b
    expect(diffNorm(gemm(g, y), b) / frobeniusNorm(b)).toBeLessThan(1e-12);
    const bb = randomNormal(5, 8, rng.normal);
    const z = solveUpperRight(bb, transpose(l)); // bb · R⁻¹
    expect(diffNorm(gemm(z, transpose(l)), bb) / frobeniusNorm(bb)).toBeLessThan(1e-12);
  });

  it('inverts an upper-triangular matrix (the inverse is upper triangular)', () => {
    const rng = createRng(6);
    for (const k of [1, 2, 7, 40]) {
      const x = randomNormal(3 * k, k, rng.normal);
      const r = transpose(cholesky(gemm(x, x, { transA: true }))!);
      const ri = invertUpper(r);
      for (let i = 0; i < k; i++) for (let j = 0; j < i; j++) expect(ri.data[i * k + j]).toBe(0);
      const eye = gemm(r, ri);
      for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) expect(eye.data[i * k + j]).toBeCloseTo(i === j ? 1 : 0, 12);
    }
    expect(() => invertUpper(fromRows([[1, 2], [0, 0]]))).toThrowError(/zero pivot/);
  });

  it('returns null for indefinite input and adds the smallest working ridge for singular Gram matrices', () => {
    expect(cholesky(fromRows([[1, 2], [2, 1]]))).toBeNull();
    const rng = createRng(5);
    const x = randomNormal(3, 6, rng.normal); // rank 3 Gram of size 6
    const g = gemm(x, x, { transA: true });
    const { l, ridge } = choleskyWithRidge(g);
    expect(ridge).toBeGreaterThan(0);
    expect(ridge).toBeLessThan(1e-6);
    const back = gemm(l, l, { transB: true });
    for (let i = 0; i < 6; i++) back.data[i * 6 + i]! -= ridge;
    expect(diffNorm(back, g) / frobeniusNorm(g)).toBeLessThan(1e-10);
    expect(choleskyWithRidge(fromRows([[4, 0], [0, 9]])).ridge).toBe(0);
    expect(() => choleskyWithRidge(fromRows([[0, 0], [0, 0]]))).toThrowError(/non-positive trace/);
  });
});

describe('blocked Cholesky and forward substitution (from 256 rows)', () => {
  it('agree with the definition on 257 to 520 rows, in JS and with products in ORT; an indefinite block still gives null', async () => {
    const rng = createRng(8);
    const ort = await createSyncOrtGemm();
    try {
      for (const [n, sync] of [[300, undefined], [520, ort], [257, ort]] as const) {
        const x = randomNormal(n + 40, n, rng.normal);
        const g = gemm(x, x, { transA: true });
        const l = cholesky(g, sync)!;
        expect(l).not.toBeNull();
        for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) expect(l.data[i * n + j]).toBe(0);
        expect(diffNorm(gemm(l, l, { transB: true }), g) / frobeniusNorm(g)).toBeLessThan(1e-13);
        const b = randomNormal(n, 5, rng.normal);
        const y = solveLowerLeft(l, b, sync);
        expect(diffNorm(gemm(l, y), b) / frobeniusNorm(b)).toBeLessThan(1e-12);
      }
      // Indefinite only in the last block: the blocked path must reach it and refuse.
      const n = 300;
      const x = randomNormal(n + 10, n, rng.normal);
      const g = gemm(x, x, { transA: true });
      g.data[(n - 1) * n + (n - 1)] = -1;
      expect(cholesky(g, ort)).toBeNull();
      expect(choleskyWithRidge(g, 1e-10, ort).ridge).toBeGreaterThan(0);
    } finally {
      await ort.dispose();
    }
  });
});

describe('symmetric eigendecomposition (Jacobi)', () => {
  it('A·V = V·Λ with orthonormal V, eigenvalues descending', () => {
    const rng = createRng(6);
    const x = randomNormal(20, 20, rng.normal);
    const a = gemm(x, x, { transB: true });
    for (let i = 0; i < 20; i++) a.data[i * 20 + i]! -= 30; // make it indefinite
    const { values, vectors } = eigSym(a);
    expect(orthonormalityError(vectors)).toBeLessThan(1e-13);
    for (let i = 1; i < 20; i++) expect(values[i]).toBeLessThanOrEqual(values[i - 1]!);
    expect(diffNorm(gemm(a, vectors), scaleCols(vectors, values)) / frobeniusNorm(a)).toBeLessThan(1e-13);
    expect(values.some((v) => v < 0)).toBe(true);
  });
});
