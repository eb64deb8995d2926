/**
 * Dense row-major matrices: the one data type the numerical core works on.
 * Element (i, j) lives at data[i * cols + j]. Float32 input is accepted everywhere;
 * results computed in JS are Float64 unless a function says otherwise.
 */
import { LrError } from '../errors.js';

export type FloatArray = Float64Array | Float32Array;

export interface Matrix {
  rows: number;
  cols: number;
  data: FloatArray;
}

/** A zero matrix (Float64 unless `f32` is set). */
export function zeros(rows: number, cols: number, f32 = false): Matrix {
  checkDims(rows, cols);
  return { rows, cols, data: f32 ? new Float32Array(rows * cols) : new Float64Array(rows * cols) };
}

export function identity(n: number): Matrix {
  const m = zeros(n, n);
  for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
  return m;
}

/** Wraps existing data without copying; throws if the length does not match. */
export function fromArray(rows: number, cols: number, data: FloatArray): Matrix {
  checkDims(rows, cols);
  if (data.length !== rows * cols) {
    throw new LrError('numeric', `matrix data has ${data.length} elements, expected ${rows}x${cols}=${rows * cols}`);
  }
  return { rows, cols, data };
}

export function fromRows(rows: readonly (readonly number[])[]): Matrix {
  const r = rows.length;
  const c = r === 0 ? 0 : rows[0]!.length;
  const m = zeros(r, c);
  rows.forEach((row, i) => {
    if (row.length !== c) throw new LrError('numeric', `fromRows: row ${i} has ${row.length} entries, expected ${c}`);
    m.data.set(row, i * c);
  });
  return m;
}

export function toRows(m: Matrix): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < m.rows; i++) out.push(Array.from(m.data.subarray(i * m.cols, (i + 1) * m.cols)));
  return out;
}

export function get(m: Matrix, i: number, j: number): number {
  return m.data[i * m.cols + j]!;
}

export function clone(m: Matrix): Matrix {
  return { rows: m.rows, cols: m.cols, data: m.data.slice() };
}

/** Float64 copy (always a copy, so callers may overwrite it). */
export function toFloat64(m: Matrix): Matrix {
  return { rows: m.rows, cols: m.cols, data: Float64Array.from(m.data) };
}

/** Float32 view of the same numbers: no copy when already Float32. */
export function asFloat32(m: Matrix): Matrix {
  return m.data instanceof Float32Array ? m : { rows: m.rows, cols: m.cols, data: Float32Array.from(m.data) };
}

/** Float64 view: no copy when already Float64. */
export function asFloat64(m: Matrix): Matrix {
  return m.data instanceof Float64Array ? m : toFloat64(m);
}

/**
 * Cache-blocked transpose (a naive loop thrashes the cache for large matrices,
 * which would make transposes, not products, the bottleneck). Keeps the dtype.
 */
export function transpose(m: Matrix): Matrix {
  const { rows, cols } = m;
  const src = m.data;
  const dst = src instanceof Float32Array ? new Float32Array(rows * cols) : new Float64Array(rows * cols);
  const B = 32;
  for (let i0 = 0; i0 < rows; i0 += B) {
    const i1 = Math.min(i0 + B, rows);
    for (let j0 = 0; j0 < cols; j0 += B) {
      const j1 = Math.min(j0 + B, cols);
      for (let i = i0; i < i1; i++) {
        const ro = i * cols;
        for (let j = j0; j < j1; j++) dst[j * rows + i] = src[ro + j]!;
      }
    }
  }
  return { rows: cols, cols: rows, data: dst };
}

export function frobeniusNorm(m: Matrix | FloatArray): number {
  const d = 'data' in m ? m.data : m;
  // Scaled sum of squares: avoids overflow/underflow for extreme magnitudes.
  let scale = 0;
  let ssq = 1;
  for (let i = 0; i < d.length; i++) {
    const v = d[i]!;
    if (v !== 0) {
      const a = Math.abs(v);
      if (scale < a) {
        ssq = 1 + ssq * (scale / a) * (scale / a);
        scale = a;
      } else {
        ssq += (a / scale) * (a / scale);
      }
    }
  }
  return scale * Math.sqrt(ssq);
}

/** ‖a − b‖_F (shapes must agree). */
export function diffNorm(a: Matrix, b: Matrix): number {
  checkSameShape(a, b, 'diffNorm');
  const d = new Float64Array(a.data.length);
  for (let i = 0; i < d.length; i++) d[i] = a.data[i]! - b.data[i]!;
  return frobeniusNorm(d);
}

/** ‖w − approx‖ / ‖w‖ over flat arrays of one length (0 for a zero w). */
export function relativeDiff(w: ArrayLike<number>, approx: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < w.length; i++) {
    const d = w[i]! - approx[i]!;
    num += d * d;
    den += w[i]! * w[i]!;
  }
  return den === 0 ? 0 : Math.sqrt(num / den);
}

export function sub(a: Matrix, b: Matrix): Matrix {
  checkSameShape(a, b, 'sub');
  const d = new Float64Array(a.data.length);
  for (let i = 0; i < d.length; i++) d[i] = a.data[i]! - b.data[i]!;
  return { rows: a.rows, cols: a.cols, data: d };
}

export function scale(a: Matrix, s: number): Matrix {
  const d = new Float64Array(a.data.length);
  for (let i = 0; i < d.length; i++) d[i] = a.data[i]! * s;
  return { rows: a.rows, cols: a.cols, data: d };
}

/** Columns [c0, c1) as a new Float64 matrix. */
export function sliceCols(m: Matrix, c0: number, c1: number): Matrix {
  const w = c1 - c0;
  const out = new Float64Array(m.rows * w);
  for (let i = 0; i < m.rows; i++) {
    const ro = i * m.cols + c0;
    for (let j = 0; j < w; j++) out[i * w + j] = m.data[ro + j]!;
  }
  return { rows: m.rows, cols: w, data: out };
}

/** Rows [r0, r1) as a new matrix of the same dtype. */
export function sliceRows(m: Matrix, r0: number, r1: number): Matrix {
  return { rows: r1 - r0, cols: m.cols, data: m.data.slice(r0 * m.cols, r1 * m.cols) };
}

/** Multiplies column j by s[j] (returns a new Float64 matrix). */
export function scaleCols(m: Matrix, s: ArrayLike<number>): Matrix {
  const out = new Float64Array(m.data.length);
  for (let i = 0; i < m.rows; i++) {
    const ro = i * m.cols;
    for (let j = 0; j < m.cols; j++) out[ro + j] = m.data[ro + j]! * s[j]!;
  }
  return { rows: m.rows, cols: m.cols, data: out };
}

/** Multiplies row i by s[i] (returns a new Float64 matrix). */
export function scaleRows(m: Matrix, s: ArrayLike<number>): Matrix {
  const out = new Float64Array(m.data.length);
  for (let i = 0; i < m.rows; i++) {
    const ro = i * m.cols;
    const f = s[i]!;
    for (let j = 0; j < m.cols; j++) out[ro + j] = m.data[ro + j]! * f;
  }
  return { rows: m.rows, cols: m.cols, data: out };
}

/** Matrix of i.i.d. standard normals drawn from `normal` in row-major order. */
export function randomNormal(rows: number, cols: number, normal: () => number, f32 = false): Matrix {
  const m = zeros(rows, cols, f32);
  for (let i = 0; i < m.data.length; i++) m.data[i] = normal();
  return m;
}

/** True when every entry is finite (no NaN, no ±Inf). */
export function allFinite(m: Matrix | FloatArray): boolean {
  const d = 'data' in m ? m.data : m;
  // v·0 is 0 for finite v and NaN for NaN/±Inf, so the sums stay 0 unless something is
  // non-finite (a plain sum could overflow on large finite values). Four independent
  // sums keep the loop from waiting on one add chain.
  let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  const n4 = d.length - (d.length % 4);
  for (let i = 0; i < n4; i += 4) {
    a0 += d[i]! * 0;
    a1 += d[i + 1]! * 0;
    a2 += d[i + 2]! * 0;
    a3 += d[i + 3]! * 0;
  }
  for (let i = n4; i < d.length; i++) a0 += d[i]! * 0;
  return a0 + a1 + a2 + a3 === 0;
}

/** Throws LrError('numeric') naming the first non-finite entry: NaN never flows silently. */
export function assertFinite(m: Matrix | FloatArray, what = 'matrix'): void {
  if (allFinite(m)) return;
  const d = 'data' in m ? m.data : m;
  for (let i = 0; i < d.length; i++) {
    const v = d[i]!;
    if (!Number.isFinite(v)) {
      const where = 'data' in m ? ` at (${Math.floor(i / m.cols)}, ${i % m.cols})` : ` at index ${i}`;
      throw new LrError('numeric', `${what} contains a non-finite value (${v})${where}`);
    }
  }
}

export function checkDims(rows: number, cols: number): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new LrError('numeric', `invalid matrix shape ${rows}x${cols}`);
  }
}

export function checkSameShape(a: Matrix, b: Matrix, what: string): void {
  if (a.rows !== b.rows || a.cols !== b.cols) {
    throw new LrError('numeric', `${what}: shape mismatch ${a.rows}x${a.cols} vs ${b.rows}x${b.cols}`);
  }
}

/** max |QᵀQ − I| over entries: how far the columns of q are from orthonormal. */
export function orthonormalityError(q: Matrix): number {
  const { rows, cols, data } = q;
  let worst = 0;
  for (let a = 0; a < cols; a++) {
    for (let b = a; b < cols; b++) {
      let s = 0;
      for (let i = 0; i < rows; i++) s += data[i * cols + a]! * data[i * cols + b]!;
      worst = Math.max(worst, Math.abs(s - (a === b ? 1 : 0)));
    }
  }
  return worst;
}
