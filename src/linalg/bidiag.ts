/**
 * Unblocked Householder bidiagonalisation for svd.ts's small regime (n below the measured
 * crossover to bidiag-blocked.ts), and forming or applying its Q and P.
 */
import { accumulateLeftQ, applyBlockReflector, blockReflectorProgram, NB, NB_APPLY } from './householder.js';
import type { GemmProgram } from './engine.js';

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
export function bidiagonalize(
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
export function accumulateU(w: Float64Array, m: number, n: number, tauQ: Float64Array): Float64Array {
  return accumulateLeftQ(w, n, m, n, tauQ);
}

/** V = G_0 ⋯ G_{n-3} (n×n), G_k acting on indices k+1.., blocked like accumulateLeftQ. */
export function accumulateV(w: Float64Array, n: number, tauP: Float64Array): Float64Array {
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
export function* applyRightP(w: Float64Array, n: number, tauP: Float64Array, x: Float64Array): GemmProgram<void> {
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
