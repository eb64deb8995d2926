/**
 * Deferred application of Givens-rotation sweeps to the columns of a row-major matrix.
 *
 * A bidiagonal QR sweep produces rotations on adjacent columns (k, k+1), k = l..h-1,
 * which depend only on the bidiagonal, never on U or V. So many sweeps can be recorded
 * first and then applied together, row by row: each row of U (8 KB at n = 1024) stays
 * in L1 while all recorded sweeps pass over it, instead of streaming the whole matrix
 * through memory once per sweep. Row-wise application in recording order gives exactly
 * the same result as applying the sweeps one after another.
 */

export interface SweepBatch {
  /** Rotations of all recorded sweeps, concatenated. */
  readonly c: Float64Array;
  readonly s: Float64Array;
  /** Per recorded sweep: first column l, last column h, offset into c/s. */
  readonly lo: Int32Array;
  readonly hi: Int32Array;
  readonly off: Int32Array;
  count: number;
  used: number;
}

/** Room for `maxRotations` rotations (the longest sweep must fit) in at most `maxSweeps` sweeps. */
export function createSweepBatch(maxRotations: number, maxSweeps: number): SweepBatch {
  return {
    c: new Float64Array(maxRotations),
    s: new Float64Array(maxRotations),
    lo: new Int32Array(maxSweeps),
    hi: new Int32Array(maxSweeps),
    off: new Int32Array(maxSweeps),
    count: 0,
    used: 0,
  };
}

/** Whether a sweep over columns l..h still fits without flushing. */
export function sweepFits(b: SweepBatch, l: number, h: number): boolean {
  return b.count < b.lo.length && b.used + (h - l) <= b.c.length;
}

/** Records a sweep whose rotation k (columns k, k+1) is (c[k], s[k]), k = l..h-1. Caller checks sweepFits. */
export function recordSweep(b: SweepBatch, l: number, h: number, c: Float64Array, s: Float64Array): void {
  const o = b.used;
  for (let k = l; k < h; k++) {
    b.c[o + k - l] = c[k]!;
    b.s[o + k - l] = s[k]!;
  }
  b.lo[b.count] = l;
  b.hi[b.count] = h;
  b.off[b.count] = o;
  b.count++;
  b.used += h - l;
}

/**
 * Applies every recorded sweep, in order, to each row of x (rows×cols), then empties
 * the batch. Per sweep, (x_k, x_{k+1}) ← (c·x_k + s·x_{k+1}, c·x_{k+1} − s·x_k).
 */
export function flushSweeps(b: SweepBatch, x: Float64Array, rows: number, cols: number): void {
  const { c, s, lo, hi, off, count } = b;
  b.count = 0;
  b.used = 0;
  if (count === 0) return;
  // Four rows at a time: the carried value is a serial dependency chain, so
  // independent rows are interleaved to keep the FPU busy.
  let r = 0;
  for (; r + 4 <= rows; r += 4) {
    const o0 = r * cols, o1 = o0 + cols, o2 = o1 + cols, o3 = o2 + cols;
    for (let q = 0; q < count; q++) {
      const l = lo[q]!, h = hi[q]!, d = off[q]! - l;
      let x0 = x[o0 + l]!, x1 = x[o1 + l]!, x2 = x[o2 + l]!, x3 = x[o3 + l]!;
      for (let k = l; k < h; k++) {
        const ck = c[d + k]!, sk = s[d + k]!;
        const k1 = k + 1;
        const n0 = x[o0 + k1]!, n1 = x[o1 + k1]!, n2 = x[o2 + k1]!, n3 = x[o3 + k1]!;
        x[o0 + k] = ck * x0 + sk * n0;
        x[o1 + k] = ck * x1 + sk * n1;
        x[o2 + k] = ck * x2 + sk * n2;
        x[o3 + k] = ck * x3 + sk * n3;
        x0 = ck * n0 - sk * x0;
        x1 = ck * n1 - sk * x1;
        x2 = ck * n2 - sk * x2;
        x3 = ck * n3 - sk * x3;
      }
      x[o0 + h] = x0; x[o1 + h] = x1; x[o2 + h] = x2; x[o3 + h] = x3;
    }
  }
  for (; r < rows; r++) {
    const o = r * cols;
    for (let q = 0; q < count; q++) {
      const l = lo[q]!, h = hi[q]!, d = off[q]! - l;
      let carry = x[o + l]!;
      for (let k = l; k < h; k++) {
        const next = x[o + k + 1]!;
        x[o + k] = c[d + k]! * carry + s[d + k]! * next;
        carry = c[d + k]! * next - s[d + k]! * carry;
      }
      x[o + h] = carry;
    }
  }
}
