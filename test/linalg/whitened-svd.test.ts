import { describe, expect, it } from 'vitest';
import { isRank, notARank } from '../../src/linalg/checks.js';
import { gemm } from '../../src/linalg/gemm.js';
import type { Matrix } from '../../src/linalg/matrix.js';
import { eigSym } from '../../src/linalg/eig-sym.js';
import { svd } from '../../src/linalg/svd.js';
import { truncate, truncatedSvdSync } from '../../src/linalg/rsvd.js';
import {
  damped, exactTruncation, pairFromSvd, whitenedFactorsAt, whitenedMatrix, whitenedPairErrors, whitenedSvdFactors, whitenedSvdWork,
} from '../../src/linalg/whitened-svd.js';
import { SvdCache, svdPairFactors } from '../../src/rewrite/svd-pair.js';
import { createRng } from '../../src/util/rng.js';

const rng = createRng(7);
const randn = (rows: number, cols: number): Matrix => ({ rows, cols, data: Float64Array.from({ length: rows * cols }, () => rng.normal()) });
const frob = (m: Matrix): number => Math.sqrt(Array.from(m.data).reduce((a, v) => a + v * v, 0));
const pair = (left: Float32Array, right: Float32Array, m: number, r: number, n: number): Matrix =>
  gemm({ rows: m, cols: r, data: Float64Array.from(left) }, { rows: r, cols: n, data: Float64Array.from(right) });
const minus = (a: Matrix, b: Matrix): Matrix => ({ rows: a.rows, cols: a.cols, data: a.data.map((v, i) => v - b.data[i]!) });

describe('whitened SVD pair (linalg, shared by svd-pair.ts and tucker2-conv.ts)', () => {
  const m = 12;
  const n = 9;
  const r = 3;
  const w = randn(m, n);
  const xRows = randn(60, m);
  const gramRows = gemm(xRows, xRows, { transA: true }).data as Float64Array;
  const xHat = { rows: 60, cols: m, data: xRows.data.map((v) => v + 0.1 * rng.normal()) };
  const cross = gemm(xHat, xRows, { transA: true }).data as Float64Array;
  const gramHat = gemm(xHat, xHat, { transA: true }).data as Float64Array;

  it('gives the same bytes as the SVD-pair rewrite for rows-side whitening, plain and anchored', () => {
    for (const wh of [{ gram: gramRows, damp: 0.03 }, { gram: gramHat, cross, damp: 0.1 }]) {
      const direct = whitenedSvdFactors(w, wh, r);
      const viaPass = svdPairFactors(new SvdCache(w, 0, { side: 'rows', ...wh }), r);
      expect(Buffer.from(direct.left.buffer)).toEqual(Buffer.from(viaPass.left.buffer));
      expect(Buffer.from(direct.right.buffer)).toEqual(Buffer.from(viaPass.right.buffer));
    }
  });

  it('minimises the output error: rows side ‖X(W − LR)‖ and columns side ‖(W − LR)X‖ reach the tail of the whitened spectrum', () => {
    // Rows side: Y = X·W.
    const rows = whitenedMatrix(w, { side: 'rows', gram: gramRows });
    const fr = svd(rows.a);
    const pr = pairFromSvd(fr, r, m, n, 'rows', rows.lx);
    const tail = (s: Float64Array): number => Math.sqrt(s.slice(r).reduce((a, v) => a + v * v, 0));
    const errRows = frob(gemm(xRows, minus(w, pair(pr.left, pr.right, m, r, n))));
    expect(errRows).toBeCloseTo(tail(fr.s), 3);
    // Columns side: Y = W·X with X [n, samples].
    const xCols = randn(n, 40);
    const gramCols = gemm(xCols, xCols, { transB: true }).data as Float64Array;
    const cols = whitenedMatrix(w, { side: 'cols', gram: gramCols });
    const fc = svd(cols.a);
    const pc = pairFromSvd(fc, r, m, n, 'cols', cols.lx);
    const errCols = frob(gemm(minus(w, pair(pc.left, pc.right, m, r, n)), xCols));
    expect(errCols).toBeCloseTo(tail(fc.s), 3);
    // The reported data error is that tail relative to the whitened weight's energy.
    const e = whitenedPairErrors(w, { side: 'cols', gram: gramCols }, cols.a, fc, pc.left, pc.right, r);
    expect(e.dataError).toBeCloseTo(tail(fc.s) / frob(gemm(w, xCols)), 4);
  });

  it('damps the Gram matrix by λ·mean(diag G) and leaves it alone at λ = 0', () => {
    const g = Float64Array.from([4, 1, 1, 2]);
    expect(damped(g, 2, 0)).toBe(g);
    expect(Array.from(damped(g, 2, 0.5))).toEqual([4 + 1.5, 1, 1, 2 + 1.5]);
    expect(Array.from(g)).toEqual([4, 1, 1, 2]);
  });

  it('one whitening for several ranks: each rank gets whitenedSvdFactors\' bytes, the exact SVD taken once', () => {
    // 80 rows: ranks 30 and up take the exact SVD (80 ≤ 2·(k + 10)), smaller ones the randomized one.
    const wide = randn(80, 150);
    const x = randn(200, 80);
    const wh = { gram: gemm(x, x, { transA: true }).data as Float64Array, damp: 0.03 };
    const work = whitenedSvdWork(wide, wh);
    let full;
    for (const r of [5, 29, 30, 45, 80, 12, 30]) {
      const got = whitenedFactorsAt(work, r);
      const want = whitenedSvdFactors(wide, wh, r);
      expect(Buffer.from(got.left.buffer)).toEqual(Buffer.from(want.left.buffer));
      expect(Buffer.from(got.right.buffer)).toEqual(Buffer.from(want.right.buffer));
      expect(work.full !== undefined).toBe(r >= 30 || full !== undefined);
      full ??= work.full;
      if (full) expect(work.full).toBe(full); // kept, not taken again
    }
  });

  it('knows which ranks truncatedSvdSync takes exactly (its bytes are a truncation of the full SVD) and which it randomizes', () => {
    for (const [m, n] of [[80, 150], [150, 80], [64, 300], [40, 20]] as const) {
      const a = randn(m, n);
      const full = svd(a);
      for (const k of [1, 10, 29, 30, 31, Math.min(m, n)]) {
        if (k > Math.min(m, n)) continue;
        const t = truncatedSvdSync(a, k, { seed: 0 });
        const exact = truncate(full, k);
        const same = Buffer.from(new Float64Array(t.u.data).buffer).equals(Buffer.from(new Float64Array(exact.u.data).buffer))
          && Buffer.from(t.s.buffer).equals(Buffer.from(exact.s.buffer));
        expect(same, `${m}x${n} at rank ${k}`).toBe(exactTruncation(m, n, k));
      }
    }
  });

  it('has one rank check: positive integers only', () => {
    expect([1, 7].map(isRank)).toEqual([true, true]);
    expect([0, -1, 2.5, Number.NaN, Infinity].map(isRank)).toEqual([false, false, false, false, false]);
    expect(notARank(0)).toBe('rank 0 is not a positive integer');
  });
});

describe('output weights (--output-aware): the weighted objective Σᵢ sᵢ²‖yᵢ − ŷᵢ‖²', () => {
  const r = 3;
  const scale = Float64Array.from({ length: 8 }, (_, i) => (i < 3 ? 5 : 0.2) * (1 + 0.1 * i));
  const gramOf = (k: number): Float64Array => {
    const x = randn(40, k);
    return gemm(x, x, { transA: true }).data as Float64Array;
  };
  /** tr(S·E·G·Eᵀ·S) with E [outputs, inputs] = W − Ŵ in the y = W·x orientation. */
  const weighted = (e: Matrix, g: Float64Array, s?: Float64Array): number => {
    const eg = gemm(e, { rows: e.cols, cols: e.cols, data: g });
    let t = 0;
    for (let i = 0; i < e.rows; i++) for (let j = 0; j < e.cols; j++) t += (s ? s[i]! ** 2 : 1) * eg.data[i * e.cols + j]! * e.data[i * e.cols + j]!;
    return t;
  };
  const transposed = (a: Matrix): Matrix => ({ rows: a.cols, cols: a.rows, data: Float64Array.from({ length: a.data.length }, (_, k) => a.data[(k % a.rows) * a.cols + Math.floor(k / a.rows)]!) });

  for (const side of ['cols', 'rows'] as const) {
    it(`${side} side: reaches the Eckart–Young bound of S·W·G·Wᵀ·S (its eigenvalues, another route) and beats the unweighted fit on it`, () => {
      // y = W·x with W [8 outputs, 6 inputs]; on the rows side the stored weight is Wᵀ [6, 8] (Y = X·Wᵀ).
      const wy = randn(8, 6);
      const g = gramOf(6);
      const stored = side === 'cols' ? wy : transposed(wy);
      const fit = (s?: Float64Array): Matrix => {
        const t = whitenedMatrix(stored, { side, gram: g, ...(s && { outputScale: s }) });
        const f = truncatedSvdSync(t.a, r, { seed: 0 });
        const p = pairFromSvd(f, r, stored.rows, stored.cols, side, t.lx, t.outputScale);
        const ws = pair(p.left, p.right, stored.rows, r, stored.cols);
        return side === 'cols' ? ws : transposed(ws);
      };
      const wWeighted = fit(scale);
      const wPlain = fit();
      // S·W·G·Wᵀ·S: its eigenvalues beyond r are the least weighted error any rank-r Ŵ can have.
      const swg = gemm(gemm(wy, { rows: 6, cols: 6, data: g }), wy, { transB: true });
      const m = { rows: 8, cols: 8, data: swg.data.map((v, k) => v * scale[Math.floor(k / 8)]! * scale[k % 8]!) };
      const bound = Array.from(eigSym(m).values).slice(r).reduce((a, v) => a + Math.max(0, v), 0);
      const got = weighted(minus(wy, wWeighted), g, scale);
      expect(Math.abs(got - bound) / bound).toBeLessThan(1e-5);
      expect(weighted(minus(wy, wPlain), g, scale)).toBeGreaterThan(1.5 * got);
      // The reported data error is the plain one, from the factors: ‖(W − Ŵ)·x‖ / ‖W·x‖.
      const t = whitenedMatrix(stored, { side, gram: g, outputScale: scale });
      const f = truncatedSvdSync(t.a, r, { seed: 0 });
      const p = pairFromSvd(f, r, stored.rows, stored.cols, side, t.lx, t.outputScale);
      const { dataError } = whitenedPairErrors(stored, { side, gram: g, outputScale: scale }, t.a, f, p.left, p.right, r);
      expect(dataError).toBeCloseTo(Math.sqrt(weighted(minus(wy, wWeighted), g) / weighted(wy, g)), 6);
    });
  }

  it('refuses weights of the wrong length', () => {
    expect(() => whitenedMatrix(randn(8, 6), { side: 'cols', gram: gramOf(6), outputScale: new Float64Array(6) })).toThrow(/output weights have 6 entries, expected 8/);
  });
});
