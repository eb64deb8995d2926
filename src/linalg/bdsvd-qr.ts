/**
 * SVD of an upper bidiagonal by implicit Wilkinson-shifted QR sweeps (Golub–Kahan; Golub &
 * Van Loan §8.6), for svd.ts's small regime; large ones use divide and conquer (bdsvd-dc.ts).
 */
import { LrError } from '../errors.js';
import { createSweepBatch, flushSweeps, recordSweep, sweepFits } from './rotation-batch.js';

const EPS = 2 ** -52;
/** Deferred-rotation batch size: ~128 KB of (c, s) stays in L2 while rows of U, V pass through. */
const SWEEP_BATCH_ROTATIONS = 8192;
const SWEEP_BATCH_SWEEPS = 64;

/** Columns i, j of x (rows×cols): (xi, xj) ← (c·xi + s·xj, c·xj − s·xi). For the rare zero-shift chases. */
function rotateCols(x: Float64Array, rows: number, cols: number, i: number, j: number, c: number, s: number): void {
  for (let r = 0, o = 0; r < rows; r++, o += cols) {
    const a = x[o + i]!;
    const b = x[o + j]!;
    x[o + i] = c * a + s * b;
    x[o + j] = c * b - s * a;
  }
}

/**
 * Diagonalises the upper bidiagonal (d, e) in place by implicit Wilkinson-shifted QR
 * sweeps (Golub–Kahan step). Left rotations act on columns of U (mu×n), right
 * rotations on columns of V (nv×n); sweeps are recorded and applied in batches
 * (rotation-batch.ts).
 * Zero diagonal entries are handled by chasing the coupling entry out with
 * rotations, which splits the problem (GVL §8.6.2).
 */
export function bidiagonalQr(
  d: Float64Array, e: Float64Array, n: number, u: Float64Array | null, mu: number, v: Float64Array | null, nv: number,
): void {
  const cl = new Float64Array(n), sl = new Float64Array(n), cr = new Float64Array(n), sr = new Float64Array(n);
  // Sweeps wait in these batches until they fill (or a zero-shift chase needs U, V current).
  const cap = Math.max(n, Math.min(SWEEP_BATCH_ROTATIONS, SWEEP_BATCH_SWEEPS * n)); // small n: small buffers
  const bu = u ? createSweepBatch(cap, SWEEP_BATCH_SWEEPS) : null;
  const bv = v ? createSweepBatch(cap, SWEEP_BATCH_SWEEPS) : null;
  const flush = () => {
    if (bu) flushSweeps(bu, u!, mu, n);
    if (bv) flushSweeps(bv, v!, nv, n);
  };
  let anorm = 0;
  for (let i = 0; i < n; i++) anorm = Math.max(anorm, Math.abs(d[i]!) + (i < n - 1 ? Math.abs(e[i]!) : 0));
  const dTol = EPS * anorm;
  let h = n - 1;
  let sweeps = 0;
  const maxSweeps = 40 * n + 100;
  while (h > 0) {
    // Deflate negligible couplings of the active part.
    for (let i = 0; i < h; i++) {
      if (e[i] !== 0 && Math.abs(e[i]!) <= EPS * (Math.abs(d[i]!) + Math.abs(d[i + 1]!))) e[i] = 0;
    }
    if (e[h - 1] === 0) {
      h--;
      continue;
    }
    let l = h - 1;
    while (l > 0 && e[l - 1] !== 0) l--;
    if (++sweeps > maxSweeps) throw new LrError('numeric', 'svd: bidiagonal QR did not converge');

    // A (numerically) zero diagonal entry: rotate its coupling away so the block splits.
    let zeroAt = -1;
    for (let k = l; k <= h; k++) {
      if (Math.abs(d[k]!) <= dTol) {
        zeroAt = k;
        break;
      }
    }
    if (zeroAt >= 0) {
      flush();
      const k = zeroAt;
      d[k] = 0;
      if (k < h) {
        // Row k holds f at column j; annihilate it against row j, moving it right.
        let f = e[k]!;
        e[k] = 0;
        for (let j = k + 1; j <= h && f !== 0; j++) {
          const r = Math.sqrt(d[j]! * d[j]! + f * f);
          const c = d[j]! / r;
          const s = f / r;
          d[j] = r;
          if (j < h) {
            f = -s * e[j]!;
            e[j] = c * e[j]!;
          }
          if (u) rotateCols(u, mu, n, j, k, c, s);
        }
      } else {
        // Column h holds f at row j; annihilate it against column j, moving it up.
        let f = e[h - 1]!;
        e[h - 1] = 0;
        for (let j = h - 1; j >= l && f !== 0; j--) {
          const r = Math.sqrt(d[j]! * d[j]! + f * f);
          const c = d[j]! / r;
          const s = f / r;
          d[j] = r;
          if (j > l) {
            f = -s * e[j - 1]!;
            e[j - 1] = c * e[j - 1]!;
          }
          if (v) rotateCols(v, nv, n, j, h, c, s);
        }
      }
      continue;
    }

    // Wilkinson shift: eigenvalue of the trailing 2×2 of BᵀB closest to its last entry.
    const dh1 = d[h - 1]!;
    const eh1 = e[h - 1]!;
    const dh = d[h]!;
    const eh2 = h - 1 > l ? e[h - 2]! : 0;
    const ta = dh1 * dh1 + eh2 * eh2;
    const tb = dh1 * eh1;
    const tc = dh * dh + eh1 * eh1;
    const delta = (ta - tc) / 2;
    const denom = delta + (delta >= 0 ? 1 : -1) * Math.sqrt(delta * delta + tb * tb);
    const shift = denom === 0 ? tc : tc - (tb * tb) / denom;

    let y = d[l]! * d[l]! - shift;
    let z = d[l]! * e[l]!;
    for (let k = l; k < h; k++) {
      // Right rotation on columns k, k+1 zeroes z against y.
      let r = Math.sqrt(y * y + z * z);
      let c = r === 0 ? 1 : y / r;
      let s = r === 0 ? 0 : z / r;
      if (k > l) e[k - 1] = r;
      const dk = d[k]!;
      const ek = e[k]!;
      d[k] = c * dk + s * ek;
      e[k] = c * ek - s * dk;
      const bulge = s * d[k + 1]!;
      d[k + 1] = c * d[k + 1]!;
      cr[k] = c;
      sr[k] = s;
      // Left rotation on rows k, k+1 zeroes the bulge below the diagonal.
      y = d[k]!;
      z = bulge;
      r = Math.sqrt(y * y + z * z);
      c = r === 0 ? 1 : y / r;
      s = r === 0 ? 0 : z / r;
      d[k] = r;
      const ek2 = e[k]!;
      const dk1 = d[k + 1]!;
      e[k] = c * ek2 + s * dk1;
      d[k + 1] = c * dk1 - s * ek2;
      if (k < h - 1) {
        y = e[k]!;
        z = s * e[k + 1]!;
        e[k + 1] = c * e[k + 1]!;
      }
      cl[k] = c;
      sl[k] = s;
    }
    if ((bu && !sweepFits(bu, l, h)) || (bv && !sweepFits(bv, l, h))) flush();
    if (bu) recordSweep(bu, l, h, cl, sl);
    if (bv) recordSweep(bv, l, h, cr, sr);
  }
  flush();
}
