/**
 * Symmetric eigendecomposition A = V·diag(λ)·Vᵀ by cyclic Jacobi rotations.
 * Chosen for its accuracy (small eigenvalues to high relative accuracy for PSD Gram
 * matrices) and simplicity; cost is ~10 sweeps of O(n³), so it is meant for the
 * small matrices of this project (R×R Gram matrices, n ≲ 300). For large PSD
 * matrices use svd() instead (singular values of a PSD matrix are its eigenvalues).
 */
import { LrError } from '../errors.js';
import { assertFinite, type Matrix } from './matrix.js';

export interface EigResult {
  /** Eigenvalues, descending. */
  values: Float64Array;
  /** n×n, column j is the eigenvector of values[j]. */
  vectors: Matrix;
}

export function eigSym(a: Matrix, maxSweeps = 60): EigResult {
  const n = a.rows;
  if (a.cols !== n) throw new LrError('numeric', `eigSym: matrix is ${a.rows}x${a.cols}, not square`);
  assertFinite(a, 'eigSym input');
  const w = Float64Array.from(a.data);
  // Use the symmetric part: callers' Gram matrices may be off by rounding.
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const s = 0.5 * (w[i * n + j]! + w[j * n + i]!);
      w[i * n + j] = s;
      w[j * n + i] = s;
    }
  }
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  let converged = n < 2;
  for (let sweep = 0; sweep < maxSweeps && !converged; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += w[p * n + q]! ** 2;
    let diag = 0;
    for (let p = 0; p < n; p++) diag += w[p * n + p]! ** 2;
    if (off <= 1e-30 * diag || off === 0) {
      converged = true;
      break;
    }
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = w[p * n + q]!;
        const app = w[p * n + p]!;
        const aqq = w[q * n + q]!;
        // Skip rotations that cannot change the diagonal at working precision.
        if (Math.abs(apq) <= 1e-300 || Math.abs(apq) < 2 ** -60 * Math.sqrt(Math.abs(app * aqq))) {
          w[p * n + q] = 0;
          w[q * n + p] = 0;
          continue;
        }
        // Rutishauser's stable formulas: t = tan θ of the smaller rotation.
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = w[k * n + p]!;
          const akq = w[k * n + q]!;
          w[k * n + p] = c * akp - s * akq;
          w[k * n + q] = s * akp + c * akq;
        }
        const po = p * n, qo = q * n;
        for (let k = 0; k < n; k++) {
          const apk = w[po + k]!;
          const aqk = w[qo + k]!;
          w[po + k] = c * apk - s * aqk;
          w[qo + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p]!;
          const vkq = v[k * n + q]!;
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
    if (sweep === maxSweeps - 1) throw new LrError('numeric', `eigSym: Jacobi did not converge in ${maxSweeps} sweeps`);
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => w[y * n + y]! - w[x * n + x]!);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => {
    values[dst] = w[src * n + src]!;
    for (let k = 0; k < n; k++) vectors[k * n + dst] = v[k * n + src]!;
  });
  return { values, vectors: { rows: n, cols: n, data: vectors } };
}
