/**
 * Student's t distribution for whole degrees of freedom: the probability mass within ±t,
 * and the one-sided quantile. A margin taken from n samples' own spread needs the t
 * quantile with n − 1 degrees of freedom, not the normal one: the spread is itself an
 * estimate, and with three samples it is a rough one (t₀.₉₅ = 2.92 against 1.645).
 *
 * With θ = atan(t/√ν) (Abramowitz & Stegun 26.7.3–4), P(|T| < t) is
 *   ν = 1:     2θ/π
 *   ν odd:     (2/π)·(θ + sinθ·cosθ·(1 + (2/3)·cos²θ + (2·4)/(3·5)·cos⁴θ + … up to cos^(ν−3)θ))
 *   ν even:    sinθ·(1 + (1/2)·cos²θ + (1·3)/(2·4)·cos⁴θ + … up to cos^(ν−2)θ)
 * Every term is positive, so the sums are exact to rounding for any ν.
 */

/** P(|T| < t) for T Student-t with ν ≥ 1 whole degrees of freedom, t ≥ 0. */
export function studentTWithin(t: number, nu: number): number {
  if (!(nu >= 1) || !Number.isInteger(nu)) throw new RangeError(`degrees of freedom must be a whole number ≥ 1, got ${nu}`);
  if (!(t > 0)) return 0;
  if (t === Infinity) return 1;
  const theta = Math.atan(t / Math.sqrt(nu));
  const s = Math.sin(theta);
  const c2 = Math.cos(theta) ** 2;
  if (nu % 2 === 1) {
    if (nu === 1) return (2 / Math.PI) * theta;
    // term_k = Π_{i=1..k} (2i)/(2i+1) · cos^(2k)θ, k = 0 … (ν−3)/2
    let term = 1, sum = 1;
    for (let k = 1; k <= (nu - 3) / 2; k++) {
      term *= ((2 * k) / (2 * k + 1)) * c2;
      sum += term;
    }
    return (2 / Math.PI) * (theta + s * Math.cos(theta) * sum);
  }
  // term_k = Π_{i=1..k} (2i−1)/(2i) · cos^(2k)θ, k = 0 … (ν−2)/2
  let term = 1, sum = 1;
  for (let k = 1; k <= (nu - 2) / 2; k++) {
    term *= ((2 * k - 1) / (2 * k)) * c2;
    sum += term;
  }
  return s * sum;
}

/**
 * The one-sided quantile: the t with P(T ≤ t) = p, for p in [0.5, 1). Found by bisection
 * on P(|T| < t) = 2p − 1 (monotone in t) over [0, 1e6], to a relative width of 1e-12.
 */
export function studentTQuantile(p: number, nu: number): number {
  if (!(p >= 0.5 && p < 1)) throw new RangeError(`p must be in [0.5, 1), got ${p}`);
  const target = 2 * p - 1;
  let lo = 0, hi = 1e6;
  for (let i = 0; i < 200 && hi - lo > 1e-12 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (studentTWithin(mid, nu) < target) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}
