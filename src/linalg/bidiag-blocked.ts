/**
 * Blocked Householder bidiagonalisation B = Qᵀ·A·P for m ≥ n (the scheme of LAPACK's
 * dgebrd/dlabrd). Why: the unblocked reduction updates the whole trailing matrix
 * after every reflector pair (8/3·n³ scalar flops). Here a panel of nb steps only
 * applies matrix-vector products to the stale trailing matrix, and the accumulated
 * update A ← A − V·Yᵀ − X·Uᵀ is done once per panel as a matrix product, so about
 * half of the flops run in the GEMM kernel.
 *
 * Output layout matches the unblocked reduction in svd.ts: d, e; left reflector k
 * below the diagonal of column k (implicit 1 at row k), right reflector k in row k
 * from column k+2 (implicit 1 at column k+1); w[k,k] = d_k, w[k,k+1] = e_k.
 */
import { mm, type GemmProgram } from './engine.js';

export function* bidiagonalizeBlocked(
  w: Float64Array, m: number, n: number, d: Float64Array, e: Float64Array, tauQ: Float64Array, tauP: Float64Array, nb = 32,
): GemmProgram<void> {
  for (let p0 = 0; p0 < n; p0 += nb) {
    const b = Math.min(nb, n - p0);
    const x = new Float64Array(m * b); // X[r, j], rows are global row indices
    const y = new Float64Array(n * b); // Y[col, j], rows are global column indices
    panel(w, m, n, p0, b, d, e, tauQ, tauP, x, y);
    const r0 = p0 + b;
    if (r0 < n) yield* trailingUpdate(w, m, n, p0, b, x, y);
    // The panel kept implicit ones in w (w[c,c], w[c,c+1]); put B's entries back.
    for (let c = p0; c < r0; c++) {
      w[c * n + c] = d[c]!;
      if (c + 1 < n) w[c * n + c + 1] = e[c]!;
    }
  }
}

/** A[r0:, r0:] −= V·Yᵀ + X·Uᵀ with V = A[r0:, p0:r0], U = A[p0:r0, r0:] (r0 = p0 + b). */
function* trailingUpdate(w: Float64Array, m: number, n: number, p0: number, b: number, x: Float64Array, y: Float64Array): GemmProgram<void> {
  const r0 = p0 + b;
  const mt = m - r0;
  const nt = n - r0;
  const b2 = 2 * b;
  const left = new Float64Array(mt * b2); // [V | X]
  for (let r = 0; r < mt; r++) {
    const o = (r0 + r) * n + p0;
    for (let j = 0; j < b; j++) {
      left[r * b2 + j] = w[o + j]!;
      left[r * b2 + b + j] = x[(r0 + r) * b + j]!;
    }
  }
  const right = new Float64Array(b2 * nt); // [Yᵀ; U]
  for (let j = 0; j < b; j++) {
    for (let c = 0; c < nt; c++) right[j * nt + c] = y[(r0 + c) * b + j]!;
    right.set(w.subarray((p0 + j) * n + r0, (p0 + j) * n + n), (b + j) * nt);
  }
  const upd = (yield* mm({ rows: mt, cols: b2, data: left }, { rows: b2, cols: nt, data: right })).data;
  for (let r = 0; r < mt; r++) {
    const o = (r0 + r) * n + r0;
    const ou = r * nt;
    for (let c = 0; c < nt; c++) w[o + c]! -= upd[ou + c]!;
  }
}

/** Householder vector for x = w[o], w[o+s], …, (len entries): returns [beta, tau], scales the tail. */
function reflector(w: Float64Array, o: number, stride: number, len: number): [number, number] {
  const alpha = w[o]!;
  let ss = 0;
  for (let i = 1; i < len; i++) ss += w[o + i * stride]! ** 2;
  if (ss === 0) return [alpha, 0];
  const beta = -Math.sign(alpha || 1) * Math.sqrt(alpha * alpha + ss);
  const sc = 1 / (alpha - beta);
  for (let i = 1; i < len; i++) w[o + i * stride]! *= sc;
  return [beta, (beta - alpha) / beta];
}

function panel(
  w: Float64Array, m: number, n: number, p0: number, b: number,
  d: Float64Array, e: Float64Array, tauQ: Float64Array, tauP: Float64Array, x: Float64Array, y: Float64Array,
): void {
  const t1 = new Float64Array(b);
  const t2 = new Float64Array(b);
  const yc = new Float64Array(n);
  const xc = new Float64Array(m);
  for (let i = 0; i < b; i++) {
    const c = p0 + i;
    // Column c, rows c..m-1: apply the panel's earlier updates: −V·Y[c,:]ᵀ − X·U[:,c].
    for (let j = 0; j < i; j++) {
      t1[j] = y[c * b + j]!;
      t2[j] = w[(p0 + j) * n + c]!;
    }
    for (let r = c; r < m; r++) {
      const o = r * n + p0;
      const ox = r * b;
      let s = 0;
      for (let j = 0; j < i; j++) s += w[o + j]! * t1[j]! + x[ox + j]! * t2[j]!;
      w[r * n + c]! -= s;
    }
    const [dc, tq] = reflector(w, c * n + c, n, m - c);
    d[c] = dc;
    tauQ[c] = tq;
    w[c * n + c] = 1; // implicit one, kept until the panel ends
    if (c >= n - 1) {
      tauP[c] = 0;
      continue;
    }
    // Y[c+1:, i] = τq·(Aᵀv − Y·(Vᵀv) − Uᵀ·(Xᵀv)), A stale, in one pass over rows c..m-1.
    yc.fill(0, c + 1, n);
    t1.fill(0);
    t2.fill(0);
    for (let r = c; r < m; r++) {
      const vr = w[r * n + c]!;
      for (let j = 0; j < i; j++) {
        t1[j]! += vr * w[r * n + p0 + j]!;
        t2[j]! += vr * x[r * b + j]!;
      }
    }
    gemvT(w, n, c, m, c + 1, yc);
    // Y part row by row (Y rows are contiguous), U part by U rows.
    for (let col = c + 1; col < n; col++) {
      const oy = col * b;
      let s = 0;
      for (let j = 0; j < i; j++) s += y[oy + j]! * t1[j]!;
      yc[col]! -= s;
    }
    for (let j = 0; j < i; j++) {
      const a2 = t2[j]!;
      const uo = (p0 + j) * n;
      if (a2 !== 0) for (let col = c + 1; col < n; col++) yc[col]! -= w[uo + col]! * a2;
    }
    for (let col = c + 1; col < n; col++) y[col * b + i] = tq * yc[col]!;
    // Row c, columns c+1..: −Y[:, 0..i]·V[c, 0..i]ᵀ − U[0..i-1, :]ᵀ·X[c, 0..i-1]ᵀ.
    {
      const o = c * n;
      for (let col = c + 1; col < n; col++) {
        const oy = col * b;
        let s = 0;
        for (let j = 0; j <= i; j++) s += y[oy + j]! * w[o + p0 + j]!;
        w[o + col]! -= s;
      }
      for (let j = 0; j < i; j++) {
        const xj = x[c * b + j]!;
        const uo = (p0 + j) * n;
        if (xj !== 0) for (let col = c + 1; col < n; col++) w[o + col]! -= w[uo + col]! * xj;
      }
    }
    const [ec, tp] = reflector(w, c * n + c + 1, 1, n - c - 1);
    e[c] = ec;
    tauP[c] = tp;
    w[c * n + c + 1] = 1;
    // X[c+1:, i] = τp·(A·u − V·(Yᵀu) − X·(U·u)), A stale; u = w[c, c+1:].
    const uo = c * n;
    t1.fill(0);
    t2.fill(0);
    for (let col = c + 1; col < n; col++) {
      const uc = w[uo + col]!;
      for (let j = 0; j <= i; j++) t1[j]! += y[col * b + j]! * uc;
    }
    for (let j = 0; j < i; j++) {
      const ro = (p0 + j) * n;
      let s = 0;
      for (let col = c + 1; col < n; col++) s += w[ro + col]! * w[uo + col]!;
      t2[j] = s;
    }
    gemv(w, n, c + 1, m, c + 1, uo, xc);
    for (let r = c + 1; r < m; r++) {
      const o = r * n;
      let s = xc[r]!;
      for (let j = 0; j <= i; j++) s -= w[o + p0 + j]! * t1[j]!;
      for (let j = 0; j < i; j++) s -= x[r * b + j]! * t2[j]!;
      xc[r] = s;
    }
    for (let r = c + 1; r < m; r++) x[r * b + i] = tp * xc[r]!;
  }
}

/**
 * out[c0:n] += Σ_{r=r0}^{r1-1} w[r, c] · w[r, c0:n]: v = column c of w, rows r0.. (row-major
 * Aᵀ·v). Eight rows per pass so each out[] load/store carries sixteen flops.
 */
function gemvT(w: Float64Array, n: number, c: number, r1: number, c0: number, out: Float64Array): void {
  let r = c;
  for (; r + 8 <= r1; r += 8) {
    const o0 = r * n, o1 = o0 + n, o2 = o1 + n, o3 = o2 + n, o4 = o3 + n, o5 = o4 + n, o6 = o5 + n, o7 = o6 + n;
    const v0 = w[o0 + c]!, v1 = w[o1 + c]!, v2 = w[o2 + c]!, v3 = w[o3 + c]!;
    const v4 = w[o4 + c]!, v5 = w[o5 + c]!, v6 = w[o6 + c]!, v7 = w[o7 + c]!;
    for (let col = c0; col < n; col++) {
      out[col]! += v0 * w[o0 + col]! + v1 * w[o1 + col]! + v2 * w[o2 + col]! + v3 * w[o3 + col]! +
        (v4 * w[o4 + col]! + v5 * w[o5 + col]! + v6 * w[o6 + col]! + v7 * w[o7 + col]!);
    }
  }
  for (; r < r1; r++) {
    const o = r * n;
    const v = w[o + c]!;
    if (v !== 0) for (let col = c0; col < n; col++) out[col]! += v * w[o + col]!;
  }
}

/** out[r] = w[r, c0:n] · w[uo + c0 : uo + n] for r = r0..r1-1 (row-major A·u), four rows at a time. */
function gemv(w: Float64Array, n: number, r0: number, r1: number, c0: number, uo: number, out: Float64Array): void {
  const d = uo; // u_col = w[uo + col]
  let r = r0;
  for (; r + 4 <= r1; r += 4) {
    const o0 = r * n, o1 = o0 + n, o2 = o1 + n, o3 = o2 + n;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let col = c0; col < n; col++) {
      const u = w[d + col]!;
      s0 += w[o0 + col]! * u;
      s1 += w[o1 + col]! * u;
      s2 += w[o2 + col]! * u;
      s3 += w[o3 + col]! * u;
    }
    out[r] = s0; out[r + 1] = s1; out[r + 2] = s2; out[r + 3] = s3;
  }
  for (; r < r1; r++) {
    const o = r * n;
    let s = 0;
    for (let col = c0; col < n; col++) s += w[o + col]! * w[d + col]!;
    out[r] = s;
  }
}
