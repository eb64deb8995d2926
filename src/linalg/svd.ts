/**
 * Full (thin) SVD in fp64: Householder bidiagonalisation, then the SVD of the
 * bidiagonal (Golub–Kahan; Golub & Van Loan §8.6). Backward stable:
 * ‖A − U·diag(s)·Vᵀ‖ ≈ n·ε·‖A‖, which gives ~1e-13 relative reconstruction.
 *
 * Two regimes, switched at n ≈ 256 (the measured crossover):
 * - small: fused unblocked bidiagonalisation, U and V formed by compact-WY blocks,
 *   implicit-shift QR sweeps whose rotations are applied to U, V in batches;
 * - large: blocked bidiagonalisation (bidiag-blocked.ts), divide and conquer on the
 *   bidiagonal (bdsvd-dc.ts), and U = Q·U_B, V = P·V_B applied blockwise. Nearly all
 *   flops are then matrix products, so `svdAsync` can send them to a GemmEngine
 *   (ORT's fp64 MatMul is ~20× the JS kernel here); `svd` runs them in JS.
 * Very tall inputs are first reduced by Householder QR, so the rest only sees n×n.
 */
import { LrError } from '../errors.js';
import { mm, runAsync, runSync, type GemmEngine, type GemmProgram, type SyncGemm } from './engine.js';
import { asFloat64, assertFinite, transpose, type Matrix } from './matrix.js';
import { bidiagSvdDc } from './bdsvd-dc.js';
import { bidiagonalizeBlocked } from './bidiag-blocked.js';
import { accumulateLeftQ, applyBlockReflector, applyLeftQ, blockReflectorProgram, NB, NB_APPLY } from './householder.js';
import { householderQr, householderR } from './qr.js';
import { createSweepBatch, flushSweeps, recordSweep, sweepFits } from './rotation-batch.js';

export interface SvdResult {
  /** m×k, orthonormal columns (left singular vectors). */
  u: Matrix;
  /** k singular values, non-negative, descending. */
  s: Float64Array;
  /** k×n, orthonormal rows (right singular vectors, transposed). */
  vt: Matrix;
}

const EPS = 2 ** -52;
/** Deferred-rotation batch size: ~128 KB of (c, s) stays in L2 while rows of U, V pass through. */
const SWEEP_BATCH_ROTATIONS = 8192;
const SWEEP_BATCH_SWEEPS = 64;
/** From this size on, the bidiagonal SVD with vectors uses divide and conquer (bdsvd-dc.ts); measured crossover ~200–300. */
const DC_MIN = 256;
/** From this width on, bidiagonalisation is blocked (bidiag-blocked.ts); measured crossover ~200–300. */
const BLOCKED_MIN = 256;

/** Thin SVD A = U·diag(s)·Vᵀ with k = min(m, n). Throws LrError('numeric') on NaN/Inf. */
export function svd(a: Matrix, sync?: SyncGemm): SvdResult {
  assertFinite(a, 'svd input');
  return runSync(svdProgram(a), sync);
}

/**
 * svd() with its matrix products sent to `engine` (e.g. ORT's fp64 MatMul, many times
 * faster than the JS kernel on large inputs). Same algorithm and accuracy class.
 */
export async function svdAsync(a: Matrix, engine: GemmEngine): Promise<SvdResult> {
  assertFinite(a, 'svd input');
  return runAsync(svdProgram(a), engine);
}

/**
 * Left singular vectors of X (all of them, descending) from the SVD of its Gram X·Xᵀ: for
 * a wide X one product and a small SVD instead of a QR of the tall Xᵀ. Squaring the
 * condition number costs the trailing vectors' accuracy, so use it for leading ones.
 */
export function* leftVectorsByGram(x: Matrix): GemmProgram<Matrix> {
  const g = asFloat64(yield* mm(x, x, { transB: true }));
  return (yield* svdProgram(g)).u;
}

/** svd() as a gemm program (no finiteness check: callers check their input). */
export function* svdProgram(a: Matrix): GemmProgram<SvdResult> {
  if (a.rows < a.cols) {
    const t = yield* svdProgram(transpose(a));
    return { u: transpose(t.vt), s: t.s, vt: transpose(t.u) };
  }
  const m = a.rows;
  const n = a.cols;
  if (n === 0) return { u: { rows: m, cols: 0, data: new Float64Array(0) }, s: new Float64Array(0), vt: { rows: 0, cols: 0, data: new Float64Array(0) } };
  // Tall: A = Q·R, SVD of the small R, U = Q·U_R (LAPACK's crossover is about m ≥ 1.6 n).
  if (m >= 1.6 * n && n > 1) {
    const { q, r } = householderQr(a);
    const inner = yield* svdProgram(r);
    const u = yield* mm(q, inner.u);
    return { u: { rows: u.rows, cols: u.cols, data: Float64Array.from(u.data) }, s: inner.s, vt: inner.vt };
  }
  return (yield* squareishSvd(a, true)) as SvdResult;
}

/** Singular values only (descending): O(mn²) without the vector accumulation. */
export function singularValues(a: Matrix): Float64Array {
  assertFinite(a, 'singularValues input');
  const t = a.rows < a.cols ? transpose(a) : a;
  if (t.cols === 0) return new Float64Array(0);
  if (t.rows >= 1.6 * t.cols && t.cols > 1) return runSync(squareishSvd(householderR(t), false)).s;
  return runSync(squareishSvd(t, false)).s;
}

/** m ≥ n. With `vectors` false only s is meaningful. */
function* squareishSvd(a: Matrix, vectors: boolean): GemmProgram<SvdResult | { s: Float64Array }> {
  const m = a.rows;
  const n = a.cols;
  // Scale to unit max-abs so squares in the shift computation never over/underflow.
  let amax = 0;
  for (let i = 0; i < a.data.length; i++) amax = Math.max(amax, Math.abs(a.data[i]!));
  if (amax === 0) return zeroSvd(m, n, vectors);
  const w = new Float64Array(m * n);
  const inv = 1 / amax;
  for (let i = 0; i < w.length; i++) w[i] = a.data[i]! * inv;

  const d = new Float64Array(n);
  const e = new Float64Array(n); // e[i] couples d[i], d[i+1]; e[n-1] unused
  const tauQ = new Float64Array(n);
  const tauP = new Float64Array(n);
  if (n >= BLOCKED_MIN) yield* bidiagonalizeBlocked(w, m, n, d, e, tauQ, tauP);
  else bidiagonalize(w, m, n, d, e, tauQ, tauP);

  let u: Float64Array | null = null;
  let v: Float64Array | null = null;
  const dc = vectors && n >= DC_MIN;
  if (dc) {
    // Divide and conquer on B, then U = Q·U_B and V = P·V_B applied blockwise
    // (forming Q and P first would cost an extra 4/3·n³ each).
    const b = yield* bidiagSvdDc(d, e.subarray(0, n - 1), 0);
    u = new Float64Array(m * n);
    u.set(b.u);
    yield* applyLeftQ(w, n, m, n, tauQ, u, n);
    v = b.w;
    yield* applyRightP(w, n, tauP, v);
    d.set(b.s);
  } else if (vectors) {
    u = accumulateU(w, m, n, tauQ); // m×n
    v = accumulateV(w, n, tauP); // n×n
  }
  if (!dc) bidiagonalQr(d, e, n, u, m, v, n);

  // Make s non-negative (flip the matching column of V) and sort descending.
  for (let i = 0; i < n; i++) {
    if (d[i]! < 0) {
      d[i] = -d[i]!;
      if (v) for (let j = 0; j < n; j++) v[j * n + i] = -v[j * n + i]!;
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[y]! - d[x]!);
  const s = new Float64Array(n);
  order.forEach((src, dst) => (s[dst] = d[src]! * amax));
  if (!vectors) return { s };
  const uo = new Float64Array(m * n);
  const vt = new Float64Array(n * n);
  for (let i = 0; i < m; i++) {
    const ro = i * n;
    for (let dst = 0; dst < n; dst++) uo[ro + dst] = u![ro + order[dst]!]!;
  }
  order.forEach((src, dst) => {
    for (let j = 0; j < n; j++) vt[dst * n + j] = v![j * n + src]!;
  });
  return { u: { rows: m, cols: n, data: uo }, s, vt: { rows: n, cols: n, data: vt } };
}

function zeroSvd(m: number, n: number, vectors: boolean): SvdResult | { s: Float64Array } {
  const s = new Float64Array(n);
  if (!vectors) return { s };
  // Any orthonormal bases are valid singular vectors of the zero matrix: use identities.
  const u = new Float64Array(m * n);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    u[i * n + i] = 1;
    v[i * n + i] = 1;
  }
  return { u: { rows: m, cols: n, data: u }, s, vt: { rows: n, cols: n, data: v } };
}

/**
 * Householder reduction of w (m×n, m ≥ n) to upper bidiagonal form B = Qᵀ·A·P.
 * Left vectors stay in the columns below the diagonal, right vectors in the rows
 * right of the superdiagonal (implicit leading ones).
 *
 * One sweep over the trailing matrix per step instead of three: for each row the
 * left update, the right reflector's dot product and update, and the next step's
 * left dot products (vᵀ·W, from the not yet scaled next column) are fused, so the
 * row is read from memory once while it sits in L1.
 */
function bidiagonalize(
  w: Float64Array, m: number, n: number, d: Float64Array, e: Float64Array, tauQ: Float64Array, tauP: Float64Array,
): void {
  const tmp = new Float64Array(n); // τ·vᵀ·W[k:, k+1:] for the current left reflector
  let raw = new Float64Array(n); // Σ_{i>k} W[i,k]·W[i,j] (unscaled column k), from the previous sweep
  let next = new Float64Array(n);
  // Step 0 has no previous sweep: form its raw sums directly.
  for (let i = 1; i < m; i++) {
    const o = i * n;
    const c = w[o]!;
    if (c !== 0) for (let j = 1; j < n; j++) raw[j]! += c * w[o + j]!;
  }
  for (let k = 0; k < n; k++) {
    const kk = k * n + k;
    const alpha = w[kk]!;
    let ss = 0;
    for (let i = k + 1; i < m; i++) ss += w[i * n + k]! ** 2;
    let tau = 0;
    let sc = 0;
    if (ss === 0) {
      d[k] = alpha;
    } else {
      const beta = -Math.sign(alpha || 1) * Math.sqrt(alpha * alpha + ss);
      sc = 1 / (alpha - beta);
      for (let i = k + 1; i < m; i++) w[i * n + k]! *= sc;
      tau = (beta - alpha) / beta;
      d[k] = beta;
    }
    tauQ[k] = tau;
    w[kk] = d[k]!;
    // tmp = τ·(W[k, j] + sc·raw[j]); row k (v_k = 1) is updated right away.
    const ro = k * n;
    for (let j = k + 1; j < n; j++) {
      const t = tau * (w[ro + j]! + sc * raw[j]!);
      tmp[j] = t;
      w[ro + j]! -= t;
    }
    // Right reflector from row k, columns k+1.. (zeroing k+2..).
    let tauR = 0;
    if (k < n - 1) {
      const alphaR = w[ro + k + 1]!;
      let ssR = 0;
      for (let j = k + 2; j < n; j++) ssR += w[ro + j]! ** 2;
      if (ssR === 0) {
        e[k] = alphaR;
      } else {
        const betaR = -Math.sign(alphaR || 1) * Math.sqrt(alphaR * alphaR + ssR);
        const scR = 1 / (alphaR - betaR);
        for (let j = k + 2; j < n; j++) w[ro + j]! *= scR;
        tauR = (betaR - alphaR) / betaR;
        e[k] = betaR;
        w[ro + k + 1] = betaR;
      }
    }
    tauP[k] = tauR;
    // Fused sweep over rows below k.
    next.fill(0, k + 2, n);
    const c1 = k + 1;
    for (let i = k + 1; i < m; i++) {
      const o = i * n;
      const vi = w[o + k]!;
      let dot = 0;
      if (tauR !== 0) {
        // left update, and x·u with u = [1, w[k, k+2:]]
        let x = w[o + c1]! - vi * tmp[c1]!;
        w[o + c1] = x;
        dot = x;
        for (let j = k + 2; j < n; j++) {
          x = w[o + j]! - vi * tmp[j]!;
          w[o + j] = x;
          dot += x * w[ro + j]!;
        }
        dot *= tauR;
        w[o + c1]! -= dot;
        const lead = w[o + c1]!;
        if (i > k + 1) {
          for (let j = k + 2; j < n; j++) {
            const y = w[o + j]! - dot * w[ro + j]!;
            w[o + j] = y;
            next[j]! += lead * y;
          }
        } else {
          for (let j = k + 2; j < n; j++) w[o + j]! -= dot * w[ro + j]!;
        }
      } else {
        if (vi !== 0) for (let j = c1; j < n; j++) w[o + j]! -= vi * tmp[j]!;
        if (i > k + 1) {
          const lead = w[o + c1]!;
          if (lead !== 0) for (let j = k + 2; j < n; j++) next[j]! += lead * w[o + j]!;
        }
      }
    }
    const swap = raw;
    raw = next;
    next = swap;
  }
}

/** U = H_0 ⋯ H_{n-1}·[I; 0] (m×n): the left reflectors stored below the diagonal of w. */
function accumulateU(w: Float64Array, m: number, n: number, tauQ: Float64Array): Float64Array {
  return accumulateLeftQ(w, n, m, n, tauQ);
}

/** V = G_0 ⋯ G_{n-3} (n×n), G_k acting on indices k+1.., blocked like accumulateLeftQ. */
function accumulateV(w: Float64Array, n: number, tauP: Float64Array): Float64Array {
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  const count = Math.max(n - 2, 0); // G_0 … G_{n-3}; G_{n-2} is the identity
  for (let k0 = Math.floor((count - 1) / NB) * NB; k0 >= 0 && count > 0; k0 -= NB) {
    const nb = Math.min(NB, count - k0);
    const r0 = k0 + 1;
    applyBlockReflector(v, n, r0, r0, n - r0, n - r0, rightReflectorBlock(w, n, k0, nb), nb, tauP.subarray(k0, k0 + nb));
  }
  return v;
}

/** X ← G_0 ⋯ G_{n-3}·X (X n×n, in place): the right reflectors of bidiagonalize applied blockwise. */
function* applyRightP(w: Float64Array, n: number, tauP: Float64Array, x: Float64Array): GemmProgram<void> {
  const count = Math.max(n - 2, 0);
  for (let k0 = Math.floor((count - 1) / NB_APPLY) * NB_APPLY; k0 >= 0 && count > 0; k0 -= NB_APPLY) {
    const nb = Math.min(NB_APPLY, count - k0);
    const r0 = k0 + 1;
    yield* blockReflectorProgram(x, n, r0, 0, n - r0, n, rightReflectorBlock(w, n, k0, nb), nb, tauP.subarray(k0, k0 + nb));
  }
}

/**
 * Right reflectors G_k0 … G_k0+nb−1 of w as the columns of a dense (n−k0−1)×nb block
 * (rows from index k0+1): G_k has its explicit 1 at index k+1, then w[k, k+2:].
 */
function rightReflectorBlock(w: Float64Array, n: number, k0: number, nb: number): Float64Array {
  const r0 = k0 + 1;
  const vm = new Float64Array((n - r0) * nb);
  for (let j = 0; j < nb; j++) {
    const k = k0 + j;
    vm[(k + 1 - r0) * nb + j] = 1;
    for (let i = k + 2; i < n; i++) vm[(i - r0) * nb + j] = w[k * n + i]!;
  }
  return vm;
}

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
function bidiagonalQr(
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
