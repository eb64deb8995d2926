/**
 * Conjugate gradients (linalg/cg.ts) against the solution by another route: Householder
 * QR of the formed matrix.
 */
import { describe, expect, it } from 'vitest';
import { conjugateGradient, dot } from '../../src/linalg/cg.js';
import { gemm } from '../../src/linalg/gemm.js';
import type { Matrix } from '../../src/linalg/matrix.js';
import { householderQr } from '../../src/linalg/qr.js';
import { solveUpperLeft } from '../../src/linalg/triangular.js';
import { createRng } from '../../src/util/rng.js';
import { relDiff, withSpectrum } from './helpers.js';

const rng = createRng(31);

/** A symmetric positive definite n×n matrix with eigenvalues from 1 down to 1/cond. */
function spd(n: number, cond: number): Matrix {
  const s = Array.from({ length: n }, (_, i) => cond ** (-i / (n - 1)));
  const q = withSpectrum(n, n, s.map(Math.sqrt), rng);
  return gemm(q, q, { transA: true });
}

const apply = (a: Matrix) => (x: ArrayLike<number>): Float64Array => gemm(a, { rows: a.cols, cols: 1, data: Float64Array.from(x) }).data as Float64Array;

function qrSolve(a: Matrix, b: Float64Array): Float64Array {
  const { q, r } = householderQr(a);
  const qtb = gemm(q, { rows: b.length, cols: 1, data: b }, { transA: true });
  return solveUpperLeft(r, qtb).data as Float64Array;
}

const randomVector = (n: number): Float64Array => Float64Array.from({ length: n }, () => rng.normal());

describe('conjugateGradient', () => {
  it('solves an SPD system to the QR solution (n steps in exact arithmetic; rounding needs a few more)', () => {
    const n = 40;
    const a = spd(n, 100);
    const b = randomVector(n);
    const x = conjugateGradient(apply(a), b, new Float64Array(n), { iterations: 2 * n });
    expect(relDiff(x, qrSolve(a, b))).toBeLessThan(1e-8);
  });

  it('with a Jacobi preconditioner converges far faster on a badly scaled system', () => {
    const n = 60;
    const base = spd(n, 10);
    const d = Float64Array.from({ length: n }, (_, i) => 10 ** (3 * i / (n - 1)));
    const a: Matrix = { rows: n, cols: n, data: base.data.map((v, k) => v * d[Math.floor(k / n)]! * d[k % n]!) };
    const b = randomVector(n);
    const exact = qrSolve(a, b);
    const diag = Float64Array.from({ length: n }, (_, i) => a.data[i * n + i]!);
    const iterations = 15;
    const plain = conjugateGradient(apply(a), b, new Float64Array(n), { iterations });
    const jacobi = conjugateGradient(apply(a), b, new Float64Array(n), { iterations, precondition: (r) => r.map((v, i) => v / diag[i]!) });
    expect(relDiff(jacobi, exact)).toBeLessThan(1e-4);
    expect(relDiff(plain, exact)).toBeGreaterThan(100 * relDiff(jacobi, exact));
  });

  it('starts from x0 without modifying it, and stops when the start already solves the system', () => {
    const n = 12;
    const a = spd(n, 10);
    const b = randomVector(n);
    const x0 = qrSolve(a, b);
    const copy = Float64Array.from(x0);
    let calls = 0;
    const op = (x: ArrayLike<number>): Float64Array => { calls++; return apply(a)(x); };
    const x = conjugateGradient(op, b, x0, { iterations: 50, tol: 1e-6 });
    expect(x0).toEqual(copy);
    expect(calls).toBe(1);
    expect(relDiff(x, x0)).toBe(0);
    // Zero iterations: the start itself (a copy).
    const y = conjugateGradient(apply(a), b, copy, { iterations: 0 });
    expect(y).not.toBe(copy);
    expect(y).toEqual(copy);
  });

  it('keeps the iterate when a direction has no positive curvature (a semidefinite operator)', () => {
    // op = diag(1, 0): rhs in the null space direction gives p·op(p) = 0 at once.
    const op = (x: ArrayLike<number>): Float64Array => Float64Array.of(x[0]!, 0);
    const x = conjugateGradient(op, Float64Array.of(0, 1), Float64Array.of(0, 0), { iterations: 5 });
    expect([...x]).toEqual([0, 0]);
    expect(dot(x, x)).toBe(0);
  });
});
