import { describe, expect, it } from 'vitest';
import { bidiagSvdDc } from '../../src/linalg/bdsvd-dc.js';
import { bidiagonalizeBlocked } from '../../src/linalg/bidiag-blocked.js';
import { createJsGemmEngine, runSync } from '../../src/linalg/engine.js';
import { arrowSvd } from '../../src/linalg/secular.js';
import { diffNorm, frobeniusNorm, fromArray, orthonormalityError, randomNormal, transpose, zeros, type Matrix } from '../../src/linalg/matrix.js';
import { createOrtGemmEngine } from '../../src/linalg/ort-gemm.js';
import { singularValues, svd, svdAsync } from '../../src/linalg/svd.js';
import { createRng } from '../../src/util/rng.js';
import { reconstruct, withSpectrum } from './helpers.js';

/** Checks B = U·[diag(s) 0]·Wᵀ for the N×(N+sq) upper bidiagonal (d, e); returns s. */
function checkBidiag(d: number[], e: number[], sq: 0 | 1, tol = 1e-13): Float64Array {
  const n = d.length;
  const nc = n + sq;
  const r = runSync(bidiagSvdDc(Float64Array.from(d), Float64Array.from(e), sq));
  let err = 0;
  let norm = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < nc; j++) {
      let acc = 0;
      for (let q = 0; q < n; q++) acc += r.u[i * n + q]! * r.s[q]! * r.w[j * nc + q]!;
      const b = j === i ? d[i]! : j === i + 1 ? e[i]! : 0;
      err += (acc - b) ** 2;
      norm += b * b;
    }
  }
  expect(Math.sqrt(err)).toBeLessThanOrEqual(tol * Math.max(Math.sqrt(norm), 1e-300));
  expect(orthonormalityError(fromArray(n, n, r.u))).toBeLessThan(1e-13);
  expect(orthonormalityError(fromArray(nc, nc, r.w))).toBeLessThan(1e-13);
  for (const x of r.s) expect(x).toBeGreaterThanOrEqual(0);
  return r.s;
}

function checkSvd(a: Matrix, tol = 1e-12) {
  const res = svd(a);
  const k = Math.min(a.rows, a.cols);
  expect(res.s.length).toBe(k);
  for (let i = 1; i < k; i++) expect(res.s[i]).toBeLessThanOrEqual(res.s[i - 1]!);
  const norm = frobeniusNorm(a);
  expect(diffNorm(reconstruct(res), a)).toBeLessThanOrEqual(tol * Math.max(norm, 1e-300));
  expect(orthonormalityError(res.u)).toBeLessThan(1e-12);
  expect(orthonormalityError(transpose(res.vt))).toBeLessThan(1e-12);
  // Singular values against the QR path (singularValues never uses divide and conquer).
  const ref = singularValues(a);
  for (let i = 0; i < k; i++) expect(Math.abs(res.s[i]! - ref[i]!)).toBeLessThanOrEqual(1e-12 * Math.max(ref[0]!, 1e-300));
  return res;
}

describe('divide-and-conquer bidiagonal SVD', () => {
  const rng = createRng(21);
  const rand = (k: number) => Array.from({ length: k }, () => rng.normal());

  it('square and N×(N+1) bidiagonals of many sizes', () => {
    for (const n of [1, 2, 3, 4, 7, 16, 33, 100]) {
      for (const sq of [0, 1] as const) checkBidiag(rand(n), rand(n - 1 + sq), sq);
    }
  });

  it('graded, clustered, repeated, zero and zero-diagonal cases', () => {
    const n = 80;
    checkBidiag(Array.from({ length: n }, (_, i) => 10 ** (-i / 5)), Array.from({ length: n - 1 }, (_, i) => 0.5 * 10 ** (-i / 5)), 0);
    checkBidiag(Array(n).fill(1), Array(n - 1).fill(1e-10), 0); // tight cluster at 1
    checkBidiag(Array(n).fill(2), Array(n - 1).fill(0), 0); // repeated value, already diagonal
    checkBidiag(Array(n).fill(1), Array(n - 1).fill(1), 0);
    const s0 = checkBidiag(Array(n).fill(0), Array(n - 1).fill(0), 0);
    expect(Array.from(s0).every((x) => x === 0)).toBe(true);
    checkBidiag(rand(n).map((x, i) => (i % 3 === 1 ? 0 : x)), rand(n - 1), 0); // zeros on the diagonal
    checkBidiag(rand(n), rand(n - 1).map((x, i) => (i % 4 === 0 ? 0 : x)), 0); // already split
    checkBidiag(rand(n).map((x, i) => (i % 2 ? 0 : x)), rand(n).map((x, i) => (i % 2 ? x : 0)), 1);
  });

  it('arrowhead solver: exact values of a 2×2 and orthogonal vectors', () => {
    // M = [[z0, z1], [0, d1]]: σ² are the eigenvalues of MᵀM.
    const z0 = 3, z1 = 4, d1 = 2;
    const r = arrowSvd(Float64Array.of(0, d1), Float64Array.of(z0, z1));
    const t = z0 * z0 + z1 * z1 + d1 * d1;
    const det = z0 * d1;
    const big = Math.sqrt((t + Math.sqrt(t * t - 4 * det * det)) / 2);
    expect(r.s[1]).toBeCloseTo(big, 13);
    expect(r.s[0]).toBeCloseTo(det / big, 13);
    expect(orthonormalityError(fromArray(2, 2, r.u))).toBeLessThan(1e-14);
    expect(orthonormalityError(fromArray(2, 2, r.v))).toBeLessThan(1e-14);
  });
});

describe('blocked bidiagonalisation', () => {
  it('gives the same singular values as the matrix (several panel sizes, tall)', () => {
    const rng = createRng(22);
    for (const [m, n, nb] of [[70, 70, 8], [90, 61, 16], [5, 5, 32]] as const) {
      const a = randomNormal(m, n, rng.normal);
      const w = Float64Array.from(a.data);
      const d = new Float64Array(n), e = new Float64Array(n);
      runSync(bidiagonalizeBlocked(w, m, n, d, e, new Float64Array(n), new Float64Array(n), nb));
      const s = checkBidiag(Array.from(d), Array.from(e.subarray(0, n - 1)), 0);
      const ref = singularValues(a);
      const sorted = Array.from(s).sort((x, y) => y - x);
      for (let i = 0; i < n; i++) expect(Math.abs(sorted[i]! - ref[i]!)).toBeLessThan(1e-12 * ref[0]!);
    }
  });
});

// svd() switches to the blocked reduction and divide and conquer from n = 256 on.
describe('full SVD through divide and conquer (n ≥ 256)', () => {
  const rng = createRng(23);

  it('random square, tall and wide matrices', () => {
    for (const [m, n] of [[256, 256], [300, 260], [260, 300], [500, 300]] as const) checkSvd(randomNormal(m, n, rng.normal));
  });

  it('graded, clustered, repeated and rank-deficient spectra', () => {
    const graded = Array.from({ length: 256 }, (_, i) => 10 ** (-i / 16));
    const r1 = checkSvd(withSpectrum(300, 256, graded, rng));
    for (let i = 0; i < 256; i++) expect(Math.abs(r1.s[i]! - graded[i]!)).toBeLessThan(1e-13);
    const clustered = Array.from({ length: 256 }, (_, i) => 1 + 1e-12 * i);
    const r2 = checkSvd(withSpectrum(256, 256, clustered, rng));
    for (let i = 0; i < 256; i++) expect(Math.abs(r2.s[i]! - clustered[255 - i]!)).toBeLessThan(1e-13);
    const repeated = [...Array(100).fill(5), ...Array(100).fill(1), ...Array(56).fill(0)];
    const r3 = checkSvd(withSpectrum(280, 256, repeated, rng));
    for (let i = 0; i < 256; i++) expect(Math.abs(r3.s[i]! - repeated[i]!)).toBeLessThan(1e-12 * 5);
    const r4 = checkSvd(withSpectrum(270, 256, [3, 2, 1], rng));
    for (let i = 3; i < 256; i++) expect(r4.s[i]).toBeLessThan(1e-13 * 3);
  });

  it('zero matrix, 1×n and n×1, huge and tiny scales', () => {
    const z = checkSvd(zeros(256, 256));
    expect(Array.from(z.s).every((x) => x === 0)).toBe(true);
    checkSvd(randomNormal(1, 300, rng.normal));
    checkSvd(randomNormal(300, 1, rng.normal));
    const a = randomNormal(256, 256, rng.normal);
    checkSvd(fromArray(256, 256, a.data.map((x) => x * 1e150)));
    checkSvd(fromArray(256, 256, a.data.map((x) => x * 1e-150)));
  });

  it('svdAsync with the JS engine matches svd()', async () => {
    const a = randomNormal(270, 256, rng.normal);
    const r1 = svd(a);
    const r2 = await svdAsync(a, createJsGemmEngine());
    expect(Array.from(r2.s)).toEqual(Array.from(r1.s));
    expect(diffNorm(r2.u, r1.u)).toBe(0);
  });

  it('svdAsync with the ORT engine (fp64 products in ORT) keeps the accuracy', async () => {
    const engine = createOrtGemmEngine({ threads: 2, minFlops: 0 });
    try {
      const a = withSpectrum(300, 256, Array.from({ length: 256 }, (_, i) => 10 ** (-i / 32)), rng);
      const r = await svdAsync(a, engine);
      expect(diffNorm(reconstruct(r), a)).toBeLessThan(1e-12 * frobeniusNorm(a));
      expect(orthonormalityError(r.u)).toBeLessThan(1e-12);
      expect(orthonormalityError(transpose(r.vt))).toBeLessThan(1e-12);
      const ref = singularValues(a);
      for (let i = 0; i < 256; i++) expect(Math.abs(r.s[i]! - ref[i]!)).toBeLessThan(1e-13);
    } finally {
      await engine.dispose();
    }
  });
});
