/**
 * Divide-and-conquer SVD of an upper bidiagonal matrix (Jessup & Sorensen 1994,
 * Gu & Eisenstat 1995; the scheme of LAPACK's dbdsdc/dlasd1..dlasd3).
 *
 * Why: QR sweeps spend O(n²) rotations per singular value on U and V, scalar work
 * that dominated the full SVD. Here the vectors are assembled by matrix products in
 * the merges, and deflation makes many merges cheap.
 *
 * A subproblem is an N×(N+sq) upper bidiagonal (sq ∈ {0, 1}): row i holds d_i at
 * column i and e_i at column i+1. Splitting at row k leaves a k×(k+1) top (sq = 1)
 * and an (N−k−1)×(N−k−1+sq) bottom; with their SVDs, B becomes (up to orthogonal
 * bases) the arrowhead e₀·zᵀ + diag(0, σ_top, σ_bottom), solved in secular.ts.
 */
import { mm, type GemmProgram } from './engine.js';
import { arrowSvd } from './secular.js';

const EPS = 2 ** -52;

export interface BidiagSvd {
  /** N singular values, unsorted, non-negative. */
  s: Float64Array;
  /** N×N row-major; column j is the left vector of s[j]. */
  u: Float64Array;
  /** (N+sq)×(N+sq) row-major; column j < N pairs with s[j], column N (if sq) spans the null space. */
  w: Float64Array;
}

/**
 * SVD of the N×(N+sq) upper bidiagonal (d, e): B = U·[diag(s) 0]·Wᵀ. A GemmProgram:
 * run it with runSync (JS products) or runAsync (a GemmEngine).
 */
export function* bidiagSvdDc(d: Float64Array, e: Float64Array, sq: 0 | 1): GemmProgram<BidiagSvd> {
  const n = d.length;
  if (n === 0) return { s: new Float64Array(0), u: new Float64Array(0), w: sq ? Float64Array.of(1) : new Float64Array(0) };
  if (n === 1) return leaf(d[0]!, sq ? e[0]! : 0, sq);
  const k = n >> 1;
  const top = yield* bidiagSvdDc(d.subarray(0, k), e.subarray(0, k), 1);
  const bot = yield* bidiagSvdDc(d.subarray(k + 1), e.subarray(k + 1), sq);
  return yield* merge(top, bot, k, n, sq, d[k]!, k < e.length ? e[k]! : 0);
}

function leaf(d: number, e: number, sq: 0 | 1): BidiagSvd {
  if (!sq) return { s: Float64Array.of(Math.abs(d)), u: Float64Array.of(d < 0 ? -1 : 1), w: Float64Array.of(1) };
  const r = Math.hypot(d, e);
  if (r === 0) return { s: Float64Array.of(0), u: Float64Array.of(1), w: Float64Array.of(1, 0, 0, 1) };
  const c = d / r;
  const s = e / r;
  return { s: Float64Array.of(r), u: Float64Array.of(1), w: Float64Array.of(c, -s, s, c) };
}

/** A rotation of arrowhead indices p, q: columns (p, q) ← (c·p − s·q, s·p + c·q). */
interface Rot {
  p: number;
  q: number;
  c: number;
  s: number;
  /** Applies to the left vectors too (two-sided), or only to the right ones. */
  both: boolean;
}

function* merge(top: BidiagSvd, bot: BidiagSvd, k: number, n: number, sq: 0 | 1, alpha: number, beta: number): GemmProgram<BidiagSvd> {
  const nb = n - k - 1;
  const k1 = k + 1; // columns of the top block
  const wb = nb + sq; // columns of the bottom block
  // Row k of B in the bases W_top ⊕ W_bot.
  const a1 = alpha * top.w[k * k1 + k]!;
  const a2 = sq ? beta * bot.w[nb]! : 0; // W_bot[0, nb]
  const rho = Math.hypot(a1, a2);
  const cz = rho === 0 ? 1 : a1 / rho;
  const sz = rho === 0 ? 0 : a2 / rho;
  // Arrowhead index 0: the combined null column; 1..k: top values; k+1..n-1: bottom values.
  const dd = new Float64Array(n);
  const z = new Float64Array(n);
  z[0] = rho;
  for (let i = 0; i < k; i++) {
    dd[1 + i] = top.s[i]!;
    z[1 + i] = alpha * top.w[k * k1 + i]!;
  }
  for (let j = 0; j < nb; j++) {
    dd[k1 + j] = bot.s[j]!;
    z[k1 + j] = beta * bot.w[j]!;
  }
  const { sig, qm, pm } = arrowWithDeflation(dd, z);

  // U = L·Qm, L = [e_k | U_top on rows 0..k-1 | U_bot on rows k+1..]: two products.
  const u = new Float64Array(n * n);
  for (let j = 0; j < n; j++) u[k * n + j] = qm[j]!;
  if (k > 0) {
    const prod = (yield* mm({ rows: k, cols: k, data: top.u }, { rows: k, cols: n, data: qm.slice(n, k1 * n) })).data;
    u.set(prod, 0);
  }
  if (nb > 0) {
    const prod = (yield* mm({ rows: nb, cols: nb, data: bot.u }, { rows: nb, cols: n, data: qm.slice(k1 * n) })).data;
    u.set(prod, k1 * n);
  }
  // W[:, 0..n-1] = R·Pm with R's column 0 = cz·null_top ⊕ sz·null_bot; column n (if sq) the other combination.
  const nw = n + sq;
  const w = new Float64Array(nw * nw);
  {
    // Top rows: [cz·W_top[:, k] | W_top[:, 0..k-1]] · Pm[0..k, :].
    const r = new Float64Array(k1 * k1);
    for (let i = 0; i < k1; i++) {
      r[i * k1] = cz * top.w[i * k1 + k]!;
      for (let j = 0; j < k; j++) r[i * k1 + 1 + j] = top.w[i * k1 + j]!;
    }
    const prod = (yield* mm({ rows: k1, cols: k1, data: r }, { rows: k1, cols: n, data: pm.slice(0, k1 * n) })).data;
    for (let i = 0; i < k1; i++) {
      w.set(prod.subarray(i * n, i * n + n), i * nw);
      if (sq) w[i * nw + n] = -sz * top.w[i * k1 + k]!;
    }
  }
  if (wb > 0) {
    // Bottom rows: [sz·W_bot[:, nb] | W_bot[:, 0..nb-1]] · Pm[{0, k+1..n-1}, :].
    const r = new Float64Array(wb * (nb + 1));
    const pr = new Float64Array((nb + 1) * n);
    pr.set(pm.subarray(0, n), 0);
    pr.set(pm.subarray(k1 * n), n);
    for (let i = 0; i < wb; i++) {
      r[i * (nb + 1)] = sq ? sz * bot.w[i * wb + nb]! : 0;
      for (let j = 0; j < nb; j++) r[i * (nb + 1) + 1 + j] = bot.w[i * wb + j]!;
    }
    const prod = (yield* mm({ rows: wb, cols: nb + 1, data: r }, { rows: nb + 1, cols: n, data: pr })).data;
    for (let i = 0; i < wb; i++) {
      w.set(prod.subarray(i * n, i * n + n), (k1 + i) * nw);
      if (sq) w[(k1 + i) * nw + n] = cz * bot.w[i * wb + nb]!;
    }
  }
  return { s: sig, u, w };
}

/**
 * SVD of M = e₀·zᵀ + diag(dd) (dd₀ = 0, others unsorted) as Qm·diag(sig)·Pmᵀ (n×n row-major).
 * Deflation first (Gu & Eisenstat): a tiny z_i leaves d_i as a singular value with unit
 * vectors; d_i ≈ 0 is rotated into index 0; two nearly equal d's are rotated so one z
 * vanishes. Each perturbs M by at most tol = O(ε‖M‖). The rest goes to arrowSvd.
 */
function arrowWithDeflation(dd: Float64Array, z: Float64Array): { sig: Float64Array; qm: Float64Array; pm: Float64Array } {
  const n = dd.length;
  let scale = 0;
  for (let i = 0; i < n; i++) scale = Math.max(scale, Math.abs(dd[i]!), Math.abs(z[i]!));
  const tol = 8 * EPS * scale;
  const sig = new Float64Array(n);
  if (scale === 0) {
    // M = 0: every value is zero and any orthonormal bases do.
    const qm = new Float64Array(n * n);
    for (let i = 0; i < n; i++) qm[i * n + i] = 1;
    return { sig, qm, pm: Float64Array.from(qm) };
  }
  const rots: Rot[] = [];
  const deflated = new Uint8Array(n);
  const order = Array.from({ length: n - 1 }, (_, i) => i + 1).sort((x, y) => dd[x]! - dd[y]!);
  for (const i of order) {
    if (dd[i]! <= tol) {
      // Columns 0 and i differ only by the tiny d_i: merge their z into index 0 (right side only).
      const r = Math.hypot(z[0]!, z[i]!);
      if (r !== 0 && z[i] !== 0) {
        const c = z[0]! / r;
        const s = -z[i]! / r;
        rots.push({ p: 0, q: i, c, s, both: false });
        z[0] = r;
      }
      z[i] = 0;
      dd[i] = 0;
    }
  }
  let prev = -1;
  for (const i of order) {
    if (Math.abs(z[i]!) <= tol) {
      deflated[i] = 1;
      z[i] = 0;
      continue;
    }
    if (prev >= 0 && dd[i]! - dd[prev]! <= tol) {
      // Rotate so that z_prev vanishes; prev deflates with its own d.
      const r = Math.hypot(z[prev]!, z[i]!);
      const c = z[i]! / r;
      const s = z[prev]! / r;
      rots.push({ p: prev, q: i, c, s, both: true });
      z[i] = r;
      z[prev] = 0;
      deflated[prev] = 1;
    }
    prev = i;
  }
  // z₀ ≈ 0: column 0 of M is (nearly) zero, so σ = 0 with right vector e₀; the arrow
  // row stays and the rest is solved without the pole at 0 (arrowSvd's zeroPole = false).
  const zeroPole = Math.abs(z[0]!) > tol;
  if (!zeroPole) z[0] = 0;
  const keep = order.filter((i) => !deflated[i]);
  if (zeroPole) keep.unshift(0);
  const kk = keep.length;
  const ds = new Float64Array(kk);
  const zs = new Float64Array(kk);
  keep.forEach((src, j) => {
    ds[j] = dd[src]!;
    zs[j] = z[src]!;
  });
  const arrow = arrowSvd(ds, zs, zeroPole);
  // Qm, Pm before the deflation rotations: the secular block on the kept indices, identity elsewhere.
  const qm = new Float64Array(n * n);
  const pm = new Float64Array(n * n);
  const rowsU = zeroPole ? keep : [0, ...keep];
  const colsU = zeroPole ? keep : [...keep, 0];
  const ku = rowsU.length;
  for (let a = 0; a < ku; a++) {
    for (let b = 0; b < ku; b++) qm[rowsU[a]! * n + colsU[b]!] = arrow.u[a * ku + b]!;
  }
  for (let a = 0; a < kk; a++) {
    for (let b = 0; b < kk; b++) pm[keep[a]! * n + keep[b]!] = arrow.v[a * kk + b]!;
  }
  if (!zeroPole) pm[0] = 1;
  for (let b = 0; b < kk; b++) sig[keep[b]!] = arrow.s[b]!;
  for (let i = 1; i < n; i++) {
    if (deflated[i]) {
      qm[i * n + i] = 1;
      pm[i * n + i] = 1;
      sig[i] = dd[i]!;
    }
  }
  // Qm ← G₁⋯G_p·Qm: rows (p, q) ← (c·p + s·q, −s·p + c·q), last rotation first.
  for (let r = rots.length - 1; r >= 0; r--) {
    const { p, q, c, s, both } = rots[r]!;
    rotateRows(pm, n, p, q, c, s);
    if (both) rotateRows(qm, n, p, q, c, s);
  }
  return { sig, qm, pm };
}

function rotateRows(x: Float64Array, n: number, p: number, q: number, c: number, s: number): void {
  const op = p * n;
  const oq = q * n;
  for (let j = 0; j < n; j++) {
    const a = x[op + j]!;
    const b = x[oq + j]!;
    x[op + j] = c * a + s * b;
    x[oq + j] = c * b - s * a;
  }
}
