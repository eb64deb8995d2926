/**
 * Orthonormal bases: Householder QR (always stable, any rank) and CholeskyQR2, which
 * does almost all its work in two Gram products, so it runs at GEMM speed on an
 * engine (Yamamoto et al. 2015; shifted variant: Fukaya et al. 2020). CholeskyQR2 is
 * the fast path for tall-skinny blocks in randomized SVD; it falls back to Householder
 * when the block is numerically rank-deficient.
 */
import { LrError } from '../errors.js';
import { cholesky } from './cholesky.js';
import { accumulateLeftQ } from './householder.js';
import { mm, runSync, type GemmProgram } from './engine.js';
import { asFloat32, asFloat64, type Matrix } from './matrix.js';
import { invertUpper } from './triangular.js';

export interface QrResult {
  /** m×k with orthonormal columns, k = min(m, n). */
  q: Matrix;
  /** k×n upper triangular (upper trapezoidal when n > m). */
  r: Matrix;
}

/**
 * Thin Householder QR: A = Q·R. Works on a fp64 copy; reflectors are applied
 * row by row so every inner loop is contiguous in row-major storage.
 */
export function householderQr(a: Matrix): QrResult {
  const { w, tau, r } = factor(a);
  const k = tau.length;
  return { q: { rows: a.rows, cols: k, data: accumulateLeftQ(w, a.cols, a.rows, k, tau) }, r };
}

/** R of the thin QR only (k×n): for singular values of tall matrices, Q is not needed. */
export function householderR(a: Matrix): Matrix {
  return factor(a).r;
}

function factor(a: Matrix): { w: Float64Array; tau: Float64Array; r: Matrix } {
  const m = a.rows;
  const n = a.cols;
  const k = Math.min(m, n);
  const w = Float64Array.from(a.data); // overwritten by R (upper part) and reflectors (below)
  const tau = new Float64Array(k);
  const tmp = new Float64Array(Math.max(n, k));
  for (let j = 0; j < k; j++) {
    tau[j] = makeReflector(w, m, n, j);
    applyReflectorLeft(w, m, n, j, j, tau[j]!, j + 1, n, tmp);
  }
  const r = new Float64Array(k * n);
  for (let i = 0; i < k; i++) for (let j = i; j < n; j++) r[i * n + j] = w[i * n + j]!;
  return { w, tau, r: { rows: k, cols: n, data: r } };
}

/**
 * Householder vector for column j of w (rows j..m-1): leaves β on the diagonal, the
 * vector's tail below it (implicit leading 1), returns τ with H = I − τ·v·vᵀ.
 */
function makeReflector(w: Float64Array, m: number, n: number, j: number): number {
  const alpha = w[j * n + j]!;
  let ss = 0;
  for (let i = j + 1; i < m; i++) ss += w[i * n + j]! ** 2;
  if (ss === 0) return 0; // already zero below the diagonal: H = I
  const beta = -Math.sign(alpha || 1) * Math.sqrt(alpha * alpha + ss);
  const inv = 1 / (alpha - beta);
  for (let i = j + 1; i < m; i++) w[i * n + j]! *= inv;
  w[j * n + j] = beta;
  return (beta - alpha) / beta;
}

/** Applies H_j (vector in column j of w below row j) to w[j:, c0:c1] from the left. */
function applyReflectorLeft(
  w: Float64Array, m: number, n: number, j: number, _col: number, tau: number, c0: number, c1: number, tmp: Float64Array,
): void {
  if (tau === 0 || c0 >= c1) return;
  for (let c = c0; c < c1; c++) tmp[c] = w[j * n + c]!;
  for (let i = j + 1; i < m; i++) {
    const vi = w[i * n + j]!;
    if (vi === 0) continue;
    const o = i * n;
    for (let c = c0; c < c1; c++) tmp[c]! += vi * w[o + c]!;
  }
  for (let c = c0; c < c1; c++) {
    tmp[c]! *= tau;
    w[j * n + c]! -= tmp[c]!;
  }
  for (let i = j + 1; i < m; i++) {
    const vi = w[i * n + j]!;
    if (vi === 0) continue;
    const o = i * n;
    for (let c = c0; c < c1; c++) w[o + c]! -= vi * tmp[c]!;
  }
}

/**
 * Orthonormal basis of range(Y) for tall Y (m×k, m ≥ k) by CholeskyQR2:
 * G = YᵀY = RᵀR, Q = Y·R⁻¹, done twice (the second pass restores orthogonality to
 * ~machine precision when cond(Y) ≲ 1e7 in fp64). If the first Cholesky fails, a
 * shifted pass conditions Y first (shifted CholeskyQR3); if that also fails, Y is
 * numerically rank-deficient and Householder QR gives a complete orthonormal basis.
 * Gram products run in fp64 whatever Y's dtype, since squaring the condition number
 * in fp32 would fail far too early.
 */
export function* choleskyQr2(y: Matrix): GemmProgram<Matrix> {
  if (y.rows < y.cols) throw new LrError('numeric', `choleskyQr2 needs a tall matrix, got ${y.rows}x${y.cols}`);
  let q = asFloat64(y);
  const first = yield* cholQrPass(q, 0);
  if (first) {
    q = first;
  } else {
    // Shifted CholeskyQR3: the shifted pass brings cond(Q) down to ~1e5, then two plain passes.
    const shifted = yield* cholQrPass(q, shiftFor(q));
    const again = shifted && (yield* cholQrPass(shifted, 0));
    if (!again) return householderQr(q).q;
    q = again;
  }
  const second = yield* cholQrPass(q, 0);
  if (!second) return householderQr(q).q;
  return second;
}

/**
 * A well-conditioned (not necessarily orthonormal to working precision) basis of
 * range(Y): one CholeskyQR pass, falling back to the full CholeskyQR2 path. Enough
 * between the products of a power iteration, where only conditioning matters.
 */
export function* cholQrBasis(y: Matrix): GemmProgram<Matrix> {
  const once = yield* cholQrPass(asFloat64(y), 0);
  return once ?? (yield* choleskyQr2(y));
}

/** Synchronous CholeskyQR2 (JS products). */
export function orthonormalize(y: Matrix): Matrix {
  return runSync(choleskyQr2(y));
}

/**
 * Row-oriented CholeskyQR kept in fp32, for a wide fp32 block W (l×m, l ≤ m) on an
 * engine that multiplies fp32 at full speed: G = W·Wᵀ = RᵀR and Qᵀ = R⁻ᵀ·W, so the
 * rows of the result are an orthonormal basis of W's row space. (The randomized SVD
 * keeps its sketches transposed like this: MLAS multiplies a short wide left operand
 * by the big matrix faster than the big matrix by a tall skinny one.)
 * Both products stay fp32 (no fp64 copies of the block, no fp64 products, which run
 * at half speed or less); only the small Cholesky is fp64. A Gram rounded to fp32 is
 * off by ~√m·ε₃₂·‖W‖², so after one pass QQᵀ − I is about that times cond(W)²: fine
 * as a basis for the next product of a power iteration when cond(W) ≲ 100, and
 * `passes` = 2 brings it to ~1e-6 (fp32-orthonormal). Returns null when a Cholesky
 * factor shows cond(W) may exceed that (diagonal ratio below 1e-2): callers then take
 * an fp64 path, which handles any conditioning.
 */
export function* cholQrRowsF32(w: Matrix, passes: number): GemmProgram<Matrix | null> {
  if (w.rows > w.cols) throw new LrError('numeric', `cholQrRowsF32 needs a wide matrix, got ${w.rows}x${w.cols}`);
  let q = asFloat32(w);
  for (let p = 0; p < passes; p++) {
    const g = yield* mm(q, q, { transB: true });
    const rinv = gramToRinv(g, 0, 1e-2);
    if (!rinv) return null;
    q = asFloat32(yield* mm(asFloat32(rinv), q, { transA: true }));
  }
  return q;
}

/** One pass Q = Y·R⁻¹ with R = chol(YᵀY + shift·I); null if the Cholesky fails. */
function* cholQrPass(y: Matrix, shift: number): GemmProgram<Matrix | null> {
  const rinv = gramToRinv(yield* mm(y, y, { transA: true }), shift, 1e-7);
  if (!rinv) return null;
  return asFloat64(yield* mm(y, rinv));
}

/**
 * R⁻¹ (fp64) with R = chol(G + shift·I)ᵀ, or null when the Cholesky fails or its
 * diagonal spread is below `minRatio` (R⁻¹ would amplify rounding beyond repair).
 */
function gramToRinv(g: Matrix, shift: number, minRatio: number): Matrix | null {
  const k = g.rows;
  const gd = Float64Array.from(g.data);
  // Symmetrise: an engine's blocked product need not return an exactly symmetric Gram.
  for (let i = 0; i < k; i++) {
    for (let j = i + 1; j < k; j++) {
      const s = 0.5 * (gd[i * k + j]! + gd[j * k + i]!);
      gd[i * k + j] = s;
      gd[j * k + i] = s;
    }
    gd[i * k + i]! += shift;
  }
  const l = cholesky({ rows: k, cols: k, data: gd });
  if (!l) return null;
  let dmin = Infinity, dmax = 0;
  for (let i = 0; i < k; i++) {
    const v = l.data[i * k + i]!;
    dmin = Math.min(dmin, v);
    dmax = Math.max(dmax, v);
  }
  if (dmin <= dmax * minRatio) return null;
  return invertUpper(transposeSmall(l)); // R = Lᵀ
}

/** Shift of shifted CholeskyQR3 (Fukaya et al.), from ‖Y‖_F² as a bound on ‖Y‖₂². */
function shiftFor(y: Matrix): number {
  let fro2 = 0;
  for (let i = 0; i < y.data.length; i++) fro2 += y.data[i]! ** 2;
  const m = y.rows, k = y.cols;
  return 11 * (m * k + k * (k + 1)) * 2 ** -52 * fro2;
}

function transposeSmall(a: Matrix): Matrix {
  const out = new Float64Array(a.rows * a.cols);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) out[j * a.rows + i] = a.data[i * a.cols + j]!;
  return { rows: a.cols, cols: a.rows, data: out };
}
