/**
 * Full (thin) SVD in fp64: Householder bidiagonalisation, then the SVD of the
 * bidiagonal (Golub–Kahan; Golub & Van Loan §8.6). Backward stable:
 * ‖A − U·diag(s)·Vᵀ‖ ≈ n·ε·‖A‖, which gives ~1e-13 relative reconstruction.
 *
 * Two regimes, switched at n ≈ 256 (the measured crossover):
 * - small: fused unblocked bidiagonalisation, U and V formed by compact-WY blocks
 *   (bidiag.ts), implicit-shift QR sweeps whose rotations are applied to U, V in batches
 *   (bdsvd-qr.ts);
 * - large: blocked bidiagonalisation (bidiag-blocked.ts), divide and conquer on the
 *   bidiagonal (bdsvd-dc.ts), and U = Q·U_B, V = P·V_B applied blockwise. Nearly all
 *   flops are then matrix products, so `svdAsync` can send them to a GemmEngine
 *   (ORT's fp64 MatMul is ~20× the JS kernel here); `svd` runs them in JS.
 * Very tall inputs are first reduced by Householder QR, so the rest only sees n×n.
 */
import { mm, runAsync, runSync, type GemmEngine, type GemmProgram, type SyncGemm } from './engine.js';
import { asFloat64, assertFinite, transpose, type Matrix } from './matrix.js';
import { bidiagSvdDc } from './bdsvd-dc.js';
import { bidiagonalQr } from './bdsvd-qr.js';
import { accumulateU, accumulateV, applyRightP, bidiagonalize } from './bidiag.js';
import { bidiagonalizeBlocked } from './bidiag-blocked.js';
import { applyLeftQ } from './householder.js';
import { choleskyQr2, householderR } from './qr.js';

export interface SvdResult {
  /** m×k, orthonormal columns (left singular vectors). */
  u: Matrix;
  /** k singular values, non-negative, descending. */
  s: Float64Array;
  /** k×n, orthonormal rows (right singular vectors, transposed). */
  vt: Matrix;
}

/** From this size on, the bidiagonal SVD with vectors uses divide and conquer (bdsvd-dc.ts); measured crossover ~200–300. */
const DC_MIN = 256;
/** From this width on, bidiagonalisation is blocked (bidiag-blocked.ts); measured crossover ~200–300. */
const BLOCKED_MIN = 256;

/**
 * About how many flops svd() spends on an m×n matrix: the thin R-SVD count of Golub & Van
 * Loan (4·m·n² + 22·n³, n the smaller side). What callers budget fits by, not a timing.
 */
export function svdFlops(m: number, n: number): number {
  const a = Math.max(m, n);
  const b = Math.min(m, n);
  return 4 * a * b * b + 22 * b * b * b;
}

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
  // Q by CholeskyQR2 (its shifted and Householder fallbacks cover ill-conditioned and
  // rank-deficient A) and R = Qᵀ·A: products on the engine instead of a Householder QR
  // in JS, which cost two thirds of a 4608×512 SVD. R need not be triangular.
  if (m >= 1.6 * n && n > 1) {
    const q = yield* choleskyQr2(a);
    const r = asFloat64(yield* mm(q, a, { transA: true }));
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

/**
 * Singular values (descending) from the eigenvalues of the small Gram matrix: one
 * product and an n×n problem instead of a Householder QR of the tall side (about 5x
 * faster at 512×4608 in JS). Squaring loses the trailing values' relative accuracy
 * (absolute error about ε·σ₁²), so use it where only energies σ² count, as rank
 * choices by energy do.
 */
export function singularValuesByGram(a: Matrix, gemm?: SyncGemm): Float64Array {
  assertFinite(a, 'singularValuesByGram input');
  const small = Math.min(a.rows, a.cols);
  if (small === 0) return new Float64Array(0);
  const g = asFloat64(runSync(mm(a, a, a.rows <= a.cols ? { transB: true } : { transA: true }), gemm));
  return runSync(squareishSvd(g, false)).s.map((x) => Math.sqrt(Math.max(x, 0)));
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
