/**
 * Blocked application of Householder reflectors (compact WY representation,
 * Schreiber & Van Loan 1989): a block of NB reflectors H_j = I − τ_j v_j v_jᵀ is
 * applied as I − V·T·Vᵀ, which turns the work into matrix products (about 3× faster
 * in JS than one rank-1 update per reflector).
 */
import { mm, runSync, type GemmProgram } from './engine.js';
import type { Matrix } from './matrix.js';

export const NB = 32;
/**
 * Block size when applying reflectors to a full-width matrix: wider blocks make the
 * products less thin (inner dimension nb), which the JS kernel runs much faster.
 */
export const NB_APPLY = 96;

/**
 * Q = H_0 ⋯ H_{k-1}·[I; 0] (m×k) for reflectors stored LAPACK-style in w (row
 * stride ldw): v_j has an implicit 1 at row j and w[i, j] below it. Accumulated
 * backwards, one block of NB reflectors at a time.
 */
export function accumulateLeftQ(w: Float64Array, ldw: number, m: number, k: number, tau: Float64Array): Float64Array {
  const q = new Float64Array(m * k);
  for (let i = 0; i < k; i++) q[i * k + i] = 1;
  for (let k0 = Math.floor((k - 1) / NB) * NB; k0 >= 0; k0 -= NB) {
    const nb = Math.min(NB, k - k0);
    const p = m - k0;
    applyBlockReflector(q, k, k0, k0, p, k - k0, reflectorBlock(w, ldw, m, k0, nb), nb, tau.subarray(k0, k0 + nb));
  }
  return q;
}

/**
 * X ← H_0 ⋯ H_{k-1}·X for X (m×cols, row-major, modified in place) and reflectors
 * stored as for accumulateLeftQ. Used to apply Q to a dense matrix without forming Q
 * (2·m·k·cols flops instead of forming Q and multiplying).
 */
export function* applyLeftQ(
  w: Float64Array, ldw: number, m: number, k: number, tau: Float64Array, x: Float64Array, cols: number, block = NB_APPLY,
): GemmProgram<void> {
  for (let k0 = Math.floor((k - 1) / block) * block; k0 >= 0; k0 -= block) {
    const nb = Math.min(block, k - k0);
    const p = m - k0;
    yield* blockReflectorProgram(x, cols, k0, 0, p, cols, reflectorBlock(w, ldw, m, k0, nb), nb, tau.subarray(k0, k0 + nb));
  }
}

/** Reflectors k0 … k0+nb−1 of w as the columns of a dense (m−k0)×nb block, unit diagonal made explicit. */
function reflectorBlock(w: Float64Array, ldw: number, m: number, k0: number, nb: number): Float64Array {
  const v = new Float64Array((m - k0) * nb);
  for (let j = 0; j < nb; j++) {
    const col = k0 + j;
    v[j * nb + j] = 1;
    for (let i = col + 1; i < m; i++) v[(i - k0) * nb + j] = w[i * ldw + col]!;
  }
  return v;
}

/**
 * X[r0:r0+p, c0:c0+q] ← (H_1 ⋯ H_nb)·X[…] with H_j = I − τ_j v_j v_jᵀ, the v_j being
 * the columns of vm (p×nb). Uses (H_1 ⋯ H_nb) = I − V·T·Vᵀ with T upper triangular.
 */
export function applyBlockReflector(
  x: Float64Array, ldx: number, r0: number, c0: number, p: number, q: number, vm: Float64Array, nb: number, tau: Float64Array,
): void {
  runSync(blockReflectorProgram(x, ldx, r0, c0, p, q, vm, nb, tau));
}

/** applyBlockReflector as a GemmProgram (products through runSync or a GemmEngine). */
export function* blockReflectorProgram(
  x: Float64Array, ldx: number, r0: number, c0: number, p: number, q: number, vm: Float64Array, nb: number, tau: Float64Array,
): GemmProgram<void> {
  const V: Matrix = { rows: p, cols: nb, data: vm };
  // T (forward, columnwise): T[:j, j] = −τ_j·T[:j, :j]·(V[:, :j]ᵀ v_j), T[j, j] = τ_j.
  const vtv = (yield* mm(V, V, { transA: true })).data;
  const t = new Float64Array(nb * nb);
  for (let j = 0; j < nb; j++) {
    const tj = tau[j]!;
    t[j * nb + j] = tj;
    for (let i = 0; i < j; i++) {
      let sum = 0;
      for (let l = i; l < j; l++) sum += t[i * nb + l]! * vtv[l * nb + j]!;
      t[i * nb + j] = -tj * sum;
    }
  }
  const xs = new Float64Array(p * q);
  for (let i = 0; i < p; i++) {
    const o = (r0 + i) * ldx + c0;
    for (let j = 0; j < q; j++) xs[i * q + j] = x[o + j]!;
  }
  const X: Matrix = { rows: p, cols: q, data: xs };
  const vx = yield* mm(V, X, { transA: true });
  const wt = yield* mm({ rows: nb, cols: nb, data: t }, vx); // T·Vᵀ·X
  const upd = (yield* mm(V, wt)).data;
  for (let i = 0; i < p; i++) {
    const o = (r0 + i) * ldx + c0;
    for (let j = 0; j < q; j++) x[o + j] = xs[i * q + j]! - upd[i * q + j]!;
  }
}

