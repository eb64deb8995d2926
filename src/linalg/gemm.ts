/**
 * Pure-JS matrix product C = op(A)·op(B), accumulated in fp64.
 *
 * Blocked for cache (k- and j-panels) with a 4x4 register micro-kernel over packed
 * panels: plain JS cannot use SIMD, so the best it can do is keep 16 accumulators in
 * registers and stream packed, contiguous operands. Large products belong to an
 * ORT-backed engine (see ort-gemm.ts); this kernel is the exact, synchronous path.
 */
import { LrError } from '../errors.js';
import type { Matrix } from './matrix.js';

export interface GemmOptions {
  /** Use Aᵀ instead of A. */
  transA?: boolean;
  /** Use Bᵀ instead of B. */
  transB?: boolean;
}

const KC = 256; // depth of a packed panel (fits L1/L2 together with the C tile)
const NC = 512; // width of a packed B panel

/** Shape of op(A)·op(B) as [m, k, n]; throws LrError('numeric') on mismatch. */
export function gemmShape(a: Matrix, b: Matrix, opts: GemmOptions = {}): [number, number, number] {
  const m = opts.transA ? a.cols : a.rows;
  const k = opts.transA ? a.rows : a.cols;
  const kb = opts.transB ? b.cols : b.rows;
  const n = opts.transB ? b.rows : b.cols;
  if (k !== kb) {
    throw new LrError(
      'numeric',
      `gemm: inner dimensions differ (${opts.transA ? 'Aᵀ' : 'A'} ${m}x${k}, ${opts.transB ? 'Bᵀ' : 'B'} ${kb}x${n})`,
    );
  }
  return [m, k, n];
}

/** C = op(A)·op(B) as a new Float64 matrix. */
export function gemm(a: Matrix, b: Matrix, opts: GemmOptions = {}): Matrix {
  const [m, k, n] = gemmShape(a, b, opts);
  const c = new Float64Array(m * n);
  if (m === 0 || n === 0 || k === 0) return { rows: m, cols: n, data: c };
  const ad = a.data;
  const bd = b.data;
  // Element accessors are folded into packing, so the kernel only sees contiguous fp64 panels.
  const aRow = opts.transA ? 1 : a.cols; // stride between rows of op(A)
  const aCol = opts.transA ? a.cols : 1; // stride between columns of op(A)
  const bRow = opts.transB ? 1 : b.cols;
  const bCol = opts.transB ? b.cols : 1;

  const mr = Math.ceil(m / 4) * 4;
  const apack = new Float64Array(mr * KC);
  const bpack = new Float64Array(KC * (Math.ceil(Math.min(n, NC) / 4) * 4));

  for (let j0 = 0; j0 < n; j0 += NC) {
    const nc = Math.min(NC, n - j0);
    const ncr = Math.ceil(nc / 4) * 4;
    for (let p0 = 0; p0 < k; p0 += KC) {
      const kc = Math.min(KC, k - p0);
      // Pack B[p0:p0+kc, j0:j0+nc] as 4-wide column strips: strip s, row p → bpack[s*4*kc + p*4 + t].
      for (let s = 0; s < ncr; s += 4) {
        const base = s * kc;
        for (let p = 0; p < kc; p++) {
          const rowOff = (p0 + p) * bRow;
          for (let t = 0; t < 4; t++) {
            const j = s + t;
            bpack[base + p * 4 + t] = j < nc ? bd[rowOff + (j0 + j) * bCol]! : 0;
          }
        }
      }
      // Pack A[:, p0:p0+kc] as 4-tall row strips (m·kc copies against m·kc·nc flops).
      {
        for (let s = 0; s < mr; s += 4) {
          const base = s * kc;
          for (let t = 0; t < 4; t++) {
            const i = s + t;
            if (i < m) {
              const off = i * aRow + p0 * aCol;
              for (let p = 0; p < kc; p++) apack[base + p * 4 + t] = ad[off + p * aCol]!;
            } else {
              for (let p = 0; p < kc; p++) apack[base + p * 4 + t] = 0;
            }
          }
        }
      }
      for (let si = 0; si < mr; si += 4) {
        for (let sj = 0; sj < ncr; sj += 4) {
          kernel4x4(apack, si * kc, bpack, sj * kc, kc, c, si, j0 + sj, m, n);
        }
      }
    }
  }
  return { rows: m, cols: n, data: c };
}

/** C[i0:i0+4, j0:j0+4] += Apanel·Bpanel over depth kc, clipped to the m×n edge. */
function kernel4x4(
  ap: Float64Array, ao: number, bp: Float64Array, bo: number, kc: number,
  c: Float64Array, i0: number, j0: number, m: number, n: number,
): void {
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
  let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let p = 0; p < kc; p++) {
    const a = ao + p * 4;
    const b = bo + p * 4;
    const a0 = ap[a]!, a1 = ap[a + 1]!, a2 = ap[a + 2]!, a3 = ap[a + 3]!;
    const b0 = bp[b]!, b1 = bp[b + 1]!, b2 = bp[b + 2]!, b3 = bp[b + 3]!;
    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
  }
  if (i0 + 4 <= m && j0 + 4 <= n) {
    let o = i0 * n + j0;
    c[o] += c00; c[o + 1] += c01; c[o + 2] += c02; c[o + 3] += c03; o += n;
    c[o] += c10; c[o + 1] += c11; c[o + 2] += c12; c[o + 3] += c13; o += n;
    c[o] += c20; c[o + 1] += c21; c[o + 2] += c22; c[o + 3] += c23; o += n;
    c[o] += c30; c[o + 1] += c31; c[o + 2] += c32; c[o + 3] += c33;
    return;
  }
  const vals = [c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33];
  for (let t = 0; t < 4; t++) {
    const i = i0 + t;
    if (i >= m) break;
    for (let u = 0; u < 4; u++) {
      const j = j0 + u;
      if (j >= n) break;
      c[i * n + j] += vals[t * 4 + u]!;
    }
  }
}

/** Flop count of op(A)·op(B) (2mnk). */
export function gemmFlops(m: number, k: number, n: number): number {
  return 2 * m * n * k;
}
