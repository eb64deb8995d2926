/**
 * SVD of an upper "arrowhead" M = e₀·zᵀ + diag(d) with 0 = d₀ < d₁ < … < d_{K-1}
 * (gaps and |z_i| already checked by deflation): the merge step of divide-and-conquer
 * bidiagonal SVD (Gu & Eisenstat 1995; the idea of LAPACK's dlasd4/dlasd8).
 *
 * MᵀM = diag(d²) + z·zᵀ, so σ² are the roots of f(σ) = 1 + Σ z_i²/(d_i² − σ²), one in
 * each (d_t, d_{t+1}) and the last above d_{K-1}. Each root is found as μ = σ² − d_o²
 * relative to its nearer pole o, so every difference d_i² − σ² = δ_i − μ is computed
 * without cancellation. The vectors use ẑ recomputed from the roots (Löwner), for which
 * the computed σ are exact: this keeps them orthogonal to working precision.
 */

const EPS = 2 ** -52;

export interface ArrowSvd {
  /** Singular values σ_t, ascending, interlacing d. */
  s: Float64Array;
  /**
   * Left vectors, row-major; column t belongs to σ_t. K×K when d₀ = 0 is a pole (row 0
   * is the arrow row). Otherwise (K+1)×(K+1): row 0 is the arrow row and column K the
   * left null vector of the (K+1)×K matrix [zᵀ; diag(d)].
   */
  u: Float64Array;
  /** K×K row-major; column t is the right vector of σ_t. */
  v: Float64Array;
}

/**
 * zeroPole: d₀ = 0 and M is K×K. Otherwise all d_i > 0 and the arrow row is an extra
 * row (the z₀ = 0 deflation of the caller): same secular equation, one more left vector.
 */
export function arrowSvd(d: Float64Array, z: Float64Array, zeroPole = true): ArrowSvd {
  const k = d.length;
  // diff[t*k + i] = d_i² − σ_t², formed accurately from the pole-relative root.
  const diff = new Float64Array(k * k);
  const s = new Float64Array(k);
  let zz = 0;
  for (let i = 0; i < k; i++) zz += z[i]! * z[i]!;
  const delta = new Float64Array(k);
  for (let t = 0; t < k; t++) {
    let origin = t;
    let lo: number;
    let hi: number;
    if (t < k - 1) {
      const gap2 = (d[t + 1]! - d[t]!) * (d[t + 1]! + d[t]!);
      setDelta(d, t, delta);
      if (secular(delta, z, gap2 / 2).f >= 0) {
        lo = 0;
        hi = gap2 / 2;
      } else {
        origin = t + 1;
        lo = -gap2 / 2;
        hi = 0;
      }
    } else {
      lo = 0;
      hi = zz;
    }
    setDelta(d, origin, delta);
    const mu = solveRoot(delta, z, t, lo, hi);
    s[t] = Math.sqrt(d[origin]! * d[origin]! + mu);
    for (let i = 0; i < k; i++) diff[t * k + i] = delta[i]! - mu;
  }
  // Löwner: |ẑ_i|² = (σ_{K-1}² − d_i²)·Π_{t<i}(σ_t² − d_i²)/(d_t² − d_i²)·Π_{i≤t<K-1}(σ_t² − d_i²)/(d_{t+1}² − d_i²).
  const zh = new Float64Array(k);
  for (let i = 0; i < k; i++) {
    let p = -diff[(k - 1) * k + i]!;
    for (let t = 0; t < i; t++) p *= -diff[t * k + i]! / ((d[t]! - d[i]!) * (d[t]! + d[i]!));
    for (let t = i; t < k - 1; t++) p *= -diff[t * k + i]! / ((d[t + 1]! - d[i]!) * (d[t + 1]! + d[i]!));
    zh[i] = (z[i]! >= 0 ? 1 : -1) * Math.sqrt(Math.abs(p));
  }
  // v_t ∝ ẑ_i/(d_i² − σ_t²); u_t ∝ (−1, d_i·ẑ_i/(d_i² − σ_t²)) since ẑᵀv_t = −1.
  const r = zeroPole ? 0 : 1; // row i of d maps to row i + r of u
  const ku = k + r;
  const u = new Float64Array(ku * ku);
  const v = new Float64Array(k * k);
  for (let t = 0; t < k; t++) {
    let nv = 0;
    let nu = 1;
    for (let i = 0; i < k; i++) {
      const x = zh[i]! / diff[t * k + i]!;
      v[i * k + t] = x;
      nv += x * x;
      if (i + r > 0) {
        const y = d[i]! * x;
        u[(i + r) * ku + t] = y;
        nu += y * y;
      }
    }
    u[t] = -1;
    const iv = 1 / Math.sqrt(nv);
    const iu = 1 / Math.sqrt(nu);
    for (let i = 0; i < k; i++) v[i * k + t]! *= iv;
    for (let i = 0; i < ku; i++) u[i * ku + t]! *= iu;
  }
  if (!zeroPole) {
    // Left null vector y: y₀·z_i + y_i·d_i = 0, i.e. y ∝ (1, −ẑ_i/d_i).
    let ny = 1;
    u[k] = 1;
    for (let i = 0; i < k; i++) {
      const y = -zh[i]! / d[i]!;
      u[(i + 1) * ku + k] = y;
      ny += y * y;
    }
    const iy = 1 / Math.sqrt(ny);
    for (let i = 0; i < ku; i++) u[i * ku + k]! *= iy;
  }
  return { s, u, v };
}

/** delta_i = d_i² − d_o², as a product of a difference and a sum. */
function setDelta(d: Float64Array, o: number, delta: Float64Array): void {
  const a = d[o]!;
  for (let i = 0; i < d.length; i++) delta[i] = (d[i]! - a) * (d[i]! + a);
}

interface SecularEval {
  f: number;
  /** Σ over poles at or left of the root, and its derivative; likewise right of it. */
  psi: number;
  dpsi: number;
  phi: number;
  dphi: number;
  /** Bound on the rounding error of f. */
  err: number;
}

function secular(delta: Float64Array, z: Float64Array, mu: number, split = -1): SecularEval {
  let psi = 0, dpsi = 0, phi = 0, dphi = 0;
  for (let i = 0; i < delta.length; i++) {
    const r = 1 / (delta[i]! - mu);
    const w = z[i]! * z[i]! * r;
    if (i <= split) {
      psi += w;
      dpsi += w * r;
    } else {
      phi += w;
      dphi += w * r;
    }
  }
  const f = 1 + psi + phi;
  return { f, psi, dpsi, phi, dphi, err: 8 * EPS * delta.length * (1 + Math.abs(psi) + Math.abs(phi)) };
}

/**
 * Root μ of f in (lo, hi) with f(lo⁺) < 0 < f(hi⁻), root index t (poles delta_t, delta_{t+1}).
 * Each step fits ψ and φ by one pole each at the interval's poles, matching value and
 * slope (Bunch–Nielsen–Sorensen), and solves the quadratic; bisection when a step leaves
 * the bracket. Converges quadratically in practice.
 */
function solveRoot(delta: Float64Array, z: Float64Array, t: number, lo: number, hi: number): number {
  const k = delta.length;
  const last = t === k - 1;
  const pl = delta[t]!;
  const pr = last ? Infinity : delta[t + 1]!;
  let mu = (lo + hi) / 2;
  for (let it = 0; it < 100; it++) {
    const e = secular(delta, z, mu, t);
    if (e.f === 0 || Math.abs(e.f) <= e.err) return mu;
    if (e.f < 0) lo = mu;
    else hi = mu;
    let next: number;
    const a = e.dpsi * (pl - mu) * (pl - mu);
    if (last) {
      const c = 1 + e.psi - a / (pl - mu) + e.phi;
      next = c > 0 ? pl + a / c : NaN;
    } else {
      const b = e.dphi * (pr - mu) * (pr - mu);
      const c = 1 + e.psi - a / (pl - mu) + e.phi - b / (pr - mu);
      const gap = pr - pl;
      // With p = pl − x: c·p² + (c·gap + a + b)·p + a·gap = 0, root p ∈ (−gap, 0).
      const bq = c * gap + a + b;
      let p: number;
      if (c === 0) p = -a * gap / (a + b);
      else {
        const disc = Math.sqrt(Math.max(bq * bq - 4 * c * a * gap, 0));
        const r1 = (-bq - (bq >= 0 ? 1 : -1) * disc) / (2 * c);
        const r2 = r1 !== 0 ? (a * gap) / (c * r1) : 0;
        p = r1 < 0 && r1 > -gap ? r1 : r2;
      }
      next = pl - p;
    }
    if (!(next > lo && next < hi)) next = (lo + hi) / 2;
    if (Math.abs(next - mu) <= 2 * EPS * Math.abs(mu) || hi - lo <= 2 * EPS * Math.max(Math.abs(lo), Math.abs(hi))) return next;
    mu = next;
  }
  return mu;
}
