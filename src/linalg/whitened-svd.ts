/**
 * The rows-side whitened SVD pair of a matrix W [m, n] whose rows are the inputs (Y = X·W):
 * W ≈ L·R with L = L_x⁻ᵀ·U_r·Σ_r^½ [m, r] and R = Σ_r^½·V_rᵀ [r, n], where U·Σ·Vᵀ is the
 * truncated SVD of A = L_xᵀ·W for the input Gram G + δI = L_x·L_xᵀ (SVD-LLM: the error
 * ‖X(W − L·R)‖ is minimised). Anchored (`cross` given): A = (W ᵀ·(X + δI)ᵀ·L̂⁻ᵀ)ᵀ with
 * Ĉ + δI = L̂·L̂ᵀ (anchored.ts). δ = damp·mean(diag G). Same numbers as
 * rewrite/svd-pair.ts's SvdCache + svdPairFactors for a 'rows' whitening.
 */
import { whitenedTarget, dampingOf, plusDiagonal } from './anchored.js';
import { choleskyWithRidge } from './cholesky.js';
import { product, type SyncGemm } from './engine.js';
import { transpose, type Matrix } from './matrix.js';
import { truncatedSvdSync } from './rsvd.js';
import { solveUpperLeft } from './triangular.js';

/** Second moments of the inputs on the rows side: G [m, m] (Ĉ when anchored) and X = E[x̂·xᵀ]. */
export interface ChannelWhitening {
  gram: Float64Array;
  /** λ of the damping; 0 or absent: none. */
  damp?: number;
  /** Anchored fit: E[x̂·xᵀ] [m, m]. */
  cross?: Float64Array;
}

/** L [m, r] and R [r, n] (fp32, row-major) of the whitened rank-r pair; truncated SVD seeded with 0. */
export function whitenedSvdFactors(w: Matrix, wh: ChannelWhitening, r: number, sync?: SyncGemm): { left: Float32Array; right: Float32Array } {
  const { rows: m, cols: n } = w;
  if (wh.gram.length !== m * m) throw new Error(`whitening Gram matrix has ${wh.gram.length} entries, expected ${m}x${m}`);
  let lx: Matrix;
  let a: Matrix;
  if (wh.cross) {
    const t = whitenedTarget(transpose(w), wh.gram, wh.cross, wh.damp ?? 0, sync);
    lx = t.l;
    a = transpose(t.a);
  } else {
    const lambda = wh.damp ?? 0;
    const g = lambda === 0 ? wh.gram : plusDiagonal(wh.gram, m, dampingOf(wh.gram, m, lambda));
    lx = choleskyWithRidge({ rows: m, cols: m, data: g }, 1e-6).l;
    a = product(lx, w, { transA: true }, sync);
  }
  const f = truncatedSvdSync(a, Math.max(Math.min(r, m, n), 1), { seed: 0, gemm: sync });
  const us: Matrix = { rows: m, cols: r, data: new Float64Array(m * r) };
  const right = new Float32Array(r * n);
  const ucols = f.u.cols;
  for (let k = 0; k < r; k++) {
    const s = Math.sqrt(f.s[k]!);
    for (let i = 0; i < m; i++) us.data[i * r + k] = f.u.data[i * ucols + k]! * s;
    for (let j = 0; j < n; j++) right[k * n + j] = f.vt.data[k * n + j]! * s;
  }
  // Undo the whitening on the input side: L = L_x⁻ᵀ·U_rΣ^½.
  return { left: Float32Array.from(solveUpperLeft(transpose(lx), us).data), right };
}
